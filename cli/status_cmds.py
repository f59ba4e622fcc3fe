"""``mycelium status``: groups and nodes as tables (or JSON), each figure with its age and source.

The registry hears round figures at most every fourth heartbeat; gossip carries them within
seconds. So ``status`` reads both when it can: the registry, then the gossip view of a node it
lists (as an observer, which owns nothing and only reads), and shows each group's and node's
figures from the source that made them last, with how old they are.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
from rich import box
from rich.console import Console
from rich.table import Table

from cli.common import (
    DEFAULT_REGISTRY,
    read_token,
    registry_base,
    registry_from_env,
    registry_option,
    token_options,
)
from cli.main import main

if TYPE_CHECKING:
    from mycelium_p2p.snapshot import Snapshot

GOSSIP_SEEDS = 3  # live nodes of the registry's list asked for their gossip view
GOSSIP_TIMEOUT = 3.0  # seconds to wait for their answer


@main.command()
@registry_option("Registry URL.", default=DEFAULT_REGISTRY)
@click.option(
    "--peer",
    metavar="HOST:PORT",
    help="Read this node's gossip view (as an observer); alone, without the registry.",
)
@token_options("Network secret (registry token and gossip keys).")
@click.option("--no-gossip", is_flag=True, help="Only the registry's figures.")
@click.option("--wide", is_flag=True, help="Full ids, members and addresses, however wide.")
@click.option(
    "--json", "as_json", is_flag=True, help="Print the network as JSON on stdout (no tables)."
)
@click.option(
    "--output",
    "output_path",
    type=click.Path(dir_okay=False, path_type=Path),
    metavar="FILE",
    help="Write the network as JSON to FILE.",
)
@click.pass_context
def status(
    ctx: click.Context,
    registry_url: str | None,
    peer: str | None,
    token: str | None,
    token_file: Path | None,
    no_gossip: bool,
    wide: bool,
    as_json: bool,
    output_path: Path | None,
) -> None:
    """Groups and nodes: the registry's and gossip's figures, the fresher of each, with ages."""
    from mycelium_p2p.gossip.messages import check_address
    from mycelium_p2p.snapshot import freshest

    token = read_token(ctx, token, token_file)
    named = registry_url or registry_from_env()
    url = registry_base(named or DEFAULT_REGISTRY)
    if peer is not None:
        try:
            check_address(peer, "--peer")
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--peer") from None
    notes: list[str] = []
    if peer is not None and named is None:
        snap = gossip_snapshot([peer], token)
        notes.append(f"gossip view of {peer}")
    else:
        snap = registry_snapshot(url, token)
        seeds = [peer] if peer else _gossip_seeds(snap)
        if no_gossip or not seeds:
            notes.append(f"registry {url}")
        else:
            try:
                snap = freshest(snap, gossip_snapshot(seeds, token, GOSSIP_TIMEOUT))
                notes.append(
                    f"registry {url} and gossip via {seeds[0]}: the fresher figure of each"
                )
            except click.ClickException as exc:
                notes.append(f"registry {url} ({exc.message}: registry figures only)")
    document = snap.to_json()
    if output_path is not None:
        output_path.parent.mkdir(parents=True, exist_ok=True)
        output_path.write_text(json.dumps(document, indent=2) + "\n")
    if as_json:
        click.echo(json.dumps(document))
        return
    console = Console()
    if wide:
        console = Console(width=max(console.width, 400))
    now = time.time()
    specs = by_spec(snap)
    for spec, part in specs.items():
        title = f" with spec {spec}" if len(specs) > 1 else ""
        console.print(groups_table(part, now, wide=wide, width=console.width, title=title))
        console.print(nodes_table(part, now, wide=wide, width=console.width, title=title))
    for note in notes:
        console.print(f"[dim]{note}; age: since the figure was made", highlight=False)
    if output_path is not None:
        console.print(f"[dim]wrote {output_path}", highlight=False)


def registry_snapshot(url: str, token: str | None = None) -> Snapshot:
    """The registry's picture of the network, or a one-line error."""
    from mycelium_p2p import snapshot
    from mycelium_p2p.registry_client import RegistryClient, RegistryError, RegistryUnavailable

    try:
        with RegistryClient(url, token=token, retries=1, timeout=5.0) as client:
            return snapshot.from_registry(client.network(events=0))
    except (RegistryError, RegistryUnavailable) as exc:
        raise click.ClickException(f"cannot read {url}: {exc}") from exc


def gossip_snapshot(seeds: Sequence[str], token: str | None, timeout: float = 5.0) -> Snapshot:
    """The network as the nodes at ``seeds`` know it: one push-pull, as an observer."""
    from mycelium_p2p import snapshot
    from mycelium_p2p.config import GossipConfig
    from mycelium_p2p.netaddr import reachable_address
    from mycelium_p2p.observer import ObserverError, start_observer

    try:  # open without a token, else with an observer ticket from the network's registry
        observer = start_observer(
            GossipConfig.local(),
            host=reachable_address(seeds),  # the peer answers to this address, maybe on a LAN
            token=token,
            peers=list(seeds),
            prefix="status",
        )
    except ObserverError as exc:
        raise click.ClickException(str(exc)) from exc
    try:
        if not observer.join(list(seeds), timeout=timeout):
            where = ", ".join(seeds)
            raise click.ClickException(f"no answer from {where} (wrong address or secret?)")
        members = [m for m in observer.members() if m.id != observer.node_id]
        return snapshot.from_gossip(members, observer.groups())
    finally:
        observer.stop()


