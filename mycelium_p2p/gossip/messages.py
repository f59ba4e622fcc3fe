"""Gossip messages: every kind declared once, as a frozen struct whose fields carry their wire.

A frame is one msgpack array ``[version, kind, sender_id, sender_address, body]``; ``body`` is a
map whose keys are declared on the struct of its kind::

    @wire(Kind.PING)
    @dataclass(frozen=True, slots=True)
    class Ping:
        seq: Annotated[int, Field("q", counter)]
        target_id: Annotated[str, Field("t", node_id, name="target")]
        updates: Annotated[tuple[Any, ...], Field("u", updates, default=())] = ()

``Field(key, check)`` names the field's wire key and the validator that turns a decoded value
into the field's value (raising ``WireError``); the map's key order is the order of the fields.
``codec.Codec`` encodes and decodes every struct from these declarations and ``core.GossipCore``
keeps one handler per struct: adding a kind is one struct here (a new ``Kind`` value: the
enumeration is append-only) and one handler there.

Updates lists (``u``) mix member updates, tagged ``{"t": "m", ...}``, and the application's items,
tagged ``{"t": "g", ...}`` (the tag is historical: Mycelium's items are group records). The gossip
layer never looks inside an application item: the delegate parses it (``delegate.Delegate``).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import IntEnum
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Protocol, get_type_hints

import msgpack

from mycelium_p2p.limits import MAX_COUNTER

if TYPE_CHECKING:
    from mycelium_p2p.gossip.codec import Codec

PROTOCOL_VERSION = 1

MAX_ID_LEN = 64
MAX_ADDRESS_LEN = 262
MAX_UPDATES = 4096
MAX_META_KEYS = 32
MAX_META_KEY_LEN = 32
MAX_META_TEXT = 256

#: Tag of a member update and of an application item in an updates list.
MEMBER_TAG = "m"
APP_TAG = "g"


class Kind(IntEnum):
    """Message kinds. Append-only: never renumber or reuse a value."""

    JOIN = 1
    PING = 2
    PING_REQ = 3
    ACK = 4
    PUSH_PULL = 5
    GOSSIP = 6
    LEAVE = 7
    MODEL_REQUEST = 8
    MODEL_RESPONSE = 9


class Status(IntEnum):
    """A member's SWIM status. Append-only."""

    ALIVE = 0
    SUSPECT = 1
    DEAD = 2
    LEFT = 3


_STATUSES = {int(s): s for s in Status}


class WireError(ValueError):
    """A decoded frame failed validation."""


class AppItem(Protocol):
    """An application item as gossip carries it: the delegate's object, mapped by ``to_dict``."""

    def to_dict(self) -> dict[str, Any]: ...


@dataclass(frozen=True, slots=True)
class Item:
    """An application item the gossip layer cannot read (what a codec without a delegate yields).

    ``data`` is the item's map as it came off the wire, tag left out.
    """

    data: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return self.data


# ----------------------------------------------------------------------------- validators
# A validator takes the decoded value, the field's name (for the error) and the codec (for its
# limits and its delegate) and returns the field's value, or raises WireError.

Check = Callable[[Any, str, "Codec"], Any]


def check_id(v: Any, name: str = "id") -> str:
    """A node or group id: a non-empty string of at most 64 characters."""
    if not isinstance(v, str) or not v or len(v) > MAX_ID_LEN:
        raise WireError(f"{name} must be a non-empty string of at most {MAX_ID_LEN} characters")
    return v


def check_address(v: Any, name: str = "address") -> str:
    """A ``host:port`` string with a port in 1..65535."""
    if not isinstance(v, str) or len(v) > MAX_ADDRESS_LEN:
        raise WireError(f"{name} must be a host:port string")
    host, sep, port = v.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise WireError(f"{name} must be host:port, got {v[:80]!r}")
    return v


