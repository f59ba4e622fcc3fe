"""Pure readings of a node's gossip view: which groups are live, who is in them, who leads next."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol

from mycelium_p2p.meta import NodeMeta

LIVE_STATUSES = frozenset({"alive", "suspect"})


class MemberLike(Protocol):
    """The parts of a gossip member this module reads (``MemberView`` has them)."""

    id: str
    status: str

    @property
    def node_meta(self) -> NodeMeta: ...


class RecordLike(Protocol):
    """The parts of a group record this module reads."""

    id: str
    leader: str | None
    members: tuple[str, ...]
    model: str
    capacity: int
    dissolved: bool


def live_ids(members: Iterable[MemberLike]) -> set[str]:
    """Ids of members gossip believes alive (suspects still count: they may refute)."""
    return {m.id for m in members if m.status in LIVE_STATUSES}


def members_of(group_id: str, members: Iterable[MemberLike]) -> list[str]:
    """Live node ids whose own metadata says they are in ``group_id``, sorted (a stable order)."""
    return sorted(
        m.id for m in members if m.status in LIVE_STATUSES and m.node_meta.group == group_id
    )


def occupied_groups(members: Iterable[MemberLike]) -> set[str]:
    """Ids of the groups that at least one live node says, in its own metadata, it is in."""
    groups = {m.node_meta.group for m in members if m.status in LIVE_STATUSES}
    groups.discard("")
    return groups


def is_live_group(record: RecordLike, occupied: set[str]) -> bool:
    """A group is live while it is not dissolved and some live node says it is in it.

    Nodes own the truth of where they are; a record whose nodes have all died or moved on is a
    zombie that nobody will ever publish a tombstone for, so readers must ignore it.
    """
    return not record.dissolved and record.id in occupied


def compatible_groups(
    records: Iterable[RecordLike], model: str, occupied: set[str]
) -> list[RecordLike]:
    """Live groups that train ``model`` (only compatible nodes ever meet)."""
    return [r for r in records if r.model == model and is_live_group(r, occupied)]


def successor(group_id: str, members: Iterable[MemberLike], departed: str | None) -> str | None:
    """The member that should claim leadership of ``group_id`` next: the lowest live id.

    Every member computes the same answer from the same view; the registry's compare-and-set on
    the term settles the rare case where views differ.
    """
    candidates = [m for m in members_of(group_id, members) if m != departed]
    return candidates[0] if candidates else None
