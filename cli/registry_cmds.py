"""``mycelium bootstrap``, ``mycelium status`` and ``mycelium bench registry``."""

from __future__ import annotations

import asyncio
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import click
from rich.console import Console
from rich.table import Table

from cli.main import bench, main
from mycelium_p2p.netaddr import is_loopback

if TYPE_CHECKING:
    from mycelium_p2p.registry_api import GroupOut, NodeOut
    from mycelium_p2p.snapshot import Snapshot

log = logging.getLogger("mycelium.registry")


def _fail(message: str, status: int = 1) -> NoReturn:
    """One line on stderr, then exit with ``status`` (no traceback)."""
    click.echo(f"Error: {message}", err=True)
    sys.exit(status)


@main.command()
@click.option(
    "--host",
    default=None,
    help="Interface to bind  [default: 0.0.0.0 with a token, 127.0.0.1 without]",
)
@click.option(
    "--port", default=8000, show_default=True, type=click.IntRange(0, 65535), help="0: any free."
)
@click.option(
    "--db",
    "db_target",
    default="mycelium_registry.db",
    show_default=True,
    metavar="FILE|URL",
    help="SQLite file (created on first start; locked through <db>.lock while in use), or "
    "postgresql://USER[:PASSWORD]@HOST:PORT/DB, which several registries may share.",
)
@click.option(
    "--token",
    envvar="MYCELIUM_TOKEN",
    default=None,
    help="Admission token (or MYCELIUM_TOKEN): it enrols new nodes, which then act with their "
    "own credentials; every request but /health and /docs needs a credential, and the registry "
    "is the network's CA.",
)
@click.option(
    "--admin-token",
    envvar="MYCELIUM_ADMIN_TOKEN",
    default=None,
    help="Operator token (or MYCELIUM_ADMIN_TOKEN): removes and revokes any node.",
)
@click.option(
    "--observer-token",
    envvar="MYCELIUM_OBSERVER_TOKEN",
    default=None,
    help="Read-only token for viewers (or MYCELIUM_OBSERVER_TOKEN).",
)
@click.option(
    "--ca-dir",
    default=None,
    metavar="DIR",
    help="The CA's folder (key made at first start, owner-only)  "
    "[default: <db>.ca beside an SQLite file; required with PostgreSQL]",
)
@click.option(
    "--insecure",
    is_flag=True,
    help="Allow a non-loopback --host without a token (anyone who reaches it can write).",
)
@click.option(
    "--suspect-after",
    default=45.0,
    show_default=True,
    help="Seconds of silence before a node is suspect.",
)
@click.option(
    "--dead-after",
    default=90.0,
    show_default=True,
    help="Seconds of silence before a node is dead.",
)
@click.option("--sweep-interval", default=1.0, show_default=True, help="Seconds between sweeps.")
@click.option(
    "--retention",
    default=86400.0,
    show_default=True,
    help="Seconds after which a dead or gone node is forgotten (the event log keeps it).",
)
@click.option("--debug", is_flag=True, help="Debug logging, and tracebacks on errors.")
def bootstrap(
    host: str | None,
    port: int,
    db_target: str,
    token: str | None,
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

    token = token or None
    if host is None:
        host = "0.0.0.0" if token else "127.0.0.1"
    elif not token and not is_loopback(host) and not insecure:
        _fail(
            f"refusing to serve {host} without --token (anyone could write); "
            "set --token, bind 127.0.0.1, or pass --insecure",
            status=2,
        )
    logging.basicConfig(
        level=logging.DEBUG if debug else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
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
        _fail(str(exc), status=2)
    except CaError as exc:
        _fail(str(exc))
    store = app.state["store"]
    try:
        store.open()  # lock and schema now, so that a bad --db is one line, not a lifespan error
    except (DatabaseInUse, AuthorityMismatch) as exc:
        if debug:
            raise
        _fail(str(exc))
    except (OSError, pw.DatabaseError, SchemaError) as exc:
        if debug:
            raise
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
        _fail(f"cannot open database {shown}: {' '.join(str(reason).split())}")
    try:
        sock = listen_socket(host, port)
    except OSError as exc:
        store.close()
        if debug:
            raise
        _fail(f"cannot listen on {host}:{port}: {exc.strerror or exc}")
    config = uvicorn_config(app, host, port, log_level="debug" if debug else "warning")
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
        _fail(f"registry could not start on {host}:{port} (see the log above)")


@main.command()
@click.option(
    "--bootstrap",
    "url",
    default="http://localhost:8000",
    show_default=True,
    envvar="MYCELIUM_BOOTSTRAP",
    help="Registry URL.",
)
@click.option(
    "--peer", metavar="HOST:PORT", help="Read the gossip view of this node instead (as observer)."
)
@click.option(
    "--token",
    envvar="MYCELIUM_TOKEN",
    help="A credential to read with (or MYCELIUM_TOKEN): the admission or observer token, or "
    "a node credential.",
)
@click.option(
    "--json", "as_json", is_flag=True, help='Print {"groups": [...], "nodes": [...]} as JSON.'
)
def status(url: str, peer: str | None, token: str | None, as_json: bool) -> None:
    """Print groups and nodes as tables: the registry's, or a node's gossip view (--peer)."""
    snapshot = gossip_snapshot(peer, token) if peer else registry_snapshot(url, token)
    if as_json:
        click.echo(json.dumps(snapshot.to_json()))
        return
    console = Console()
    specs = by_spec(snapshot)
    for spec, (groups, nodes) in specs.items():
        title = f" with spec {spec}" if len(specs) > 1 else ""
        console.print(groups_table(groups, title))
        console.print(nodes_table(nodes, title))


def by_spec(snapshot: Snapshot) -> dict[str, tuple[list[GroupOut], list[NodeOut]]]:
    """Groups and nodes by model spec: only nodes of one spec ever share a group."""
    out: dict[str, tuple[list[GroupOut], list[NodeOut]]] = {}
    for g in snapshot.groups:
        out.setdefault(g.model, ([], []))[0].append(g)
    for n in snapshot.nodes:
        out.setdefault(n.model or "-", ([], []))[1].append(n)
    return out or {"-": ([], [])}


@main.command()
@click.argument("node_id")
@click.option(
    "--bootstrap",
    "url",
    default="http://localhost:8000",
    show_default=True,
    envvar="MYCELIUM_BOOTSTRAP",
    help="Registry URL.",
)
@click.option(
    "--admin-token",
    envvar="MYCELIUM_ADMIN_TOKEN",
    required=True,
    help="The registry's operator token (or MYCELIUM_ADMIN_TOKEN).",
)
def revoke(node_id: str, url: str, admin_token: str) -> None:
    """Remove NODE_ID for good: its credential, certificate and gossip ticket stop working on
    the registry at once and on every node as the signed revocation list spreads."""
    from mycelium_p2p.registry_client import RegistryClient, RegistryError, RegistryUnavailable

    try:
        with RegistryClient(url, token=admin_token, retries=1, timeout=5.0) as client:
            listed = client.revoke(node_id)
    except (RegistryError, RegistryUnavailable) as exc:
        raise click.ClickException(f"cannot revoke {node_id}: {exc}") from exc
    click.echo(f"revoked {node_id}; revocation list #{listed.serial}: {', '.join(listed.ids)}")


def registry_snapshot(url: str, token: str | None = None) -> Snapshot:
    """The registry's picture of the network, or a one-line error."""
    from mycelium_p2p import snapshot
    from mycelium_p2p.registry_client import RegistryClient, RegistryError, RegistryUnavailable

    try:
        with RegistryClient(url, token=token, retries=1, timeout=5.0) as client:
            return snapshot.from_registry(client.network(events=0))
    except (RegistryError, RegistryUnavailable) as exc:
        raise click.ClickException(f"cannot read {url}: {exc}") from exc


def gossip_snapshot(peer: str, token: str | None) -> Snapshot:
    """The network as the node at ``peer`` knows it: one push-pull as an observer."""
    from mycelium_p2p import snapshot
    from mycelium_p2p.config import GossipConfig
    from mycelium_p2p.netaddr import reachable_address
    from mycelium_p2p.observer import ObserverError, start_observer

    try:
        observer = start_observer(
            GossipConfig.local(),
            host=reachable_address([peer]),  # the peer answers to this address, maybe on a LAN
            token=token,
            peers=[peer],
            prefix="status",
        )
    except ObserverError as exc:
        raise click.ClickException(str(exc)) from exc
    try:
        if not observer.join([peer], timeout=5.0):
            raise click.ClickException(f"no answer from {peer} (wrong address or secret?)")
        members = [m for m in observer.members() if m.id != observer.node_id]
        return snapshot.from_gossip(members, observer.groups())
    finally:
        observer.stop()


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def groups_table(groups: Sequence[GroupOut], title: str = "") -> Table:
    """A rich table of groups (id, name, leader, term, round, accuracy, members)."""
    table = Table(title=f"Groups ({len(groups)}){title}")
    for column in ("id", "name", "leader", "term", "round", "accuracy", "members", "status"):
        table.add_column(column)
    for g in groups:
        table.add_row(
            g.id,
            g.name,
            _fmt(g.leader),
            str(g.term),
            _fmt(g.metrics.round),
            _fmt(g.metrics.accuracy),
            f"{len(g.members)}/{g.capacity}: {', '.join(g.members)}",
            g.status,
        )
    return table


def nodes_table(nodes: Sequence[NodeOut], title: str = "") -> Table:
    """A rich table of nodes (id, name, status, group, accuracy, milliseconds per probe)."""
    table = Table(title=f"Nodes ({len(nodes)}){title}")
    for column in ("id", "name", "status", "group", "gossip", "accuracy", "probe ms"):
        table.add_column(column)
    for n in nodes:
        probe = n.data.get("probe_ms")
        table.add_row(
            n.id,
            n.name,
            n.status,
            _fmt(n.group),
            n.gossip_address,
            _fmt(n.metrics.accuracy),
            str(probe) if isinstance(probe, int) and probe > 0 else "-",
        )
    return table


@bench.command("registry")
@click.option("--json", "json_path", type=click.Path(dir_okay=False, path_type=Path), default=None)
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
    json_path: Path | None,
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
    console = Console()
    if nodes is not None:
        _scale_run(console, json_path, nodes, heartbeat_interval, seconds, workers, db_url)
        return
    from bootstrap.bench import run_benchmark

    try:
        levels = [int(c) for c in clients.split(",") if c.strip()]
    except ValueError as exc:
        raise click.BadParameter("--clients takes integers like 1,8,64") from exc
    if not levels or min(levels) < 1 or requests < 1:
        raise click.BadParameter("need at least one client level >= 1 and --requests >= 1")
    try:
        runs = run_benchmark(levels, requests, progress=lambda msg: console.print(f"[dim]{msg}"))
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
    console.print(table)
    if json_path is not None:
        json_path.write_text(json.dumps({"runs": runs}, indent=2) + "\n")
        console.print(f"wrote {json_path}")


def _scale_run(
    console: Console,
    json_path: Path | None,
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
        scale = run_scale(
            nodes,
            interval,
            seconds,
            db=db_url,
            workers=workers,
            progress=lambda msg: console.print(f"[dim]{msg}"),
        )
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
    console.print(table)
    console.print(
        f"registration: {scale['register_per_s']:.0f}/s, restart {scale['restart_s']:.1f} s; "
        f"generator: send lag p99 "
        f"{scale['send_lag_p99_ms']:.1f} ms, CPU {scale['generator_cpu_s']} s, "
        f"{scale['answered_late']} answered after the window; registry used "
        f"{scale['registry_cores_used']} cores"
    )
    if json_path is not None:
        json_path.write_text(json.dumps({"runs": [], "scale": scale}, indent=2) + "\n")
        console.print(f"wrote {json_path}")
