"""What the registry's reads show, in memory: a mirror of the database and versioned snapshots.

:class:`View` mirrors the node and group rows and the recent events; the commit thread keeps
it up to date (after each commit, and from the change feed the other registries on a shared
database write). Each change of what a read shows bumps ``View.version``; liveness has its own
versions (:class:`bootstrap.liveness.LivenessTable`). :class:`Snapshots` serves the reads: the
first read after a bump builds a new snapshot (copies under the view's lock, encodes once), the
reads after it share the encoded answer and its ETag until the next bump.
"""

from __future__ import annotations

import random
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any

import msgspec

from bootstrap.liveness import LivenessTable
from mycelium_p2p.registry_api import EventOut, GroupOut, NetworkOut, NodeMetrics, NodeOut

#: Recent events kept in memory for ``/network`` (its ``events`` parameter is at most this).
RECENT_EVENTS = 1000
#: Oldest list of live addresses a heartbeat's answer draws its peers from (seconds).
RECENT_PEERS_AGE = 1.0

_encode = msgspec.json.Encoder().encode


class View:
    """Nodes, groups, memberships and recent events as last read from the database."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.nodes: dict[str, NodeOut] = {}
        self.groups: dict[str, GroupOut] = {}  # ``members`` left empty: see ``members``
        self.members: dict[str, set[str]] = {}
        self.events: deque[EventOut] = deque(maxlen=RECENT_EVENTS)
        self.last_event = 0
        self.rev = 0  # the change feed's revision this view has caught up with
        self.version = 0

    def clear(self) -> None:
        """Forget everything (before a full reload)."""
        with self.lock:
            self.nodes.clear()
            self.groups.clear()
            self.members.clear()
            self.events.clear()
            self.last_event = 0
            self.version += 1

    def put_node(self, node: NodeOut) -> None:
        """Add or replace a node row."""
        with self.lock:
            old = self.nodes.get(node.id)
            if old is not None and old.group != node.group and old.group is not None:
                self.members.get(old.group, set()).discard(node.id)
            if node.group is not None:
                self.members.setdefault(node.group, set()).add(node.id)
            self.nodes[node.id] = node
            self.version += 1

    def drop_node(self, node_id: str) -> None:
        """Remove a node whose row is gone."""
        with self.lock:
            old = self.nodes.pop(node_id, None)
            if old is not None:
                if old.group is not None:
                    self.members.get(old.group, set()).discard(node_id)
                self.version += 1

    def put_group(self, group: GroupOut) -> None:
        """Add or replace a group row."""
        with self.lock:
            self.groups[group.id] = group
            self.version += 1

    def add_events(self, events: Iterable[EventOut]) -> None:
        """Append events newer than the last one held."""
        with self.lock:
            for event in events:
                if event.id > self.last_event:
                    self.events.append(event)
                    self.last_event = event.id
                    self.version += 1

    def node(self, node_id: str) -> NodeOut | None:
        return self.nodes.get(node_id)

    def group_out(self, group: GroupOut) -> GroupOut:
        """The group with its members (sorted); call with ``lock`` held."""
        members = sorted(self.members.get(group.id, ()))
        return msgspec.structs.replace(group, members=members)


def with_liveness(node: NodeOut, live: Any) -> NodeOut:
    """``node`` with the status, last_seen and metrics of ``live`` (a :class:`Live`)."""
    if live is None:
        return node
    metrics = NodeMetrics(accuracy=live.accuracy, loss=live.loss, round=live.round)
    return msgspec.structs.replace(
        node, status=live.status, last_seen=live.last_seen, metrics=metrics
    )


class Encoded(msgspec.Struct, frozen=True):
    """An answer encoded once: JSON bytes and the ETag that names them."""

    body: bytes
    etag: str


class Snapshot:
    """The groups of one version of the view, and answers encoded from them on demand."""

    def __init__(self, tag: str, groups: list[GroupOut], version: Any = None) -> None:
        self.tag = tag
        self.version = version
        self.groups = groups  # every group, oldest first
        self.by_id = {g.id: g for g in groups}
        self._cache: dict[Any, Encoded] = {}
        self._lock = threading.Lock()

    def encoded(self, key: Any, make: Callable[[], Any]) -> Encoded:
        """The answer ``key``, encoded on first use."""
        found = self._cache.get(key)
        if found is None:
            body = _encode(make())
            found = Encoded(body=body, etag=f'"{self.tag}-{key_text(key)}"')
            with self._lock:
                self._cache[key] = found
        return found


def key_text(key: Any) -> str:
    if isinstance(key, tuple):
        return ".".join(str(k) for k in key)
    return str(key)


class Snapshots:
    """Serves the snapshot reads: groups, one group, peers, the network.

    Parameters
    ----------
    view : View
        The mirror of the database.
    live : LivenessTable
        Liveness in memory.
    clock : callable
        Wall-clock seconds, for ``/network``'s ``time``.
    rng : random.Random
        Source of ``/peers`` samples.
    instance : str
        This registry's id; ETags carry it, so that two registries never share one by chance.
    decorate : callable, optional
        Applied to every group of a snapshot (the store adds its lease) (default: None).
    """

    def __init__(
        self,
        view: View,
        live: LivenessTable,
        clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
        instance: str = "r",
        decorate: Callable[[GroupOut], GroupOut] | None = None,
    ) -> None:
        self.view = view
        self.live = live
        self.clock = clock
        self._rng = rng or random.Random()
        self._rng_lock = threading.Lock()
        self.instance = instance
        self._decorate = decorate
        self._groups: Snapshot | None = None
        self._peers: tuple[Any, list[str]] | None = None
        self._recent_peers: tuple[float, list[str]] | None = None
        self._network: tuple[Any, Snapshot] | None = None
        self._lock = threading.Lock()

    def current(self) -> Snapshot:
        """The snapshot of the view's current version (built on first use after a change)."""
        snap = self._groups
        version = self.view.version
        if snap is not None and snap.version == version:
            return snap
        with self.view.lock:
            version = self.view.version
            groups = [self.view.group_out(g) for g in self.view.groups.values()]
        groups.sort(key=lambda g: (g.created_at, g.id))
        if self._decorate is not None:
            groups = [self._decorate(g) for g in groups]
        snap = Snapshot(f"{self.instance}-{version}", groups, version)
        with self._lock:
            self._groups = snap
        return snap

    # ---- answers ------------------------------------------------------------------------------

    def groups(self, include_dissolved: bool = False) -> Encoded:
        """``GET /groups``: active and leaderless groups (dissolved too if asked), oldest first."""
        snap = self.current()
        if include_dissolved:
            return snap.encoded("all", lambda: snap.groups)
        return snap.encoded("g", lambda: [g for g in snap.groups if g.status != "dissolved"])

    def group(self, group_id: str) -> Encoded | None:
        """``GET /groups/{id}``, or None if unknown."""
        snap = self.current()
        group = snap.by_id.get(group_id)
        if group is None:
            return None
        return snap.encoded(("id", group_id), lambda: group)

    def live_addresses(self) -> tuple[str, list[str]]:
        """The gossip addresses of the live nodes, and a tag of the version they are of."""
        key = (self.view.version, self.live.status_version)
        cached = self._peers
        if cached is not None and cached[0] == key:
            return f"{self.instance}-{key_text(key)}", cached[1]
        with self.view.lock:
            nodes = self.view.nodes
            ids = [i for i in self.live.live_ids() if i in nodes]
            addresses = [nodes[i].gossip_address for i in sorted(ids)]
        with self._lock:
            self._peers = (key, addresses)
        return f"{self.instance}-{key_text(key)}", addresses

    def peers(self, limit: int) -> tuple[str, list[str]]:
        """``GET /peers``: a uniform random sample of at most ``limit`` live nodes' addresses,
        and the ETag of the live set it was drawn from."""
        tag, addresses = self.live_addresses()
        with self._rng_lock:
            sample = self._rng.sample(addresses, min(limit, len(addresses)))
        return f'"{tag}-p{limit}"', sample

    def recent_peers(self, limit: int) -> list[str]:
        """A random sample of at most ``limit`` live nodes' addresses, drawn from a list at most
        ``RECENT_PEERS_AGE`` old: heartbeats ask thousands of times a second, and in a large
        network some node changes status nearly as often, which would rebuild the list each time."""
        now = self.clock()
        cached = self._recent_peers
        if cached is None or not 0 <= now - cached[0] < RECENT_PEERS_AGE:
            cached = (now, self.live_addresses()[1])
            self._recent_peers = cached
        with self._rng_lock:
            return self._rng.sample(cached[1], min(limit, len(cached[1])))

    def nodes(self) -> list[NodeOut]:
        """Every node with its liveness, ordered by id."""
        entries = dict(self.live.items())
        with self.view.lock:
            nodes = list(self.view.nodes.values())
        nodes.sort(key=lambda n: n.id)
        return [with_liveness(n, entries.get(n.id)) for n in nodes]

    def network(self, events: int = 100) -> Encoded:
        """``GET /network``: groups, nodes and the last ``events`` events, one snapshot."""
        snap = self.current()
        key = (self.view.version, self.live.version)
        cached = self._network
        if cached is None or cached[0] != key:
            net = Snapshot(f"{self.instance}-{key_text(key)}", snap.groups)
            cached = (key, net)
            with self._lock:
                self._network = cached
        net = cached[1]

        def make() -> NetworkOut:
            with self.view.lock:
                recent = list(self.view.events)[-events:] if events else []
            return NetworkOut(
                time=self.clock(),
                groups=[g for g in net.groups if g.status != "dissolved"],
                nodes=self.nodes(),
                events=recent,
            )

        return net.encoded(("n", events), make)
