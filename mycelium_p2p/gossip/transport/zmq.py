"""``ZmqTransport``: gossip frames over ZeroMQ TCP, with CURVE and ZAP admission under a secret.

The sender's own address travels inside the frame (``messages.Message.sender_address``), never as
a socket identity. One bound ROUTER receives; a bounded, least-recently-used set of outbound
DEALERs, one per peer, sends. Every socket has ``LINGER 0`` and high-water marks; sends never
block (a frame that would block is dropped and counted). The ROUTER takes frames of at most
``max_frame_bytes`` (libzmq drops a connection that announces a bigger one, before allocating
it); the one exchange that carries bigger frames, a model request, runs on a DEALER of its own that
the requester opens for that request and reads once (``request``), answered on the same
connection (``reply``). With a secret, every socket runs CURVE with key pairs derived from it, and
the ROUTER admits only the client keys it trusts (a ZAP handler, see ``security.py``).
``receive`` polls the ROUTER and a wake-up pipe, and closes idle outbound connections as it goes.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections import Counter, OrderedDict

import zmq

from mycelium_p2p.config import GossipConfig
from mycelium_p2p.security import Admission, CurveKeys, admit_only

log = logging.getLogger(__name__)

_ENVELOPE_SLACK = 4096


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
        self.counters: Counter[str] = Counter()
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
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self._poller = zmq.Poller()
        self._poller.register(self.router, zmq.POLLIN)
        self._poller.register(self._wake_r, zmq.POLLIN)
        self._next_idle_check = time.monotonic() + config.peer_idle / 2
        self._closed = False

    @staticmethod
    def _common(sock: zmq.Socket) -> None:
        sock.setsockopt(zmq.LINGER, 0)

    def receive(self, timeout: float) -> list[tuple[bytes, bytes]]:
        """Wait up to ``timeout`` s for frames (or a ``wake``); ``(identity, frame)`` pairs.

        Also closes outbound connections idle for ``peer_idle`` seconds, every ``peer_idle / 2``.
        """
        ready = dict(self._poller.poll(max(0.0, timeout) * 1000))
        if self._wake_r in ready:
            with contextlib.suppress(BlockingIOError, OSError):
                os.read(self._wake_r, 4096)
        out = self.recv_many() if self.router in ready else []
        now = time.monotonic()
        if now >= self._next_idle_check:
            self._next_idle_check = now + self.config.peer_idle / 2
            self.close_idle(now)
        return out

    def wake(self) -> None:
        """Make a waiting ``receive`` return (any thread; nothing once closed)."""
        if self._closed:
            return  # the pipe's descriptors may belong to another file by now
        with contextlib.suppress(BlockingIOError, OSError):
            os.write(self._wake_w, b"x")

    def recv_many(self, limit: int = 256) -> list[tuple[bytes, bytes]]:
        """Up to ``limit`` received ``(connection identity, frame)`` pairs, without blocking."""
        out: list[tuple[bytes, bytes]] = []
        for _ in range(limit):
            try:
                parts = self.router.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                break
            if len(parts) != 2:
                self.counters["recv_bad_parts"] += 1
                continue
            out.append((parts[0], parts[1]))
        return out

    def reply(self, identity: bytes, frame: bytes) -> bool:
        """Answer on the connection ``identity`` a request came in on; False if dropped."""
        try:
            self.router.send_multipart([identity, frame], zmq.NOBLOCK)
        except zmq.ZMQError:  # the requester is gone (or its queue is full): nothing to do
            self.counters["reply_dropped"] += 1
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
            self.counters["peers_evicted"] += 1
        sock = self.ctx.socket(zmq.DEALER)
        self._common(sock)
        sock.setsockopt(zmq.SNDHWM, self.config.send_hwm)
        sock.setsockopt(zmq.RECONNECT_IVL, 100)
        sock.setsockopt(zmq.RECONNECT_IVL_MAX, 2000)
        self._client_keys(sock)
        sock.connect(f"tcp://{dest}")
        self._peers[dest] = (sock, now)
        return sock

    def send(self, dest: str, frame: bytes) -> bool:
        """Send without blocking; a full queue or bad address drops the frame (counted)."""
        try:
            self._dealer(dest, time.monotonic()).send(frame, zmq.NOBLOCK)
        except zmq.Again:
            self.counters["send_dropped"] += 1
            return False
        except zmq.ZMQError as exc:
            self.counters["send_error"] += 1
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

    def stats(self) -> dict[str, int]:
        """Drop and error counters, and ``peers`` (open outbound connections)."""
        return {**self.counters, "peers": len(self._peers)}

    def close(self) -> None:
        """Close every socket and the wake-up pipe (after the thread that receives stopped;
        idempotent)."""
        if self._closed:
            return
        self._closed = True
        for sock, _ in self._peers.values():
            sock.close(0)
        self._peers.clear()
        self.router.close(0)
        if self._admission is not None:
            self._admission.close()
        for fd in (self._wake_r, self._wake_w):
            with contextlib.suppress(OSError):
                os.close(fd)
