"""Group records and the versioned group table (pure: no I/O, clock passed in).

A record is ordered by ``(term, version)``; the table keeps, per group id, the strictly newest
record it has seen, so every node converges to the same table whatever order or how many times
records arrive (last-writer-wins on a total order).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

from mycelium_p2p.limits import MAX_COUNTER, MAX_LOSS

MAX_ID_LEN = 64
MAX_TEXT_LEN = 256
MAX_MEMBERS = 4096


@dataclass(frozen=True, slots=True)
class GroupRecord:
    """The latest known state of one learning group (see docs/architecture.md).

    Parameters
    ----------
    id : str
        Group id (``g-`` + 8 hex by convention).
    name : str
        Display name (default: "").
    leader : str | None
        Node id of the leader (default: None).
    leader_address : str
        Leader's gossip address ``host:port``, for model probes (default: "").
    flower_address : str
        Leader's Flower server address (default: "").
    members : tuple[str, ...]
        Node ids of the members; stored sorted (default: ()).
    model : str
        Model spec ``NAME:SHAPE:CLASSES`` (default: "").
    capacity : int
        Maximum number of members (default: 0).
    accuracy, loss : float
        Latest federated evaluation (default: 0.0).
    round : int
        Rounds completed (default: 0).
    examples : int
        Examples behind the latest evaluation (default: 0).
    term : int
        Leadership term from the registry (default: 0).
    version : int
        Leader's counter within a term (default: 0).
    dissolved : bool
        A tombstone: the group is gone (default: False).
    updated_at : float
        Wall-clock seconds when published; informational only (default: 0.0).
    created_at : float
        Wall-clock seconds when the group was founded; breaks ties between equally large
        groups in the merge rule (older wins) (default: 0.0).
    """

    id: str
    name: str = ""
    leader: str | None = None
    leader_address: str = ""
    flower_address: str = ""
    members: tuple[str, ...] = field(default_factory=tuple)
    model: str = ""
    capacity: int = 0
    accuracy: float = 0.0
    loss: float = 0.0
    round: int = 0
    examples: int = 0
    term: int = 0
    version: int = 0
    dissolved: bool = False
    updated_at: float = 0.0
    created_at: float = 0.0

    def __post_init__(self) -> None:
        # Sorted members make equal records compare equal whatever order the leader used.
        object.__setattr__(self, "members", tuple(sorted(self.members)))

    @property
    def order(self) -> tuple[int, int]:
        """The ``(term, version)`` pair records are ordered by."""
        return (self.term, self.version)

    def newer_than(self, other: GroupRecord | None) -> bool:
        """True if this record strictly supersedes ``other`` (any record beats None)."""
        return other is None or self.order > other.order

    def to_dict(self) -> dict[str, Any]:
        """Plain dict for the wire (members as a list)."""
        d = asdict(self)
        d["members"] = list(self.members)
        return d

    @classmethod
    def from_dict(cls, d: Any) -> GroupRecord:
        """Validate a decoded dict into a record.

        Raises
        ------
        ValueError
            If a field is missing, unknown, of the wrong type or out of range.
        """
        if not isinstance(d, dict):
            raise ValueError("group record must be a map")
        unknown = set(d) - _FIELDS - {"t"}
        if unknown:
            raise ValueError(f"unknown group record fields {sorted(unknown)!r}")
        leader = d.get("leader")
        if leader is not None:
            leader = _text(leader, "leader", MAX_ID_LEN)
        members = d.get("members", [])
        if not isinstance(members, list | tuple) or len(members) > MAX_MEMBERS:
            raise ValueError("members must be a list of at most 4096 ids")
        return cls(
            id=_text(d.get("id"), "id", MAX_ID_LEN, empty=False),
            name=_text(d.get("name", ""), "name", MAX_TEXT_LEN),
            leader=leader,
            leader_address=_text(d.get("leader_address", ""), "leader_address", MAX_TEXT_LEN),
            flower_address=_text(d.get("flower_address", ""), "flower_address", MAX_TEXT_LEN),
            members=tuple(_text(m, "member", MAX_ID_LEN, empty=False) for m in members),
            model=_text(d.get("model", ""), "model", MAX_TEXT_LEN),
            capacity=_count(d.get("capacity", 0), "capacity"),
            accuracy=_real(d.get("accuracy", 0.0), "accuracy", 1.0),
            loss=_real(d.get("loss", 0.0), "loss", MAX_LOSS),
            round=_count(d.get("round", 0), "round"),
            examples=_count(d.get("examples", 0), "examples"),
            # A term or version at the bound could never be superseded (a claim needs term + 1,
            # a leader's next record version + 1): such a record would freeze the group.
            term=_count(d.get("term", 0), "term", MAX_COUNTER - 1),
            version=_count(d.get("version", 0), "version", MAX_COUNTER - 1),
            dissolved=_flag(d.get("dissolved", False), "dissolved"),
            updated_at=_time(d.get("updated_at", 0.0), "updated_at"),
            created_at=_time(d.get("created_at", 0.0), "created_at"),
        )


_FIELDS = {f for f in GroupRecord.__dataclass_fields__}


def _text(v: Any, name: str, limit: int, *, empty: bool = True) -> str:
    if not isinstance(v, str) or len(v) > limit or (not empty and not v):
        raise ValueError(f"{name} must be a string of at most {limit} characters")
    return v


def _count(v: Any, name: str, limit: int = MAX_COUNTER) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v <= limit:
        raise ValueError(f"{name} must be an integer in 0..{limit}")
    return v


def _real(v: Any, name: str, limit: float) -> float:
    if isinstance(v, bool) or not isinstance(v, int | float) or not 0.0 <= v <= limit:
        raise ValueError(f"{name} must be a number in 0..{limit:g}")
    return float(v)


def _time(v: Any, name: str) -> float:
    if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
        raise ValueError(f"{name} must be a finite number")
    return float(v)


def _flag(v: Any, name: str) -> bool:
    if not isinstance(v, bool):
        raise ValueError(f"{name} must be a boolean")
    return v


class GroupTable:
    """Per group id, the strictly newest ``GroupRecord`` seen (LWW on ``(term, version)``).

    Parameters
    ----------
    tombstone_ttl : float
        Seconds a dissolved record is kept after it was last applied.
    """

    def __init__(self, tombstone_ttl: float) -> None:
        self.tombstone_ttl = tombstone_ttl
        self._records: dict[str, GroupRecord] = {}
        self._applied_at: dict[str, float] = {}
        self._max_version: dict[tuple[str, int], int] = {}

    def apply(self, record: GroupRecord, now: float) -> bool:
        """Store ``record`` if strictly newer than the one held; return whether it was."""
        key = (record.id, record.term)
        self._max_version[key] = max(self._max_version.get(key, -1), record.version)
        if not record.newer_than(self._records.get(record.id)):
            return False
        self._records[record.id] = record
        self._applied_at[record.id] = now
        return True

    def get(self, group_id: str) -> GroupRecord | None:
        """The held record for ``group_id`` (tombstones included)."""
        return self._records.get(group_id)

    def live(self) -> dict[str, GroupRecord]:
        """Records of groups that are not dissolved."""
        return {k: r for k, r in self._records.items() if not r.dissolved}

    def all(self) -> list[GroupRecord]:
        """Every held record, tombstones included (for push-pull)."""
        return list(self._records.values())

    def next_version(self, group_id: str, term: int) -> int:
        """One more than the highest version seen for ``(group_id, term)`` (0 if none)."""
        return self._max_version.get((group_id, term), -1) + 1

    def expire(self, now: float) -> list[str]:
        """Drop tombstones older than ``tombstone_ttl``; return their ids."""
        gone = [
            gid
            for gid, r in self._records.items()
            if r.dissolved and now - self._applied_at[gid] >= self.tombstone_ttl
        ]
        for gid in gone:
            del self._records[gid]
            del self._applied_at[gid]
            for key in [k for k in self._max_version if k[0] == gid]:
                del self._max_version[key]
        return gone

    def __len__(self) -> int:
        return len(self._records)
