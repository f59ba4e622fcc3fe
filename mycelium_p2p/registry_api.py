"""Request and response shapes of the registry API (msgspec Structs with constraints).

Shared by both ends: the registry (``bootstrap/``) validates requests and builds answers with
them, and the registry client decodes answers into them, so a node reads ``group.leader``, not
``answer.get("leader")``.

Constraints bound every number (``mycelium_p2p.limits``: counters, losses) and every string to a
sane length, and keep free-form maps flat and small, so that bad input is rejected as a 400
before it reaches the database.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec

from mycelium_p2p.limits import MAX_COUNTER, MAX_LOSS, MAX_REASON

#: Node and group ids: short, URL-safe.
Id = Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9._~-]{1,64}$", min_length=1, max_length=64)]
#: Human-readable names.
Name = Annotated[str, msgspec.Meta(min_length=1, max_length=128)]
#: ``host:port`` (an IPv6 host in brackets).
Address = Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9._~\[\]:-]{1,250}:[0-9]{1,5}$")]
#: Model spec ``NAME:SHAPE:CLASSES``; compatibility is string equality.
ModelSpec = Annotated[str, msgspec.Meta(min_length=1, max_length=128)]
Accuracy = Annotated[float, msgspec.Meta(ge=0.0, le=1.0)]
Loss = Annotated[float, msgspec.Meta(ge=0.0, le=MAX_LOSS)]
Count = Annotated[int, msgspec.Meta(ge=0, le=MAX_COUNTER)]
Term = Annotated[int, msgspec.Meta(ge=1, le=MAX_COUNTER)]
Capacity = Annotated[int, msgspec.Meta(ge=1, le=10_000)]
#: A Curve25519 public key in Z85, as ``zmq.curve_keypair()`` makes it (40 characters).
CurveKey = Annotated[str, msgspec.Meta(pattern=r"^[0-9a-zA-Z.\-:+=^!/*?&<>()\[\]{}@%$#]{40}$")]
#: A PEM certificate signing request (a P-256 key's; a few hundred characters).
Csr = Annotated[str, msgspec.Meta(min_length=1, max_length=4096)]
#: Why a node founds or joins a group (free text for the event log and the viewer).
Reason = Annotated[str, msgspec.Meta(max_length=MAX_REASON)]
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

# ---- free-form maps -------------------------------------------------------------------------
# The one definition of every free-form map the API takes (a node's ``data``; a later ``meta``
# or ``metrics`` map uses FlatMap too): flat, scalar values, small. A nested ``data`` reached
# the JSON decoder's recursion limit (a 500, on every later read too), and a big map is paid
# for by every listing.

#: Most keys in a free-form map.
MAP_MAX_KEYS = 32
#: Longest key, in characters.
MAP_MAX_KEY_LENGTH = 64
#: Longest string value, in characters.
MAP_MAX_STRING_LENGTH = 256
#: Largest map as compact JSON, in bytes.
MAP_MAX_BYTES = 4096
#: Depth of a free-form map: 1, values are scalars (the value type below enforces it).
MAP_MAX_DEPTH = 1

MapKey = Annotated[str, msgspec.Meta(min_length=1, max_length=MAP_MAX_KEY_LENGTH)]
MapValue = (
    Annotated[str, msgspec.Meta(max_length=MAP_MAX_STRING_LENGTH)]
    | Annotated[int, msgspec.Meta(ge=-MAX_COUNTER, le=MAX_COUNTER)]
    | Annotated[float, msgspec.Meta(ge=-MAX_COUNTER, le=MAX_COUNTER)]
    | bool
    | None
)
#: A flat map of scalars (str, int, float, bool, null); see the MAP_* limits.
FlatMap = Annotated[
    dict[MapKey, MapValue],
    msgspec.Meta(
        max_length=MAP_MAX_KEYS,
        # The OpenAPI schema, written out: Litestar renders int | float as a oneOf that an
        # integer matches twice, i.e. never. (Litestar reads "extra" into the field's schema.)
        extra_json_schema={
            "extra": {
                "one_of": None,
                "type": ["object", "null"],
                "max_properties": MAP_MAX_KEYS,
                "property_names": {"minLength": 1, "maxLength": MAP_MAX_KEY_LENGTH},
                "additional_properties": {
                    "type": ["string", "number", "boolean", "null"],
                    "maxLength": MAP_MAX_STRING_LENGTH,
                    "minimum": -MAX_COUNTER,
                    "maximum": MAX_COUNTER,
                },
            }
        },
    ),
]


def map_size_problem(value: dict[str, Any]) -> str | None:
    """Why ``value`` is too large for a free-form map as compact JSON, or None if it is not."""
    size = len(msgspec.json.encode(value))
    if size > MAP_MAX_BYTES:
        return f"encodes to {size} bytes, more than {MAP_MAX_BYTES}"
    return None


def flat_map_problem(value: Any) -> str | None:
    """Why ``value`` is not a valid free-form map, or None if it is (for rows read back)."""
    try:
        msgspec.convert(value, FlatMap)
    except msgspec.ValidationError as exc:
        return str(exc)
    return map_size_problem(value)


# ---- request bodies -------------------------------------------------------------------------


class RegisterBody(msgspec.Struct, forbid_unknown_fields=True):
    """Register (or update) a node; idempotent for the same id.

    With a token, ``public_key`` is required (the node's CURVE key, bound to its id by the
    ticket in the answer) and ``csr`` asks for a TLS certificate (optional).
    """

    id: Id
    name: Name
    gossip_address: Address
    flower_address: Address | None = None
    model: ModelSpec | None = None
    data: FlatMap | None = None
    public_key: CurveKey | None = None
    csr: Csr | None = None

    def __post_init__(self) -> None:
        # msgspec reports this as a validation error (400) like a constraint.
        if self.data is not None and (problem := map_size_problem(self.data)):
            raise ValueError(f"`data` {problem}")


class ObserverBody(msgspec.Struct, forbid_unknown_fields=True):
    """An observer (the viewer, ``status --peer``) asks for a ticket for its CURVE key."""

    public_key: CurveKey


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
    data: FlatMap
    metrics: NodeMetrics
    registered_at: float
    last_seen: float


class RegisteredOut(NodeOut):
    """The answer of a registration: the node, and with a token what it speaks with.

    ``credential`` (an opaque per-node secret: the bearer of every later request) only when the
    node enrols; ``ticket`` (its CURVE key bound to its id, for gossip) on every registration;
    ``certificate`` and ``ca_certificate`` (PEM) when a ``csr`` was sent.
    """

    credential: str | None = None
    ticket: str | None = None
    certificate: str | None = None
    ca_certificate: str | None = None


class ObserverOut(msgspec.Struct):
    """An observer's ticket: gossip as ``id`` until ``not_after`` (seconds since the epoch)."""

    id: str
    ticket: str
    not_after: float
    ca_certificate: str


