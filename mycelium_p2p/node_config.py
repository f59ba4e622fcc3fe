"""The node's one configuration object: sections, presets, validation, and where settings come from.

Settings are grouped in sections, one per concern; each part of the node receives only its own
(``node/daemon.py`` hands them out). Every setting has one name, the same everywhere: the field
name in a TOML file (top level, or in its section's table), ``MYCELIUM_<NAME>`` in the
environment (``MYCELIUM_GOSSIP_<NAME>`` for gossip), and a flag of ``mycelium join`` for the common
ones. Field names follow the original prototype where one existed (``registry_url``,
``node_address``, ``heartbeat_interval``, ``group_evaluation_interval``).

Precedence: command-line flags, then ``MYCELIUM_*`` variables, then the TOML file, then the
preset; the first source that sets a setting wins. Everything is validated once, with types and
ranges, when the configuration is built: a wrong value is a ``ConfigError`` naming the setting,
its source and what it accepts.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import tomllib
import typing
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Annotated, Any, Literal

import msgspec

from mycelium_p2p.config import GossipConfig
from mycelium_p2p.netaddr import host_of, is_loopback, reachable_address, registry_base_urls

PRESETS = ("lan", "local", "test")

log = logging.getLogger("mycelium.config")

Seconds = Annotated[float, msgspec.Meta(gt=0, le=86_400)]
Port = Annotated[int, msgspec.Meta(ge=0, le=65_535)]
Count = Annotated[int, msgspec.Meta(ge=0, le=1_000_000)]
Positive = Annotated[int, msgspec.Meta(ge=1, le=1_000_000)]
#: A task option: a Python keyword argument and its value, as text.
OptionName = Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")]
OptionValue = Annotated[str, msgspec.Meta(max_length=4096)]


class ConfigError(ValueError):
    """A setting is unknown or has a value it cannot take."""


@dataclass(frozen=True)
class NetworkSettings:
    """Where the node is and whom it talks to.

    Attributes
    ----------
    registry_url
        The registry's URL, or several separated by commas, tried in turn (default: None:
        learned from a peer by gossip).
    peers
        ``host:port`` gossip addresses to join through (default: none: ask the registry).
    node_address
        Host (or ``host:port``) other machines use to reach this node's gossip and Flower
        endpoints (default: empty: a specific ``bind_host``, else the local address of the route
        to the first peer or the registry, else ``127.0.0.1``; see :meth:`NodeConfig.resolved`).
    bind_host
        Interface the node's sockets bind to (default: ``0.0.0.0``, every interface).
    gossip_port, flower_port
        Ports of the gossip endpoint and of the leader's Flower server (default: 0: the OS picks).
    token
        The network's admission token: with it the node enrols with the registry (its own keys,
        credential, ticket and certificate) and gossip and Flower check who speaks (default:
        None: everything open, as on one development machine).
    state_dir
        Directory of the node's own keys and what the registry issued it, reused across
        restarts so the node keeps its id (default: None: kept in memory, a new identity per
        start; ``mycelium join`` defaults to ``keystore.default_state_dir(name)``).
    name
        Human-readable node name (default: derived from the node id).
    leave_timeout
        Seconds a graceful leave may take before the node just stops (default: 5).
    state_dir
        Folder where the node keeps its id, so that a restart keeps it; one running node per
        folder (default: None: a new id at every start).
    """

    registry_url: str | None = None
    peers: tuple[str, ...] = ()
    node_address: str = ""
    bind_host: str = "0.0.0.0"
    gossip_port: Port = 0
    flower_port: Port = 0
    token: str | None = None
    state_dir: str | None = None
    name: str | None = None
    leave_timeout: Seconds = 5.0
    state_dir: str | None = None


@dataclass(frozen=True)
class RegistrySettings:
    """How the node keeps the registry informed.

    Attributes
    ----------
    heartbeat_interval
        Seconds between registry heartbeats (default: 30). Lower finds dead nodes sooner in the
        registry and costs one request per node per interval; round figures are reported at most
        this often too.
    """

    heartbeat_interval: Seconds = 30.0


@dataclass(frozen=True)
class ChoiceSettings:
    """How the node chooses its group (see ``policy.py``).

    Attributes
    ----------
    group_evaluation_interval
        Seconds between re-evaluations of the group choice (default: 60). Each probes candidate
        groups' models, so lower adapts faster at the cost of model transfers.
    max_probes
        Models fetched per choice at most (default: 8): half from the groups that scored best
        before, half exploring groups never probed. Bounds the transfers per re-evaluation
        however many groups the network has; fewer groups with room are all probed.
    blend_weight
        Largest share of other groups' models a leader mixes into its group's model at a
        re-evaluation (default: 0.5; 0 turns it off). Only groups that score about as well on
        the leader's data as its own are mixed in, weighted by their sizes: groups of one kind
        of data that capacity keeps apart learn as one.
    switch_threshold
        Relative accuracy gain a move needs (default: 0.05, the prototype's 5%); a move also needs
        ``switch_samples`` more correct validation samples so that noise does not move nodes.
    switch_samples, merge_samples, found_samples
        Noise floors counted in validation samples (defaults: 3, 2, 4; ``docs/experiments.md``
        has the measurement behind them).
    policy
        ``probe`` (evaluate candidate models on own data; default) or ``reported`` (the
        prototype's rule: trust the accuracy groups report).
    """

    group_evaluation_interval: Seconds = 60.0
    switch_threshold: Annotated[float, msgspec.Meta(ge=0, le=10)] = 0.05
    switch_samples: Count = 3
    merge_samples: Count = 2
    found_samples: Count = 4
    max_probes: Positive = 8
    blend_weight: Annotated[float, msgspec.Meta(ge=0, le=0.9)] = 0.5
    policy: Literal["probe", "reported"] = "probe"


@dataclass(frozen=True)
class GroupSettings:
    """How a group this node leads runs.

    Attributes
    ----------
    group_capacity
        Capacity of a group this node founds (default: 5, as in the original prototype).
    strategy
        Flower aggregation strategy (default: ``median``: as accurate as FedAvg on clean data
        and robust to one poisoning member of five; see ``docs/security.md``).
    round_timeout
        Seconds a Flower round waits for stragglers (default: 30).
    round_pause
        Seconds between rounds (default: 1.0); frees the CPU for the others.
    record_interval
        Seconds between two gossiped records of the group's round figures (default: 5). Every
        record reaches every node, so gossip traffic grows with groups / this interval; a change
        of members, term or leader is gossiped at once whatever it says.
    """

    group_capacity: Annotated[int, msgspec.Meta(ge=1, le=10_000)] = 5
    strategy: str = "median"
    round_timeout: Seconds = 30.0
    round_pause: Annotated[float, msgspec.Meta(ge=0, le=3_600)] = 1.0
    record_interval: Annotated[float, msgspec.Meta(ge=0, le=3_600)] = 5.0


@dataclass(frozen=True)
class LearningSettings:
    """What the node learns and how it trains.

    Attributes
    ----------
    task
        The user's task, ``module:attribute`` or ``path/to/file.py:attribute``: a factory that
        returns a task or a Flower ``NumPyClient`` (see ``docs/tasks.md``); it loads its own
        data, so ``model`` and ``data`` are not used (default: empty: the built-in task of
        ``model`` on ``data``).
    task_options
        Keyword arguments of the task's factory, all strings (default: none).
    model
        Model family: ``mlp`` or ``cnn`` (default: ``mlp``).
    data
        Data spec, see ``mycelium_p2p.learning.data`` (default: ``synthetic``).
    node_index, num_nodes, seed
        Which shard of a partitioned data spec this node holds (defaults: 0, 1, 0).
    local_epochs, batch_size, learning_rate
        Local training per Flower round (defaults: 2, 32, 0.003).
    """

    task: Annotated[str, msgspec.Meta(max_length=4096)] = ""
    task_options: dict[OptionName, OptionValue] = field(default_factory=dict)
    model: Literal["mlp", "cnn"] = "mlp"
    data: str = "synthetic"
    node_index: Count = 0
    num_nodes: Positive = 1
    seed: int = 0
    local_epochs: Positive = 2
    batch_size: Positive = 32
    learning_rate: Annotated[float, msgspec.Meta(gt=0, le=10)] = 3e-3


SECTIONS: dict[str, type] = {
    "network": NetworkSettings,
    "registry": RegistrySettings,
    "choice": ChoiceSettings,
    "group": GroupSettings,
    "learning": LearningSettings,
}
#: The section of every node setting (names are unique across sections).
SECTION_OF: dict[str, str] = {f.name: s for s, cls in SECTIONS.items() for f in fields(cls)}
GOSSIP_FIELDS: frozenset[str] = frozenset(f.name for f in fields(GossipConfig))


def env_name(setting: str) -> str:
    """The environment variable of a setting (``gossip.x`` is ``MYCELIUM_GOSSIP_X``)."""
    return "MYCELIUM_" + setting.replace(".", "_").upper()


@dataclass(frozen=True)
class NodeConfig:
    """Everything a node needs to know, in sections, with defaults for a LAN."""

    network: NetworkSettings = field(default_factory=NetworkSettings)
    registry: RegistrySettings = field(default_factory=RegistrySettings)
    choice: ChoiceSettings = field(default_factory=ChoiceSettings)
    group: GroupSettings = field(default_factory=GroupSettings)
    learning: LearningSettings = field(default_factory=LearningSettings)
    gossip: GossipConfig = field(default_factory=GossipConfig.lan)

    # ------------------------------------------------------------------ presets

    @classmethod
    def lan(cls) -> NodeConfig:
        """Defaults for machines on a LAN."""
        return cls()

    @classmethod
    def local(cls) -> NodeConfig:
        """Several nodes on one machine: loopback only, short intervals, a visible demo."""
        return (
            cls()
            .replace(
                bind_host="127.0.0.1",
                heartbeat_interval=2.0,
                group_evaluation_interval=5.0,  # a wrong first join is undone within ~10 s
                round_timeout=10.0,
                round_pause=0.5,
            )
            .with_gossip(GossipConfig.local())
        )

    @classmethod
    def test(cls) -> NodeConfig:
        """Tests and experiments: everything as fast as one machine allows."""
        return (
            cls()
            .replace(
                bind_host="127.0.0.1",
                heartbeat_interval=1.0,
                group_evaluation_interval=3.0,
                round_timeout=5.0,
                round_pause=0.2,
                leave_timeout=3.0,
            )
            .with_gossip(GossipConfig.test())
        )

    @classmethod
    def preset(cls, name: str) -> NodeConfig:
        """The preset called ``name`` (one of :data:`PRESETS`)."""
        if name not in PRESETS:
            raise ConfigError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}")
        return getattr(cls, name)()  # type: ignore[no-any-return]

    # ------------------------------------------------------------------ changing

    def replace(self, **settings: Any) -> NodeConfig:
        """A copy with some node settings changed, by name, validated (``ConfigError``)."""
        by_section: dict[str, dict[str, Any]] = {}
        for name, value in settings.items():
            section = SECTION_OF.get(name)
            if section is None:
                raise ConfigError(f"unknown setting {name!r}")
            by_section.setdefault(section, {})[name] = value
        changes = {
            section: _validated(
                SECTIONS[section], {**dataclasses.asdict(getattr(self, section)), **values}
            )
            for section, values in by_section.items()
        }
        return replace(self, **changes)

    def with_gossip(self, gossip: GossipConfig) -> NodeConfig:
        return replace(self, gossip=gossip)

    def settings(self) -> dict[str, Any]:
        """Every node setting by name (gossip's under ``gossip.NAME``)."""
        out: dict[str, Any] = {}
        for section in SECTIONS:
            out.update(dataclasses.asdict(getattr(self, section)))
        out.update({f"gossip.{k}": v for k, v in dataclasses.asdict(self.gossip).items()})
        return out

    # ------------------------------------------------------------------ addresses

    def resolved(self) -> NodeConfig:
        """This config with ``node_address`` filled in when it was left empty."""
        net = self.network
        if net.node_address:
            return self
        targets = [*net.peers, *registry_urls(net.registry_url)]
        return self.replace(node_address=reachable_address(targets, net.bind_host))

    def advertised_host(self) -> str:
        """The host part of ``node_address`` (resolved as :meth:`resolved` does)."""
        return host_of(self.resolved().network.node_address)

    def on_loopback(self) -> bool:
        """Whether every peer and registry named is on this machine (and at least one is)."""
        net = self.network
        hosts = [host_of(p) for p in net.peers] + [
            host_of(u) for u in registry_urls(net.registry_url)
        ]
        return bool(hosts) and all(is_loopback(h) for h in hosts)


def registry_urls(value: str | None) -> list[str]:
    """The registry URLs of a ``registry_url`` setting (comma-separated)."""
    return [u.strip() for u in (value or "").split(",") if u.strip()]


def _validated(cls: type, values: Mapping[str, Any]) -> Any:
    """A section from ``values``, converted and checked against its types and ranges."""
    try:
        return msgspec.convert(dict(values), cls, strict=False)
    except msgspec.ValidationError as exc:
        what, _, where = str(exc).partition(" - at ")
        name = where.rpartition("`$.")[2].rstrip("`").split("[", 1)[0]
        if where.startswith("`key`"):  # a bad key of a table setting (task_options)
            raise ConfigError(f"setting {name}: bad key: {what}") from exc
        raise ConfigError(f"setting {name}: {_plain(what, cls, name, values.get(name))}") from exc


_KINDS = {"`float`": "a number", "`int`": "a whole number", "`str`": "text", "`bool`": "a boolean"}


def _plain(what: str, cls: type, name: str, value: Any) -> str:
    """msgspec's message in words a user of the command line reads: what was expected and got."""
    if what.startswith("Invalid enum value"):
        hint = typing.get_type_hints(cls).get(name)
        return f"got {value!r}; choose one of {', '.join(map(str, typing.get_args(hint)))}"
    if not what.startswith("Expected "):
        return what
    expected = what.removeprefix("Expected ").split(", got ", 1)[0]
    for kind, words in _KINDS.items():
        expected = expected.replace(kind, words)
    return f"expected {expected}, got {value!r}"


def _gossip(
    base: GossipConfig, values: Mapping[str, Any], origins: Mapping[str, str]
) -> GossipConfig:
    changes: dict[str, Any] = {}
    for key, value in values.items():
        kind = type(getattr(base, key))
        try:
            changes[key] = kind(value)
        except (TypeError, ValueError):
            raise ConfigError(
                f"setting gossip.{key} ({origins[key]}): expected a number, got {value!r}"
            ) from None
    try:
        return replace(base, **changes)
    except ValueError as exc:
        sources = ", ".join(sorted(set(origins[k] for k in values)))
        raise ConfigError(f"gossip settings ({sources}): {exc}") from None


def load_config(
    flags: Mapping[str, Any] | None = None,
    toml_path: str | Path | None = None,
    env: Mapping[str, str] | None = None,
    preset: str | None = "lan",
) -> NodeConfig:
    """Build a :class:`NodeConfig` from flags, ``MYCELIUM_*`` variables, a TOML file and a preset.

    Parameters
    ----------
    flags
        Values given on the command line; ``None`` and ``()`` count as unset.
    toml_path
        A TOML file: node settings at the top level or in their section's table
        (``[network]``, ``[registry]``, ``[choice]``, ``[group]``, ``[learning]``), gossip
        settings in ``[gossip]``.
    env
        The environment (default: ``os.environ``): ``MYCELIUM_HEARTBEAT_INTERVAL=5`` sets
        ``heartbeat_interval``, ``MYCELIUM_GOSSIP_PROBE_INTERVAL=2`` sets ``gossip.probe_interval``.
    preset
        The preset whose values fill what no source sets (default: ``lan``). None picks ``local``
        when every peer and registry named is on this machine, else ``lan``.

    Raises
    ------
    ConfigError
        An unknown setting, a value of the wrong type or out of range, a missing or broken file.
    """
    env = os.environ if env is None else env
    values: dict[str, Any] = {}
    gossip: dict[str, Any] = {}
    origins: dict[str, str] = {}

    def put(name: str, value: Any, origin: str) -> None:
        target = gossip if name.startswith("gossip.") else values
        key = name.removeprefix("gossip.")
        if key in target:
            return  # a source of higher precedence set it already
        target[key] = value
        origins[key] = origin

    for name, value in (flags or {}).items():
        if value is None or value == ():
            continue
        if name not in SECTION_OF:
            raise ConfigError(f"unknown setting {name!r}")
        put(name, value, "command line")
    for key, raw in env.items():
        if not key.startswith("MYCELIUM_"):
            continue
        name = key.removeprefix("MYCELIUM_").lower()
        if name in SECTION_OF:
            put(name, _list(name, raw), f"environment {key}")
        elif name.startswith("gossip_") and name.removeprefix("gossip_") in GOSSIP_FIELDS:
            put("gossip." + name.removeprefix("gossip_"), raw, f"environment {key}")
    if toml_path is not None:
        for name, value in _read_toml(Path(toml_path)).items():
            put(name, value, f"config file {toml_path}")
    if values.get("registry_url"):
        try:  # ``host:port`` or ``http://host:port/docs`` as typed: the registry's base URL
            values["registry_url"] = registry_base_urls(str(values["registry_url"]))
        except ValueError as exc:
            origin = origins["registry_url"]
            raise ConfigError(f"setting registry_url ({origin}): {exc}") from None
    if preset is None:
        probe = NodeConfig().replace(**{k: v for k, v in values.items() if k in _ADDRESSING})
        preset = "local" if probe.on_loopback() else "lan"
        log.info(
            "settings: the %s preset (%s; --preset chooses another)",
            preset,
            "every peer and registry is on this machine"
            if preset == "local"
            else "a peer or registry on another machine, or none named",
        )
    base = NodeConfig.preset(preset)
    try:
        config = base.replace(**values)
    except ConfigError as exc:
        raise _with_origin(exc, origins) from None
    if gossip:
        config = config.with_gossip(_gossip(config.gossip, gossip, origins))
    return config


_ADDRESSING = ("peers", "registry_url", "bind_host")


def _with_origin(exc: ConfigError, origins: Mapping[str, str]) -> ConfigError:
    """Name where the offending value came from in the message."""
    text = str(exc)
    for name, origin in origins.items():
        if text.startswith(f"setting {name}:"):
            return ConfigError(text.replace(f"setting {name}:", f"setting {name} ({origin}):", 1))
    return exc


def _list(name: str, raw: str) -> Any:
    """Environment values are text; a list setting takes commas (task options ``k=v,k2=v2``)."""
    if name == "peers":
        return tuple(v.strip() for v in raw.split(",") if v.strip())
    if name == "task_options":
        return parse_options(v for v in raw.split(",") if v.strip())
    return raw


def parse_options(pairs: Iterable[str]) -> dict[str, str]:
    """``{"key": "value"}`` of ``key=value`` texts (ConfigError for one without ``=``)."""
    options: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"setting task_options: expected KEY=VALUE, got {pair!r}")
        options[key.strip()] = value
    return options


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        document = tomllib.loads(path.read_text())
    except FileNotFoundError as exc:
        raise ConfigError(f"config file {path} does not exist") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from exc
    out: dict[str, Any] = {}
    for name, value in document.items():
        if name == "gossip" and isinstance(value, dict):
            for key, v in value.items():
                if key not in GOSSIP_FIELDS:
                    raise ConfigError(f"config file {path}: unknown gossip setting {key!r}")
                out[f"gossip.{key}"] = v
        elif name in SECTIONS and isinstance(value, dict):
            for key, v in value.items():
                if SECTION_OF.get(key) != name:
                    raise ConfigError(f"config file {path}: unknown setting {key!r} in [{name}]")
                out[key] = v
        elif name in SECTION_OF:
            out[name] = tuple(value) if name == "peers" and isinstance(value, list) else value
        else:
            raise ConfigError(f"config file {path}: unknown setting {name!r}")
    return out