def check_meta(meta: Any, max_bytes: int) -> dict[str, Any]:
    """Validate member metadata: a small flat map of scalars, at most ``max_bytes`` encoded.

    Raises
    ------
    WireError
        If it is not a map of short string keys to None/bool/int/float/short str values, or too
        big once encoded.
    """
    if not isinstance(meta, dict) or len(meta) > MAX_META_KEYS:
        raise WireError(f"meta must be a map of at most {MAX_META_KEYS} entries")
    for k, v in meta.items():
        if not isinstance(k, str) or not k or len(k) > MAX_META_KEY_LEN:
            raise WireError("meta keys must be short non-empty strings")
        if isinstance(v, str):
            if len(v) > MAX_META_TEXT:
                raise WireError(f"meta[{k!r}] is longer than {MAX_META_TEXT} characters")
        elif v is not None and not isinstance(v, bool | int | float):
            raise WireError(f"meta[{k!r}] must be None, bool, int, float or str")
        elif isinstance(v, int) and not isinstance(v, bool) and abs(v) > MAX_COUNTER:
            raise WireError(f"meta[{k!r}] is out of range")
        elif isinstance(v, float) and not math.isfinite(v):
            raise WireError(f"meta[{k!r}] must be finite")
    if len(msgpack.packb(meta)) > max_bytes:
        raise WireError(f"meta is larger than {max_bytes} bytes")
    return dict(meta)


def counter(v: Any, name: str, codec: Codec | None = None) -> int:
    """A counter: an integer in ``0..MAX_COUNTER`` (see ``limits.py``)."""
    if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v <= MAX_COUNTER:
        raise WireError(f"{name} must be an integer in 0..{MAX_COUNTER}")
    return v


def flag(v: Any, name: str, codec: Codec | None = None) -> bool:
    """A boolean."""
    if not isinstance(v, bool):
        raise WireError(f"{name} must be a boolean")
    return v


def node_id(v: Any, name: str, codec: Codec | None = None) -> str:
    """A node or group id (``check_id``)."""
    return check_id(v, name)


def optional_id(v: Any, name: str, codec: Codec | None = None) -> str:
    """An id or ""."""
    return v if v == "" else check_id(v, name)


def address(v: Any, name: str, codec: Codec | None = None) -> str:
    """A ``host:port`` (``check_address``)."""
    return check_address(v, name)


def status(v: Any, name: str, codec: Codec | None = None) -> Status:
    """A known ``Status`` value."""
    status = _STATUSES.get(v) if type(v) is int else None
    if status is None:
        raise WireError(f"{name} is unknown")
    return status


def meta(v: Any, name: str, codec: Codec) -> dict[str, Any]:
    """Member metadata within the codec's ``max_meta_bytes`` (``check_meta``)."""
    return check_meta(v, codec.max_meta_bytes)


def blob(v: Any, name: str, codec: Codec | None = None) -> bytes:
    """Opaque bytes (their size is bounded by the frame's)."""
    if not isinstance(v, bytes):
        raise WireError(f"{name} must be bytes")
    return v


def _items(v: Any, name: str) -> list[Any]:
    if not isinstance(v, list | tuple) or len(v) > MAX_UPDATES:
        raise WireError(f"{name} must be a list of at most {MAX_UPDATES} items")
    return list(v)


def _map(v: Any, name: str) -> dict[str, Any]:
    if not isinstance(v, dict):
        raise WireError(f"{name} must be a map")
    return v


@dataclass(frozen=True, slots=True)
class Raw:
    """An entry of a ``records`` list with its encoded bytes, as the codec hands it over:
    ``value`` is the struct decoded before from the very same bytes (then not decoded again), or
    else the entry as unpacked."""

    data: bytes
    value: Any


def update(v: Any, name: str, codec: Codec) -> Any:
    """One tagged update: a ``MemberUpdate``, or an application item parsed by the delegate."""
    d = codec.entry(v, name)
    if isinstance(d, MemberUpdate):
        return d
    t = d.get("t")
    if t == MEMBER_TAG:
        return codec.decode_struct(MemberUpdate, d, v)
    if t == APP_TAG:
        return codec.parse_item(d)
    raise WireError(f"update type must be {MEMBER_TAG!r} or {APP_TAG!r}")


