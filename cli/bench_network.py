"""``mycelium bench network``: a whole network in memory on a fake clock, until it is sorted."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from cli.main import bench


def memory_store(clock: Any, rng: random.Random) -> Any:
    """The registry's real store on an in-memory SQLite database, on the network's clock."""
    from bootstrap.store import RegistryStore

    store = RegistryStore(":memory:", clock=clock, rng=rng)
    store.open()
    return store


@bench.command("network")
@click.option("--nodes", type=click.IntRange(min=1), default=200, show_default=True)
@click.option("--concepts", type=click.IntRange(min=1), default=4, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option(
    "--preset",
    type=click.Choice(["lan", "local", "test"]),
    default="lan",
    show_default=True,
    help="Node settings to run with.",
)
@click.option(
    "--max-seconds",
    type=click.FloatRange(min=1),
    default=3600.0,
    show_default=True,
    help="Simulated seconds before giving up.",
)
@click.option(
    "--settle",
    type=click.FloatRange(min=0),
    default=600.0,
    show_default=True,
    help="Simulated seconds to stay pure (the steady state's registry load is measured).",
)
@click.option("--json", "json_path", type=click.Path(dir_okay=False, path_type=Path))
def bench_network(
    nodes: int,
    concepts: int,
    seed: int,
    preset: str,
    max_seconds: float,
    settle: float,
    json_path: Path | None,
) -> None:
    """N complete nodes in memory (fake learner, real logic, registry and gossip) until sorted."""
    from mycelium_p2p.node_config import NodeConfig
    from mycelium_p2p.testing import network_bench

    console = Console(stderr=True)

    def progress(net: Any) -> None:
        console.print(
            f"[dim]t={net.now:6.0f}s  purity {net.purity():.3f}  groups {len(net.groups())}",
            highlight=False,
        )

    result = network_bench.run(
        nodes,
        concepts,
        memory_store,
        seed=seed,
        config=NodeConfig.preset(preset),
        max_seconds=max_seconds,
        settle=settle,
        progress=progress if console.is_terminal else None,
    )
    table = Table(title=f"Network in memory ({nodes} nodes, {concepts} concepts, {preset} preset)")
    table.add_column("figure")
    table.add_column("value", justify="right")
    for key, value in result.items():
        table.add_row(key, "-" if value is None else str(value))
    Console().print(table)
    if json_path is not None:
        json_path.write_text(json.dumps(result, indent=2) + "\n")