class RevocationsOut(msgspec.Struct):
    """The revocation list: ``serial`` (higher is newer), the revoked ids and ``signed``, the
    list as the CA signed it (base64), which nodes verify and pass on by gossip."""

    serial: int
    issued_at: float
    ids: list[str]
    signed: str


class HeartbeatOut(NodeOut):
    """A heartbeat's answer: the node, and a few live peers' gossip addresses drawn at random.

    The peers let a node that gossip has cut off from part of the network (an island of nodes
    that started together, a healed partition) find the rest without asking for ``/peers``."""

    peers: list[str] = []


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
    #: With a token: the registry's signed grant of the current term to ``leader`` at
    #: ``flower_address`` (base64); gossiped group records carry it.
    lease: str | None = None


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


# ---- lenient decoding -----------------------------------------------------------------------


def too_deep_field(raw: bytes, depth: int = 32) -> str:
    """The top-level field of a JSON object body whose value nests more than ``depth`` levels
    (``"body"`` if none does). A plain scan: the decoder itself stops at its recursion limit.
    """
    level, in_string, escaped, start, text, key = 0, False, False, 0, b"", "body"
    for i, byte in enumerate(raw):
        if in_string:
            if escaped:
                escaped = False
            elif byte == 0x5C:  # backslash
                escaped = True
            elif byte == 0x22:  # closing quote
                in_string, text = False, raw[start:i]
        elif byte == 0x22:
            in_string, start = True, i + 1
        elif byte in b"{[":
            level += 1
            if level > depth:
                return key
        elif byte in b"}]":
            level -= 1
        elif byte == 0x3A and level == 1:  # a colon after a top-level key
            key = text[:64].decode(errors="replace")
    return "body"


def parse_heartbeat(raw: bytes) -> tuple[HeartbeatBody, list[str]]:
    """Decode a heartbeat body field by field.

    A heartbeat is liveness first: one bad metric must cost neither the liveness nor the other
    metrics. Returns the valid fields (as a body) and one problem per refused field.
    """
    if not raw.strip():
        return HeartbeatBody(), []
    try:
        return msgspec.json.decode(raw, type=HeartbeatBody), []
    except (msgspec.DecodeError, RecursionError):  # a ValidationError is a DecodeError
        pass
    try:
        fields = msgspec.json.decode(raw, type=dict[str, msgspec.Raw])
    except (msgspec.DecodeError, RecursionError):
        return HeartbeatBody(), ["body: not a JSON object"]
    valid: dict[str, Any] = {}
    problems: list[str] = []
    for name, value in fields.items():
        if name not in HeartbeatBody.__struct_fields__:
            shown = name if len(name) <= 64 else f"{name[:61]}..."
            problems.append(f"{shown}: unknown field")
            continue
        try:
            one = msgspec.json.decode(msgspec.json.encode({name: value}), type=HeartbeatBody)
        except (msgspec.DecodeError, RecursionError) as exc:
            problems.append(f"{name}: {exc}")
            continue
        valid[name] = getattr(one, name)
    return HeartbeatBody(**valid), problems
