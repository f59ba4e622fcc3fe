"""An in-memory network: latency, loss and partitions, on a fake clock or on the wall clock.

``MemoryNetwork`` schedules every frame's delivery after a random latency (unless lost, or cut
by a ``partition``) on a driver:

- ``FakeClock``: a discrete-event loop (a heap of timed events, run by ``run_until``); handlers
  never recurse and 10,000 nodes fit in one process (``sim.SimCluster``).
- ``RealTime``: a background thread runs each event when the wall clock reaches it, so that
  real ``SwimNode`` threads talk over ``MemoryTransport`` endpoints as over sockets.

An endpoint is either a handler (``attach``: called on the driver's thread with ``(sender,
token, frame)``) or a ``MemoryTransport`` (``transport``: frames queue until ``receive``).
"""

from __future__ import annotations

import heapq
import itertools
import logging
import random
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from mycelium_p2p.gossip.transport import Partition

log = logging.getLogger(__name__)

Handler = Callable[[str, Any, bytes], None]


class FakeClock:
    """Discrete events on a fake clock: nothing runs until ``step``/``run_until`` is called.

    Parameters
    ----------
    start : float
        Initial clock value (default: 0.0).
    """

    def __init__(self, start: float = 0.0) -> None:
        self.now = start
        self._events: list[tuple[float, int, Callable[[], None]]] = []
        self._serial = itertools.count()

    def time(self) -> float:
        return self.now

    def call_at(self, when: float, fn: Callable[[], None]) -> None:
        """Schedule ``fn`` at time ``when`` (never before now)."""
        heapq.heappush(self._events, (max(when, self.now), next(self._serial), fn))

    def step(self) -> bool:
        """Run the next event; False if there is none."""
        if not self._events:
            return False
        when, _, fn = heapq.heappop(self._events)
        self.now = max(self.now, when)
        fn()
        return True

    def run_until(self, t: float) -> None:
        """Run every event scheduled up to ``t``; the clock ends at ``t``."""
        events = self._events
        while events and events[0][0] <= t:
            when, _, fn = heapq.heappop(events)
            if when > self.now:
                self.now = when
            fn()
        self.now = max(self.now, t)

    def run_while(self, busy: Callable[[], bool], deadline: float, check_every: float) -> bool:
        """Run until ``busy()`` is False (True) or the clock passes ``deadline`` (False)."""
        while busy():
            if self.now >= deadline:
                return False
            self.run_until(min(deadline, self.now + check_every))
        return True


class RealTime:
    """Events run by a background thread when the wall clock (``time.monotonic``) reaches them.

    Events run one at a time on that thread: keep them quick (a delivery is an append).
    """

    def __init__(self) -> None:
        self._events: list[tuple[float, int, Callable[[], None]]] = []
        self._serial = itertools.count()
        self._cond = threading.Condition()
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="memory-network", daemon=True)
        self._thread.start()

    def time(self) -> float:
        return time.monotonic()

    def call_at(self, when: float, fn: Callable[[], None]) -> None:
        with self._cond:
            heapq.heappush(self._events, (when, next(self._serial), fn))
            self._cond.notify()

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._closed:
                    wait = self._events[0][0] - time.monotonic() if self._events else None
                    if wait is not None and wait <= 0:
                        break
                    self._cond.wait(wait)
                if self._closed:
                    return
                _, _, fn = heapq.heappop(self._events)
            try:
                fn()
            except Exception:  # one broken delivery must not stop the network
                log.exception("memory network event failed")

    def close(self) -> None:
        """Stop the thread; events not run yet are dropped."""
        with self._cond:
            self._closed = True
            self._cond.notify()
        self._thread.join(timeout=5.0)


Driver = FakeClock | RealTime


@dataclass(frozen=True, slots=True)
class ReplyPath:
    """Where an answer to a delivered frame goes: its sender, and the requester's slot if the
    frame came through ``request`` (else an answer has nowhere to land, as on ZeroMQ)."""

    sender: str
    slot: _Slot | None = None


class _Slot:
    """One request's own connection: holds its single answer."""

    def __init__(self) -> None:
        self._answer: bytes | None = None
        self._done = threading.Event()

    def put(self, frame: bytes) -> None:
        if not self._done.is_set():
            self._answer = frame
            self._done.set()

    def wait(self, timeout: float) -> bytes | None:
        self._done.wait(max(0.0, timeout))
        return self._answer


