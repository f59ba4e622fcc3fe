"""``mycelium bench network``: a whole network in memory on a fake clock, until it is sorted."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import click
from rich.table import Table

from cli.main import bench
from cli.output import Results, json_options, progress_bar


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
@click.option(
    "--max-probes",
    type=click.IntRange(min=1),
    default=None,
    help="Models a node fetches per choice at most (default: the preset's, 8).",
)
@json_options
def bench_network(
    nodes: int,
    concepts: int,
    seed: int,
    preset: str,
    max_seconds: float,
    settle: float,
    max_probes: int | None,
    json_target: str | None,
    output_path: Path | None,
) -> None:
    """N complete nodes in memory (fake learner, real logic, registry and gossip) until sorted."""
    from mycelium_p2p.node_config import NodeConfig
    from mycelium_p2p.testing import network_bench

    results_to = Results.chosen(json_target, output_path)
    with progress_bar("network") as bar:  # simulated seconds, up to --max-seconds
        task = bar.add_task("", total=max_seconds)

        def progress(net: Any) -> None:
            about = f"purity {net.purity():.3f}, {len(net.groups())} groups"
            bar.update(task, completed=min(net.now, max_seconds), description=about)

        result = network_bench.run(
            nodes,
            concepts,
            memory_store,
            seed=seed,
            config=NodeConfig.preset(preset).replace(
                **({} if max_probes is None else {"max_probes": max_probes})
            ),
            max_seconds=max_seconds,
            settle=settle,
            progress=None if bar.disable else progress,
        )
    table = Table(title=f"Network in memory ({nodes} nodes, {concepts} concepts, {preset} preset)")
    table.add_column("figure")
    table.add_column("value", justify="right")
    for key, value in result.items():
        table.add_row(key, "-" if value is None else str(value))
    results_to.show(table)
    results_to.emit(result)
