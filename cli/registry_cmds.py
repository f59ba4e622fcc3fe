"""``mycelium bootstrap`` and ``mycelium bench registry``."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import click
from rich.table import Table

from cli.common import debug_option, fail, read_token, token_options
from cli.logs import configure_logging, log_options
from cli.main import bench, main
from cli.output import Results, json_options, steps
from mycelium_p2p.netaddr import is_loopback

log = logging.getLogger("mycelium.registry")


@main.command()
@click.option(
    "--host",
    envvar="MYCELIUM_REGISTRY_HOST",
    show_envvar=True,
    default=None,
    help="Interface to bind  [default: 0.0.0.0 with a token, 127.0.0.1 without]",
)
@click.option(
    "--port",
    envvar="MYCELIUM_REGISTRY_PORT",
    show_envvar=True,
    default=8000,
    show_default=True,
    type=click.IntRange(0, 65535),
    help="0: any free.",
)
@click.option(
    "--db",
    "db_target",
    envvar="MYCELIUM_REGISTRY_DB",
    show_envvar=True,
    default="mycelium_registry.db",
    show_default=True,
    metavar="FILE|URL",
    help="SQLite file (created on first start; locked through <db>.lock while in use), or "
    "postgresql://USER[:PASSWORD]@HOST:PORT/DB, which several registries may share.",
)
@token_options(
    "Admission token: it enrols new nodes, which then act with their own credentials; every "
    "request but /health and /docs needs a credential, and the registry is the network's CA."
)
@click.option(
    "--admin-token",
    envvar="MYCELIUM_ADMIN_TOKEN",
    show_envvar=True,
    default=None,
    help="Operator token: removes and revokes any node.",
)
@click.option(
    "--observer-token",
    envvar="MYCELIUM_OBSERVER_TOKEN",
    show_envvar=True,
    default=None,
    help="Read-only token for viewers.",
)
@click.option(
    "--ca-dir",
    envvar="MYCELIUM_REGISTRY_CA_DIR",
    show_envvar=True,
    default=None,
    metavar="DIR",
    help="The CA's folder (key made at first start, owner-only)  "
    "[default: <db>.ca beside an SQLite file; required with PostgreSQL]",
)
@click.option(
    "--insecure",
    envvar="MYCELIUM_REGISTRY_INSECURE",
    show_envvar=True,
    is_flag=True,
    help="Allow a non-loopback --host without a token (anyone who reaches it can write).",
)
@click.option(
    "--suspect-after",
    envvar="MYCELIUM_REGISTRY_SUSPECT_AFTER",
    show_envvar=True,
    default=45.0,
    show_default=True,
    help="Seconds of silence before a node is suspect.",
)
@click.option(
    "--dead-after",
    envvar="MYCELIUM_REGISTRY_DEAD_AFTER",
    show_envvar=True,
    default=90.0,
    show_default=True,
    help="Seconds of silence before a node is dead.",
)
@click.option(
    "--sweep-interval",
    envvar="MYCELIUM_REGISTRY_SWEEP_INTERVAL",
    show_envvar=True,
    default=1.0,
    show_default=True,
    help="Seconds between sweeps.",
)
@click.option(
    "--retention",
    envvar="MYCELIUM_REGISTRY_RETENTION",
    show_envvar=True,
    default=86400.0,
    show_default=True,
    help="Seconds after which a dead or gone node is forgotten (the event log keeps it).",
)
@log_options("INFO")
@debug_option("Debug logging, and tracebacks on errors.")
@click.pass_context
def bootstrap(
    ctx: click.Context,
    host: str | None,
    port: int,
    db_target: str,
    token: str | None,
    token_file: Path | None,
    log_level: str,
    log_format: str,
    admin_token: str | None,
    observer_token: str | None,
    ca_dir: str | None,
    insecure: bool,
    suspect_after: float,
    dead_after: float,
    sweep_interval: float,
    retention: float,
    debug: bool,
) -> None:
    """Run the bootstrap registry (HTTP API, Swagger UI at /docs)."""
    import signal

    import peewee as pw
    import uvicorn

    from bootstrap.app import create_app
    from bootstrap.ca import CaError
    from bootstrap.db import DatabaseInUse, SchemaError, is_database_url, redact
    from bootstrap.server import bound_port, listen_socket, url_host, uvicorn_config
    from bootstrap.store import AuthorityMismatch, LivenessConfig

    token = read_token(ctx, token, token_file)
    if host is None:
        host = "0.0.0.0" if token else "127.0.0.1"
    elif not token and not is_loopback(host) and not insecure:
        fail(
            f"refusing to serve {host} without --token (anyone could write); "
            "set --token, bind 127.0.0.1, or pass --insecure",
            status=2,
        )
    configure_logging("DEBUG" if debug else log_level, log_format)
    try:
        liveness = LivenessConfig(suspect_after, dead_after, sweep_interval, retention)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from exc
    db_path: str | Path = db_target if is_database_url(db_target) else Path(db_target)
    shown = redact(db_path)
    try:
        app = create_app(
            db_path,
            token=token,
            liveness=liveness,
            admin_token=admin_token or None,
            observer_token=observer_token or None,
            ca_dir=ca_dir,
        )
    except ValueError as exc:  # a URL without a database name, PostgreSQL without --ca-dir
        fail(str(exc), status=2)
    except CaError as exc:
        fail(str(exc))
    store = app.state["store"]
    try:
        store.open()  # lock and schema now, so that a bad --db is one line, not a lifespan error
    except (DatabaseInUse, AuthorityMismatch) as exc:
        if debug:
            raise
        fail(str(exc))
    except (OSError, pw.DatabaseError, SchemaError) as exc:
        if debug:
            raise
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
        fail(f"cannot open database {shown}: {' '.join(str(reason).split())}")
    try:
        sock = listen_socket(host, port)
    except OSError as exc:
        store.close()
        if debug:
            raise
        fail(f"cannot listen on {host}:{port}: {exc.strerror or exc}")
    # log_config=None: uvicorn's records go through the handler chosen above (rich, plain, json).
    config = uvicorn_config(
        app, host, port, log_level="debug" if debug else "warning", log_config=None
    )
    server = uvicorn.Server(config)

    async def serve() -> None:
        task = asyncio.create_task(server.serve(sockets=[sock]))
        while not server.started and not task.done():
            await asyncio.sleep(0.02)
        if server.started:
            url = f"http://{url_host(host)}:{bound_port(server)}"
            if not token:
                log.warning("registry open (no token): anyone who reaches %s can write", url)
                if not is_loopback(host):
                    log.warning("--insecure: serving %s to the network without a token", host)
            click.echo(f"registry listening on {url} (bound {host}), database {shown}")
            if store.ca is not None:
                log.info(
                    "network CA %s...: nodes enrol with the token, then use their own credentials",
                    store.ca.fingerprint[:16],
                )
            click.echo(f"docs: {url}/docs", nl=True)
        await task

    # uvicorn stops on SIGTERM or SIGINT and then raises the signal again, for the handler that
    # was there before it: with this one, that ends in a normal exit (status 0), not 143.
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: None)
    try:
        asyncio.run(serve())
    finally:
        store.close()
    if not server.started:
        fail(f"registry could not start on {host}:{port} (see the log above)")


@main.command()
@click.argument("node_id")
@click.option(
    "--bootstrap",
    "url",
    default="http://localhost:8000",
    show_default=True,
    envvar="MYCELIUM_REGISTRY_URL",
    show_envvar=True,
    help="Registry URL.",
)
@click.option(
    "--admin-token",
    envvar="MYCELIUM_ADMIN_TOKEN",
    required=True,
    show_envvar=True,
    help="The registry's operator token.",
)
def revoke(node_id: str, url: str, admin_token: str) -> None:
    """Remove NODE_ID for good: its credential, certificate and gossip ticket stop working on
    the registry at once and on every node as the signed revocation list spreads."""
    from mycelium_p2p.registry_client import RegistryClient, RegistryError, RegistryUnavailable

    try:
        with RegistryClient(url, token=admin_token, retries=1, timeout=5.0) as client:
            listed = client.revoke(node_id)
    except (RegistryError, RegistryUnavailable) as exc:
        fail(f"cannot revoke {node_id}: {exc}")
    click.echo(f"revoked {node_id}; revocation list #{listed.serial}: {', '.join(listed.ids)}")


@bench.command("registry")
@json_options
@click.option("--requests", "requests", default=2000, show_default=True, help="Per measurement.")
@click.option("--clients", default="1,8,64", show_default=True, help="Concurrency levels.")
@click.option(
    "--nodes",
    type=click.IntRange(1, 10_000_000),
    default=None,
    help="Scale run instead: register this many nodes, then heartbeat them all.",
)
@click.option(
    "--heartbeat-interval",
    type=click.FloatRange(0.1, 3600),
    default=30.0,
    show_default=True,
    help="Scale run: seconds between two heartbeats of a node.",
)
@click.option(
    "--seconds",
    type=click.FloatRange(1, 3600),
    default=60.0,
    show_default=True,
    help="Scale run: length of the heartbeat phase.",
)
@click.option(
    "--workers",
    type=click.IntRange(1, 64),
    default=2,
    show_default=True,
    help="Scale run: load-generating processes.",
)
@click.option(
    "--db",
    "db_url",
    default=None,
    metavar="postgresql://USER@HOST:PORT/DB",
    help="Scale run: an empty PostgreSQL database instead of a temporary SQLite file.",
)
def bench_registry(
    json_target: str | None,
    output_path: Path | None,
    requests: int,
    clients: str,
    nodes: int | None,
    heartbeat_interval: float,
    seconds: float,
    workers: int,
    db_url: str | None,
) -> None:
    """Requests/s and p50/p99 of the registry against a plain-Litestar baseline; or, with
    --nodes, a scale run: the heartbeat rate of that many nodes, sustained for --seconds."""
    results_to = Results.chosen(json_target, output_path)
    if nodes is not None:
        _scale_run(results_to, nodes, heartbeat_interval, seconds, workers, db_url)
        return
    from bootstrap.bench import run_benchmark

    try:
        levels = [int(c) for c in clients.split(",") if c.strip()]
    except ValueError as exc:
        raise click.BadParameter("--clients takes integers like 1,8,64") from exc
    if not levels or min(levels) < 1 or requests < 1:
        raise click.BadParameter("need at least one client level >= 1 and --requests >= 1")
    try:
        with steps("registry", 4 * len(levels)) as step:  # 4 endpoints per client level
            runs = run_benchmark(levels, requests, progress=step)
    except RuntimeError as exc:
        raise click.ClickException(str(exc)) from exc
    table = Table(title=f"Registry ({requests} requests per row)")
    for column in ("endpoint", "clients", "req/s", "p50 ms", "p99 ms"):
        table.add_column(column, justify="right" if column != "endpoint" else "left")
    for run in runs:
        table.add_row(
            run["endpoint"],
            str(run["clients"]),
            f"{run['requests_per_s']:.0f}",
            f"{run['p50_ms']:.2f}",
            f"{run['p99_ms']:.2f}",
        )
    results_to.show(table)
    results_to.emit({"runs": runs})


def _scale_run(
    results_to: Results,
    nodes: int,
    interval: float,
    seconds: float,
    workers: int,
    db_url: str | None,
) -> None:
    """``bench registry --nodes N``: print the scale run's figures (and write its JSON)."""
    from bootstrap.bench_scale import run_scale
    from bootstrap.db import is_database_url

    if db_url is not None and not is_database_url(db_url):
        raise click.BadParameter("--db takes a postgresql:// URL (SQLite is the default)")
    try:
        with steps("scale run", 4) as step:  # register, restart, heartbeat, read back
            scale = run_scale(nodes, interval, seconds, db=db_url, workers=workers, progress=step)
    except RuntimeError as exc:
        raise click.ClickException(str(exc)) from exc
    table = Table(title=f"Registry scale run ({scale['database']}, {seconds:.0f} s)")
    for column in ("nodes", "target/s", "achieved/s", "p50 ms", "p99 ms", "wrongly expired"):
        table.add_column(column, justify="right")
    table.add_row(
        str(nodes),
        f"{scale['target_per_s']:.0f}",
        f"{scale['achieved_per_s']:.0f}",
        f"{scale['p50_ms']:.2f}",
        f"{scale['p99_ms']:.2f}",
        str(scale["wrongly_expired"]),
    )
    results_to.show(
        table,
        f"registration: {scale['register_per_s']:.0f}/s, restart {scale['restart_s']:.1f} s; "
        f"generator: send lag p99 "
        f"{scale['send_lag_p99_ms']:.1f} ms, CPU {scale['generator_cpu_s']} s, "
        f"{scale['answered_late']} answered after the window; registry used "
        f"{scale['registry_cores_used']} cores",
    )
    results_to.emit({"runs": [], "scale": scale})
