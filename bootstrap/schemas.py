"""Request and response shapes of the registry API (msgspec Structs with constraints).

Constraints bound every number to what SQLite stores (64-bit integers, finite floats) and every
string to a sane length, so that bad input is rejected as a 400 before it reaches the database.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec

#: Node and group ids: short, URL-safe.
Id = Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9._~-]{1,64}$", min_length=1, max_length=64)]
#: Human-readable names.
Name = Annotated[str, msgspec.Meta(min_length=1, max_length=128)]
#: ``host:port`` (an IPv6 host in brackets).
Address = Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9._~\[\]:-]{1,250}:[0-9]{1,5}$")]
#: Model spec ``NAME:SHAPE:CLASSES``; compatibility is string equality.
ModelSpec = Annotated[str, msgspec.Meta(min_length=1, max_length=128)]
Accuracy = Annotated[float, msgspec.Meta(ge=0.0, le=1.0)]
Loss = Annotated[float, msgspec.Meta(ge=0.0, le=1e12)]
Count = Annotated[int, msgspec.Meta(ge=0, le=2**53)]
Term = Annotated[int, msgspec.Meta(ge=1, le=2**53)]
Capacity = Annotated[int, msgspec.Meta(ge=1, le=10_000)]
#: Why a node founds or joins a group (free text for the event log and the viewer).
Reason = Annotated[str, msgspec.Meta(max_length=200)]
JoinPolicy = Literal["open", "invite-only"]
NodeStatus = Literal["alive", "suspect", "dead", "gone"]
GroupStatus = Literal["active", "leaderless", "dissolved"]
EventKind = Literal[
    "registered",
    "created",
    "joined",
    "left",
    "migrated",
    "leader-changed",
    "expired",
    "removed",
    "dissolved",
]


# ---- request bodies -------------------------------------------------------------------------


class RegisterBody(msgspec.Struct, forbid_unknown_fields=True):
    """Register (or update) a node; idempotent for the same id."""

    id: Id
    name: Name
    gossip_address: Address
    flower_address: Address | None = None
    model: ModelSpec | None = None
    data: dict[str, Any] | None = None


class HeartbeatBody(msgspec.Struct, forbid_unknown_fields=True):
    """Liveness plus the node's current metrics (all optional)."""

    accuracy: Accuracy | None = None
    loss: Loss | None = None
    round: Count | None = None


class CreateGroupBody(msgspec.Struct, forbid_unknown_fields=True):
    """Create a group; the founding leader is its first member."""

    name: Name
    leader: Id
    flower_address: Address
    model: ModelSpec
    id: Id | None = None
    capacity: Capacity = 5
    join_policy: JoinPolicy = "open"
    invited: Annotated[list[Id], msgspec.Meta(max_length=10_000)] | None = None
    reason: Reason | None = None


class JoinBody(msgspec.Struct, forbid_unknown_fields=True):
    """A node joins a group (leaving its previous group: a migration)."""

    node_id: Id
    group_id: Id
    reason: Reason | None = None


class LeaveBody(msgspec.Struct, forbid_unknown_fields=True):
    """A node leaves its group."""

    node_id: Id


class PerformanceBody(msgspec.Struct, forbid_unknown_fields=True):
    """The leader of the current term reports a round's metrics."""

    node_id: Id
    term: Term
    accuracy: Accuracy
    loss: Loss
    round: Count
    examples: Count


class LeaderBody(msgspec.Struct, forbid_unknown_fields=True):
    """Claim leadership with ``term = current + 1`` (compare-and-set)."""

    node_id: Id
    term: Term
    flower_address: Address


# ---- responses ------------------------------------------------------------------------------


class NodeMetrics(msgspec.Struct):
    """A node's latest metrics from its heartbeat."""

    accuracy: float | None
    loss: float | None
    round: int | None


class NodeOut(msgspec.Struct):
    """A node as the registry sees it."""

    id: str
    name: str
    status: NodeStatus
    group: str | None
    gossip_address: str
    flower_address: str | None
    model: str | None
    data: dict[str, Any]
    metrics: NodeMetrics
    registered_at: float
    last_seen: float


class GroupMetrics(msgspec.Struct):
    """The latest round metrics reported by the group's leader."""

    accuracy: float | None
    loss: float | None
    round: int
    examples: int


class GroupOut(msgspec.Struct):
    """A group: leader with its fencing term, members, capacity, model spec, metrics."""

    id: str
    name: str
    leader: str | None
    term: int
    version: int
    flower_address: str
    members: list[str]
    capacity: int
    model: str
    join_policy: JoinPolicy
    invited: list[str]
    status: GroupStatus
    metrics: GroupMetrics
    created_at: float
    updated_at: float


class EventOut(msgspec.Struct):
    """One entry of the append-only event log."""

    id: int
    ts: float
    kind: EventKind
    node: str | None
    group: str | None
    data: dict[str, Any]


class NetworkOut(msgspec.Struct):
    """One snapshot for the viewer: groups, nodes and recent events."""

    time: float
    groups: list[GroupOut]
    nodes: list[NodeOut]
    events: list[EventOut]


class HealthOut(msgspec.Struct):
    """Liveness of the service."""

    status: Literal["ok"]
    schema_version: int
    time: float
