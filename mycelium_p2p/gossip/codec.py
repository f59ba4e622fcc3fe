"""The gossip codec: msgpack frames to and from the structs of ``messages``, validated at the edge.

Everything comes from the declarations in ``messages``: a kind's struct gives the body's keys,
their order and their validators. ``Codec.decode`` never raises: a frame that is too big, not
msgpack, of another protocol version, of an unknown kind or whose fields fail validation is
counted under its reason (``oversize``, ``malformed``, ``bad_version``, ``unknown_kind``,
``invalid``) and dropped whole. No pickle: msgpack with ``raw=False`` and
``strict_map_key=True``.

The application's items and push-pull header are parsed by the ``AppSchema`` given (the node's
delegate): its ``ValueError`` drops the frame as ``invalid``, like any other bad field.
"""

from __future__ import annotations

from collections import Counter
from typing import Any, Protocol

import msgpack

from mycelium_p2p.gossip.messages import (
    MESSAGE_RECORDS,
    MESSAGES,
    PROTOCOL_VERSION,
    Item,
    Kind,
    Message,
    Packed,
    Raw,
    WireError,
    check_address,
    check_id,
    to_wire,
)

DROP_REASONS = ("malformed", "oversize", "unknown_kind", "bad_version", "invalid")


class AppSchema(Protocol):
    """How the application's parts of a frame are validated (``delegate.Delegate`` has both)."""

    def parse_item(self, raw: dict[str, Any]) -> Any:
        """An application item from its wire map; ValueError if it is invalid."""
        ...

    def parse_header(self, raw: dict[str, Any]) -> dict[str, Any]:
        """The push-pull header keys the application reads; ValueError if one is invalid."""
        ...


class OpaqueItems:
    """The schema of a codec without an application: items kept as ``Item`` maps, header as is."""

    def parse_item(self, raw: dict[str, Any]) -> Any:
        return Item({k: v for k, v in raw.items() if k != "t"})

    def parse_header(self, raw: dict[str, Any]) -> dict[str, Any]:
        return raw


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
    app : AppSchema | None
        Parser of application items and header (default: None, kept opaque).
    """

    def __init__(
        self,
        max_frame_bytes: int,
        max_model_bytes: int,
        max_meta_bytes: int,
        app: AppSchema | None = None,
    ) -> None:
        self.max_frame_bytes = max_frame_bytes
        self.max_model_bytes = max_model_bytes
        self.max_meta_bytes = max_meta_bytes
        self.app: AppSchema = app if app is not None else OpaqueItems()
        self.drops: Counter[str] = Counter({r: 0 for r in DROP_REASONS})

    # -- encode

    def encode(self, msg: Message) -> bytes:
        """Encode ``msg``; the caller keeps it within the size caps."""
        head = msgpack.packb(
            [msg.version, int(msg.kind), msg.sender_id, msg.sender_address], use_bin_type=True
        )
        return b"\x95" + head[1:] + _pack_body(to_wire(msg.body))  # a 5-array: head, then body

    # -- decode

    def decode(self, frame: Any) -> Message | None:
        """Decode and validate ``frame``; None (and one drop counted) if it is unusable."""
        try:
            return self._decode(frame)
        except _Drop as drop:
            self.drops[drop.reason] += 1
        except (WireError, ValueError):  # a field, or an application item the delegate refused
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
            if bytes(frame[:3]) in _RECORD_PREFIXES:
                obj = _unpack_records(bytes(frame), self.max_meta_bytes)
            else:
                obj = msgpack.unpackb(frame, raw=False, strict_map_key=True, use_list=True)
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
        cls = MESSAGES.get(k)
        if cls is None:
            raise _Drop("unknown_kind")
        if not isinstance(body, dict):
            raise WireError("body must be a map")
        return Message(
            kind=k,
            sender_id=check_id(sender_id, "sender id"),
            sender_address=check_address(sender_address, "sender address"),
            body=self.decode_struct(cls, body),
            version=version,
        )

    def decode_struct(self, cls: type, raw: dict[str, Any], encoded: Any = None) -> Any:
        """Build a declared struct from its map, each field through its validator.

        ``encoded``: the ``Raw`` entry the map came from; a struct declared with a memo is then
        remembered under those bytes (see ``entry``).
        """
        spec = cls.WIRE  # type: ignore[attr-defined]
        if not spec.plain:
            args = []
            for _, f in spec.fields:
                if f.spread:
                    rest = {k: v for k, v in raw.items() if k not in spec.keys}
                    args.append(f.check(rest, f.name, self))
                else:
                    args.append(f.check(raw.get(f.key, f.default), f.name, self))
            return cls(*args)
        get = raw.get
        out = cls(
            *[check(get(key, default), name, self) for key, default, check, name in spec.plain]
        )
        if (
            spec.memo
            and type(encoded) is Raw
            and len(encoded.data) <= MEMO_ENTRY_BYTES
            and spec.tag
            and raw.get(spec.tag[0]) == spec.tag[1]
        ):
            if len(_MEMO) >= spec.memo:
                _MEMO.clear()
            _MEMO[(self.max_meta_bytes, encoded.data)] = out
        return out

    def entry(self, v: Any, name: str) -> Any:
        """A list entry as its map, or the struct decoded before from the same bytes.

        ``v`` is a decoded map, or a ``Raw`` entry of a ``records`` list, which holds the
        struct the memo knew for its bytes (see ``_unpack_records``) or its unpacked value.
        """
        if type(v) is Raw:
            v = v.value
            if type(v) in _MEMOIZED:
                return v
        if not isinstance(v, dict):
            raise WireError(f"{name} must be a map")
        return v

    def parse_item(self, raw: dict[str, Any]) -> Any:
        """An application item, through the application's schema."""
        return self.app.parse_item(raw)

    def parse_header(self, raw: dict[str, Any]) -> dict[str, Any]:
        """A push-pull header, through the application's schema."""
        return self.app.parse_header(raw)


