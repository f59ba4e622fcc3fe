"""Gossip wire format: message kinds, msgpack codec, validation at the edge, drop counters.

A frame is one msgpack array ``[version, kind, sender_id, sender_address, body]`` where ``body``
is a map whose keys depend on ``kind``. ``Codec.decode`` never raises: a frame that is too big,
not msgpack, of another protocol version, of an unknown kind or whose fields fail validation is
counted under its reason (``oversize``, ``malformed``, ``bad_version``, ``unknown_kind``,
``invalid``) and dropped. No pickle: msgpack with ``raw=False`` and ``strict_map_key=True``.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any

import msgpack

from mycelium_p2p.groups import MAX_ID_LEN, GroupRecord
from mycelium_p2p.limits import MAX_COUNTER

PROTOCOL_VERSION = 1
DROP_REASONS = ("malformed", "oversize", "unknown_kind", "bad_version", "invalid")

MAX_ADDRESS_LEN = 262
MAX_UPDATES = 4096
MAX_META_KEYS = 32
MAX_META_KEY_LEN = 32
MAX_META_TEXT = 256


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


_STATUSES = frozenset(int(s) for s in Status)


class WireError(ValueError):
    """A decoded frame failed validation."""


@dataclass(frozen=True, slots=True)
class MemberUpdate:
    """One member's state as gossiped: who, where, status, incarnation, metadata.

    ``by`` names the member that raised a suspicion or declared a death (Lifeguard counts
    independent confirmations by it); empty otherwise.
    """

    node_id: str
    address: str
    status: Status
    incarnation: int
    meta: dict[str, Any] = field(default_factory=dict)
    by: str = ""


Update = MemberUpdate | GroupRecord


@dataclass(frozen=True, slots=True)
class Ping:
    """Direct probe; ``target_id`` guards against a different node now at that address."""

    seq: int
    target_id: str
    updates: tuple[Update, ...] = ()


@dataclass(frozen=True, slots=True)
class PingReq:
    """Ask the receiver to probe ``target_id`` at ``target_address`` on the sender's behalf."""

    seq: int
    target_id: str
    target_address: str
    updates: tuple[Update, ...] = ()


@dataclass(frozen=True, slots=True)
class Ack:
    """Answer to a ping (or forwarded answer to a ping-req) with the probe's ``seq``."""

    seq: int
    updates: tuple[Update, ...] = ()


@dataclass(frozen=True, slots=True)
class Gossip:
    """A batch of updates sent on the gossip tick."""

    updates: tuple[Update, ...] = ()


@dataclass(frozen=True, slots=True)
class PushPull:
    """(Part of) a full state. ``reply`` asks the receiver to answer with its own state.

    Sent as kind ``JOIN`` by a newcomer and as ``PUSH_PULL`` for the periodic sync.
    """

    reply: bool
    members: tuple[MemberUpdate, ...] = ()
    groups: tuple[GroupRecord, ...] = ()
    registry_url: str | None = None


@dataclass(frozen=True, slots=True)
class Leave:
    """Graceful leave announced directly to a few peers (also gossiped as status ``LEFT``)."""

    incarnation: int


@dataclass(frozen=True, slots=True)
class ModelRequest:
    """Ask a group's leader for its latest global model."""

    req_id: int
    group_id: str


@dataclass(frozen=True, slots=True)
class ModelResponse:
    """A leader's latest model of ``group_id`` (``payload`` is opaque to gossip)."""

    req_id: int
    group_id: str
    found: bool
    round: int = 0
    payload: bytes = b""


Body = Ping | PingReq | Ack | Gossip | PushPull | Leave | ModelRequest | ModelResponse


@dataclass(frozen=True, slots=True)
class Message:
    """A decoded, validated frame."""

    kind: Kind
    sender_id: str
    sender_address: str
    body: Body
    version: int = PROTOCOL_VERSION


# ----------------------------------------------------------------------------- validation helpers


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


def _uint(v: Any, name: str) -> int:
    """A counter: an integer in ``0..MAX_COUNTER`` (see ``limits.py``)."""
    if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v <= MAX_COUNTER:
        raise WireError(f"{name} must be an integer in 0..{MAX_COUNTER}")
    return v


def _bool(v: Any, name: str) -> bool:
    if not isinstance(v, bool):
        raise WireError(f"{name} must be a boolean")
    return v


