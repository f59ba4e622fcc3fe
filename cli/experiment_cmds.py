"""``mycelium experiment``: run the real system on partitioned data and score the grouping."""

from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Any

import click
from rich.console import Console

from cli.logs import configure_logging, interactive, log_options
from cli.main import main
from cli.output import Results, json_options, progress_bar


def _mean_test_accuracy(cluster: Any) -> float:
    scores = [node.test_accuracy() for node in cluster.nodes]
    return statistics.fmean(s if s is not None else 0.0 for s in scores)


def _record_of(node: Any) -> Any:
    """The node's view of its own group's record (None without a group)."""
    return node.gossip.groups().get(node.group_id or "")


def _min_round(cluster: Any) -> int:
    """The round of the least-advanced node's group (0 while a node has none)."""
    records = [_record_of(node) for node in cluster.nodes]
    return min((r.round if r is not None else 0 for r in records), default=0)


def run_experiment(
    *,
    scenario: str,
    nodes: int,
    concepts: int,
    policy: str,
    capacity: int,
    seed: int,
    duration: float | None,
    rounds: int | None,
    shards: str | None,
    baselines: bool,
) -> dict[str, Any]:
    """Run one experiment on the real system and return the results dictionary."""
    from bootstrap.server import cluster_registry
    from mycelium_p2p.experiment.baselines import load_scenario, load_shards, run_baselines
    from mycelium_p2p.experiment.report import build_results
    from mycelium_p2p.node_config import NodeConfig
    from mycelium_p2p.testing.local_cluster import LocalCluster

    exp = load_shards(shards, seed) if shards else load_scenario(scenario, nodes, concepts, seed)
    config = NodeConfig.test().replace(policy=policy, group_capacity=capacity, seed=seed)
    history: list[dict[str, float]] = []
    started = time.monotonic()
    budget = duration if duration is not None else 600.0
    with LocalCluster(exp.data, config, names=exp.names, registry=cluster_registry) as cluster:
        with progress_bar("experiment") as progress:
            total = rounds if rounds is not None else budget
            task = progress.add_task("starting", total=total)
            next_sample = 0.0
            while True:
                elapsed = time.monotonic() - started
                reached = _min_round(cluster)
                if elapsed >= next_sample:
                    history.append(
                        {
                            "seconds": round(elapsed, 1),
                            "mean_accuracy": round(_mean_test_accuracy(cluster), 4),
                            "groups": len(cluster.groups()),
                        }
                    )
                    next_sample = elapsed + 5.0
                groups = len(cluster.groups())
                progress.update(
                    task,
                    completed=reached if rounds is not None else elapsed,
                    description=f"round {reached}, {groups} groups, {elapsed:.0f}s",
                )
                if (rounds is not None and reached >= rounds) or elapsed >= budget:
                    break
                time.sleep(0.5)
        wall = time.monotonic() - started
        rows = []
        for index, node in enumerate(cluster.nodes):
            accuracy = node.test_accuracy()
            rows.append(
                {
                    "name": exp.names[index],
                    "shard": exp.shards[index],
                    "concept": exp.data[index].concept,
                    "group": node.group_id,
                    "accuracy": round(accuracy if accuracy is not None else 0.0, 4),
                }
            )
        records = [_record_of(node) for node in cluster.nodes]
        rounds_done = max((r.round for r in records if r is not None), default=0)
        migrations = sum(node.migrations for node in cluster.nodes)
    baseline_results = {}
    if baselines:
        if interactive():
            note = f"baselines on the same shards, {rounds_done} rounds of 2 local epochs ..."
            Console(stderr=True).print(note)
        baseline_results = run_baselines(
            exp, capacity=capacity, rounds=max(rounds_done, 1), epochs=2, seed=seed
        )
    return build_results(
        nodes=rows,
        rounds=rounds_done,
        wall_seconds=wall,
        migrations=migrations,
        policy=policy,
        baselines=baseline_results,
        scenario="shards" if shards else scenario,
        concepts=concepts,
        capacity=capacity,
        history=history,
    )


@main.command()
@click.option(
    "--scenario", type=click.Choice(["iid", "label-shift", "rotation"]), default="label-shift"
)
@click.option("--nodes", type=click.IntRange(min=1), default=16, show_default=True)
@click.option("--concepts", type=click.IntRange(min=1), default=4, show_default=True)
@click.option("--policy", type=click.Choice(["probe", "reported"]), default="probe")
@click.option("--capacity", type=click.IntRange(min=1), default=5, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--duration", type=click.FloatRange(min=1), help="Stop after this many seconds.")
@click.option("--rounds", type=click.IntRange(min=1), help="Stop when every group reached R.")
@click.option(
    "--shards", type=click.Path(file_okay=False), help="Folder of .npz shards, one per node."
)
@json_options
@click.option("--no-baselines", is_flag=True, help="Skip the three baselines.")
@log_options("WARNING")
def experiment(
    json_target: str | None,
    output_path: Path | None,
    no_baselines: bool,
    log_level: str,
    log_format: str,
    **params: Any,
) -> None:
    """Run registry, gossip and Flower for real on partitioned data; score the grouping."""
    from mycelium_p2p.learning.data import DataSpecError

    if params["duration"] is not None and params["rounds"] is not None:
        raise click.UsageError("give --duration or --rounds, not both")
    if params["duration"] is None and params["rounds"] is None:
        params["duration"] = 120.0
    results_to = Results.chosen(json_target, output_path)
    configure_logging(log_level, log_format)
    console = results_to.console
    try:
        results = run_experiment(**params, baselines=not no_baselines)
    except DataSpecError as exc:
        raise click.UsageError(str(exc)) from exc
    if not results_to.to_stdout:
        print_results(results, console)
    results_to.emit(results)


def print_results(results: dict[str, Any], console: Console) -> None:
    """Per-node rows, then the run against its baselines."""
    from rich.table import Table

    table = Table(title=f"nodes ({results['policy']} policy)")
    for column in ("name", "shard", "concept", "group", "accuracy"):
        table.add_column(column)
    for row in results["nodes"]:
        table.add_row(*(str(row[c]) for c in ("name", "shard", "concept", "group", "accuracy")))
    console.print(table)
    summary = Table(title="run")
    for column in ("mean accuracy", "purity", "groups", "migrations", "rounds", "seconds"):
        summary.add_column(column, justify="right")
    summary.add_row(
        f"{results['mean_accuracy']:.3f}",
        "-" if results["purity"] is None else f"{results['purity']:.3f}",
        str(results["groups"]),
        str(results["migrations"]),
        str(results["rounds"]),
        f"{results['wall_seconds']:.0f}",
    )
    console.print(summary)
    base = results["baselines"]
    console.print(
        "baselines (mean accuracy): "
        + ", ".join(f"{k} {'-' if v is None else f'{v:.3f}'}" for k, v in base.items())
    )
