"""One picture of the network, from the registry or from a node's gossip view, in one shape.

The viewer, ``mycelium status`` and the tests read the network through a ``Snapshot``: groups
and nodes in the registry's own shapes (``registry_api.GroupOut`` and ``NodeOut``), whichever
source they came from, so that every reader applies the same rules:

- a dissolved group is not shown;
- from gossip, a group is live only while some live node says, in its own metadata, it is in it
  (``view.is_live_group``): a record whose nodes all died or moved on is a zombie nobody will
  ever publish a tombstone for;
- every figure carries the wall-clock time it was made (``GroupOut.updated_at``; a node's
  ``last_seen``: its last heartbeat at the registry, or the observer's time for a member gossip
  sees alive), so that a reader can say how old it is and, with :func:`freshest`, prefer the
  fresher of two sources group by group and node by node.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import msgspec

from mycelium_p2p import view
from mycelium_p2p.groups import GroupRecord
from mycelium_p2p.meta import NodeMeta
from mycelium_p2p.registry_api import (
    EventOut,
    GroupMetrics,
    GroupOut,
    NetworkOut,
    NodeMetrics,
    NodeOut,
)

Source = Literal["registry", "gossip", "registry+gossip"]

#: Gossip member statuses as the registry names them (a member that left is gone).
_STATUS = {"alive": "alive", "suspect": "suspect", "dead": "dead", "left": "gone"}


@dataclass(frozen=True)
class Snapshot:
    """Groups (live ones, oldest first), nodes and recent events, from one source."""

    source: Source
    time: float
    groups: tuple[GroupOut, ...]
    nodes: tuple[NodeOut, ...]
    events: tuple[EventOut, ...] = ()
    names: Mapping[str, str] = field(default_factory=dict)  # every group's name, dissolved too
    #: Where each group's and node's figures came from, by id, when the snapshot merges sources.
    origins: Mapping[str, Source] = field(default_factory=dict)

    def group(self, group_id: str) -> GroupOut | None:
        return next((g for g in self.groups if g.id == group_id), None)

    def origin(self, item_id: str) -> Source:
        """The source of a group's or node's figures."""
        return self.origins.get(item_id, self.source)

    def to_json(self) -> dict[str, Any]:
        """``{"source", "time", "groups": [...], "nodes": [...], "origins": {id: source}}`` in
        the registry's shapes (``origins`` only when the snapshot merges sources)."""
        out: dict[str, Any] = {
            "source": self.source,
            "time": self.time,
            "groups": msgspec.to_builtins(list(self.groups)),
            "nodes": msgspec.to_builtins(list(self.nodes)),
        }
        if self.origins:
            out["origins"] = dict(self.origins)
        return out


def from_registry(network: NetworkOut) -> Snapshot:
    """The registry's ``GET /network``."""
    groups = sorted(
        (g for g in network.groups if g.status != "dissolved"), key=lambda g: g.created_at
    )
    names = {g.id: g.name for g in network.groups}
    return Snapshot("registry", network.time, tuple(groups), tuple(network.nodes),
                    tuple(network.events), names)  # fmt: skip


class MemberLike(view.MemberLike):
    """A gossip member as this module reads it (``MemberView`` is one)."""

    address: str


def from_gossip(
    members: Iterable[MemberLike], records: Mapping[str, GroupRecord], now: float | None = None
) -> Snapshot:
    """A node's gossip view: its members (observers left out) and its live group records."""
    members = list(members)
    occupied = view.occupied_groups(members)
    live = [r for r in records.values() if view.is_live_group(r, occupied)]
    groups = tuple(_group(r) for r in sorted(live, key=lambda r: (r.created_at, r.id)))
    names = {r.id: r.name or r.id for r in records.values()}
    now = time.time() if now is None else now
    nodes = tuple(_node(m, now) for m in members if m.node_meta.role != "observer")
    return Snapshot("gossip", now, groups, nodes, (), names)


def freshest(registry: Snapshot, gossip: Snapshot) -> Snapshot:
    """One snapshot of both sources: each group's figures from the source that made them last
    (``updated_at``), each node's from the one that heard from it last (``last_seen``).

    A group or node only one source knows is kept: the registry may not have heard of a group
    founded a second ago, and gossip may not have reached a node the registry knows. Ties go to
    the registry, the authority. Events come from the registry.
    """
    groups: dict[str, GroupOut] = {}
    nodes: dict[str, NodeOut] = {}
    origins: dict[str, Source] = {}
    for snap in (registry, gossip):
        for g in snap.groups:
            if g.id not in groups or g.updated_at > groups[g.id].updated_at:
                groups[g.id], origins[g.id] = g, snap.source
        for n in snap.nodes:
            if n.id not in nodes or n.last_seen > nodes[n.id].last_seen:
                nodes[n.id], origins[n.id] = n, snap.source
    return Snapshot(
        "registry+gossip",
        max(registry.time, gossip.time),
        tuple(sorted(groups.values(), key=lambda g: (g.created_at, g.id))),
        tuple(sorted(nodes.values(), key=lambda n: n.id)),
        registry.events,
        {**gossip.names, **registry.names},
        origins,
    )


def _group(r: GroupRecord) -> GroupOut:
    return GroupOut(
        id=r.id,
        name=r.name or r.id,
        leader=r.leader,
        term=r.term,
        version=r.version,
        flower_address=r.flower_address,
        members=list(r.members),
        capacity=max(r.capacity, 1),
        model=r.model,
        join_policy="open",
        invited=[],
        status="active" if r.leader else "leaderless",
        metrics=GroupMetrics(
            accuracy=r.accuracy if r.round else None,
            loss=r.loss if r.round else None,
            round=r.round,
            examples=r.examples,
        ),
        created_at=r.created_at,
        updated_at=r.updated_at,
    )


def _sizes(meta: NodeMeta) -> dict[str, int]:
    """What a member announces of its data and probes (nothing before it knows its sizes)."""
    return {"train": meta.train, "val": meta.val, "probe_ms": meta.probe_ms} if meta.train else {}


def _node(m: MemberLike, now: float) -> NodeOut:
    meta = m.node_meta
    live = m.status in view.LIVE_STATUSES  # heard from within the failure detector's window
    return NodeOut(
        id=m.id,
        name=meta.name or m.id,
        status=_STATUS.get(m.status, "dead"),  # type: ignore[arg-type]
        group=meta.group or None,
        gossip_address=m.address,
        flower_address=meta.flower_address or None,  # set while it leads
        model=meta.model or None,
        data=_sizes(meta),
        metrics=NodeMetrics(accuracy=meta.accuracy, loss=None, round=meta.round or None),
        registered_at=0.0,
        last_seen=now if live else 0.0,
    )