def _map(v: Any, name: str) -> dict[str, Any]:
    if not isinstance(v, dict):
        raise WireError(f"{name} must be a map")
    return v


def _list(v: Any, name: str, limit: int = MAX_UPDATES) -> list[Any]:
    if not isinstance(v, list | tuple) or len(v) > limit:
        raise WireError(f"{name} must be a list of at most {limit} items")
    return list(v)


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


# ----------------------------------------------------------------------------- update codec


def update_to_wire(u: Update) -> dict[str, Any]:
    """Encode one update as a msgpack-ready map."""
    if isinstance(u, GroupRecord):
        d = u.to_dict()
        d["t"] = "g"
        return d
    return {
        "t": "m",
        "i": u.node_id,
        "a": u.address,
        "s": int(u.status),
        "n": u.incarnation,
        "m": u.meta,
        "b": u.by,
    }


def member_from_wire(d: Any, max_meta_bytes: int) -> MemberUpdate:
    """Validate a member update map."""
    d = _map(d, "member update")
    status = d.get("s")
    if isinstance(status, bool) or not isinstance(status, int) or status not in _STATUSES:
        raise WireError("member status is unknown")
    by = d.get("b", "")
    if by != "":
        check_id(by, "by")
    return MemberUpdate(
        node_id=check_id(d.get("i"), "node id"),
        address=check_address(d.get("a")),
        status=Status(status),
        incarnation=_uint(d.get("n"), "incarnation"),
        meta=check_meta(d.get("m", {}), max_meta_bytes),
        by=by,
    )


def update_from_wire(d: Any, max_meta_bytes: int) -> Update:
    """Validate one update map (member or group)."""
    d = _map(d, "update")
    t = d.get("t")
    if t == "m":
        return member_from_wire(d, max_meta_bytes)
    if t == "g":
        try:
            return GroupRecord.from_dict(d)
        except ValueError as exc:
            raise WireError(str(exc)) from exc
    raise WireError("update type must be 'm' or 'g'")


# ----------------------------------------------------------------------------- the codec


