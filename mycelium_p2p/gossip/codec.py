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
    MESSAGES,
    PROTOCOL_VERSION,
    Item,
    Kind,
    Message,
    Packed,
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

    def decode_struct(self, cls: type, raw: dict[str, Any]) -> Any:
        """Build a declared struct from its map, each field through its validator."""
        spec = cls.WIRE  # type: ignore[attr-defined]
        if spec.plain:
            get = raw.get
            values = [get(key, default) for key, default, _, _ in spec.plain]
            key = _memo_key(self.max_meta_bytes, values) if spec.memo else None
            if key is not None:
                memo = _MEMOS.setdefault(cls, {})
                hit = memo.get(key)
                if hit is not None:
                    return hit
            out = cls(*[f[2](v, f[3], self) for f, v in zip(spec.plain, values, strict=True)])
            if key is not None:
                if len(memo) >= spec.memo:
                    memo.clear()
                memo[key] = out
            return out
        args = []
        for _, f in spec.fields:
            if f.spread:
                rest = {k: v for k, v in raw.items() if k not in spec.keys}
                args.append(f.check(rest, f.name, self))
            else:
                args.append(f.check(raw.get(f.key, f.default), f.name, self))
        return cls(*args)

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


#: Structs decoded from identical maps, per struct (``wire(memo=...)``), shared by every codec:
#: a push-pull state carries every member, mostly unchanged since the last one.
_MEMOS: dict[type, dict[tuple[Any, ...], Any]] = {}
_SCALARS = (str, int, float, bool, type(None), bytes)


def _memo_key(limit: int, values: list[Any]) -> tuple[Any, ...] | None:
    """An exact key for decoded ``values``: each with its type (``True`` is not ``1``), maps as
    their items; None if a value is neither a scalar nor a map of scalars (never memoized)."""
    key: list[Any] = [limit]
    for v in values:
        t = type(v)
        if t in _SCALARS:
            key.append((t, v))
        elif t is dict:
            items = []
            for k, x in v.items():
                if type(x) not in _SCALARS:
                    return None
                items.append((k, type(x), x))
            key.append(tuple(items))
        else:
            return None
    return tuple(key)


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
