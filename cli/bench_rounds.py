"""``mycelium bench rounds``: what the daemon around Flower costs, measured side by side."""

from __future__ import annotations

import itertools
import os
import resource
import statistics
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import click
from rich.table import Table

from cli.main import bench
from cli.node_cmds import task_option_flag
from cli.output import Results, json_options, steps
from mycelium_p2p.testing.processes import mycelium_command


def rss_mb(pid: int | None = None) -> float:
    """Resident memory of a process in MB (this one by default), from /proc."""
    path = Path(f"/proc/{pid or os.getpid()}/status")
    for line in path.read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def mycelium_seconds_per_round(
    datas: list[Any],
    rounds: int,
    warmup: int = 2,
    token: str | None = None,
    evaluation_interval: float = 3600.0,
) -> tuple[list[float], float]:
    """Seconds between consecutive rounds of one Mycelium group holding every node (``datas``:
    one data set for the built-in task, or one task, per node; with ``token``: enrolled nodes,
    gossip with their own keys, Flower over mutual TLS).

    Returns the per-round gaps (after ``warmup`` rounds with everyone connected) and the MB of
    memory the cluster added to this process, per node.
    """
    from bootstrap.server import cluster_registry
    from mycelium_p2p.lifecycle import Phase
    from mycelium_p2p.node_config import NodeConfig
    from mycelium_p2p.testing.local_cluster import LocalCluster

    before = rss_mb()
    config = NodeConfig.test().replace(
        group_capacity=len(datas),
        strategy="fedavg",  # the same aggregation as the plain Flower run
        round_pause=0.0,
        # No re-evaluation in the middle of the measurement (unless asked: on a loaded machine
        # nodes started together may found a group each, and only an evaluation merges them).
        group_evaluation_interval=evaluation_interval,
        token=token,
    )
    with LocalCluster(datas, config, registry=cluster_registry) as cluster:
        if not cluster.wait_until(
            lambda c: len(c.groups()) == 1 and all(n.group_id for n in c.nodes), timeout=120
        ):
            raise click.ClickException("the nodes did not form one group within 120 s")
        leader = next(n for n in cluster.nodes if n.phase is Phase.LEADER)

        def current() -> int:
            return leader.latest_round.round if leader.latest_round else 0

        connected = cluster.wait_until(
            lambda _c: leader.learning.server_clients() == len(datas), timeout=60
        )
        if not connected:
            raise click.ClickException("not every node connected to the leader within 60 s")
        first = current() + warmup
        cluster.wait_until(lambda _c: current() >= first + rounds, timeout=60 + 10 * rounds)
        stamps = [at for (r, at) in leader.round_times if first <= r <= first + rounds]
        per_node_mb = (rss_mb() - before) / len(datas)
    return [b - a for a, b in itertools.pairwise(stamps)], per_node_mb