class MemoryNetwork:
    """Endpoints by address, frames delivered by a driver after a latency, with loss and cuts.

    Parameters
    ----------
    rng : random.Random
        Drives loss and latency draws.
    loss : float
        Probability that a frame is lost (default: 0.0).
    latency : tuple[float, float]
        Uniform range of one-way delay in seconds (default: (0.001, 0.005)).
    driver : FakeClock | RealTime | None
        Runs deliveries (default: a new ``FakeClock``).
    """

    def __init__(
        self,
        rng: random.Random,
        loss: float = 0.0,
        latency: tuple[float, float] = (0.001, 0.005),
        driver: Driver | None = None,
    ) -> None:
        if not 0.0 <= loss < 1.0:
            raise ValueError("loss must be in [0, 1)")
        self.rng = rng
        self.loss = loss
        self.latency = latency
        self.driver: Driver = driver if driver is not None else FakeClock()
        self.partition = Partition()
        self._handlers: dict[str, Handler] = {}
        self._lock = threading.Lock()
        self.stats: Counter[str] = Counter()
        self.sent_by: Counter[str] = Counter()
        self.bytes_by: Counter[str] = Counter()

    @property
    def now(self) -> float:
        """The driver's clock."""
        return self.driver.time()

    # ------------------------------------------------------------------ endpoints

    def attach(self, address: str, handler: Handler) -> None:
        """Deliver frames for ``address`` to ``handler(sender, token, frame)`` (driver's thread)."""
        with self._lock:
            if address in self._handlers:
                raise ValueError(f"address {address} is taken")
            self._handlers[address] = handler

    def transport(self, address: str) -> MemoryTransport:
        """A ``MemoryTransport`` at ``address`` for a threaded node."""
        endpoint = MemoryTransport(self, address)
        self.attach(address, endpoint.deliver)
        return endpoint

    def detach(self, address: str) -> None:
        """Remove an endpoint: frames to it vanish from now on (a crash)."""
        with self._lock:
            self._handlers.pop(address, None)

    # ------------------------------------------------------------------ partitions

    def cut(self, side_a: Iterable[str], side_b: Iterable[str]) -> None:
        """Drop every frame between ``side_a`` and ``side_b`` (both ways) until ``heal``."""
        self.partition.cut(side_a, side_b)

    def heal(self) -> None:
        """End every cut."""
        self.partition.heal()

    # ------------------------------------------------------------------ traffic

    def send(self, src: str, dest: str, frame: bytes, slot: _Slot | None = None) -> bool:
        """Schedule ``frame``'s delivery to ``dest`` (True even if lost: the sender cannot tell)."""
        with self._lock:
            size = len(frame)
            self.stats["sent"] += 1
            self.stats["bytes"] += size
            self.sent_by[src] += 1
            self.bytes_by[src] += size
            if self.partition.blocks(src, dest):
                self.stats["partitioned"] += 1
                return True
            if self.loss and self.rng.random() < self.loss:
                self.stats["lost"] += 1
                return True
            delay = self.rng.uniform(*self.latency)
        path = ReplyPath(src, slot)
        self.driver.call_at(self.now + delay, lambda: self._deliver(path, dest, frame))
        return True

    def reply(self, src: str, token: Any, frame: bytes) -> bool:
        """Answer a delivered frame on its own path (dropped if it came without a slot)."""
        if not isinstance(token, ReplyPath) or token.slot is None:
            with self._lock:
                self.stats["reply_dropped"] += 1
            return False
        with self._lock:
            self.stats["sent"] += 1
            self.stats["bytes"] += len(frame)
            if self.partition.blocks(src, token.sender):
                self.stats["partitioned"] += 1
                return True
            if self.loss and self.rng.random() < self.loss:
                self.stats["lost"] += 1
                return True
            delay = self.rng.uniform(*self.latency)
        slot = token.slot
        self.driver.call_at(self.now + delay, lambda: slot.put(frame))
        return True

    def _deliver(self, path: ReplyPath, dest: str, frame: bytes) -> None:
        handler = self._handlers.get(dest)
        if handler is None:
            self.stats["undeliverable"] += 1
            return
        self.stats["delivered"] += 1
        handler(path.sender, path, frame)


class MemoryTransport:
    """An endpoint of a ``MemoryNetwork`` implementing ``Transport``: frames queue until
    ``receive``; a ``request`` waits on a slot of its own for the one answer."""

    def __init__(self, network: MemoryNetwork, address: str, max_queue: int = 10_000) -> None:
        self.network = network
        self._address = address
        self.max_queue = max_queue
        self._inbox: deque[tuple[Any, bytes]] = deque()
        self._cond = threading.Condition()
        self._woken = False
        self.counters: Counter[str] = Counter()

    @property
    def address(self) -> str:
        return self._address

    def deliver(self, sender: str, token: Any, frame: bytes) -> None:
        """Queue a frame from the network (its driver's thread); a full queue drops it."""
        with self._cond:
            if len(self._inbox) >= self.max_queue:
                self.counters["recv_dropped"] += 1
                return
            self._inbox.append((token, frame))
            self._cond.notify()

    def receive(self, timeout: float, limit: int = 256) -> list[tuple[Any, bytes]]:
        deadline = time.monotonic() + max(0.0, timeout)
        with self._cond:
            while not self._inbox and not self._woken:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(left)
            self._woken = False
            out = []
            while self._inbox and len(out) < limit:
                out.append(self._inbox.popleft())
            return out

    def wake(self) -> None:
        with self._cond:
            self._woken = True
            self._cond.notify()

    def send(self, dest: str, frame: bytes) -> bool:
        return self.network.send(self._address, dest, frame)

    def reply(self, token: Any, frame: bytes) -> bool:
        return self.network.reply(self._address, token, frame)

    def request(self, dest: str, frame: bytes, timeout: float) -> bytes | None:
        slot = _Slot()
        self.network.send(self._address, dest, frame, slot)
        return slot.wait(timeout)

    def forget(self, dest: str) -> None:
        return None

    def learn(self, node_id: str, address: str, ticket: bytes) -> bool:
        return False  # frames in memory are not authenticated

    def stats(self) -> dict[str, int]:
        return dict(self.counters)

    def close(self) -> None:
        self.network.detach(self._address)


__all__ = ["FakeClock", "MemoryNetwork", "MemoryTransport", "RealTime", "ReplyPath"]
