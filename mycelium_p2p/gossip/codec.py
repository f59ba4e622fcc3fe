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
        return msgpack.packb(
            [msg.version, int(msg.kind), msg.sender_id, msg.sender_address, to_wire(msg.body)],
            use_bin_type=True,
        )

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
        values: dict[str, Any] = {}
        for attr, f in spec.fields:
            if f.spread:
                rest = {k: v for k, v in raw.items() if k not in spec.keys}
                values[attr] = f.check(rest, f.name, self)
            else:
                values[attr] = f.check(raw.get(f.key, f.default), f.name, self)
        return cls(**values)

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


def encoded_size(obj: Any) -> int:
    """Bytes ``obj`` takes once msgpack-encoded (used to budget frames)."""
    return len(msgpack.packb(obj, use_bin_type=True))


def decode(frame: Any, codec: Codec | None = None) -> Message | None:
    """Decode ``frame`` with ``codec`` (default limits of ``GossipConfig()`` if None)."""
    if codec is None:
        codec = Codec(60_000, 64 * 1024 * 1024, 512)
    return codec.decode(frame)