def _gossip_seeds(snap: Snapshot) -> list[str]:
    """Gossip addresses of a few live nodes of the registry's list."""
    return [n.gossip_address for n in snap.nodes if n.status == "alive"][:GOSSIP_SEEDS]


# ---- tables ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Column:
    """One column: its header, how a row shows in it, and when it is shown."""

    header: str
    cell: Callable[[Any], str]
    right: bool = False
    wide_only: bool = False
    drop: int = 0  # > 0: dropped (highest first) when the table is wider than the terminal


def fitted(
    title: str, columns: Sequence[Column], rows: Sequence[Any], wide: bool, width: int
) -> Table:
    """A table of ``rows`` that fits ``width`` columns of text: optional columns are dropped,
    highest ``drop`` first, rather than cutting ids; ``wide`` shows every column."""
    shown = [c for c in columns if wide or not c.wide_only]

    def build(cols: Sequence[Column]) -> Table:
        table = Table(title=title, box=box.SIMPLE_HEAD, title_justify="left", pad_edge=False)
        for c in cols:
            table.add_column(c.header, justify="right" if c.right else "left", no_wrap=True)
        for row in rows:
            table.add_row(*(c.cell(row) for c in cols))
        return table

    table = build(shown)
    measure = Console(width=10_000)
    droppable = sorted((c for c in shown if c.drop), key=lambda c: -c.drop)
    while not wide and droppable and _width(measure, table) > width:
        shown.remove(droppable.pop(0))
        table = build(shown)
    return table


def _width(console: Console, table: Table) -> int:
    return console.measure(table).maximum


def short_ids(ids: Sequence[str], least: int = 6) -> Callable[[str | None], str]:
    """The shortest prefix (at least ``least`` characters) that tells each of ``ids`` apart."""
    unique = sorted(set(ids))
    length = least
    while length < max((len(i) for i in unique), default=0) and len(
        {i[:length] for i in unique}
    ) < len(unique):
        length += 1
    return lambda value: "-" if not value else value[:length]


def age(seconds: float) -> str:
    """``12s``, ``5m``, ``3h`` or ``2d`` (never negative: clocks of two machines may differ)."""
    seconds = max(0.0, seconds)
    for unit, size in (("d", 86_400), ("h", 3_600), ("m", 60)):
        if seconds >= 2 * size:
            return f"{seconds // size:.0f}{unit}"
    return f"{seconds:.0f}s"


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def by_spec(snap: Snapshot) -> dict[str, Snapshot]:
    """The snapshot cut by model spec: only nodes of one spec ever share a group."""
    groups: dict[str, list[Any]] = {}
    nodes: dict[str, list[Any]] = {}
    for g in snap.groups:
        groups.setdefault(g.model, []).append(g)
    for n in snap.nodes:
        nodes.setdefault(n.model or "-", []).append(n)
    specs = list(dict.fromkeys([*groups, *nodes])) or ["-"]
    return {
        spec: dataclasses.replace(
            snap, groups=tuple(groups.get(spec, ())), nodes=tuple(nodes.get(spec, ()))
        )
        for spec in specs
    }


def groups_table(
    snap: Snapshot, now: float, wide: bool = False, width: int = 80, title: str = ""
) -> Table:
    """Groups: id, leader, term, round, accuracy, members, age and source of the figures."""
    ids = [n.id for n in snap.nodes] + [m for g in snap.groups for m in g.members]
    node = (lambda v: v or "-") if wide else short_ids(ids)
    columns = [
        Column("group", lambda g: g.id),
        Column("name", lambda g: g.name, wide_only=True),
        Column("leader", lambda g: node(g.leader)),
        Column("term", lambda g: str(g.term), right=True, drop=1),
        Column("round", lambda g: _fmt(g.metrics.round), right=True),
        Column("acc", lambda g: _fmt(g.metrics.accuracy), right=True),
        Column("members", lambda g: f"{len(g.members)}/{g.capacity}", right=True),
        Column("member ids", lambda g: ", ".join(g.members), wide_only=True),
        Column("age", lambda g: age(now - g.updated_at), right=True),
        Column("from", lambda g: snap.origin(g.id), drop=3),
        Column("status", lambda g: g.status, drop=2),
        Column("flower", lambda g: g.flower_address, wide_only=True),
    ]
    return fitted(f"Groups ({len(snap.groups)}){title}", columns, snap.groups, wide, width)


def nodes_table(
    snap: Snapshot, now: float, wide: bool = False, width: int = 80, title: str = ""
) -> Table:
    """Nodes: id, name, status, group, accuracy, milliseconds per probe, age and source of the
    figures."""
    node = (lambda v: v or "-") if wide else short_ids([n.id for n in snap.nodes])
    columns = [
        Column("node", lambda n: node(n.id)),
        Column("name", lambda n: n.name, drop=1),
        Column("status", lambda n: n.status),
        Column("group", lambda n: _fmt(n.group)),
        Column("acc", lambda n: _fmt(n.metrics.accuracy), right=True),
        Column("probe ms", _probe_ms, right=True, drop=3),
        Column("age", lambda n: age(now - n.last_seen) if n.last_seen else "-", right=True),
        Column("from", lambda n: snap.origin(n.id), drop=2),
        Column("gossip", lambda n: n.gossip_address, wide_only=True),
    ]
    return fitted(f"Nodes ({len(snap.nodes)}){title}", columns, snap.nodes, wide, width)


def _probe_ms(n: Any) -> str:
    probe = n.data.get("probe_ms")
    return str(probe) if isinstance(probe, int) and probe > 0 else "-"
