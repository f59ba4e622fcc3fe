"""Where the viewer's :class:`~viz.scene.NetworkView` snapshots come from.

Every source has ``start()``, ``view() -> NetworkView`` and ``close()``; the run loop calls
``view()`` a few times a second. Both the registry and a gossip observer give a
``mycelium_p2p.snapshot.Snapshot`` (the same rules for every reader, zombie groups left out);
``view_from_snapshot`` turns one into the viewer's picture, a pure function tested without a
network.

- :class:`RegistrySnapshotSource`: one ``GET {url}/network`` at start, then that picture.
- :class:`GossipSource`: an observer in the gossip mesh (joined through ``--peer`` or through
  the registry's ``/peers``), after one registry snapshot at start when a registry is known.
- :class:`StaticSource` and :class:`SyntheticSource`: fixed or simulated networks (tests,
  benchmarks, trying the viewer without a network).
"""

from __future__ import annotations

import contextlib
import math
import random
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from mycelium_p2p import snapshot
from mycelium_p2p.netaddr import reachable_address
from mycelium_p2p.registry_api import EventOut
from mycelium_p2p.snapshot import Snapshot
from viz.scene import GroupInfo, NetworkView, NodeInfo, ViewEvent, diff_views, stable_unit

Clock = Callable[[], float]


class SourceError(RuntimeError):
    """A source could not reach the network it should show (the message says why)."""


class Source(Protocol):
    """What the viewer needs from a data source."""

    def start(self) -> None:
        """Connect (may raise :class:`SourceError`)."""

    def view(self) -> NetworkView:
        """The current picture of the network."""

    def close(self) -> None:
        """Disconnect; safe to call twice."""


