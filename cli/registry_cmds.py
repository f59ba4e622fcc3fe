"""``mycelium bootstrap``, ``mycelium status`` and ``mycelium bench registry``."""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from cli.main import bench, main

log = logging.getLogger("mycelium.registry")


@main.command()
@click.option("--host", default="0.0.0.0", show_default=True, help="Interface to bind.")
@click.option(
    "--port", default=8000, show_default=True, type=click.IntRange(0, 65535), help="0: any free."
)
@click.option(
    "--db",
    "db_path",
    default="mycelium_registry.db",
    show_default=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="SQLite file (created on first start).",
)
@click.option(
    "--token",
    envvar="MYCELIUM_TOKEN",
    default=None,
    help="Bearer token required for writes (or MYCELIUM_TOKEN); reads stay open.",
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
def bootstrap(
    host: str,
    port: int,
    db_path: Path,
    token: str | None,
    suspect_after: float,
    dead_after: float,
    sweep_interval: float,
) -> None:
    """Run the bootstrap registry (HTTP API, Swagger UI at /docs)."""
    import uvicorn

    from bootstrap.app import create_app
    from bootstrap.server import bound_port, url_host
    from bootstrap.store import LivenessConfig

    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        liveness = LivenessConfig(suspect_after, dead_after, sweep_interval)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from exc
    app = create_app(db_path, token=token, liveness=liveness)
    config = uvicorn.Config(app, host=host, port=port, log_level="warning", lifespan="on")
    server = uvicorn.Server(config)

    async def serve() -> None:
        task = asyncio.create_task(server.serve())
        while not server.started and not task.done():
            await asyncio.sleep(0.02)
        if server.started:
            url = f"http://{url_host(host)}:{bound_port(server)}"
            if not token:
                log.warning("registry open (no token): anyone can write")
            click.echo(f"registry listening on {url} (bound {host}), database {db_path}")
            click.echo(f"docs: {url}/docs", nl=True)
        await task

    asyncio.run(serve())
    if not server.started:
        raise click.ClickException(f"registry could not start on {host}:{port}")


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
@click.option("--token", envvar="MYCELIUM_TOKEN", help="Network secret (or MYCELIUM_TOKEN).")
@click.option(
    "--json", "as_json", is_flag=True, help='Print {"groups": [...], "nodes": [...]} as JSON.'
)
def status(url: str, peer: str | None, token: str | None, as_json: bool) -> None:
    """Print groups and nodes as tables: the registry's, or a node's gossip view (--peer)."""
    snapshot = gossip_snapshot(peer, token) if peer else registry_snapshot(url)
    if as_json:
        click.echo(json.dumps({"groups": snapshot["groups"], "nodes": snapshot["nodes"]}))
        return
    console = Console()
    console.print(groups_table(snapshot["groups"]))
    console.print(nodes_table(snapshot["nodes"]))


def registry_snapshot(url: str) -> dict[str, Any]:
    """The registry's ``GET /network`` (groups and nodes), or a one-line error."""
    from mycelium_p2p.registry_client import RegistryClient, RegistryError, RegistryUnavailable

    try:
        with RegistryClient(url, retries=1, timeout=5.0) as client:
            return client.network(events=0)
    except (RegistryError, RegistryUnavailable) as exc:
        raise click.ClickException(f"cannot read {url}: {exc}") from exc


def gossip_snapshot(peer: str, token: str | None) -> dict[str, Any]:
    """Groups and nodes as the node at ``peer`` knows them: one push-pull as an observer."""
    from mycelium_p2p.config import GossipConfig
    from mycelium_p2p.groups import GossipNode
    from mycelium_p2p.netaddr import reachable_address

    observer = GossipNode(
        f"status-{uuid.uuid4().hex[:6]}",
        GossipConfig.local(),
        host=reachable_address([peer]),  # the peer answers to this address, maybe on a LAN
        observer=True,
        secret=token,
    )
    observer.start()
    try:
        if not observer.join([peer], timeout=5.0):
            raise click.ClickException(f"no answer from {peer} (wrong address or secret?)")
        groups = [
            {
                "id": r.id,
                "name": r.name,
                "leader": r.leader,
                "term": r.term,
                "metrics": {"round": r.round, "accuracy": r.accuracy if r.round else None},
                "members": list(r.members),
                "capacity": r.capacity,
                "status": "gossip",
            }
            for r in observer.groups().values()
        ]
        nodes = [
            {
                "id": m.id,
                "name": m.node_meta.name or m.id,
                "status": m.status,
                "group": m.node_meta.group or None,
                "gossip_address": m.address,
                "flower_address": m.node_meta.flower_address or None,  # set while leading
                "metrics": {"accuracy": m.node_meta.accuracy},
            }
            for m in observer.members()
            if m.id != observer.node_id and m.node_meta.role != "observer"
        ]
    finally:
        observer.stop()
    return {"groups": groups, "nodes": nodes}


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def groups_table(groups: list[dict[str, Any]]) -> Table:
    """A rich table of groups (id, name, leader, term, round, accuracy, members)."""
    table = Table(title=f"Groups ({len(groups)})")
    for column in ("id", "name", "leader", "term", "round", "accuracy", "members", "status"):
        table.add_column(column)
    for g in groups:
        metrics = g.get("metrics", {})
        members = g.get("members", [])
        table.add_row(
            g["id"],
            g["name"],
            _fmt(g.get("leader")),
            str(g["term"]),
            _fmt(metrics.get("round")),
            _fmt(metrics.get("accuracy")),
            f"{len(members)}/{g['capacity']}: {', '.join(members)}",
            g.get("status", ""),
        )
    return table


def nodes_table(nodes: list[dict[str, Any]]) -> Table:
    """A rich table of nodes (id, name, status, group)."""
    table = Table(title=f"Nodes ({len(nodes)})")
    for column in ("id", "name", "status", "group", "gossip", "accuracy"):
        table.add_column(column)
    for n in nodes:
        table.add_row(
            n["id"],
            n["name"],
            n["status"],
            _fmt(n.get("group")),
            n["gossip_address"],
            _fmt(n.get("metrics", {}).get("accuracy")),
        )
    return table


@bench.command("registry")
@click.option("--json", "json_path", type=click.Path(dir_okay=False, path_type=Path), default=None)
@click.option("--requests", "requests", default=2000, show_default=True, help="Per measurement.")
@click.option("--clients", default="1,8,64", show_default=True, help="Concurrency levels.")
def bench_registry(json_path: Path | None, requests: int, clients: str) -> None:
    """Requests/s and p50/p99 of the registry against a plain-Litestar baseline."""
    from bootstrap.bench import run_benchmark

    try:
        levels = [int(c) for c in clients.split(",") if c.strip()]
    except ValueError as exc:
        raise click.BadParameter("--clients takes integers like 1,8,64") from exc
    if not levels or min(levels) < 1 or requests < 1:
        raise click.BadParameter("need at least one client level >= 1 and --requests >= 1")
    console = Console()
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
