"""One picture of the network, from the registry or from a node's gossip view, in one shape.

The viewer, ``mycelium status`` and the tests read the network through a ``Snapshot``: groups
and nodes in the registry's own shapes (``registry_api.GroupOut`` and ``NodeOut``), whichever
source they came from, so that every reader applies the same rules:

- a dissolved group is not shown;
- from gossip, a group is live only while some live node says, in its own metadata, it is in it
  (``view.is_live_group``): a record whose nodes all died or moved on is a zombie nobody will
  ever publish a tombstone for;
- every figure carries the wall-clock time it was made (``GroupOut.updated_at``), so that a
  reader can say how old it is and prefer the fresher of two sources.
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

Source = Literal["registry", "gossip"]

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

    def group(self, group_id: str) -> GroupOut | None:
        return next((g for g in self.groups if g.id == group_id), None)

    def to_json(self) -> dict[str, Any]:
        """``{"source", "time", "groups": [...], "nodes": [...]}`` in the registry's shapes."""
        return {
            "source": self.source,
            "time": self.time,
            "groups": msgspec.to_builtins(list(self.groups)),
            "nodes": msgspec.to_builtins(list(self.nodes)),
        }


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
    nodes = tuple(_node(m) for m in members if m.node_meta.role != "observer")
    names = {r.id: r.name or r.id for r in records.values()}
    return Snapshot("gossip", time.time() if now is None else now, groups, nodes, (), names)


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


def _node(m: MemberLike) -> NodeOut:
    meta = m.node_meta
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
        last_seen=0.0,
    )