def node_process_startup(url: str, learns: list[str]) -> tuple[float, float]:
    """Start one ``mycelium join`` process (``learns``: its ``--data`` or ``--task`` flags):
    seconds until it leads a group, and its RSS in MB."""
    from mycelium_p2p.registry_client import RegistryClient

    started = time.monotonic()
    process = subprocess.Popen(
        mycelium_command(
            "join", "--bootstrap", url, "--preset", "test", *learns, "--log-level", "WARNING"
        ),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        with RegistryClient(url) as client:
            deadline = started + 120
            while time.monotonic() < deadline:
                if any(g.leader for g in client.groups()):
                    break
                time.sleep(0.05)
        ready = time.monotonic() - started
        memory = rss_mb(process.pid)
    finally:
        process.terminate()
        process.wait(timeout=30)
    return ready, memory


@bench.command("rounds")
@click.option("--nodes", type=click.IntRange(1, 64), default=4, show_default=True)
@click.option("--rounds", type=click.IntRange(2, 500), default=20, show_default=True)
@click.option("--data", default="digits:iid", show_default=True, help="Data spec of the nodes.")
@click.option(
    "--task",
    metavar="MODULE:ATTR",
    help="Measure your own task instead (a factory returning a task or a Flower NumPyClient; "
    "every node calls it with the same --task-option values).",
)
@task_option_flag("Keyword argument of the task's factory (repeatable).")
@json_options
def bench_rounds(
    nodes: int,
    rounds: int,
    data: str,
    task: str | None,
    options: dict[str, str] | None,
    json_target: str | None,
    output_path: Path | None,
) -> None:
    """Median seconds per round: plain Flower against a Mycelium group, same nodes and task."""
    from bootstrap.server import RegistryServer
    from mycelium_p2p.learning import flower
    from mycelium_p2p.learning.train import limit_threads

    limit_threads()
    results_to = Results.chosen(json_target, output_path)
    plain_clients, initial, tasks, learns = bench_nodes(nodes, data, task, options)
    what = task or data
    with steps("rounds", 3) as step:
        step(f"plain Flower: {nodes} clients, {rounds} rounds")
        # The first rounds pay warm-up.
        plain = flower.plain_client_rounds(plain_clients, initial, rounds + 2)[2:]
        step(f"Mycelium group: {nodes} nodes, {rounds} rounds")
        ours, per_node_mb = mycelium_seconds_per_round(tasks, rounds)
        step("one node process: start-up and memory")
        with tempfile.TemporaryDirectory() as tmp:
            registry = RegistryServer(Path(tmp) / "bench.db")
            url = registry.start()
            try:
                startup_s, process_mb = node_process_startup(url, learns)
            finally:
                registry.stop()
    plain_median = statistics.median(plain)
    ours_median = statistics.median(ours)
    result = {
        "nodes": nodes,
        "rounds": rounds,
        "data": data if task is None else None,
        "task": task,
        "task_options": options or {},
        "plain_flower_s_per_round": round(plain_median, 4),
        "mycelium_s_per_round": round(ours_median, 4),
        "ratio": round(ours_median / plain_median, 3),
        "plain_flower_rounds_s": [round(x, 4) for x in plain],
        "mycelium_rounds_s": [round(x, 4) for x in ours],
        "node_process_rss_mb": round(process_mb, 1),
        "node_process_startup_s": round(startup_s, 2),
        "in_process_node_mb": round(per_node_mb, 1),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }
    table = Table(title=f"seconds per round, {nodes} nodes, {what}, median of {rounds}")
    for column in ("", "plain Flower", "Mycelium group", "ratio"):
        table.add_column(column, justify="right")
    table.add_row("s/round", f"{plain_median:.4f}", f"{ours_median:.4f}", f"{result['ratio']:.2f}")
    extra = Table(title="node footprint")
    extra.add_column("measure")
    extra.add_column("value", justify="right")
    extra.add_row("one node process: start-up to leading a group (s)", f"{startup_s:.2f}")
    extra.add_row("one node process: resident memory (MB)", f"{process_mb:.0f}")
    extra.add_row("one more node inside a shared process (MB)", f"{per_node_mb:.1f}")
    results_to.show(table, extra)
    results_to.emit(result)


def bench_nodes(
    nodes: int, data: str, task: str | None, options: dict[str, str] | None
) -> tuple[list[Any], list[Any], list[Any], list[str]]:
    """The benchmark's nodes: plain Flower clients and their initial parameters, Mycelium's
    tasks (the same built-in task or user factory, built again), and the ``join`` flags."""
    from mycelium_p2p.learning.builtin import ModelTask
    from mycelium_p2p.learning.data import load_node_data
    from mycelium_p2p.learning.flower.adapter import ClientTask, TaskClient
    from mycelium_p2p.learning.loader import load_task
    from mycelium_p2p.learning.task import GuardedTask, TaskError

    if task is None:
        datas = [load_node_data(data, i, nodes, seed=0) for i in range(nodes)]
        plain = [GuardedTask(ModelTask(d, "mlp", seed=i)) for i, d in enumerate(datas)]
        clients: list[Any] = [TaskClient(t, i) for i, t in enumerate(plain)]
        return clients, plain[0].initial_parameters(), list(datas), ["--data", data]
    try:
        plain = [load_task(task, options) for _ in range(nodes)]
        tasks: list[Any] = [load_task(task, options) for _ in range(nodes)]
    except TaskError as exc:
        raise click.ClickException(f"task {task}: {exc}") from None
    # A stock NumPyClient runs in plain Flower as it is; a task through the same adapter.
    clients = [
        t.task.client if isinstance(t.task, ClientTask) else TaskClient(t, i)
        for i, t in enumerate(plain)
    ]
    flags = ["--task", task, *(f"--task-option={k}={v}" for k, v in (options or {}).items())]
    return clients, plain[0].initial_parameters(), tasks, flags
