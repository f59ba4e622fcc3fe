"""``mycelium join``: run one node until SIGINT/SIGTERM, then leave gracefully."""

from __future__ import annotations

import gc
import logging
import os
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from cli.common import (
    REGISTRY_ENV,
    SettingsError,
    debug_option,
    fail,
    read_token,
    registry_from_env,
    token_options,
)
from cli.logs import configure_logging, log_options
from cli.main import main
from mycelium_p2p.node_config import (
    GOSSIP_FIELDS,
    PRESETS,
    SECTION_OF,
    ConfigError,
    NodeConfig,
    env_name,
    load_config,
)

#: Settings that have a flag of ``join`` (the others: environment or TOML file).
FLAGGED = {
    "peers", "registry_url", "data", "model", "gossip_port", "flower_port", "name", "token",
    "node_address", "bind_host", "node_index", "num_nodes", "seed", "strategy", "policy",
    "group_capacity", "state_dir", "task", "task_options",
}  # fmt: skip


def setting(*decls: str, name: str, help: str, **kwargs: Any) -> Callable[[Any], Any]:
    """A flag of the node setting ``name``, its environment variable shown in ``--help``."""
    return click.option(*decls, help=f"{help}  [env var: {env_name(name)}]", **kwargs)


def _epilog() -> str:
    others = ", ".join(env_name(n) for n in SECTION_OF if n not in FLAGGED)
    gossip = ", ".join(sorted(GOSSIP_FIELDS))
    return (
        "Every setting has one name: a key of the TOML file (--config) and MYCELIUM_<NAME> in "
        "the environment. Flags win over the environment, which wins over the file, which wins "
        "over the preset. Without --preset, nodes whose peers and registry are all on this "
        "machine take the local preset, others the lan preset.\n\n"
        f"Settings without a flag: {others}; gossip settings ([gossip] in the file, "
        f"MYCELIUM_GOSSIP_<NAME>): {gossip}. Units and ranges: mycelium_p2p/node_config.py."
    )


@main.command(epilog=_epilog())
@setting(
    "--peer", "peers", name="peers", multiple=True, metavar="HOST:PORT",
    help="Gossip address of any node (the variable takes commas).",
)  # fmt: skip
@setting(
    "--bootstrap", "registry_url", name="registry_url", metavar="URL",
    help="Registry URL (asks it for peers).",
)  # fmt: skip
@setting(
    "--data", name="data",
    help="Data spec: synthetic | digits[:iid|:label-shift:K|:rotation:K] | npz:PATH.",
)  # fmt: skip
@setting("--model", name="model", type=click.Choice(["mlp", "cnn"]), help="Model family.")
@setting(
    "--gossip-port", name="gossip_port", type=click.IntRange(0, 65535),
    help="Gossip port (0: OS picks).",
)  # fmt: skip
@setting(
    "--flower-port", name="flower_port", type=click.IntRange(0, 65535),
    help="Flower port when leading (0: OS picks).",
)  # fmt: skip
@setting("--name", name="name", help="Human-readable node name.")
@setting(
    "--state-dir", name="state_dir", type=click.Path(file_okay=False), metavar="DIR",
    help="Folder that keeps this node's id (and, with a token, its keys and credential) across "
    "restarts; one running node per folder  [default with a token: $XDG_STATE_HOME/mycelium/NAME, "
    "else ~/.local/state/mycelium/NAME]",
)  # fmt: skip
@click.option(
    "--config",
    "config_file",
    type=click.Path(dir_okay=False),
    envvar="MYCELIUM_CONFIG",
    show_envvar=True,
    help="TOML settings file.",
)
@click.option(
    "--preset",
    type=click.Choice(PRESETS),
    default=None,
    envvar="MYCELIUM_PRESET",
    show_envvar=True,
    help="Defaults to start from  [default: local when every peer and registry is on this "
    "machine, else lan]",
)
@token_options("Admission token: enrols this node with the registry once.")
@setting("--node-address", name="node_address", help="Host other machines use to reach this node.")
@setting("--bind-host", name="bind_host", help="Interface to bind (default 0.0.0.0).")
@setting(
    "--node-index", name="node_index", type=click.IntRange(min=0),
    help="Which data shard this node holds.",
)  # fmt: skip
@setting(
    "--num-nodes", name="num_nodes", type=click.IntRange(min=1),
    help="How many shards the data is cut into.",
)  # fmt: skip
@setting("--seed", name="seed", type=int, help="Seed of the data partition.")
@setting("--strategy", name="strategy", help="Aggregation strategy for groups this node leads.")
@setting(
    "--policy", name="policy", type=click.Choice(["probe", "reported"]), help="Group choice rule."
)
@setting(
    "--capacity", "group_capacity", name="group_capacity", type=click.IntRange(min=1),
    help="Capacity of founded groups.",
)  # fmt: skip
@setting(
    "--task", name="task", metavar="MODULE:ATTR",
    help="Your own model and data instead of --data/--model: a factory returning a task or a "
    "Flower NumPyClient (module:attribute or path/to/file.py:attribute).",
)  # fmt: skip
@setting(
    "--task-option", "task_options", name="task_options", multiple=True, metavar="KEY=VALUE",
    callback=lambda _ctx, _param, values: task_options(values),
    help="Keyword argument of the task's factory (repeatable; values are strings; the variable "
    "takes commas).",
)  # fmt: skip
@log_options("INFO")
@debug_option()
@click.pass_context
def join(
    ctx: click.Context,
    config_file: str | None,
    preset: str | None,
    token_file: Path | None,
    log_level: str,
    log_format: str,
    debug: bool,
    **flags: Any,
) -> None:
    """Join a Mycelium network and train in the group that serves this node's data best."""
    configure_logging(log_level, log_format)
    if flags["task"] and (flags["data"] or flags["model"]):
        raise click.UsageError("give --task, or --data and --model, not both")
    flags["token"] = read_token(ctx, flags["token"], token_file)
    env = dict(os.environ)
    alias = registry_from_env(env)
    if alias:
        env[REGISTRY_ENV] = alias
    try:
        config = load_config(flags, config_file, env=env, preset=preset)
    except ConfigError as exc:
        raise SettingsError(str(exc)) from exc
    chosen_dir = config.network.state_dir  # given by the user (else the default below, if any)
    if not config.network.peers and not config.network.registry_url:
        raise click.UsageError("give --peer HOST:PORT (any node) or --bootstrap URL (the registry)")
    from mycelium_p2p.gossip.messages import check_address

    for peer in config.network.peers:
        try:
            check_address(peer, "--peer")
        except ValueError as exc:
            raise click.UsageError(str(exc)) from exc
    check_ports(config)  # before the slow imports below: a busy port is said at once
    node_id = claim_state_dir(ctx, chosen_dir, with_token=bool(config.network.token))
    if config.network.token and not chosen_dir:
        config = config.replace(state_dir=claim_default_state_dir(ctx, config.network.name))
    from mycelium_p2p.learning.data import DataSpecError
    from mycelium_p2p.learning.task import TaskError
    from mycelium_p2p.node import Node

    try:
        node = Node(config, node_id=node_id)
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
    start(node)
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