class _Drop(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


#: Member entries decoded before, by (meta limit, exact bytes), shared by every codec: a push-pull
#: state carries every member, mostly unchanged since the last one, and a queued update goes out
#: many times. Bounded (``wire(memo=...)``); emptied when full.
_MEMO: dict[tuple[int, bytes], Any] = {}
#: Largest entry remembered (an honest member entry takes a few hundred bytes; unknown keys are
#: ignored, so a padded one could be big): the memo holds at most ``memo`` times this.
MEMO_ENTRY_BYTES = 1024
_MEMOIZED = frozenset(cls for cls in MESSAGE_RECORDS if cls.WIRE.memo)  # type: ignore[attr-defined]

_ARRAY_MARKERS = frozenset([*range(0x90, 0xA0), 0xDC, 0xDD])
_MAP_MARKERS = frozenset([*range(0x80, 0x90), 0xDE, 0xDF])


def _record_prefixes() -> frozenset[bytes]:
    """The first three bytes of frames whose body has ``records`` lists, as an encoder writes
    them: a 5-array, the protocol version and the kind, each a positive fixint."""
    kinds = [k for k, cls in MESSAGES.items() if cls.WIRE.records]  # type: ignore[attr-defined]
    return frozenset(bytes((0x95, PROTOCOL_VERSION, int(k))) for k in kinds)


_RECORD_PREFIXES = _record_prefixes()


def _unpack_records(frame: bytes, limit: int) -> list[Any]:
    """``unpackb(frame)``, but each entry of a ``records`` list of the body as a ``Raw``: its
    bytes, and the struct the memo holds for them under ``limit`` (not unpacked again), or else
    its unpacked value. Raises exactly where ``unpackb`` would: before any validation."""
    up = msgpack.Unpacker(
        raw=False, strict_map_key=True, use_list=True, max_buffer_size=max(1, len(frame))
    )
    up.feed(frame)
    if up.read_array_header() != 5:
        raise ValueError("a frame is a 5-array")
    version, kind, sender_id, sender_address = up.unpack(), up.unpack(), up.unpack(), up.unpack()
    records = MESSAGES[Kind(kind)].WIRE.records  # type: ignore[attr-defined]
    body: Any = {}
    if frame[up.tell()] not in _MAP_MARKERS:
        body = up.unpack()  # not a map: the validator says so
    else:
        for _ in range(up.read_map_header()):
            key = up.unpack()
            if type(key) is not str and type(key) is not bytes:
                raise ValueError("map keys must be strings")
            if key in records and frame[up.tell()] in _ARRAY_MARKERS:
                entries = []
                for _ in range(up.read_array_header()):
                    start = up.tell()
                    up.skip()
                    data = frame[start : up.tell()]
                    known = _MEMO.get((limit, data))
                    if known is None:
                        known = msgpack.unpackb(data, raw=False, strict_map_key=True)
                    entries.append(Raw(data, known))
                body[key] = entries
            else:
                body[key] = up.unpack()
    if up.tell() != len(frame):
        raise ValueError("extra data after the frame")
    return [version, kind, sender_id, sender_address, body]


def _header(n: int, fix: int, b16: int, b32: int) -> bytes:
    """The smallest msgpack header of a map or array of ``n`` entries (as ``packb`` writes)."""
    if n < 16:
        return bytes((fix | n,))
    if n < 1 << 16:
        return bytes((b16,)) + n.to_bytes(2, "big")
    return bytes((b32,)) + n.to_bytes(4, "big")


def _pack_body(body: dict[str, Any]) -> bytes:
    """``packb(body)``, with the ``Packed`` entries of its lists spliced in as they are."""
    parts = [_header(len(body), 0x80, 0xDE, 0xDF)]
    for key, value in body.items():
        parts.append(msgpack.packb(key))
        if type(value) is list:
            parts.append(_header(len(value), 0x90, 0xDC, 0xDD))
            for v in value:
                parts.append(v.data if type(v) is Packed else msgpack.packb(v, use_bin_type=True))
        else:
            parts.append(msgpack.packb(value, use_bin_type=True))
    return b"".join(parts)


def encoded_size(obj: Any) -> int:
    """Bytes ``obj`` takes once msgpack-encoded (used to budget frames)."""
    return len(msgpack.packb(obj, use_bin_type=True))


def decode(frame: Any, codec: Codec | None = None) -> Message | None:
    """Decode ``frame`` with ``codec`` (default limits of ``GossipConfig()`` if None)."""
    if codec is None:
        codec = Codec(60_000, 64 * 1024 * 1024, 512)
    return codec.decode(frame)