# -- parsing ---------------------------------------------------------------------------------
def _float_or_none(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def _int(value: Any, default: int = 0) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else default


def _str_or_none(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _event_text(event: EventOut, names: Mapping[str, str]) -> str:
    """A readable ticker line for a registry event."""
    data = event.data
    node = names.get(event.node, event.node) if event.node else "a node"
    group = names.get(event.group, event.group) if event.group else ""
    kind = event.kind
    if kind == "created":
        return f"group {data.get('name') or group} created by {node}"
    if kind == "migrated":
        before = data.get("from") if isinstance(data.get("from"), str) else None
        return f"{node} migrated {names.get(before, before) if before else '?'} -> {group}"
    if kind == "leader-changed":
        return f"{node} leads {group} (term {data.get('term', '?')})"
    if kind == "dissolved":
        return f"group {group} dissolved"
    return f"{node} {kind} {group}".strip()


def view_from_snapshot(
    snap: Snapshot, now: float, stats: Mapping[str, Any] | None = None
) -> NetworkView:
    """The viewer's picture of a network snapshot (from the registry or from gossip)."""
    names = {**snap.names, **{n.id: n.name for n in snap.nodes}}
    groups = tuple(
        GroupInfo(
            id=g.id,
            name=g.name or g.id,
            leader=g.leader,
            members=tuple(sorted(g.members)),
            accuracy=_float_or_none(g.metrics.accuracy),
            loss=_float_or_none(g.metrics.loss),
            round=g.metrics.round,
            term=g.term,
        )
        for g in snap.groups
    )
    nodes = tuple(
        NodeInfo(
            id=n.id,
            name=n.name or n.id,
            status=n.status,
            group=n.group,
            accuracy=_float_or_none(n.metrics.accuracy),
        )
        for n in snap.nodes
    )
    events = sorted(
        (ViewEvent(e.ts, e.kind, _event_text(e, names)) for e in snap.events),
        key=lambda e: e.time,
    )
    return NetworkView(now, nodes, groups, dict(stats or {}), tuple(events))


def _registry_call(url: str, token: str | None, call: Callable[[Any], Any]) -> Any:
    """Run ``call(client)`` on a short-lived ``RegistryClient``; failures become SourceError."""
    from mycelium_p2p.registry_client import RegistryClient

    try:
        with RegistryClient(url, token=token, timeout=5.0, retries=1) as client:
            return call(client)
    except Exception as exc:  # RegistryError, RegistryUnavailable, bad URL: all say why
        raise SourceError(f"registry {url}: {exc}") from exc


def fetch_network(url: str, token: str | None = None) -> Snapshot:
    """One ``GET {url}/network`` as a snapshot; :class:`SourceError` with the reason on failure."""
    return _registry_call(url, token, lambda c: snapshot.from_registry(c.network()))


def fetch_peers(url: str, token: str | None = None, limit: int = 5) -> list[str]:
    """Gossip addresses of a few live nodes from ``GET {url}/peers``."""
    return parse_peers(_registry_call(url, token, lambda c: c.peers(limit)))


def parse_peers(payload: Any) -> list[str]:
    """Gossip addresses from a ``/peers`` answer: a list of strings or of objects, or a wrapper."""
    if isinstance(payload, Mapping):
        payload = payload.get("peers") or payload.get("nodes") or []
    out: list[str] = []
    for item in payload if isinstance(payload, list) else []:
        if isinstance(item, str) and item:
            out.append(item)
        elif isinstance(item, Mapping):
            addr = _str_or_none(item.get("gossip_address")) or _str_or_none(item.get("address"))
            if addr:
                out.append(addr)
    return out


def message_count(stats: Mapping[str, Any]) -> int:
    """Frames (messages) in plus out from ``GossipNode.stats()``.

    Reads ``frames_in``/``frames_out``; ``msgs_*``/``messages_*`` are accepted as well.
    """
    total = 0
    for key, value in stats.items():
        k = key.lower()
        if k.startswith(("frames_", "msgs_", "messages_")) and k.endswith(("_in", "_out")):
            total += _int(value)
    return total


# -- sources ---------------------------------------------------------------------------------
class StaticSource:
    """Always the same view (its time advanced to now), e.g. for screenshots and tests."""

    def __init__(self, view: NetworkView, clock: Clock = time.time) -> None:
        self._view = view
        self._clock = clock

    def start(self) -> None:
        """Nothing to connect."""

    def view(self) -> NetworkView:
        """The fixed view, stamped with the current time."""
        v = self._view
        return NetworkView(self._clock(), v.nodes, v.groups, v.stats, v.events)

    def close(self) -> None:
        """Nothing to close."""


class RegistrySnapshotSource:
    """One ``GET {url}/network`` at :meth:`start`; :meth:`view` then shows that snapshot."""

    def __init__(self, url: str, token: str | None = None, clock: Clock = time.time) -> None:
        self.url = url
        self.token = token
        self._clock = clock
        self._view: NetworkView | None = None

    def start(self) -> None:
        """Fetch the snapshot (raises :class:`SourceError` if the registry cannot answer)."""
        now = self._clock()
        self._view = view_from_snapshot(
            fetch_network(self.url, self.token), now, {"registry": f"snapshot of {self.url}"}
        )

    def view(self) -> NetworkView:
        """The snapshot, stamped with the current time."""
        if self._view is None:
            return NetworkView(self._clock(), stats={"registry": "not fetched"})
        v = self._view
        return NetworkView(self._clock(), v.nodes, v.groups, v.stats, v.events)

    def close(self) -> None:
        """Nothing to close."""


class GossipSource:
    """The viewer as a gossip observer: it belongs to no group and only listens.

    Parameters
    ----------
    peers : list of str
        Gossip addresses (``host:port``) to join through (default: none).
    bootstrap : str or None
        Registry URL: one ``/network`` snapshot at start and, without ``peers``, ``/peers``.
    token : str or None
        Shared secret: bearer token for the registry and the gossip mesh's secret.
    host : str or None
        Interface the observer binds and advertises (default: None: the local address of the
        route to the first peer or the registry, so that peers on a LAN can answer).
    join_timeout : float
        Seconds to wait for a seed to answer the push-pull (default: 5.0).
    config : object or None
        A ``GossipConfig`` (default: ``GossipConfig.local()``).
    clock : callable
        Wall clock for view times (default: ``time.time``).
    max_events : int
        Ticker lines kept (default: 200).
    retry_every : float
        Seconds between two ``/peers`` requests while no peer is known (default: 2.0).
    """

    def __init__(
        self,
        peers: list[str] | None = None,
        bootstrap: str | None = None,
        *,
        token: str | None = None,
        host: str | None = None,
        join_timeout: float = 5.0,
        config: Any = None,
        clock: Clock = time.time,
        max_events: int = 200,
        retry_every: float = 2.0,
    ) -> None:
        if not peers and not bootstrap:
            raise ValueError("GossipSource needs peers or a bootstrap URL")
        self.peers = list(peers or [])
        self.bootstrap = bootstrap
        self.token = token
        self.host = host or reachable_address([*self.peers, *([bootstrap] if bootstrap else [])])
        self.join_timeout = join_timeout
        self.config = config
        self._clock = clock
        self._node: Any = None
        self._lock = threading.Lock()
        self._events: deque[ViewEvent] = deque(maxlen=max_events)
        self._last: NetworkView | None = None
        self._registry_state = "none (joined through a peer)"
        self._snapshot: NetworkView | None = None
        self._joined = threading.Event()
        self._closing = threading.Event()
        self._joiner: threading.Thread | None = None
        self.retry_every = retry_every
        self._rate: tuple[float, int] | None = None
        self._msgs_per_s = 0.0

    def start(self) -> None:
        """Snapshot the registry (if any), start the observer and join the mesh.

        With ``peers`` the join happens here and a silent mesh raises :class:`SourceError`.
        With only a registry, a network that has no live peer yet is not an error: the
        observer keeps asking ``/peers`` (every ``retry_every`` s) in the background until it
        can join, and shows the registry snapshot meanwhile.
        """
        try:
            from mycelium_p2p.observer import ObserverError, start_observer
        except ImportError as exc:
            raise SourceError(f"the gossip module is not available: {exc}") from exc
        if self.bootstrap:
            try:
                snap = view_from_snapshot(fetch_network(self.bootstrap, self.token), self._clock())
            except SourceError:
                if not self.peers:
                    raise
                self._registry_state = "unreachable at start"
            else:
                self._events.extend(snap.events)
                self._snapshot = snap
                self._registry_state = f"snapshot at start: {len(snap.groups)} groups"
        try:
            node = start_observer(
                self.config if self.config is not None else _default_gossip_config(),
                host=self.host,
                token=self.token,
                peers=self.peers,
                registry_url=self.bootstrap,
                meta={"name": "viewer", "role": "observer", "group": ""},
                prefix="viz",
            )
        except ObserverError as exc:
            raise SourceError(str(exc)) from exc
        self._node = node
        if self.peers:
            if not node.join(self.peers, timeout=self.join_timeout):
                self.close()
                raise SourceError(f"no gossip peer answered: {', '.join(self.peers)}")
            self._joined.set()
            return
        self._joiner = threading.Thread(target=self._join_via_registry, name="viz-join")
        self._joiner.daemon = True
        self._joiner.start()

    def _join_via_registry(self) -> None:
        """Ask the registry for peers until one of them lets the observer in (or closing)."""
        assert self.bootstrap is not None
        while not self._closing.is_set():
            node = self._node
            if node is None:
                return
            try:
                seeds = fetch_peers(self.bootstrap, self.token)
            except SourceError:
                seeds = []
            if seeds and node.join(seeds, timeout=self.join_timeout):
                self._joined.set()
                return
            self._closing.wait(self.retry_every)

    @property
    def joined(self) -> bool:
        """Whether the observer is in the mesh."""
        return self._joined.is_set()

    def view(self) -> NetworkView:
        """The observer's current gossip view, with events derived from the previous one.

        Before it has joined, the registry snapshot (if any) is shown.
        """
        node = self._node
        now = self._clock()
        if node is None or not self._joined.is_set():
            snap = self._snapshot
            stats = {"registry": f"{self._registry_state}; waiting for gossip peers"}
            events = tuple(self._events)
            if snap is None:
                return NetworkView(now, stats=stats, events=events)
            return NetworkView(now, snap.nodes, snap.groups, stats, events)
        count = message_count(node.stats())
        if self._rate is None:
            self._rate = (now, count)
        elif now - self._rate[0] >= 1.0:
            self._msgs_per_s = (count - self._rate[1]) / (now - self._rate[0])
            self._rate = (now, count)
        registry = self._registry_state
        if node.registry_url and self.bootstrap is None:
            registry = f"known: {node.registry_url}"
        stats: dict[str, float | int | str] = {
            "messages_per_s": self._msgs_per_s,
            "registry": registry,
        }
        members = [m for m in node.members() if m.id != node.node_id]
        view = view_from_snapshot(snapshot.from_gossip(members, node.groups(), now), now, stats)
        with self._lock:
            # the first gossip view is not compared with the registry snapshot: they come from
            # different sources and the diff would be noise
            self._events.extend(diff_views(self._last, view))
            self._last = view
            events = tuple(self._events)
        return NetworkView(now, view.nodes, view.groups, stats, events)

    def close(self) -> None:
        """Leave the mesh (best effort) and stop the observer; safe to call twice."""
        self._closing.set()
        joiner, self._joiner = self._joiner, None
        if joiner is not None and joiner is not threading.current_thread():
            joiner.join(timeout=self.join_timeout + 1.0)
        node, self._node = self._node, None
        if node is None:
            return
        # leaving is a courtesy to the mesh; stopping is what matters, so neither may raise
        with contextlib.suppress(Exception):
            node.leave(timeout=1.0)
        with contextlib.suppress(Exception):
            node.stop()


def _default_gossip_config() -> Any:
    from mycelium_p2p.config import GossipConfig

    return GossipConfig.local()


class SyntheticSource:
    """A simulated network: nodes join, groups form and train, some nodes migrate and die.

    For trying the viewer and benchmarking it without a network. Deterministic for a given
    ``rng`` and clock.

    Parameters
    ----------
    nodes : int
        Number of nodes (default: 24).
    groups : int
        Number of groups they settle into (default: 4).
    rng : random.Random
        Source of randomness (default: ``random.Random(0)``).
    churn_every : float
        Seconds between two migrations or failures (default: 3.0).
    """

    def __init__(
        self,
        nodes: int = 24,
        groups: int = 4,
        *,
        rng: random.Random | None = None,
        clock: Clock = time.time,
        churn_every: float = 3.0,
    ) -> None:
        if nodes < 1 or groups < 1:
            raise ValueError("need at least one node and one group")
        self._rng = rng if rng is not None else random.Random(0)
        self._clock = clock
        self.churn_every = churn_every
        self._group_ids = [f"g-{i:08x}" for i in range(groups)]
        self._node_ids = [f"n{i:03d}" for i in range(nodes)]
        self._assign = {n: self._group_ids[i % groups] for i, n in enumerate(self._node_ids)}
        self._status = dict.fromkeys(self._node_ids, "alive")
        self._t0: float | None = None
        self._next_churn = 0.0
        self._events: list[ViewEvent] = []
        self._prev: NetworkView | None = None

    def start(self) -> None:
        """Start the simulated clock."""
        self._t0 = self._clock()
        self._next_churn = self.churn_every

    def view(self) -> NetworkView:
        """The simulated network at the current time."""
        if self._t0 is None:
            self.start()
        now = self._clock()
        age = now - (self._t0 or now)
        while age >= self._next_churn:
            self._churn()
            self._next_churn += self.churn_every
        # groups appear one by one during the first seconds
        visible_groups = self._group_ids[: 1 + int(age / 1.5)]
        groups = []
        for i, gid in enumerate(visible_groups):
            members = tuple(
                sorted(
                    n for n, g in self._assign.items() if g == gid and self._status[n] == "alive"
                )
            )
            acc = 0.95 - 0.55 * math.exp(-age / (20.0 + 5 * i))
            groups.append(
                GroupInfo(
                    gid,
                    f"group-{i + 1}",
                    members[0] if members else None,
                    members,
                    round(acc, 4),
                    round(1.0 - acc, 4),
                    int(age * 2),
                    1,
                )
            )
        gids = {g.id for g in groups}
        nodes = tuple(
            NodeInfo(
                n,
                f"node-{n[1:]}",
                self._status[n],
                self._assign[n] if self._assign[n] in gids else None,
                round(0.9 - 0.5 * math.exp(-age / 25.0) + 0.06 * stable_unit(n), 4),
            )
            for n in self._node_ids
        )
        stats = {"messages_per_s": 40.0 * len(self._node_ids), "registry": "simulated"}
        view = NetworkView(now, nodes, tuple(groups), stats)
        self._events.extend(diff_views(self._prev, view))
        self._events = self._events[-50:]
        self._prev = view
        return NetworkView(now, nodes, tuple(groups), stats, tuple(self._events))

    def _churn(self) -> None:
        """One change: mostly a migration, sometimes a death, sometimes a dead node returns."""
        dead = sorted(n for n, st in self._status.items() if st == "dead")
        alive = [n for n, st in self._status.items() if st == "alive"]
        roll = self._rng.random()
        if dead and (roll < 0.15 or not alive):
            self._status[self._rng.choice(dead)] = "alive"
            return
        if not alive:
            return
        victim = self._rng.choice(alive)
        visible = self._group_ids[: 1 + int(self._next_churn / 1.5)]
        if roll < 0.9 and len(visible) > 1:
            others = [g for g in visible if g != self._assign[victim]]
            self._assign[victim] = self._rng.choice(others)
        else:
            self._status[victim] = "dead"

    def close(self) -> None:
        """Nothing to close."""
