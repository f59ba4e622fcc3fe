"""``mycelium bench drift``: how fast drifted nodes recover, in memory, over many seeds."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import click
from rich.table import Table

from cli.main import bench
from cli.output import Results, json_options, progress_bar


def parse_seeds(ctx: click.Context, param: click.Parameter, value: str) -> list[int]:
    """Seeds as a range (``0-29``, both ends included), a list (``0,1,2``), or both (``0-4,9``)."""
    seeds: list[int] = []
    try:
        for part in value.split(","):
            low, dash, high = part.strip().partition("-")
            first = int(low)
            last = int(high) if dash else first
            if last < first:
                raise ValueError(part)
            seeds.extend(range(first, last + 1))
    except ValueError:
        raise click.BadParameter(
            f"{value!r}: give a range such as 0-29 or a list such as 0,1,2"
        ) from None
    return seeds


def seconds(value: float | None) -> str:
    """A recovery time for the table: "never" says more than an empty cell."""
    return "never" if value is None else f"{value:.1f}"


@bench.command("drift")
@click.option("--nodes", type=click.IntRange(min=3), default=12, show_default=True)
@click.option("--concepts", type=click.IntRange(min=2), default=3, show_default=True)
@click.option(
    "--capacity", type=click.IntRange(min=1), default=5, show_default=True, help="Group size cap."
)
@click.option(
    "--seeds",
    default="0-29",
    show_default=True,
    callback=parse_seeds,
    help="A range (0-29) or a list (0,1,2) of seeds; one network each.",
)
@click.option(
    "--drift-at",
    type=click.FloatRange(min=0),
    default=45.0,
    show_default=True,
    help="Simulated seconds before a third of the nodes switch to the next concept.",
)
@click.option(
    "--horizon",
    type=click.FloatRange(min=0.1),
    default=60.0,
    show_default=True,
    help="Simulated seconds the network runs after the drift.",
)
@click.option(
    "--val-size",
    type=click.IntRange(min=1),
    default=100,
    show_default=True,
    help="Validation samples per node (the noise of every accuracy a node measures).",
)
@click.option(
    "--threshold",
    type=click.FloatRange(min=0),
    default=9.0,
    show_default=True,
    help="Recovery slower than this (simulated seconds) counts as slow: three re-evaluations.",
)
@json_options
def bench_drift(
    nodes: int,
    concepts: int,
    capacity: int,
    seeds: list[int],
    drift_at: float,
    horizon: float,
    val_size: int,
    threshold: float,
    json_target: str | None,
    output_path: Path | None,
) -> None:
    """A third of N in-memory nodes switch concept at once: seconds until each is back in a group
    of its new concept, per seed, and a summary by whether every concept fits in one group."""
    # Not at the top: cli.bench_network imports cli.main, which imports this module.
    from cli.bench_network import memory_store
    from mycelium_p2p.testing import drift_bench

    results_to = Results.chosen(json_target, output_path)
    # Refused joins and vanished leaders are what a drift causes; the table says how it ended.
    node_log = logging.getLogger("mycelium.node")
    level = node_log.level
    node_log.setLevel(logging.ERROR)
    try:
        with progress_bar("drift") as bar:  # one step per seed
            task = bar.add_task("", total=len(seeds))

            def progress(row: dict[str, Any]) -> None:
                about = f"seed {row['seed']}: slowest {seconds(row['slowest'])}"
                bar.update(task, advance=1, description=about)

            setup = drift_bench.DriftSetup(nodes, concepts, capacity, drift_at, horizon, val_size)
            result = drift_bench.bench_drift(
                seeds, memory_store, setup, threshold, None if bar.disable else progress
            )
    finally:
        node_log.setLevel(level)
    runs = Table(
        title=f"Drift at {drift_at:g} s ({nodes} nodes, {concepts} concepts, capacity {capacity})"
    )
    for column in ("seed", "drifters", "max per concept", "slowest (s)", "others moved"):
        runs.add_column(column, justify="left" if column == "drifters" else "right")
    for row in result["runs"]:
        runs.add_row(
            str(row["seed"]),
            " ".join(str(i) for i in row["drifters"]),
            str(row["max_per_concept"]),
            seconds(row["slowest"]),
            str(row["others_moved"]),
        )
    summary = Table(title=f"Slowest recovery per seed (slow: over {threshold:g} s, or never)")
    for column in ("case", "seeds", "median (s)", "max (s)", "slow", "never"):
        summary.add_column(column, justify="left" if column == "case" else "right")
    cases = {"fits": "every concept fits", "overflows": "a concept overflows capacity"}
    for key, case in cases.items():
        figures = result["summary"][key]
        summary.add_row(
            case,
            str(figures["seeds"]),
            "-" if figures["median_slowest"] is None else f"{figures['median_slowest']:.1f}",
            "-" if figures["max_slowest"] is None else f"{figures['max_slowest']:.1f}",
            str(figures["over_threshold"]),
            str(figures["never"]),
        )
    results_to.show(runs, summary)
    results_to.emit(result)