def updates(v: Any, name: str, codec: Codec) -> tuple[Any, ...]:
    """A list of at most ``MAX_UPDATES`` tagged updates."""
    return tuple(update(u, name, codec) for u in _items(v, name))


def member_list(v: Any, name: str, codec: Codec) -> tuple[MemberUpdate, ...]:
    """A list of member update maps (tag optional, as the push-pull state carries them)."""
    out = []
    for m in _items(v, name):
        d = codec.entry(m, name)
        out.append(d if isinstance(d, MemberUpdate) else codec.decode_struct(MemberUpdate, d, m))
    return tuple(out)


def item_list(v: Any, name: str, codec: Codec) -> tuple[Any, ...]:
    """A list of application items, each parsed by the delegate."""
    return tuple(codec.parse_item(_map(g, name)) for g in _items(v, name))


def header(v: Any, name: str, codec: Codec) -> dict[str, Any]:
    """The keys of a push-pull body no field claims: the application's header (delegate)."""
    return codec.parse_header(v)


# ----------------------------------------------------------------------------- encoders


def to_wire(obj: Any) -> dict[str, Any]:
    """The body map of a declared struct: its tag first, then its fields in declaration order."""
    spec: Spec = type(obj).WIRE
    d: dict[str, Any] = {spec.tag[0]: spec.tag[1]} if spec.tag else {}
    for attr, f in spec.fields:
        v = getattr(obj, attr)
        if f.encode is not None:
            v = f.encode(v)
        if f.spread:
            d.update(v)
        else:
            d[f.key] = v
    return d


@dataclass(frozen=True, slots=True)
class Packed:
    """An update already encoded (msgpack bytes): the codec splices it into frames as is, so an
    update queued for many retransmissions, or a member's state, is encoded once."""

    data: bytes


def encode_update(u: Any) -> Any:
    """The wire map of one update: a member update, or an application item (an ``AppItem`` or
    its map) tagged last; a ``Packed`` update stays as it is."""
    if isinstance(u, MemberUpdate):
        return to_wire(u)
    if isinstance(u, Packed):
        return u
    d = dict(u) if isinstance(u, dict) else dict(u.to_dict())
    d["t"] = APP_TAG
    return d


def pack_update(u: Any) -> Packed:
    """``u`` encoded once (raises TypeError, ValueError or OverflowError if it cannot be)."""
    return Packed(msgpack.packb(encode_update(u), use_bin_type=True))


def _encode_updates(us: tuple[Any, ...]) -> list[Any]:
    return [encode_update(u) for u in us]


def _encode_members(ms: tuple[Any, ...]) -> list[Any]:
    return [encode_update(m) for m in ms]


def _encode_items(items: tuple[Any, ...]) -> list[dict[str, Any]]:
    return [g.to_dict() for g in items]


# ----------------------------------------------------------------------------- declarations


@dataclass(frozen=True, slots=True)
class Field:
    """How one struct field travels.

    Parameters
    ----------
    key : str
        Its key in the body map ("" for a ``spread`` field).
    check : Check
        Validator of the decoded value (raises ``WireError``).
    default : Any
        Decoded value when the key is absent (default: None, which a required field's
        validator refuses).
    name : str
        Name in error messages (default: the attribute's name).
    encode : Callable | None
        Value to wire form (default: as is).
    spread : bool
        A map whose entries sit beside the other keys of the body, made of every key no other
        field declares (the push-pull header) (default: False).
    records : bool
        A list whose entries the decoder hands over still encoded (``Raw``) to the validator,
        which decodes each through ``Codec.entry`` (default: False).
    """

    key: str
    check: Check
    default: Any = None
    name: str = ""
    encode: Callable[[Any], Any] | None = None
    spread: bool = False
    records: bool = False


