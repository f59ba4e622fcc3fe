"""``mycelium demo``: a registry, N node processes and the live viewer on this machine."""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

import click
from rich.console import Console
from rich.live import Live
from rich.table import Table

from cli.common import count
from cli.logs import configure_logging
from cli.main import main
from mycelium_p2p.testing.processes import ProcessGroup, mycelium_command

SCENARIOS = ("label-shift", "rotation", "iid", "synthetic")


def data_spec(scenario: str, nodes: int) -> str:
    """The data each demo node holds: two concepts per four nodes, so groups have room to form."""
    concepts = max(2, nodes // 2)
    return {
        "label-shift": f"digits:label-shift:{concepts}",
        "rotation": f"digits:rotation:{concepts}",
        "iid": "digits:iid",
        "synthetic": "synthetic",
    }[scenario]


@main.command()
@click.option("--nodes", type=click.IntRange(1, 32), default=4, show_default=True)
@click.option("--scenario", type=click.Choice(SCENARIOS), default="label-shift", show_default=True)
@click.option("--duration", type=click.FloatRange(min=1), default=300, show_default=True)
@click.option("--no-viz", is_flag=True, help="No viewer: print a live status table instead.")
@click.option("--headless", is_flag=True, help="Viewer without a window (records only).")
@click.option(
    "--record",
    type=click.Path(dir_okay=False, path_type=Path),
    default=Path("output/mycelium_net_demo.gif"),
    show_default=True,
    help="Animated GIF of the session (with a PNG of the last frame).",
)
@click.option("--db", type=click.Path(dir_okay=False, path_type=Path), help="Registry SQLite file.")
@click.option("--port", type=click.IntRange(0, 65535), default=8000, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option(
    "--logs",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("output/demo-logs"),
    show_default=True,
    help="Node log folder (kept after the demo).",
)
def demo(
    nodes: int,
    scenario: str,
    duration: float,
    no_viz: bool,
    headless: bool,
    record: Path,
    db: Path | None,
    port: int,
    seed: int,
    logs: Path,
) -> None:
    """Start a registry, NODES nodes (separate processes) and the live viewer; stop them all."""
    from bootstrap.server import RegistryServer
    from bootstrap.store import LivenessConfig

    configure_logging("WARNING")
    console = Console()
    if (
        not no_viz
        and not headless
        and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))
    ):
        console.print("no display found: running the viewer headless (it still records the GIF)")
        headless = True
    workdir = tempfile.TemporaryDirectory(prefix="mycelium-demo-")
    db_path = db or Path(workdir.name) / "mycelium_registry.db"
    # The local preset heartbeats every 2 s: suspect after 3 missed beats, dead after 6.
    liveness = LivenessConfig(suspect_after=6.0, dead_after=12.0, sweep_interval=1.0)
    registry = RegistryServer(db_path, port=port, liveness=liveness)
    children = ProcessGroup(log_dir=logs)  # kept: the logs are what explains a surprise
    try:
        try:
            url = registry.start()
        except (OSError, SystemExit, RuntimeError):
            console.print(f"port {port} is busy; letting the OS choose one")
            registry = RegistryServer(db_path, port=0, liveness=liveness)
            url = registry.start()
        console.print(f"registry: {url}   API docs: {url}/docs   groups: {url}/groups")
        spec = data_spec(scenario, nodes)
        for index in range(nodes):
            children.start(
                f"node-{index}",
                mycelium_command(
                    "join",
                    "--bootstrap",
                    url,
                    "--preset",
                    "local",
                    "--data",
                    spec,
                    "--node-index",
                    str(index),
                    "--num-nodes",
                    str(nodes),
                    "--seed",
                    str(seed),
                    "--name",
                    f"node-{index}",
                ),
                env={"FLWR_TELEMETRY_ENABLED": "0", "FLWR_DISABLE_UPDATE_CHECK": "1"},
            )
        console.print(f"{count(nodes, 'node')} started on {spec}; logs in {logs}/")
        _wait_for_first_node(url, children)
        if no_viz:
            _live_table(url, duration, console)
        else:
            _viewer(url, duration, record, headless, console)
        _summary(url, console)
    except KeyboardInterrupt:
        console.print("interrupted: stopping")
    finally:
        children.stop(grace=10.0)
        registry.stop()
        workdir.cleanup()
        console.print("all processes stopped")


def _live_table(url: str, duration: float, console: Console) -> None:
    """The seed's "basic demo": the registry's groups, refreshed every second."""
    from cli.status_cmds import groups_table, registry_snapshot

    def table() -> Table:
        try:
            return groups_table(registry_snapshot(url), time.time(), width=console.width)
        except click.ClickException as exc:
            return Table(title=exc.message)

    deadline = time.monotonic() + duration
    with Live(table(), console=console, refresh_per_second=1) as live:
        while time.monotonic() < deadline:
            time.sleep(1.0)
            live.update(table())
    if not console.is_terminal:  # rich ends the last frame with a newline only on a terminal
        console.line()


def _summary(url: str, console: Console) -> None:
    """One line on how the network ended, read from the registry before everything stops."""
    from cli.status_cmds import registry_snapshot

    network = registry_snapshot(url)
    groups = [g for g in network.groups if g.members]
    alive = [n for n in network.nodes if n.status == "alive"]
    sizes = ", ".join(str(len(g.members)) for g in groups)
    members = "member" if sizes == "1" else "members"
    console.print(
        f"final: {count(len(groups), 'group')} ({sizes or 'no'} {members}), "
        f"{count(len(alive), 'node')} alive"
    )


def _wait_for_first_node(url: str, children: ProcessGroup, timeout: float = 90.0) -> None:
    """Block until a node has registered; fail with its log if the nodes die first."""
    from mycelium_p2p.registry_client import RegistryClient

    deadline = time.monotonic() + timeout
    with RegistryClient(url, timeout=2.0) as client:
        while not client.peers(limit=1):
            dead = [p for p in children.processes if p.poll() is not None]
            if len(dead) == len(children.processes) or time.monotonic() > deadline:
                raise click.ClickException(
                    "the nodes did not start; last lines of a node log:\n" + children.log_tail(0)
                )
            time.sleep(0.5)


def _viewer(url: str, duration: float, record: Path, headless: bool, console: Console) -> None:
    from viz.app import run_viewer
    from viz.sources import GossipSource

    record.parent.mkdir(parents=True, exist_ok=True)
    result = run_viewer(GossipSource([], url), duration=duration, record=record, headless=headless)
    console.print(f"viewer: {result.frames} frames; GIF {result.gif}; PNG {result.png}")
