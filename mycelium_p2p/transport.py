"""Transports for gossip frames: ZeroMQ for real, in-memory for tests and simulations.

Both send opaque frames to a ``host:port`` address; the sender's own address travels inside the
frame (``wire.Message.sender_address``), never as a socket identity.

``ZmqTransport`` binds one ROUTER and keeps a bounded, least-recently-used set of outbound
DEALERs, one per peer. Every socket has ``LINGER 0`` and high-water marks; sends never block (a
frame that would block is dropped and counted). The ROUTER takes frames of at most
``max_frame_bytes`` (libzmq drops a connection that announces a bigger one, before allocating
it); the one exchange that carries bigger frames, a model request, runs on a DEALER of its own that
the requester opens for that request and reads once (``request``), answered on the same
connection (``reply``). With a secret, every socket runs CURVE with key pairs derived from it, and
the ROUTER admits only the client keys it trusts (a ZAP handler, see ``security.py``).

``MemoryNetwork`` is a discrete-event network on a fake clock: a send schedules a delivery event
(after a random latency, unless lost), so handlers never recurse and 1,000 nodes fit in one
process.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import random
from collections import Counter, OrderedDict
from collections.abc import Callable
from typing import Protocol

import zmq

from mycelium_p2p.config import GossipConfig
from mycelium_p2p.security import Admission, CurveKeys, admit_only

log = logging.getLogger(__name__)

_ENVELOPE_SLACK = 4096


class Transport(Protocol):
    """Sends frames to peers by address; how frames arrive depends on the implementation."""

    address: str

    def send(self, dest: str, frame: bytes) -> bool:
        """Queue ``frame`` for ``dest`` without blocking; False if it was dropped."""
        ...

    def close(self) -> None:
        """Release every resource."""
        ...


# ============================================================================ ZeroMQ


class ZmqTransport:
    """One bound ROUTER plus bounded outbound DEALERs.

    Parameters
    ----------
    config : GossipConfig
        Caps (``max_model_bytes``), HWMs, ``max_peers``, ``peer_idle``.
    host : str
        Interface to bind (default: "127.0.0.1").
    port : int
        Port to bind; 0 picks a free one (default: 0).
    advertise_host : str | None
        Host others should use to reach us (default: ``host``).
    keys : CurveKeys | None
        CURVE keys derived from the network secret; None runs in the clear (default: None).
    context : zmq.Context | None
        Context to use (default: the process-wide instance).
    """

    def __init__(
        self,
        config: GossipConfig,
        host: str = "127.0.0.1",
        port: int = 0,
        advertise_host: str | None = None,
        keys: CurveKeys | None = None,
        context: zmq.Context | None = None,
    ) -> None:
        self.config = config
        self.keys = keys
        self.ctx = context or zmq.Context.instance()
        self.stats: Counter[str] = Counter()
        self._peers: OrderedDict[str, tuple[zmq.Socket, float]] = OrderedDict()
        self.router = self.ctx.socket(zmq.ROUTER)
        self._common(self.router)
        self.router.setsockopt(zmq.RCVHWM, config.recv_hwm)
        self.router.setsockopt(zmq.MAXMSGSIZE, config.max_frame_bytes + _ENVELOPE_SLACK)
        self._admission: Admission | None = None
        if keys is not None:
            self.router.curve_server = True
            self.router.curve_secretkey = keys.server_secret
            self.router.curve_publickey = keys.server_public
            self._admission = admit_only(self.ctx, self.router, {keys.client_public})
        try:
            self.router.bind(f"tcp://{host}:{port or '*'}")
            endpoint = self.router.getsockopt(zmq.LAST_ENDPOINT).decode()
            bound = int(endpoint.rsplit(":", 1)[1])
        except zmq.ZMQError:
            self.router.close(0)
            if self._admission is not None:
                self._admission.close()
            raise
        self.port = bound
        self.address = f"{advertise_host or host}:{bound}"

    @staticmethod
    def _common(sock: zmq.Socket) -> None:
        sock.setsockopt(zmq.LINGER, 0)

    def fileno_socket(self) -> zmq.Socket:
        """The socket to register in a poller for incoming frames."""
        return self.router

    def recv_many(self, limit: int = 256) -> list[tuple[bytes, bytes]]:
        """Up to ``limit`` received ``(connection identity, frame)`` pairs, without blocking."""
        out: list[tuple[bytes, bytes]] = []
        for _ in range(limit):
            try:
                parts = self.router.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                break
            if len(parts) != 2:
                self.stats["recv_bad_parts"] += 1
                continue
            out.append((parts[0], parts[1]))
        return out

    def reply(self, identity: bytes, frame: bytes) -> bool:
        """Answer on the connection ``identity`` a request came in on; False if dropped."""
        try:
            self.router.send_multipart([identity, frame], zmq.NOBLOCK)
        except zmq.ZMQError:  # the requester is gone (or its queue is full): nothing to do
            self.stats["reply_dropped"] += 1
            return False
        return True

    def request(self, dest: str, frame: bytes, timeout: float) -> bytes | None:
        """Send ``frame`` to ``dest`` on a new connection and return its one answer (or None).

        Thread-safe (its socket is its own): the node's control thread probes models with it
        while the gossip thread owns the other sockets. Only this socket accepts frames of up to
        ``max_model_bytes``, and only from the peer it asked.
        """
        sock = self.ctx.socket(zmq.DEALER)
        try:
            self._common(sock)
            sock.setsockopt(zmq.MAXMSGSIZE, self.config.max_model_bytes + _ENVELOPE_SLACK)
            self._client_keys(sock)
            sock.connect(f"tcp://{dest}")
            sock.send(frame, zmq.NOBLOCK)
            if not sock.poll(max(0.0, timeout) * 1000, zmq.POLLIN):
                return None
            return sock.recv(zmq.NOBLOCK)
        except zmq.ZMQError as exc:
            log.debug("request to %s failed: %s", dest, exc)
            return None
        finally:
            sock.close(0)

    def _client_keys(self, sock: zmq.Socket) -> None:
        if self.keys is not None:
            sock.curve_serverkey = self.keys.server_public
            sock.curve_publickey = self.keys.client_public
            sock.curve_secretkey = self.keys.client_secret

    def _dealer(self, dest: str, now: float) -> zmq.Socket:
        entry = self._peers.get(dest)
        if entry is not None:
            self._peers[dest] = (entry[0], now)
            self._peers.move_to_end(dest)
            return entry[0]
        while len(self._peers) >= self.config.max_peers:
            _, (old, _) = self._peers.popitem(last=False)
            old.close(0)
            self.stats["peers_evicted"] += 1
        sock = self.ctx.socket(zmq.DEALER)
        self._common(sock)
        sock.setsockopt(zmq.SNDHWM, self.config.send_hwm)
        sock.setsockopt(zmq.RECONNECT_IVL, 100)
        sock.setsockopt(zmq.RECONNECT_IVL_MAX, 2000)
        self._client_keys(sock)
        sock.connect(f"tcp://{dest}")
        self._peers[dest] = (sock, now)
        return sock

    def send(self, dest: str, frame: bytes, now: float = 0.0) -> bool:
        """Send without blocking; a full queue or bad address drops the frame (counted)."""
        try:
            self._dealer(dest, now).send(frame, zmq.NOBLOCK)
        except zmq.Again:
            self.stats["send_dropped"] += 1
            return False
        except zmq.ZMQError as exc:
            self.stats["send_error"] += 1
            log.debug("send to %s failed: %s", dest, exc)
            return False
        return True

    def close_idle(self, now: float) -> int:
        """Close outbound connections unused for ``peer_idle`` seconds; return how many."""
        idle = [d for d, (_, t) in self._peers.items() if now - t >= self.config.peer_idle]
        for d in idle:
            sock, _ = self._peers.pop(d)
            sock.close(0)
        return len(idle)

    def forget(self, dest: str) -> None:
        """Close the outbound connection to ``dest`` (e.g. the member died)."""
        entry = self._peers.pop(dest, None)
        if entry is not None:
            entry[0].close(0)

    @property
    def peer_count(self) -> int:
        return len(self._peers)

    def close(self) -> None:
        for sock, _ in self._peers.values():
            sock.close(0)
        self._peers.clear()
        self.router.close(0)
        if self._admission is not None:
            self._admission.close()


# ============================================================================ in memory


Handler = Callable[[str, bytes], None]


class MemoryNetwork:
    """A discrete-event network with a fake clock, loss and latency.

    Parameters
    ----------
    rng : random.Random
        Drives loss and latency draws.
    loss : float
        Probability that a frame is lost (default: 0.0).
    latency : tuple[float, float]
        Uniform range of one-way delay in seconds (default: (0.001, 0.005)).
    start : float
        Initial clock value (default: 0.0).
    """

    def __init__(
        self,
        rng: random.Random,
        loss: float = 0.0,
        latency: tuple[float, float] = (0.001, 0.005),
        start: float = 0.0,
    ) -> None:
        if not 0.0 <= loss < 1.0:
            raise ValueError("loss must be in [0, 1)")
        self.rng = rng
        self.loss = loss
        self.latency = latency
        self.now = start
        self._events: list[tuple[float, int, Callable[[], None]]] = []
        self._serial = itertools.count()
        self._handlers: dict[str, Handler] = {}
        self.stats: Counter[str] = Counter()
        self.sent_by: Counter[str] = Counter()
        self.bytes_by: Counter[str] = Counter()

    def transport(self, address: str, handler: Handler) -> MemoryTransport:
        """Attach an endpoint at ``address``; ``handler(sender, frame)`` receives frames."""
        if address in self._handlers:
            raise ValueError(f"address {address} is taken")
        self._handlers[address] = handler
        return MemoryTransport(self, address)

    def detach(self, address: str) -> None:
        """Remove an endpoint: frames to it vanish from now on (a crash)."""
        self._handlers.pop(address, None)

    def call_at(self, when: float, fn: Callable[[], None]) -> None:
        """Schedule ``fn`` at time ``when`` (never before now)."""
        heapq.heappush(self._events, (max(when, self.now), next(self._serial), fn))

    def send(self, src: str, dest: str, frame: bytes) -> bool:
        self.stats["sent"] += 1
        self.stats["bytes"] += len(frame)
        self.sent_by[src] += 1
        self.bytes_by[src] += len(frame)
        if self.loss and self.rng.random() < self.loss:
            self.stats["lost"] += 1
            return True  # the sender cannot tell
        delay = self.rng.uniform(*self.latency)
        self.call_at(self.now + delay, lambda: self._deliver(src, dest, frame))
        return True

    def _deliver(self, src: str, dest: str, frame: bytes) -> None:
        handler = self._handlers.get(dest)
        if handler is None:
            self.stats["undeliverable"] += 1
            return
        self.stats["delivered"] += 1
        handler(src, frame)

    def step(self) -> bool:
        """Run the next event; False if there is none."""
        if not self._events:
            return False
        when, _, fn = heapq.heappop(self._events)
        self.now = max(self.now, when)
        fn()
        return True

    def run_until(self, t: float) -> None:
        """Run every event scheduled before ``t``; the clock ends at ``t``."""
        while self._events and self._events[0][0] <= t:
            self.step()
        self.now = max(self.now, t)

    def run_while(self, busy: Callable[[], bool], deadline: float, check_every: float) -> bool:
        """Run until ``busy()`` is False (True) or the clock passes ``deadline`` (False)."""
        while busy():
            if self.now >= deadline:
                return False
            self.run_until(min(deadline, self.now + check_every))
        return True


class MemoryTransport:
    """An endpoint of a ``MemoryNetwork``."""

    def __init__(self, network: MemoryNetwork, address: str) -> None:
        self.network = network
        self.address = address

    def send(self, dest: str, frame: bytes) -> bool:
        return self.network.send(self.address, dest, frame)

    def close(self) -> None:
        self.network.detach(self.address)