@dataclass(frozen=True, slots=True)
class Spec:
    """The wire layout of one struct, read from its annotations by ``wire``.

    ``plain`` lists ``(key, default, check, name)`` of each field in order when no field is
    spread (the decoder's fast path), else it is empty. ``records`` holds the keys of its
    ``records`` fields. ``memo`` bounds the decoder's memo of this struct by encoded bytes (0:
    none; see ``codec.Codec.entry``).
    """

    cls: type
    kind: Kind | None
    tag: tuple[str, str] | None
    fields: tuple[tuple[str, Field], ...]
    keys: frozenset[str]
    plain: tuple[tuple[str, Any, Check, str], ...] = ()
    records: frozenset[str] = frozenset()
    memo: int = 0


#: Struct of each kind, and every declared record (filled by ``wire``).
MESSAGES: dict[Kind, type] = {}
MESSAGE_RECORDS: list[type] = []


def wire(
    kind: Kind | None = None, *, tag: tuple[str, str] | None = None, memo: int = 0
) -> Callable[[type], type]:
    """Declare a dataclass as a wire struct (of message ``kind``, or a record with a ``tag``).

    Every field must be ``Annotated[T, Field(...)]``; the layout is stored as ``cls.WIRE``.
    ``memo`` (a bound on entries, 0 for none) lets the decoder reuse the struct decoded from
    the same bytes: only for structs whose validators depend on nothing but the codec's limits.
    """

    def declare(cls: type) -> type:
        hints = get_type_hints(cls, include_extras=True)
        fields = []
        for attr in (f.name for f in dataclasses.fields(cls)):
            metadata = getattr(hints[attr], "__metadata__", ())
            spec = next((m for m in metadata if isinstance(m, Field)), None)
            if spec is None:
                raise TypeError(f"{cls.__name__}.{attr} has no wire Field")
            if not spec.name:
                spec = dataclasses.replace(spec, name=attr)
            fields.append((attr, spec))
        keys = frozenset(f.key for _, f in fields if not f.spread)
        plain = tuple((f.key, f.default, f.check, f.name) for _, f in fields)
        if any(f.spread for _, f in fields):
            plain = ()
        records = frozenset(f.key for _, f in fields if f.records)
        cls.WIRE = Spec(cls, kind, tag, tuple(fields), keys, plain, records, memo)  # type: ignore[attr-defined]
        if tag is not None:
            MESSAGE_RECORDS.append(cls)
        if kind is not None:
            if kind in MESSAGES:
                raise TypeError(f"kind {kind.name} is declared twice")
            MESSAGES[kind] = cls
        return cls

    return declare


# The same member states arrive over and over (every push-pull carries all members): decoded once.
@wire(tag=("t", MEMBER_TAG), memo=1 << 16)
@dataclass(frozen=True, slots=True)
class MemberUpdate:
    """One member's state as gossiped: who, where, status, incarnation, metadata.

    ``by`` names the member that raised a suspicion or declared a death (Lifeguard counts
    independent confirmations by it); empty otherwise.
    """

    node_id: Annotated[str, Field("i", node_id, name="node id")]
    address: Annotated[str, Field("a", address)]
    status: Annotated[Status, Field("s", status, name="member status", encode=int)]
    incarnation: Annotated[int, Field("n", counter)]
    meta: Annotated[dict[str, Any], Field("m", meta, default={})] = field(default_factory=dict)
    by: Annotated[str, Field("b", optional_id, default="")] = ""

    WIRE: ClassVar[Spec]


Update = MemberUpdate | AppItem
_UPDATES = Field("u", updates, default=(), encode=_encode_updates, records=True)


@wire(Kind.PING)
@dataclass(frozen=True, slots=True)
class Ping:
    """Direct probe; ``target_id`` guards against a different node now at that address."""

    seq: Annotated[int, Field("q", counter)]
    target_id: Annotated[str, Field("t", node_id, name="target")]
    updates: Annotated[tuple[Any, ...], _UPDATES] = ()

    WIRE: ClassVar[Spec]


