"""Transports carry opaque gossip frames between ``host:port`` addresses.

A ``SwimNode`` is given one ``Transport`` and uses nothing else of the network:

- ``send(dest, frame)``: fire and forget, never blocking (a frame that cannot go is dropped).
- ``receive(timeout)``: wait up to ``timeout`` seconds for incoming frames, or until ``wake()``
  (from any thread); return ``(token, frame)`` pairs. ``reply(token, frame)`` answers on the
  connection a frame came in on (a model response goes back to the requester's own socket).
- ``request(dest, frame, timeout)``: send on a connection of its own and block (on the calling
  thread, not the gossip thread) for the one answer, or None.
- ``forget(dest)``: a hint that ``dest`` died or left (close what is kept for it).
- ``learn(node_id, address, ticket)``: a member's ticket (gossip metadata): a transport that
  authenticates (ZeroMQ with an identity) takes the key to reach ``address`` with from it. A
  frame from an authenticated sender comes with a token carrying its node id (``peer``).

Implementations: ``zmq.ZmqTransport`` (real networks) and ``memory.MemoryTransport`` on a
``memory.MemoryNetwork`` (tests and simulations). ``Partition`` cuts any of them in two:
``partition.wrap(transport)`` drops every frame to the other side until ``heal()``.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from typing import Any, Protocol


class Transport(Protocol):
    """What a gossip node needs of the network (see the module docstring)."""

    @property
    def address(self) -> str:
        """This endpoint's advertised ``host:port``."""
        ...

    def send(self, dest: str, frame: bytes) -> bool:
        """Queue ``frame`` for ``dest`` without blocking; False if it was dropped."""
        ...

    def receive(self, timeout: float) -> list[tuple[Any, bytes]]:
        """Incoming ``(token, frame)`` pairs, waiting up to ``timeout`` s (less if woken)."""
        ...

    def wake(self) -> None:
        """Make a ``receive`` that waits return now (thread-safe)."""
        ...

    def reply(self, token: Any, frame: bytes) -> bool:
        """Answer on the connection the frame of ``token`` came in on; False if dropped."""
        ...

    def request(self, dest: str, frame: bytes, timeout: float) -> bytes | None:
        """Send ``frame`` on a connection of its own, return the one answer (or None)."""
        ...

    def forget(self, dest: str) -> None:
        """``dest`` died or left: release what is kept for it."""
        ...

    def learn(self, node_id: str, address: str, ticket: bytes) -> bool:
        """``node_id``, at ``address``, speaks with the key of ``ticket``; True if taken."""
        ...

    def stats(self) -> dict[str, int]:
        """Counters (drops, errors, open connections)."""
        ...

    def close(self) -> None:
        """Release every resource."""
        ...


class Partition:
    """Which addresses cannot reach which: ``cut(a, b)`` drops frames both ways, ``heal()`` ends it.

    Used by ``MemoryNetwork`` and, through ``wrap``, on any transport (a broken switch between
    two halves of a real network). Thread-safe.
    """

    def __init__(self) -> None:
        self._blocked: dict[str, frozenset[str]] = {}
        self._lock = threading.Lock()
        self.dropped = 0

    def cut(self, side_a: Iterable[str], side_b: Iterable[str]) -> None:
        """No frame between an address of ``side_a`` and one of ``side_b`` (either way)."""
        a, b = frozenset(side_a), frozenset(side_b)
        with self._lock:
            for address in a:
                self._blocked[address] = self._blocked.get(address, frozenset()) | b
            for address in b:
                self._blocked[address] = self._blocked.get(address, frozenset()) | a

    def heal(self) -> None:
        """Every address reaches every other again."""
        with self._lock:
            self._blocked.clear()

    def blocks(self, src: str, dest: str) -> bool:
        """True (and one drop counted) if a frame from ``src`` to ``dest`` must be dropped."""
        if not self._blocked:
            return False
        with self._lock:
            if dest in self._blocked.get(src, ()):
                self.dropped += 1
                return True
        return False

    def wrap(self, transport: Transport) -> PartitionedTransport:
        """``transport`` with this partition applied to what it sends."""
        return PartitionedTransport(transport, self)


class PartitionedTransport:
    """A transport whose sends and requests across a ``Partition`` are dropped.

    Each side wraps its own transport, so both directions are cut.
    """

    def __init__(self, inner: Transport, partition: Partition) -> None:
        self.inner = inner
        self.partition = partition

    @property
    def address(self) -> str:
        return self.inner.address

    def send(self, dest: str, frame: bytes) -> bool:
        if self.partition.blocks(self.inner.address, dest):
            return False
        return self.inner.send(dest, frame)

    def request(self, dest: str, frame: bytes, timeout: float) -> bytes | None:
        if self.partition.blocks(self.inner.address, dest):
            return None
        return self.inner.request(dest, frame, timeout)

    def receive(self, timeout: float) -> list[tuple[Any, bytes]]:
        return self.inner.receive(timeout)

    def wake(self) -> None:
        self.inner.wake()

    def reply(self, token: Any, frame: bytes) -> bool:
        return self.inner.reply(token, frame)

    def forget(self, dest: str) -> None:
        self.inner.forget(dest)

    def learn(self, node_id: str, address: str, ticket: bytes) -> bool:
        return self.inner.learn(node_id, address, ticket)

    def introduce(self, dest: str, timeout: float) -> Any:
        if self.partition.blocks(self.inner.address, dest):
            return None
        return self.inner.introduce(dest, timeout)  # type: ignore[attr-defined]

    def renew(self) -> None:
        self.inner.renew()  # type: ignore[attr-defined]

    def stats(self) -> dict[str, int]:
        return {**self.inner.stats(), "partitioned": self.partition.dropped}

    def close(self) -> None:
        self.inner.close()


def peer_of(token: Any) -> str | None:
    """The authenticated node id a received frame's token carries (None: not authenticated)."""
    peer = getattr(token, "peer", None)
    return peer if isinstance(peer, str) else None


__all__ = ["Partition", "PartitionedTransport", "Transport", "peer_of"]