def task_option_flag(help: str) -> Callable[[Any], Any]:
    """``--task-option KEY=VALUE`` (repeatable) as the factory's keyword arguments, in
    ``options``: for the commands that run a task once (``task check``, ``bench rounds``)."""
    return click.option(
        "--task-option",
        "options",
        multiple=True,
        metavar="KEY=VALUE",
        callback=lambda _ctx, _param, values: task_options(values),
        help=help,
    )


def claim_state_dir(ctx: click.Context, folder: str | None, *, with_token: bool) -> str | None:
    """Lock the state folder the user gave (held until the command ends) and return the id kept
    there; None without a folder, or with a token (the node's keystore in that folder holds its
    identity, id included)."""
    if not folder:
        return None
    from mycelium_p2p.node.kept_id import StateDirError, claim

    try:
        node_id, lock = claim(Path(folder), keep_id=not with_token)
    except StateDirError as exc:
        fail(f"--state-dir: {exc}")
    ctx.call_on_close(lock.close)
    return node_id


def claim_default_state_dir(ctx: click.Context, name: str | None) -> str | None:
    """Lock the default state folder of a node called ``name`` and return it; None (an identity
    that lasts until the node stops) when another running node holds it: two nodes started
    without ``--name`` on one machine must not share one identity."""
    from mycelium_p2p.keystore import default_state_dir
    from mycelium_p2p.node.kept_id import StateDirError, claim

    folder = default_state_dir(name)
    try:
        _, lock = claim(folder, keep_id=False)
    except StateDirError as exc:
        logging.getLogger("mycelium.node").warning(
            "%s; this node's identity lasts until it stops (give --name or --state-dir to keep "
            "one)",
            exc,
        )
        return None
    ctx.call_on_close(lock.close)
    return str(folder)


def check_ports(config: NodeConfig) -> None:
    """Both listening ports free on the bind host, before anything starts (else one line).

    The Flower port is used only once the node leads a group, maybe hours later; finding it
    busy then would cost a group its leader.
    """
    from mycelium_p2p.netaddr import bind_problem

    net = config.network
    if net.gossip_port and net.gossip_port == net.flower_port:
        raise SettingsError(f"--gossip-port and --flower-port are both {net.gossip_port}")
    for flag, port in (("--gossip-port", net.gossip_port), ("--flower-port", net.flower_port)):
        problem = bind_problem(net.bind_host, port)
        if problem is None:
            continue
        if port:
            fail(
                f"{flag} {port}: cannot listen on {net.bind_host}:{port} ({problem}); "
                "choose another port, or 0 for any free one"
            )
        fail(f"--bind-host {net.bind_host}: cannot listen there ({problem})")


def start(node: Any) -> None:
    """``node.start()``; a port taken between the check and the bind is one line too."""
    import zmq

    try:
        node.start()
    except zmq.ZMQError as exc:
        net = node.config.network
        fail(f"cannot bind gossip at {net.bind_host}:{net.gossip_port}: {exc.strerror}")


def _stranded(node: Any) -> bool:
    """True if the node knows no other live peer and no registry URL."""
    from mycelium_p2p import view

    if node.config.network.registry_url or node.gossip.registry_url:
        return False
    return not (view.live_ids(node.gossip.members()) - {node.id})