class Codec:
    """Encode and decode frames within size limits, counting drops per reason.

    Parameters
    ----------
    max_frame_bytes : int
        Cap for every kind but ``MODEL_RESPONSE``.
    max_model_bytes : int
        Cap for ``MODEL_RESPONSE`` frames.
    max_meta_bytes : int
        Cap for a member's encoded metadata.
    """

    def __init__(self, max_frame_bytes: int, max_model_bytes: int, max_meta_bytes: int) -> None:
        self.max_frame_bytes = max_frame_bytes
        self.max_model_bytes = max_model_bytes
        self.max_meta_bytes = max_meta_bytes
        self.drops: Counter[str] = Counter({r: 0 for r in DROP_REASONS})

    # -- encode

    def encode(self, msg: Message) -> bytes:
        """Encode ``msg``; the caller keeps it within the size caps."""
        return msgpack.packb(
            [msg.version, int(msg.kind), msg.sender_id, msg.sender_address, _body(msg.body)],
            use_bin_type=True,
        )

    # -- decode

    def decode(self, frame: Any) -> Message | None:
        """Decode and validate ``frame``; None (and one drop counted) if it is unusable."""
        try:
            return self._decode(frame)
        except _Drop as drop:
            self.drops[drop.reason] += 1
        except WireError:
            self.drops["invalid"] += 1
        except Exception:  # any other surprise from a hostile frame is still just a drop
            self.drops["malformed"] += 1
        return None

    def _decode(self, frame: Any) -> Message:
        if not isinstance(frame, bytes | bytearray | memoryview):
            raise _Drop("malformed")
        size = len(frame)
        if size > self.max_model_bytes:
            raise _Drop("oversize")
        try:
            obj = msgpack.unpackb(
                frame,
                raw=False,
                strict_map_key=True,
                use_list=True,
            )
        except Exception as exc:
            raise _Drop("malformed") from exc
        if not isinstance(obj, list) or len(obj) != 5:
            raise _Drop("malformed")
        version, kind, sender_id, sender_address, body = obj
        if isinstance(version, bool) or not isinstance(version, int):
            raise _Drop("malformed")
        if version != PROTOCOL_VERSION:
            raise _Drop("bad_version")
        if isinstance(kind, bool) or not isinstance(kind, int):
            raise _Drop("malformed")
        try:
            k = Kind(kind)
        except ValueError as exc:
            raise _Drop("unknown_kind") from exc
        if k is not Kind.MODEL_RESPONSE and size > self.max_frame_bytes:
            raise _Drop("oversize")
        return Message(
            kind=k,
            sender_id=check_id(sender_id, "sender id"),
            sender_address=check_address(sender_address, "sender address"),
            body=self._body(k, _map(body, "body")),
            version=version,
        )

    def _updates(self, b: dict[str, Any]) -> tuple[Update, ...]:
        return tuple(
            update_from_wire(u, self.max_meta_bytes) for u in _list(b.get("u", []), "updates")
        )

    def _body(self, k: Kind, b: dict[str, Any]) -> Body:
        if k is Kind.PING:
            return Ping(_uint(b.get("q"), "seq"), check_id(b.get("t"), "target"), self._updates(b))
        if k is Kind.PING_REQ:
            return PingReq(
                _uint(b.get("q"), "seq"),
                check_id(b.get("t"), "target"),
                check_address(b.get("a"), "target address"),
                self._updates(b),
            )
        if k is Kind.ACK:
            return Ack(_uint(b.get("q"), "seq"), self._updates(b))
        if k is Kind.GOSSIP:
            return Gossip(self._updates(b))
        if k in (Kind.JOIN, Kind.PUSH_PULL):
            url = b.get("url")
            if url is not None and (not isinstance(url, str) or len(url) > 2048):
                raise WireError("registry url must be a string")
            members = tuple(
                member_from_wire(m, self.max_meta_bytes) for m in _list(b.get("m", []), "members")
            )
            groups = []
            for g in _list(b.get("g", []), "groups"):
                try:
                    groups.append(GroupRecord.from_dict(g))
                except ValueError as exc:
                    raise WireError(str(exc)) from exc
            return PushPull(_bool(b.get("r"), "reply"), members, tuple(groups), url)
        if k is Kind.LEAVE:
            return Leave(_uint(b.get("n"), "incarnation"))
        if k is Kind.MODEL_REQUEST:
            return ModelRequest(_uint(b.get("q"), "req id"), check_id(b.get("g"), "group id"))
        # Kind.MODEL_RESPONSE
        payload = b.get("p", b"")
        if not isinstance(payload, bytes):
            raise WireError("payload must be bytes")
        return ModelResponse(
            _uint(b.get("q"), "req id"),
            check_id(b.get("g"), "group id"),
            _bool(b.get("f"), "found"),
            _uint(b.get("r", 0), "round"),
            payload,
        )


class _Drop(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _body(body: Body) -> dict[str, Any]:
    if isinstance(body, Ping):
        return {"q": body.seq, "t": body.target_id, "u": [update_to_wire(u) for u in body.updates]}
    if isinstance(body, PingReq):
        return {
            "q": body.seq,
            "t": body.target_id,
            "a": body.target_address,
            "u": [update_to_wire(u) for u in body.updates],
        }
    if isinstance(body, Ack):
        return {"q": body.seq, "u": [update_to_wire(u) for u in body.updates]}
    if isinstance(body, Gossip):
        return {"u": [update_to_wire(u) for u in body.updates]}
    if isinstance(body, PushPull):
        return {
            "r": body.reply,
            "m": [update_to_wire(m) for m in body.members],
            "g": [g.to_dict() for g in body.groups],
            "url": body.registry_url,
        }
    if isinstance(body, Leave):
        return {"n": body.incarnation}
    if isinstance(body, ModelRequest):
        return {"q": body.req_id, "g": body.group_id}
    return {
        "q": body.req_id,
        "g": body.group_id,
        "f": body.found,
        "r": body.round,
        "p": bytes(body.payload),
    }


def encoded_size(obj: Any) -> int:
    """Bytes ``obj`` takes once msgpack-encoded (used to budget frames)."""
    return len(msgpack.packb(obj, use_bin_type=True))


def decode(frame: Any, codec: Codec | None = None) -> Message | None:
    """Decode ``frame`` with ``codec`` (default limits of ``GossipConfig()`` if None)."""
    if codec is None:
        codec = Codec(60_000, 64 * 1024 * 1024, 512)
    return codec.decode(frame)
