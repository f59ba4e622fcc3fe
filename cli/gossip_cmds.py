"""``mycelium bench gossip``: registers itself on the ``bench`` group of ``cli.main``."""

from __future__ import annotations

from pathlib import Path

import click
from rich.console import Console
from rich.table import Table

from cli.main import bench
from cli.output import Results, json_options, steps
from mycelium_p2p.gossip.bench import analytic_rounds, run_sim, run_zmq


def _ints(text: str) -> list[int]:
    try:
        values = [int(x) for x in text.split(",") if x.strip()]
    except ValueError as exc:
        raise click.BadParameter(f"expected comma-separated integers, got {text!r}") from exc
    if not values or any(v < 2 for v in values):
        raise click.BadParameter("each node count must be at least 2")
    return values


def _floats(text: str) -> list[float]:
    try:
        values = [float(x) for x in text.split(",") if x.strip()]
    except ValueError as exc:
        raise click.BadParameter(f"expected comma-separated numbers, got {text!r}") from exc
    if not values or any(not 0 <= v < 1 for v in values):
        raise click.BadParameter("each loss rate must be in [0, 1)")
    return values


@bench.command("gossip")
@click.option("--nodes", default="10,100,1000", show_default=True, help="Simulated node counts.")
@click.option("--loss", default="0,0.1", show_default=True, help="Frame loss rates.")
@click.option("--fanout", default=3, show_default=True, type=click.IntRange(1, 16))
@click.option(
    "--zmq-nodes",
    default=50,
    show_default=True,
    type=click.IntRange(0, 500),
    help="Nodes of the real ZeroMQ run in this process (0 skips it).",
)
@json_options
def bench_gossip(
    nodes: str,
    loss: str,
    fanout: int,
    zmq_nodes: int,
    json_target: str | None,
    output_path: Path | None,
) -> None:
    """Rounds to spread one update, failure detection time and traffic per node."""
    counts, losses = _ints(nodes), _floats(loss)
    results_to = Results.chosen(json_target, output_path)
    runs = []
    with steps("gossip", len(counts) * len(losses) + (1 if zmq_nodes else 0)) as step:
        for n in counts:
            for p in losses:
                step(f"simulating {n} nodes, loss {p:.0%}")
                runs.append(run_sim(n, p, fanout))
        if zmq_nodes:
            step(f"{zmq_nodes} nodes over ZeroMQ")
            runs.append(run_zmq(zmq_nodes, fanout))
    table = Table(title=f"Gossip spread and detection (fanout {fanout}, gossip 0.2 s, probe 1 s)")
    for col in (
        "transport",
        "N",
        "loss",
        "r50",
        "r99",
        "r100",
        "analytic r50/r99/r99.99",
        "s to 100%",
        "detect s",
        "false deaths",
        "msg/node/s",
        "B/node/s",
    ):
        table.add_column(col, justify="right")
    for r in runs:
        n = r["nodes"]
        curve = "/".join(f"{analytic_rounds(n, f):.1f}" for f in (0.5, 0.99, 0.9999))
        table.add_row(
            r["transport"],
            str(n),
            f"{r['loss']:.0%}",
            str(r["rounds_to_50"]),
            str(r["rounds_to_99"]),
            str(r["rounds_to_100"]),
            curve,
            str(r["seconds_to_100"]),
            str(r["detect_seconds"]),
            str(r["false_deaths"]),
            str(r["msgs_per_node_per_s"]),
            str(r["bytes_per_node_per_s"]),
        )
    if not results_to.to_stdout:
        Console(width=max(Console().width, 150)).print(table)  # 12 columns
    results_to.emit({"runs": runs})