@wire(Kind.PING_REQ)
@dataclass(frozen=True, slots=True)
class PingReq:
    """Ask the receiver to probe ``target_id`` at ``target_address`` on the sender's behalf."""

    seq: Annotated[int, Field("q", counter)]
    target_id: Annotated[str, Field("t", node_id, name="target")]
    target_address: Annotated[str, Field("a", address, name="target address")]
    updates: Annotated[tuple[Any, ...], _UPDATES] = ()

    WIRE: ClassVar[Spec]


@wire(Kind.ACK)
@dataclass(frozen=True, slots=True)
class Ack:
    """Answer to a ping (or forwarded answer to a ping-req) with the probe's ``seq``."""

    seq: Annotated[int, Field("q", counter)]
    updates: Annotated[tuple[Any, ...], _UPDATES] = ()

    WIRE: ClassVar[Spec]


@wire(Kind.GOSSIP)
@dataclass(frozen=True, slots=True)
class Gossip:
    """A batch of updates sent on the gossip tick."""

    updates: Annotated[tuple[Any, ...], _UPDATES] = ()

    WIRE: ClassVar[Spec]


@wire(Kind.PUSH_PULL)
@dataclass(frozen=True, slots=True)
class PushPull:
    """(Part of) a full state: members, the application's items and header.

    ``reply`` asks the receiver to answer with its own state. ``header`` holds the application's
    scalar keys (Mycelium's: ``url``, the registry's), sent beside ``r``, ``m`` and ``g``.
    """

    reply: Annotated[bool, Field("r", flag)]
    members: Annotated[
        tuple[MemberUpdate, ...],
        Field("m", member_list, default=(), encode=_encode_members, records=True),
    ] = ()
    items: Annotated[tuple[Any, ...], Field("g", item_list, default=(), encode=_encode_items)] = ()
    header: Annotated[dict[str, Any], Field("", header, spread=True)] = field(default_factory=dict)

    WIRE: ClassVar[Spec]


@wire(Kind.JOIN)
@dataclass(frozen=True, slots=True)
class Join(PushPull):
    """A newcomer's push-pull with its seed (``reply`` set): the same layout as ``PushPull``."""


@wire(Kind.LEAVE)
@dataclass(frozen=True, slots=True)
class Leave:
    """Graceful leave announced directly to a few peers (also gossiped as status ``LEFT``)."""

    incarnation: Annotated[int, Field("n", counter)]

    WIRE: ClassVar[Spec]


@wire(Kind.MODEL_REQUEST)
@dataclass(frozen=True, slots=True)
class ModelRequest:
    """Ask a group's leader for its latest global model."""

    req_id: Annotated[int, Field("q", counter, name="req id")]
    group_id: Annotated[str, Field("g", node_id, name="group id")]

    WIRE: ClassVar[Spec]


@wire(Kind.MODEL_RESPONSE)
@dataclass(frozen=True, slots=True)
class ModelResponse:
    """A leader's latest model of ``group_id`` (``payload`` is opaque to gossip)."""

    req_id: Annotated[int, Field("q", counter, name="req id")]
    group_id: Annotated[str, Field("g", node_id, name="group id")]
    found: Annotated[bool, Field("f", flag)]
    round: Annotated[int, Field("r", counter, default=0)] = 0
    payload: Annotated[bytes, Field("p", blob, default=b"", encode=bytes)] = b""

    WIRE: ClassVar[Spec]


Body = Ping | PingReq | Ack | Gossip | PushPull | Join | Leave | ModelRequest | ModelResponse


@dataclass(frozen=True, slots=True)
class Message:
    """A decoded, validated frame (``kind`` is the body's, but for ``JOIN`` and ``PUSH_PULL``
    either may carry a ``PushPull``)."""

    kind: Kind
    sender_id: str
    sender_address: str
    body: Body
    version: int = PROTOCOL_VERSION


def message(sender_id: str, sender_address: str, body: Body) -> Message:
    """The message of ``body``'s own kind."""
    return Message(body.WIRE.kind, sender_id, sender_address, body)  # type: ignore[arg-type]
