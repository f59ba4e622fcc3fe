"""The node's one configuration object, its presets, and where settings come from.

Field names follow the original prototype where one existed (``registry_url``, ``node_address``,
``heartbeat_interval``, ``group_evaluation_interval``); gossip timing lives in the nested
:class:`~mycelium_p2p.config.GossipConfig`.

Settings are taken from command-line flags, then a TOML file, then ``MYCELIUM_*`` environment
variables, then the preset: the first source that sets a field wins.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from mycelium_p2p.config import GossipConfig
from mycelium_p2p.netaddr import host_of, reachable_address

PRESETS = ("lan", "local", "test")


class ConfigError(ValueError):
    """A setting is unknown or has a value of the wrong kind."""


@dataclass(frozen=True)
class NodeConfig:
    """Everything a node needs to know, with defaults for a LAN.

    Attributes
    ----------
    registry_url
        Base URL of the bootstrap registry (default: None: learned from a peer by gossip).
    peers
        ``host:port`` gossip addresses to join through (default: none: ask the registry).
    node_address
        Host (or ``host:port``) that other machines use to reach this node's gossip and Flower
        endpoints (default: empty: a specific ``bind_host``, else the local address of the route
        to the first peer or the registry, else ``127.0.0.1``; see :meth:`resolved`).
    bind_host
        Interface the node's sockets bind to (default: ``0.0.0.0``, every interface).
    gossip_port, flower_port
        Ports for the gossip ROUTER and the leader's Flower server (default: 0: chosen by the OS).
    name
        Human-readable node name (default: derived from the node id).
    token
        The network secret: registry bearer token and gossip CURVE key (default: None: open).
    heartbeat_interval
        Seconds between registry heartbeats (default: 30). Lower finds dead nodes sooner in the
        registry and costs one request per node per interval.
    group_evaluation_interval
        Seconds between re-evaluations of the group choice (default: 60). Each one probes every
        candidate group's model, so lower adapts faster at the cost of model transfers.
    group_capacity
        Capacity of a group this node founds (default: 5, as in the original prototype).
    switch_threshold
        Relative accuracy gain a move needs (default: 0.05, the prototype's 5%); a move also needs
        ``switch_samples`` more correct validation samples so that noise does not move nodes.
    switch_samples, merge_samples, found_samples
        Noise floors counted in validation samples (defaults: 3, 2, 4; see
        ``docs/experiments.md`` for the measurement behind them).
    policy
        ``probe`` (evaluate candidate models on own data; default) or ``reported`` (the
        prototype's rule: trust the accuracy groups report).
    strategy
        Flower aggregation strategy of groups this node leads (default: ``median``: as accurate
        as FedAvg on clean data and robust to one poisoning member of five; see
        ``docs/security.md``).
    model
        Model family: ``mlp`` or ``cnn`` (default: ``mlp``).
    data
        Data spec, see ``mycelium_p2p.learning.data`` (default: ``synthetic``).
    node_index, num_nodes, seed
        Which shard of a partitioned data spec this node holds (defaults: 0, 1, 0).
    local_epochs, batch_size, learning_rate
        Local training per Flower round (defaults: 2, 32, 0.003).
    round_timeout
        Seconds a Flower round waits for stragglers (default: 30).
    round_pause
        Seconds a leader waits between rounds (default: 1.0); frees the CPU for the others.
    leave_timeout
        Seconds a graceful leave may take before the node just stops (default: 5).
    gossip
        Gossip timing and caps (default: ``GossipConfig.lan()``).
    """

    registry_url: str | None = None
    peers: tuple[str, ...] = ()
    node_address: str = ""
    bind_host: str = "0.0.0.0"
    gossip_port: int = 0
    flower_port: int = 0
    name: str | None = None
    token: str | None = None
    heartbeat_interval: float = 30.0
    group_evaluation_interval: float = 60.0
    group_capacity: int = 5
    switch_threshold: float = 0.05
    switch_samples: int = 3
    merge_samples: int = 2
    found_samples: int = 4
    policy: str = "probe"
    strategy: str = "median"
    model: str = "mlp"
    data: str = "synthetic"
    node_index: int = 0
    num_nodes: int = 1
    seed: int = 0
    local_epochs: int = 2
    batch_size: int = 32
    learning_rate: float = 3e-3
    round_timeout: float = 30.0
    round_pause: float = 1.0
    leave_timeout: float = 5.0
    gossip: GossipConfig = field(default_factory=GossipConfig.lan)

    @classmethod
    def lan(cls) -> NodeConfig:
        """Defaults for machines on a LAN."""
        return cls()

    @classmethod
    def local(cls) -> NodeConfig:
        """Several nodes on one machine: loopback only, short intervals, a visible demo."""
        return cls(
            bind_host="127.0.0.1",
            heartbeat_interval=2.0,
            group_evaluation_interval=8.0,
            round_timeout=10.0,
            round_pause=0.5,
            gossip=GossipConfig.local(),
        )

    @classmethod
    def test(cls) -> NodeConfig:
        """Tests and experiments: everything as fast as one machine allows."""
        return cls(
            bind_host="127.0.0.1",
            heartbeat_interval=1.0,
            group_evaluation_interval=3.0,
            round_timeout=5.0,
            round_pause=0.2,
            leave_timeout=3.0,
            gossip=GossipConfig.test(),
        )

    @classmethod
    def preset(cls, name: str) -> NodeConfig:
        """The preset called ``name`` (one of :data:`PRESETS`)."""
        if name not in PRESETS:
            raise ConfigError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}")
        return getattr(cls, name)()

    def resolved(self) -> NodeConfig:
        """This config with :attr:`node_address` filled in when it was left empty."""
        if self.node_address:
            return self
        targets = [*self.peers, *([self.registry_url] if self.registry_url else [])]
        return replace(self, node_address=reachable_address(targets, self.bind_host))

    def advertised_host(self) -> str:
        """The host part of :attr:`node_address` (resolved as :meth:`resolved` does)."""
        return host_of(self.resolved().node_address)


_SCALAR_FIELDS = {f.name: f for f in fields(NodeConfig) if f.name != "gossip"}


def _coerce(name: str, value: Any) -> Any:
    """Convert a value from TOML or the environment to the field's type, or explain why not."""
    kind = str(_SCALAR_FIELDS[name].type)
    try:
        if kind.startswith("tuple"):
            if isinstance(value, str):
                return tuple(v.strip() for v in value.split(",") if v.strip())
            return tuple(str(v) for v in value)
        if value is None:
            return None
        if kind.startswith("int"):
            return int(value)
        if kind.startswith("float"):
            return float(value)
        return str(value)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"setting {name!r}: cannot use {value!r} ({kind})") from exc


def _gossip_overrides(base: GossipConfig, values: Mapping[str, Any], origin: str) -> GossipConfig:
    known = {f.name: f for f in dataclasses.fields(base)}
    changes: dict[str, Any] = {}
    for key, value in values.items():
        if key not in known:
            raise ConfigError(f"{origin}: unknown gossip setting {key!r}")
        current = getattr(base, key)
        changes[key] = type(current)(value) if current is not None else value
    return replace(base, **changes)


def load_config(
    flags: Mapping[str, Any] | None = None,
    toml_path: str | Path | None = None,
    env: Mapping[str, str] | None = None,
    preset: str = "lan",
) -> NodeConfig:
    """Build a :class:`NodeConfig` from flags, a TOML file and ``MYCELIUM_*`` variables.

    Parameters
    ----------
    flags
        Values given on the command line; ``None`` values count as unset.
    toml_path
        A TOML file with top-level node settings and an optional ``[gossip]`` table.
    env
        The environment (default: ``os.environ``); ``MYCELIUM_HEARTBEAT_INTERVAL=5`` sets
        ``heartbeat_interval``.
    preset
        The preset whose values fill what no source sets (default: ``lan``).
    """
    env = os.environ if env is None else env
    settings: dict[str, Any] = {}
    gossip_values: dict[str, Any] = {}
    for key, raw in env.items():
        if not key.startswith("MYCELIUM_"):
            continue
        name = key.removeprefix("MYCELIUM_").lower()
        if name in _SCALAR_FIELDS:
            settings[name] = _coerce(name, raw)
    if toml_path is not None:
        path = Path(toml_path)
        try:
            document = tomllib.loads(path.read_text())
        except FileNotFoundError as exc:
            raise ConfigError(f"config file {path} does not exist") from exc
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file {path} is not valid TOML: {exc}") from exc
        for name, value in document.items():
            if name == "gossip" and isinstance(value, dict):
                gossip_values.update(value)
            elif name in _SCALAR_FIELDS:
                settings[name] = _coerce(name, value)
            else:
                raise ConfigError(f"config file {path}: unknown setting {name!r}")
    for name, value in (flags or {}).items():
        if value is None or value == ():
            continue
        if name not in _SCALAR_FIELDS:
            raise ConfigError(f"unknown setting {name!r}")
        settings[name] = _coerce(name, value)
    config = replace(NodeConfig.preset(preset), **settings)
    if gossip_values:
        config = replace(config, gossip=_gossip_overrides(config.gossip, gossip_values, "gossip"))
    return config
