"""``mycelium join``: run one node until SIGINT/SIGTERM, then leave gracefully."""

from __future__ import annotations

import gc
import logging
import signal
import threading
import time
from typing import Any

import click

from cli.main import main
from mycelium_p2p.node_config import PRESETS, ConfigError, load_config


def configure_logging(level: str) -> None:
    """One line per event, with time and logger; Flower's own chatter stays at WARNING."""
    logging.basicConfig(
        level=getattr(logging, level.upper()),
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    logging.getLogger("flwr").setLevel(logging.WARNING)
    logging.getLogger("httpx").setLevel(logging.WARNING)  # a line per heartbeat otherwise


@main.command()
@click.option(
    "--peer", "peers", multiple=True, metavar="HOST:PORT", help="Gossip address of any node."
)
@click.option(
    "--bootstrap", "registry_url", metavar="URL", help="Registry URL (asks it for peers)."
)
@click.option(
    "--data", help="Data spec: synthetic | digits[:iid|:label-shift:K|:rotation:K] | npz:PATH."
)
@click.option("--model", type=click.Choice(["mlp", "cnn"]), help="Model family.")
@click.option(
    "--task",
    metavar="MODULE:ATTR",
    help="Your own model and data instead of --data/--model: a factory returning a task or a "
    "Flower NumPyClient (module:attribute or path/to/file.py:attribute).",
)
@click.option(
    "--task-option",
    "task_options",
    multiple=True,
    metavar="KEY=VALUE",
    callback=lambda _ctx, _param, values: task_options(values),
    help="Keyword argument of the task's factory (repeatable; values are strings).",
)
@click.option("--gossip-port", type=click.IntRange(0, 65535), help="Gossip port (0: OS picks).")
@click.option("--flower-port", type=click.IntRange(0, 65535), help="Flower port when leading.")
@click.option("--name", help="Human-readable node name.")
@click.option(
    "--config", "config_file", type=click.Path(dir_okay=False), help="TOML settings file."
)
@click.option("--preset", type=click.Choice(PRESETS), default=None, help="Defaults to start from.")
@click.option(
    "--token",
    envvar="MYCELIUM_TOKEN",
    help="Admission token (or MYCELIUM_TOKEN): enrols this node with the registry once.",
)
@click.option(
    "--state-dir",
    type=click.Path(file_okay=False),
    help="Directory of this node's keys and credential, kept across restarts "
    "[default: $XDG_STATE_HOME/mycelium/NAME, else ~/.local/state/mycelium/NAME].",
)
@click.option("--node-address", help="Host other machines use to reach this node.")
@click.option("--bind-host", help="Interface to bind (default 0.0.0.0).")
@click.option("--node-index", type=click.IntRange(min=0), help="Which data shard this node holds.")
@click.option(
    "--num-nodes", type=click.IntRange(min=1), help="How many shards the data is cut into."
)
@click.option("--seed", type=int, help="Seed of the data partition.")
@click.option("--strategy", help="Aggregation strategy for groups this node leads.")
@click.option("--policy", type=click.Choice(["probe", "reported"]), help="Group choice rule.")
@click.option(
    "--capacity", "group_capacity", type=click.IntRange(min=1), help="Capacity of founded groups."
)
@click.option(
    "--log-level", default="INFO", type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"])
)
def join(config_file: str | None, preset: str | None, log_level: str, **flags: Any) -> None:
    """Join a Mycelium network and train in the group that serves this node's data best."""
    import os

    from mycelium_p2p.learning.data import DataSpecError
    from mycelium_p2p.learning.task import TaskError
    from mycelium_p2p.node import Node

    configure_logging(log_level)
    if flags["task"] and (flags["data"] or flags["model"]):
        raise click.UsageError("give --task, or --data and --model, not both")
    try:
        config = load_config(
            flags, config_file, preset=preset or os.environ.get("MYCELIUM_PRESET", "lan")
        )
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from exc
    if config.network.token and not config.network.state_dir:
        from mycelium_p2p.keystore import default_state_dir

        config = config.replace(state_dir=str(default_state_dir(config.network.name)))
    if not config.network.peers and not config.network.registry_url:
        raise click.UsageError("give --peer HOST:PORT (any node) or --bootstrap URL (the registry)")
    from mycelium_p2p.gossip.messages import check_address

    for peer in config.network.peers:
        try:
            check_address(peer, "--peer")
        except ValueError as exc:
            raise click.UsageError(str(exc)) from exc
    try:
        node = Node(config)
    except TaskError as exc:
        raise click.ClickException(f"task {config.learning.task}: {exc}") from None
    except DataSpecError as exc:
        raise click.UsageError(f"--data: {exc}") from exc
    except ValueError as exc:
        raise click.UsageError(str(exc)) from exc

    done = threading.Event()

    def on_signal(signum: int, _frame: object) -> None:
        logging.getLogger("mycelium.node").info("signal %d: leaving", signum)
        done.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    node.start()
    click.echo(f"node {node.name} ({node.id}) gossip at {node.gossip.address}", err=True)
    started = time.monotonic()
    while not done.wait(0.5):
        if node.phase.value == "stopped":
            raise click.ClickException(f"node {node.name} stopped: {node.failure or 'see the log'}")
        if time.monotonic() - started > PEER_WAIT and _stranded(node):
            # Only --peer was given, nobody answered and no registry was learned: nothing
            # would ever change, so say so instead of waiting forever.
            node.stop()
            raise click.ClickException(
                f"no peer answered at {', '.join(config.network.peers)} within {PEER_WAIT:.0f}s "
                "and no registry is known; check the address or give --bootstrap URL"
            )
    node.stop()
    # The node has left. Exempt what is left from the interpreter's last collection: with torch
    # and Flower loaded it walks millions of objects, 20 s on a loaded machine (1 s frozen).
    gc.freeze()


PEER_WAIT = 10.0  # seconds a node started with only --peer waits for any peer to answer


def task_options(values: tuple[str, ...]) -> dict[str, str] | None:
    """``--task-option KEY=VALUE`` flags as a dict (None when there are none: unset)."""
    from mycelium_p2p.node_config import parse_options

    try:
        return parse_options(values) or None
    except ConfigError as exc:
        raise click.BadParameter(str(exc).removeprefix("setting task_options: ")) from None


def _stranded(node: Any) -> bool:
    """True if the node knows no other live peer and no registry URL."""
    from mycelium_p2p import view

    if node.config.network.registry_url or node.gossip.registry_url:
        return False
    return not (view.live_ids(node.gossip.members()) - {node.id})
