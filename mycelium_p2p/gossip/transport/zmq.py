"""``ZmqTransport``: gossip frames over ZeroMQ TCP; with an identity, every node speaks as itself.

The sender's own address travels inside the frame (``messages.Message.sender_address``), never as
a socket identity. One bound ROUTER receives; a bounded, least-recently-used set of outbound
DEALERs, one per peer, sends. Every socket has ``LINGER 0`` and high-water marks; sends never
block (a frame that would block is dropped and counted). The ROUTER takes frames of at most
``max_frame_bytes`` (libzmq drops a connection that announces a bigger one, before allocating
it); the one exchange that carries bigger frames, a model request, runs on a DEALER of its own that
the requester opens for that request and reads once (``request``), answered on the same
connection (``reply``). ``receive`` polls the ROUTER and a wake-up pipe, and closes idle outbound
connections as it goes.

With an identity (``identity.NodeIdentity``, enrolled with the network's registry):

- the ROUTER is a CURVE server with the node's own key pair, and every DEALER connects with it
  too, to the peer's own key (learned from the peer's ticket: ``learn``, from gossip metadata or
  an introduction). A peer whose key is not known gets nothing.
- a DEALER's routing id is its node's **ticket** (the CA's binding of its id to its key) plus a
  nonce. The ZAP handler refuses revoked keys and tags each connection with its key; every
  message whose routing id is not a valid, unrevoked ticket for that very key is dropped here,
  before any decoding (counted ``unauthenticated``). The others come with the ticket's node id
  (``Authenticated``): the gossip core drops a frame whose sender id is not it.
- a second ROUTER listens on the gossip port + 1 with a well-known key for introductions
  (``security.py``): a newcomer that only knows a peer's address asks for the registry's URL,
  and an enrolled node for the peer's ticket (``introduce``).

Without an identity, ``keys`` (one key pair shared by every holder of a secret, standalone
gossip only: ``security.derive_keys``) or nothing: everything runs in the clear (``gossip is
open``, logged by the node).
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import time
from collections import Counter, OrderedDict
from dataclasses import dataclass
from typing import Any, NamedTuple

import msgpack
import zmq

from mycelium_p2p.config import GossipConfig
from mycelium_p2p.identity import IdentityError, NodeIdentity, Ticket
from mycelium_p2p.security import INTRO_PUBLIC, INTRO_SECRET, Admission, CurveKeys, admit

log = logging.getLogger(__name__)

_ENVELOPE_SLACK = 4096
_NONCE = 8
#: Largest introduction request or answer, in bytes.
MAX_INTRODUCTION = 4096
#: Tries at a pair of free ports (gossip, gossip + 1) when the OS picks them.
_PORT_TRIES = 50
#: Most peer keys remembered (address to key).
_MAX_KEYS = 100_000


class Authenticated(NamedTuple):
    """The token of a frame whose sender was authenticated: its connection and its node id."""

    identity: bytes
    peer: str


@dataclass(frozen=True)
class Introduction:
    """What a peer's introduction listener answered: the registry's URL, and its own ticket
    (raw bytes) when the asking node presented a valid one."""

    url: str | None
    ticket: bytes | None


class ZmqTransport:
    """One bound ROUTER plus bounded outbound DEALERs.

    Parameters
    ----------
    config : GossipConfig
        Caps (``max_model_bytes``), HWMs, ``max_peers``, ``peer_idle``.
    host : str
        Interface to bind (default: "127.0.0.1").
    port : int
        Port to bind; 0 picks a free one (default: 0). With an identity the introduction
        listener takes ``port + 1``.
    advertise_host : str | None
        Host others should use to reach us (default: ``host``).
    keys : CurveKeys | None
        Shared CURVE keys derived from a secret (standalone gossip; ignored with an identity)
        (default: None).
    identity : NodeIdentity | None
        The node's identity: CURVE with its own keys, tickets checked; None runs with ``keys``
        or in the clear (default: None).
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
        identity: NodeIdentity | None = None,
    ) -> None:
        self.config = config
        self.identity = identity
        self.keys = keys if identity is None else None
        self.ctx = context or zmq.Context.instance()
        self.counters: Counter[str] = Counter()
        self._peers: OrderedDict[str, tuple[zmq.Socket, float]] = OrderedDict()
        self._keys: dict[str, bytes] = {}  # peer address -> its CURVE public key (Z85)
        self.introduction: Any = None  # () -> the registry URL to tell newcomers
        self._admissions: list[Admission] = []
        self.router = self.ctx.socket(zmq.ROUTER)
        self.intro: zmq.Socket | None = None
        self._common(self.router)
        self.router.setsockopt(zmq.RCVHWM, config.recv_hwm)
        self.router.setsockopt(zmq.MAXMSGSIZE, config.max_frame_bytes + _ENVELOPE_SLACK)
        if identity is not None:
            self.router.curve_server = True
            self.router.curve_secretkey = identity.keys.curve_secret
            self.router.curve_publickey = identity.keys.curve_public
            self._admissions.append(admit(self.ctx, self.router, self._admit))
            self.intro = self.ctx.socket(zmq.ROUTER)
            self._common(self.intro)
            self.intro.setsockopt(zmq.MAXMSGSIZE, MAX_INTRODUCTION)
            self.intro.curve_server = True
            self.intro.curve_secretkey = INTRO_SECRET
            self.intro.curve_publickey = INTRO_PUBLIC
            self._admissions.append(admit(self.ctx, self.intro, lambda key: True))
        elif self.keys is not None:
            shared = self.keys
            self.router.curve_server = True
            self.router.curve_secretkey = shared.server_secret
            self.router.curve_publickey = shared.server_public
            self._admissions.append(
                admit(self.ctx, self.router, lambda key: key == shared.client_public)
            )
        try:
            bound = self._bind(host, port)
        except zmq.ZMQError:
            self._close_sockets()
            raise
        self.port = bound
        self.address = f"{advertise_host or host}:{bound}"
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self._poller = zmq.Poller()
        self._poller.register(self.router, zmq.POLLIN)
        if self.intro is not None:
            self._poller.register(self.intro, zmq.POLLIN)
        self._poller.register(self._wake_r, zmq.POLLIN)
        self._next_idle_check = time.monotonic() + config.peer_idle / 2
        self._closed = False

    def _bind(self, host: str, port: int) -> int:
        """Bind the ROUTER (and the introduction listener on the next port); the gossip port."""
        for _ in range(_PORT_TRIES if port == 0 else 1):
            self.router.bind(f"tcp://{host}:{port or '*'}")
            endpoint = self.router.getsockopt(zmq.LAST_ENDPOINT).decode()
            bound = int(endpoint.rsplit(":", 1)[1])
            if self.intro is None:
                return bound
            try:
                self.intro.bind(f"tcp://{host}:{bound + 1}")
                return bound
            except zmq.ZMQError as exc:
                self.router.unbind(endpoint)
                if port != 0:
                    raise zmq.ZMQError(
                        exc.errno,
                        f"cannot bind the introduction port {bound + 1} (gossip port + 1): "
                        f"{exc.strerror}",
                    ) from None
        raise zmq.ZMQError(zmq.EADDRINUSE, "no free pair of ports (gossip, gossip + 1)")

    @staticmethod
    def _common(sock: zmq.Socket) -> None:
        sock.setsockopt(zmq.LINGER, 0)

    # ------------------------------------------------------------------ identity

    def _admit(self, key: bytes) -> bool:
        """ZAP: refuse the keys of revoked nodes (runs on the ZAP thread: a lookup only)."""
        identity = self.identity
        trust = None if identity is None else identity.trust
        return trust is None or not trust.key_revoked(key)

    def _sender(self, routing_id: bytes, user_id: str | None) -> str | None:
        """The node id a message may speak for: its routing id's ticket, if it is valid (signed,
        unexpired, unrevoked: ``Trust`` remembers verified tickets) and for the very key CURVE
        authenticated (None: drop it)."""
        trust = None if self.identity is None else self.identity.trust
        if trust is None or not user_id:
            return None
        try:
            ticket = trust.ticket(routing_id)
        except IdentityError:
            return None
        return ticket.node_id if ticket.curve_public == user_id.encode() else None

    def learn(self, node_id: str, address: str, ticket: bytes) -> bool:
        """Remember ``address``'s CURVE key from ``node_id``'s ticket, if it verifies and is
        ``node_id``'s; True if it did."""
        trust = None if self.identity is None else self.identity.trust
        if trust is None:
            return False
        try:
            found = trust.ticket(ticket)
        except IdentityError as exc:
            self.counters["bad_tickets"] += 1
            log.debug("ticket of %s refused: %s", node_id, exc)
            return False
        if found.node_id != node_id:
            self.counters["bad_tickets"] += 1
            return False
        if self._keys.get(address) != found.curve_public:
            if len(self._keys) >= _MAX_KEYS:
                self._keys.clear()
            self._keys[address] = found.curve_public
            self.forget(address)  # a DEALER with another key (a node restarted) is useless now
        return True

    def knows(self, address: str) -> bool:
        """Whether a frame to ``address`` can go (open, or its key is known)."""
        return self.identity is None or address in self._keys

    def _ticket(self) -> Ticket | None:
        return None if self.identity is None else self.identity.ticket

    def _routing_id(self) -> bytes:
        ticket = self._ticket()
        body = ticket.raw if ticket is not None else b"\x00"
        return body + secrets.token_bytes(_NONCE)

    # ------------------------------------------------------------------ receiving

    def receive(self, timeout: float) -> list[tuple[Any, bytes]]:
        """Wait up to ``timeout`` s for frames (or a ``wake``); ``(token, frame)`` pairs.

        Also answers introductions and closes outbound connections idle for ``peer_idle``
        seconds, every ``peer_idle / 2``.
        """
        ready = dict(self._poller.poll(max(0.0, timeout) * 1000))
        if self._wake_r in ready:
            with contextlib.suppress(BlockingIOError, OSError):
                os.read(self._wake_r, 4096)
        if self.intro is not None and self.intro in ready:
            self._introductions()
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

    def recv_many(self, limit: int = 256) -> list[tuple[Any, bytes]]:
        """Up to ``limit`` received ``(token, frame)`` pairs, without blocking.

        With an identity the token is ``Authenticated`` (frames of unauthenticated senders are
        dropped here); without one it is the connection's routing id.
        """
        out: list[tuple[Any, bytes]] = []
        for _ in range(limit):
            try:
                parts = self.router.recv_multipart(zmq.NOBLOCK, copy=False)
            except zmq.Again:
                break
            if len(parts) != 2:
                self.counters["recv_bad_parts"] += 1
                continue
            identity = parts[0].bytes
            if self.identity is None:
                out.append((identity, parts[1].bytes))
                continue
            peer = self._sender(identity, parts[1].get("User-Id"))
            if peer is None:
                self.counters["unauthenticated"] += 1
                continue
            out.append((Authenticated(identity, peer), parts[1].bytes))
        return out

    def _introductions(self, limit: int = 16) -> None:
        """Answer waiting introduction requests: the registry URL to anyone, this node's ticket
        to a node that presented a valid ticket of its own."""
        assert self.intro is not None
        for _ in range(limit):
            try:
                parts = self.intro.recv_multipart(zmq.NOBLOCK, copy=False)
            except zmq.Again:
                return
            if len(parts) != 2:
                continue
            self.counters["introductions"] += 1
            identity = parts[0].bytes
            known = self._sender(identity, parts[1].get("User-Id")) is not None
            ticket = self._ticket()
            url = None
            try:
                url = self.introduction() if self.introduction is not None else None
            except Exception:  # the answer is best effort: never fail the gossip thread
                log.exception("introduction: no registry URL")
            answer = {
                "url": url if isinstance(url, str) else None,
                "ticket": ticket.raw if known and ticket is not None else None,
            }
            with contextlib.suppress(zmq.ZMQError):
                self.intro.send_multipart([identity, msgpack.packb(answer)], zmq.NOBLOCK)

    def introduce(self, dest: str, timeout: float) -> Introduction | None:
        """Ask ``dest``'s introduction listener (its gossip port + 1) for the registry's URL and
        its ticket; None if it did not answer in time (any thread)."""
        host, _, port = dest.rpartition(":")
        if not host or not port.isdigit():
            return None
        sock = self.ctx.socket(zmq.DEALER)
        try:
            self._common(sock)
            sock.setsockopt(zmq.MAXMSGSIZE, MAX_INTRODUCTION)
            sock.setsockopt(zmq.ROUTING_ID, self._routing_id())
            sock.curve_serverkey = INTRO_PUBLIC
            if self.identity is not None:
                sock.curve_publickey = self.identity.keys.curve_public
                sock.curve_secretkey = self.identity.keys.curve_secret
            else:
                sock.curve_publickey, sock.curve_secretkey = zmq.curve_keypair()
            sock.connect(f"tcp://{host}:{int(port) + 1}")
            sock.send(msgpack.packb({"v": 1}), zmq.NOBLOCK)
            if not sock.poll(max(0.0, timeout) * 1000, zmq.POLLIN):
                return None
            raw = msgpack.unpackb(sock.recv(zmq.NOBLOCK), raw=False)
        except (zmq.ZMQError, ValueError, msgpack.UnpackException) as exc:
            log.debug("introduction by %s failed: %s", dest, exc)
            return None
        finally:
            sock.close(0)
        if not isinstance(raw, dict):
            return None
        url, ticket = raw.get("url"), raw.get("ticket")
        return Introduction(
            url if isinstance(url, str) and len(url) <= 2048 else None,
            ticket if isinstance(ticket, bytes) else None,
        )

    # ------------------------------------------------------------------ sending

    def reply(self, token: Any, frame: bytes) -> bool:
        """Answer on the connection ``token`` came in on; False if dropped."""
        identity = token.identity if isinstance(token, Authenticated) else token
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
        if not self.knows(dest):
            self.counters["no_key"] += 1
            return None
        sock = self.ctx.socket(zmq.DEALER)
        try:
            self._common(sock)
            sock.setsockopt(zmq.MAXMSGSIZE, self.config.max_model_bytes + _ENVELOPE_SLACK)
            self._client_keys(sock, dest)
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

    def _client_keys(self, sock: zmq.Socket, dest: str) -> None:
        if self.keys is not None:
            sock.curve_serverkey = self.keys.server_public
            sock.curve_publickey = self.keys.client_public
            sock.curve_secretkey = self.keys.client_secret
        elif self.identity is not None:
            sock.setsockopt(zmq.ROUTING_ID, self._routing_id())
            sock.curve_serverkey = self._keys[dest]
            sock.curve_publickey = self.identity.keys.curve_public
            sock.curve_secretkey = self.identity.keys.curve_secret

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
        self._client_keys(sock, dest)
        sock.connect(f"tcp://{dest}")
        self._peers[dest] = (sock, now)
        return sock

    def send(self, dest: str, frame: bytes) -> bool:
        """Send without blocking; a full queue, a bad address or a peer whose key is unknown
        drops the frame (counted)."""
        if not self.knows(dest) or (self.identity is not None and self._ticket() is None):
            self.counters["no_key"] += 1
            return False
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

    def renew(self) -> None:
        """The node's ticket changed: reconnect every DEALER with the new one."""
        for sock, _ in self._peers.values():
            sock.close(0)
        self._peers.clear()

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

    def _close_sockets(self) -> None:
        self.router.close(0)
        if self.intro is not None:
            self.intro.close(0)
        for admission in self._admissions:
            admission.close()

    def close(self) -> None:
        """Close every socket and the wake-up pipe (after the thread that receives stopped;
        idempotent)."""
        if self._closed:
            return
        self._closed = True
        for sock, _ in self._peers.values():
            sock.close(0)
        self._peers.clear()
        self._close_sockets()
        for fd in (self._wake_r, self._wake_w):
            with contextlib.suppress(OSError):
                os.close(fd)
