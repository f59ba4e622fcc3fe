"""Gossip: the sans-I/O ``GossipCore``, the threaded ``GossipNode`` facade, and ``SimCluster``.

``GossipCore`` composes membership (SWIM + Lifeguard), the group table and the broadcast queue:
``handle(sender, frame, now)`` and ``tick(now)`` return the ``(address, frame)`` pairs to send.
It never touches a socket or a clock, so the same code runs on ZeroMQ (``GossipNode``) and on
the in-memory network (``SimCluster``: 1,000 nodes on a fake clock in one process).

Dissemination: member and group updates are queued in a ``BroadcastQueue``; they ride on every
ping, ping-req and ack (as much as fits in ``max_frame_bytes``), and every ``gossip_interval``
a GOSSIP frame carries them to ``fanout`` random live peers. Every ``push_pull_interval``
(scaled up above 32 members) the full state is exchanged with one random peer; a newcomer does
the same with its seed (kind JOIN). Big states are split into several frames.

Run one node from a shell (used by the multi-process tests)::

    python -m mycelium_p2p.gossip --id a1 --seed 127.0.0.1:7946 --preset test
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import math
import os
import random
import signal
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, replace
from queue import Empty, SimpleQueue
from typing import Any

import zmq

from mycelium_p2p.broadcast import BroadcastQueue, retransmit_limit
from mycelium_p2p.config import GossipConfig
from mycelium_p2p.containment import Containment
from mycelium_p2p.groups import GroupRecord, GroupTable
from mycelium_p2p.membership import Member, Membership, MemberView
from mycelium_p2p.security import keys_for
from mycelium_p2p.transport import MemoryNetwork, ZmqTransport
from mycelium_p2p.wire import (
    Ack,
    Body,
    Codec,
    Gossip,
    Kind,
    Leave,
    MemberUpdate,
    Message,
    ModelRequest,
    ModelResponse,
    Ping,
    PingReq,
    PushPull,
    Status,
    Update,
    WireError,
    check_address,
    check_id,
    encoded_size,
    update_to_wire,
)

log = logging.getLogger(__name__)

Outbound = list[tuple[str, bytes]]
ModelProvider = Callable[[str], tuple[int, bytes] | None]

#: Destination of a frame that answers a request on the connection the request came in on (a
#: model response): the requester's dedicated socket, never its gossip ROUTER. Unsolicited big
#: frames therefore have nowhere to land (the ROUTER takes ``max_frame_bytes`` at most).
REPLY = ""

_KINDS: dict[type, Kind] = {
    Ping: Kind.PING,
    PingReq: Kind.PING_REQ,
    Ack: Kind.ACK,
    Gossip: Kind.GOSSIP,
    PushPull: Kind.PUSH_PULL,
    Leave: Kind.LEAVE,
    ModelRequest: Kind.MODEL_REQUEST,
    ModelResponse: Kind.MODEL_RESPONSE,
}
_FRAME_SLACK = 256  # envelope bytes kept free when filling a frame with updates

__all__ = [
    "GossipConfig",
    "GossipCore",
    "GossipEvent",
    "GossipNode",
    "GroupRecord",
    "MemberView",
    "SimCluster",
]


@dataclass(frozen=True, slots=True)
class GossipEvent:
    """Something changed in the gossip view.

    ``kind`` is one of ``member_alive`` (new or back), ``member_updated`` (new metadata),
    ``member_suspect``, ``member_dead``, ``member_left``, ``member_removed`` (forgotten after
    ``dead_ttl``), ``group_updated``, ``group_dissolved``; ``member`` or ``group`` is set.
    """

    kind: str
    member: MemberView | None = None
    group: GroupRecord | None = None


def push_pull_period(interval: float, n: int) -> float:
    """Push-pull period for ``n`` members.

    ``interval`` up to 32 members, ``interval * (ceil(log2(n) - log2(32)) + 1)`` above.
    """
    if n <= 32:
        return interval
    return interval * (math.ceil(math.log2(n) - math.log2(32)) + 1)


class GossipCore:
    """Sans-I/O gossip of one node.

    Parameters
    ----------
    node_id : str
        This node's id.
    address : str
        This node's advertised gossip address ``host:port``.
    config : GossipConfig
        Timings, multipliers and caps.
    rng : random.Random
        All randomness (probe order, peers, phases).
    now : float
        Current time in seconds.
    meta : dict | None
        Initial member metadata (default: None -> ``{"role": "node"}``).
    observer : bool
        Observe only: ``meta.role`` is ``observer`` and the node never publishes a group
        (default: False).
    registry_url : str | None
        The registry's URL, shared with peers by push-pull (default: None).
    """

    def __init__(
        self,
        node_id: str,
        address: str,
        config: GossipConfig,
        rng: random.Random,
        now: float,
        *,
        meta: dict[str, Any] | None = None,
        observer: bool = False,
        registry_url: str | None = None,
    ) -> None:
        self.node_id = check_id(node_id, "node id")
        self.address = check_address(address)
        self.config = config
        self.rng = rng
        self.observer = observer
        m = dict(meta or {})
        m["role"] = "observer" if observer else m.get("role", "node")
        if observer:
            m["group"] = ""
        self.codec = Codec(config.max_frame_bytes, config.max_model_bytes, config.max_meta_bytes)
        self.membership = Membership(self.node_id, self.address, m, config, rng, now)
        self.groups = GroupTable(config.tombstone_ttl)
        self.queue = BroadcastQueue(config.retransmit_mult)
        self.counters: Counter[str] = Counter()
        self.events: list[GossipEvent] = []
        self.model_provider: ModelProvider | None = None
        self.registry_url = registry_url
        self.join_responses = 0
        self._req_id = 0
        self._next_gossip_at = now + rng.uniform(0.0, config.gossip_interval)
        self._next_push_pull_at = now + rng.uniform(0.5, 1.0) * config.push_pull_interval
        self._next_expire_at = now + config.probe_interval
        # Announce ourselves on whatever we send first.
        self.membership.broadcasts.append(self.membership.self_update())
        self._drain()

    # ------------------------------------------------------------------ inputs

    def handle(self, sender_address: str, frame: bytes, now: float) -> Outbound:
        """Process one received frame; return what to send.

        ``sender_address`` is informational (ZeroMQ does not know it): replies go to the
        address advertised inside the frame. A frame that fails decoding changes nothing but a
        drop counter.
        """
        self.counters["frames_in"] += 1
        self.counters["bytes_in"] += len(frame) if isinstance(frame, bytes | bytearray) else 0
        msg = self.codec.decode(frame)
        if msg is None:
            return []
        if msg.sender_id == self.node_id:
            self.codec.drops["invalid"] += 1
            return []
        self.counters[f"in_{msg.kind.name.lower()}"] += 1
        try:
            return self._handle(msg, now)
        except (WireError, ValueError) as exc:  # e.g. a model provider's bad answer
            log.warning("dropping %s from %s: %s", msg.kind.name, msg.sender_address, exc)
            self.codec.drops["invalid"] += 1
            return []

    def _handle(self, msg: Message, now: float) -> Outbound:
        body = msg.body
        intents: list[tuple[str, Body]] = []
        updates = getattr(body, "updates", ())
        if updates:
            self._apply_updates(updates, now)
        src = msg.sender_address
        m = self.membership
        if isinstance(body, Ping):
            intents += m.on_ping(body, src)
        elif isinstance(body, PingReq):
            intents += m.on_ping_req(body, src, now)
        elif isinstance(body, Ack):
            intents += m.on_ack(body)
        elif isinstance(body, PushPull):
            self._merge_state(body, now)
            if body.reply:
                self._drain()
                return self._encode_all(intents, now) + self._state_frames(
                    src, Kind.PUSH_PULL, False
                )
            self.join_responses += 1
        elif isinstance(body, Leave):
            known = m.members.get(msg.sender_id)
            meta = known.meta if known is not None else {}
            u = MemberUpdate(msg.sender_id, src, Status.LEFT, body.incarnation, meta, msg.sender_id)
            m.apply(u, now)
        elif isinstance(body, ModelRequest):
            intents.append((REPLY, self._answer_model(body)))
        elif isinstance(body, ModelResponse):
            self.codec.drops["invalid"] += 1  # only ever expected on a request's own socket
        self._drain()
        return self._encode_all(intents, now)

    def tick(self, now: float) -> Outbound:
        """Advance every timer (probe, suspicion, gossip, push-pull, expiry); return sends."""
        intents: list[tuple[str, Body]] = list(self.membership.tick(now))
        self._drain()
        out = self._encode_all(intents, now)
        if now >= self._next_gossip_at:
            self._next_gossip_at = max(self._next_gossip_at + self.config.gossip_interval, now)
            out += self._gossip(now)
        if now >= self._next_push_pull_at:
            n = self.membership.num_live()
            self._next_push_pull_at = now + push_pull_period(self.config.push_pull_interval, n)
            live = self.membership.live()
            if live and not self.membership.leaving:
                peer = self.rng.choice(live)
                out += self._state_frames(peer.address, Kind.PUSH_PULL, True)
        if now >= self._next_expire_at:
            self._next_expire_at = now + self.config.probe_interval
            self.groups.expire(now)
        return out

    def next_due(self, now: float) -> float:
        """Earliest time ``tick`` has something to do (``now`` is unused but kept for clarity)."""
        del now
        return min(
            self.membership.next_due(),
            self._next_gossip_at,
            self._next_push_pull_at,
            self._next_expire_at,
        )

    # ------------------------------------------------------------------ commands

    def join(self, seed: str, now: float) -> Outbound:
        """Ask ``seed`` for its full state (and give it ours); watch ``join_responses``."""
        del now
        return self._state_frames(check_address(seed, "seed"), Kind.JOIN, True)

    def leave(self, now: float) -> Outbound:
        """Announce a graceful leave: LEAVE to a few peers, and the LEFT update gossiped."""
        u = self.membership.leave()
        self._drain()
        live = self.membership.live()
        peers = self.rng.sample(live, min(len(live), 2 * self.config.fanout))
        out = self._encode_all([(p.address, Leave(u.incarnation)) for p in peers], now)
        return out + self._gossip(now)

    def update_meta(self, **fields: Any) -> None:
        """Merge ``fields`` into own metadata, bump incarnation, gossip it.

        Raises
        ------
        ValueError
            If the metadata becomes invalid or too big (``max_meta_bytes``).
        """
        if self.observer and fields.get("group"):
            raise ValueError("an observer never belongs to a group")
        if self.observer and fields.get("role", "observer") != "observer":
            raise ValueError("an observer keeps role=observer")
        self.membership.set_meta({**self.membership.meta, **fields})
        self._drain()

    def publish_group(self, record: GroupRecord, now: float) -> bool:
        """Publish our group's record; True if it was strictly newer and is being gossiped.

        Only the leader publishes (``record.leader`` must be this node); observers never do.
        """
        if self.observer or record.leader != self.node_id:
            return False
        return self._apply_group(record, now)

    def request_model(self, address: str, group_id: str, now: float) -> tuple[int, bytes]:
        """Build a MODEL_REQUEST for ``address``; return its id and the frame.

        The caller sends it on a socket of its own and hands the answer to ``model_answer``.
        """
        self._req_id += 1
        body = ModelRequest(self._req_id, check_id(group_id, "group id"))
        ((_, frame),) = self._encode_all([(check_address(address), body)], now)
        return self._req_id, frame

    def model_answer(self, req_id: int, group_id: str, frame: bytes) -> tuple[int, bytes] | None:
        """Decode the answer to request ``req_id``: ``(round, payload)``, or None if the leader
        has no such model or the frame is not a valid answer to that very request (counted)."""
        msg = self.codec.decode(frame)
        if msg is None:
            return None
        body = msg.body
        if not isinstance(body, ModelResponse) or (body.req_id, body.group_id) != (
            req_id,
            group_id,
        ):
            self.codec.drops["invalid"] += 1
            return None
        return (body.round, body.payload) if body.found else None

    # ------------------------------------------------------------------ views

    def members(self) -> list[MemberView]:
        """Every known member, this node first."""
        m = self.membership
        return [m.self_view()] + [m.view(x) for x in m.members.values()]

    def group_members(self, group_id: str) -> list[str]:
        """Ids of live members (self included) whose ``meta.group`` is ``group_id``, sorted."""
        return sorted(
            v.id
            for v in self.members()
            if v.status in ("alive", "suspect")
            and v.meta.get("group") == group_id
            and v.meta.get("role") != "observer"
        )

    def stats(self) -> dict[str, Any]:
        """Counters: frames/bytes in and out, per-kind counts, drops per reason, sizes."""
        s: dict[str, Any] = dict(self.counters)
        for key in ("frames_in", "frames_out", "bytes_in", "bytes_out"):
            s.setdefault(key, 0)
        s["drops"] = dict(self.codec.drops)
        s["drops"]["invalid"] += self.membership.invalid
        s["refutations"] = self.membership.refutations
        s["members_live"] = self.membership.num_live()
        s["members_known"] = 1 + len(self.membership.members)
        s["groups"] = len(self.groups.live())
        s["queued_updates"] = len(self.queue)
        s["incarnation"] = self.membership.incarnation
        return s

    def drain_events(self) -> list[GossipEvent]:
        """Events since the last call."""
        ev, self.events = self.events, []
        return ev

    # ------------------------------------------------------------------ internals

    def _apply_updates(self, updates: tuple[Update, ...], now: float) -> None:
        for u in updates:
            if isinstance(u, GroupRecord):
                self._apply_group(u, now)
            else:
                self.membership.apply(u, now)

    def _apply_group(self, record: GroupRecord, now: float) -> bool:
        if not self.groups.apply(record, now):
            return False
        self.queue.queue(("g", record.id), record, encoded_size(update_to_wire(record)))
        kind = "group_dissolved" if record.dissolved else "group_updated"
        self.events.append(GossipEvent(kind, group=record))
        return True

    def _merge_state(self, state: PushPull, now: float) -> None:
        for u in state.members:
            self.membership.apply(u, now, from_state=True)
        for g in state.groups:
            self._apply_group(g, now)
        if self.registry_url is None and state.registry_url:
            self.registry_url = state.registry_url

    def _drain(self) -> None:
        m = self.membership
        broadcasts, m.broadcasts = m.broadcasts, []
        for u in broadcasts:
            try:  # sized (so encoded) here: an update that cannot be sent never enters the queue
                size = encoded_size(update_to_wire(u))
            except (OverflowError, TypeError, ValueError):
                self.codec.drops["invalid"] += 1
                continue
            self.queue.queue(("m", u.node_id), u, size)
        for kind, view in m.events:
            self.events.append(GossipEvent(kind, member=view))
        m.events.clear()

    def _encode(self, dest: str, body: Body) -> tuple[str, bytes]:
        frame = self.codec.encode(Message(_KINDS[type(body)], self.node_id, self.address, body))
        self.counters["frames_out"] += 1
        self.counters["bytes_out"] += len(frame)
        self.counters[f"out_{_KINDS[type(body)].name.lower()}"] += 1
        return dest, frame

    def _encode_all(self, intents: list[tuple[str, Body]], now: float) -> Outbound:
        del now
        out: Outbound = []
        n = self.membership.num_live()
        for dest, body in intents:
            if isinstance(body, Ping | PingReq | Ack) and len(self.queue):
                budget = self.config.max_frame_bytes - _FRAME_SLACK
                body = replace(body, updates=tuple(self.queue.get(budget, n)))
            out.append(self._encode(dest, body))
        return out

    def _gossip(self, now: float) -> Outbound:
        if not len(self.queue):
            return []
        # Members declared dead recently stay gossip targets (memberlist's "gossip to the
        # dead"): one wrongly declared dead hears of it and refutes within a few ticks instead of
        # waiting for the next push-pull.
        recently_dead = [
            m
            for m in self.membership.members.values()
            if m.status == Status.DEAD and now - m.since < self.config.dead_ttl / 2
        ]
        targets = self.membership.live() + recently_dead
        n = self.membership.num_live()
        out: Outbound = []
        budget = self.config.max_frame_bytes - _FRAME_SLACK
        for peer in self.rng.sample(targets, min(self.config.fanout, len(targets))):
            updates = self.queue.get(budget, n)
            if not updates:
                break
            out.append(self._encode(peer.address, Gossip(tuple(updates))))
        return out

    def _state_frames(self, dest: str, kind: Kind, reply: bool) -> Outbound:
        """Our full state for ``dest``, split into frames within ``max_frame_bytes``."""
        budget = self.config.max_frame_bytes - _FRAME_SLACK - 2 * len(self.registry_url or "")
        members = [self.membership.self_update()] + [
            m.update() for m in self.membership.members.values()
        ]
        chunks: list[tuple[list[MemberUpdate], list[GroupRecord]]] = [([], [])]
        used = 0
        for item in [*members, *self.groups.all()]:
            size = encoded_size(update_to_wire(item))
            if used + size > budget and (chunks[-1][0] or chunks[-1][1]):
                chunks.append(([], []))
                used = 0
            used += size
            if isinstance(item, GroupRecord):
                chunks[-1][1].append(item)
            else:
                chunks[-1][0].append(item)
        out: Outbound = []
        for i, (ms, gs) in enumerate(chunks):
            body = PushPull(reply and i == 0, tuple(ms), tuple(gs), self.registry_url)
            msg = Message(kind, self.node_id, self.address, body)
            frame = self.codec.encode(msg)
            self.counters["frames_out"] += 1
            self.counters["bytes_out"] += len(frame)
            self.counters[f"out_{kind.name.lower()}"] += 1
            out.append((dest, frame))
        return out

    def _answer_model(self, req: ModelRequest) -> ModelResponse:
        found = ModelResponse(req.req_id, req.group_id, False)
        if self.model_provider is None:
            return found
        try:
            answer = self.model_provider(req.group_id)
        except Exception:
            log.exception("model provider failed for group %s", req.group_id)
            return found
        if answer is None:
            return found
        rnd, payload = answer
        if isinstance(rnd, bool) or not isinstance(rnd, int) or rnd < 0:
            raise ValueError("model provider must return (round >= 0, bytes)")
        if not isinstance(payload, bytes | bytearray):
            raise ValueError("model provider must return (round, bytes)")
        if len(payload) + 4096 > self.config.max_model_bytes:
            self.counters["model_too_big"] += 1
            log.warning("model of group %s exceeds max_model_bytes", req.group_id)
            return found
        return ModelResponse(req.req_id, req.group_id, True, rnd, bytes(payload))

    def forget_broadcasts(self) -> None:
        """Empty the broadcast queue (simulation bootstrap with a pre-filled view)."""
        self.queue = BroadcastQueue(self.config.retransmit_mult)


# ============================================================================ simulation


class SimCluster:
    """N ``GossipCore``s on a ``MemoryNetwork`` with a fake clock (tests and benchmarks).

    With ``full_view`` every node starts knowing every other as alive (as if they had all
    joined long ago), so a run measures dissemination and detection rather than the join storm.

    Parameters
    ----------
    n : int
        Nodes.
    config : GossipConfig
        Shared config.
    seed : int
        Seed of every random draw (default: 0).
    loss : float
        Frame loss probability (default: 0.0).
    latency : tuple[float, float]
        One-way delay range in seconds (default: (0.001, 0.005)).
    full_view : bool
        Pre-fill every view (default: True).
    """

    def __init__(
        self,
        n: int,
        config: GossipConfig,
        *,
        seed: int = 0,
        loss: float = 0.0,
        latency: tuple[float, float] = (0.001, 0.005),
        full_view: bool = True,
    ) -> None:
        self.config = config
        self.rng = random.Random(seed)
        self.net = MemoryNetwork(random.Random(self.rng.getrandbits(64)), loss, latency)
        self.cores: dict[str, GossipCore] = {}
        self.dead: set[str] = set()
        self.false_deaths = 0
        self.events: Counter[str] = Counter()
        for i in range(n):
            address = f"10.{i // 62500}.{i // 250 % 250}.{i % 250 + 1}:7946"
            core = GossipCore(
                f"n{i:05d}", address, config, random.Random(self.rng.getrandbits(64)), 0.0
            )
            self.cores[address] = core
            self.net.transport(address, self._receiver(address))
        if full_view:
            updates = [c.membership.self_update() for c in self.cores.values()]
            for core in self.cores.values():
                for u in updates:
                    core.membership.add_known(u, 0.0)
                core.forget_broadcasts()
        for address, core in self.cores.items():
            self.net.call_at(core.next_due(0.0), self._ticker(address))

    @property
    def now(self) -> float:
        return self.net.now

    def address_of(self, node_id: str) -> str:
        return next(a for a, c in self.cores.items() if c.node_id == node_id)

    def live(self) -> list[GossipCore]:
        return [c for a, c in self.cores.items() if a not in self.dead]

    def _receiver(self, address: str) -> Callable[[str, bytes], None]:
        def receive(src: str, frame: bytes) -> None:
            if address in self.dead:
                return
            core = self.cores[address]
            out = core.handle(src, frame, self.net.now)
            self._send(address, [(src if dest == REPLY else dest, f) for dest, f in out])

        return receive

    def _ticker(self, address: str) -> Callable[[], None]:
        def tick() -> None:
            if address in self.dead:
                return
            core = self.cores[address]
            now = self.net.now
            self._send(address, core.tick(now))
            self.net.call_at(max(core.next_due(now), now + 1e-4), tick)

        return tick

    def _send(self, src: str, out: Outbound) -> None:
        for dest, frame in out:
            self.net.send(src, dest, frame)
        core = self.cores[src]
        if core.events:
            for ev in core.drain_events():
                self.events[ev.kind] += 1
                if (
                    ev.kind == "member_dead"
                    and ev.member is not None
                    and ev.member.address not in self.dead
                ):
                    self.false_deaths += 1

    def kill(self, address: str) -> None:
        """Crash a node: it stops sending, receiving and ticking."""
        self.dead.add(address)
        self.net.detach(address)

    def run_until(self, t: float) -> None:
        self.net.run_until(t)

    def run_while(self, busy: Callable[[], bool], timeout: float, check_every: float) -> bool:
        """Run until ``busy()`` is False (True) or ``timeout`` simulated seconds pass (False)."""
        return self.net.run_while(busy, self.net.now + timeout, check_every)

    def holders(self, group_id: str, version: tuple[int, int]) -> int:
        """Live nodes holding ``group_id`` at ``(term, version)`` or newer."""
        n = 0
        for c in self.live():
            r = c.groups.get(group_id)
            if r is not None and r.order >= version:
                n += 1
        return n

    def declared_dead(self, node_id: str) -> int:
        """Live nodes that see ``node_id`` as dead (or have already forgotten it)."""
        n = 0
        for c in self.live():
            m: Member | None = c.membership.members.get(node_id)
            if m is None or m.status is Status.DEAD:
                n += 1
        return n


# ============================================================================ threaded node


class GossipNode:
    """A ``GossipCore`` run on a ``ZmqTransport`` by one background thread (thread-safe facade).

    Calls from other threads are queued to the gossip thread (woken through a pipe) and wait for
    its answer. ``subscribe`` callbacks run on the gossip thread: they must be quick and must
    not block (hand work to another thread); they may call this node's methods except
    ``request_model``.

    Parameters
    ----------
    node_id : str
        This node's id.
    config : GossipConfig
        Gossip settings.
    host : str
        Interface to bind (default: "127.0.0.1").
    port : int
        Port to bind, 0 for any free one (default: 0).
    advertise_host : str | None
        Host peers should use to reach us (default: ``host``).
    meta : dict | None
        Initial member metadata (default: None).
    observer : bool
        Receive everything, own no group (default: False).
    secret : str | bytes | None
        Network secret: all gossip over CURVE with keys derived from it; None logs that gossip
        is open (default: None).
    registry_url : str | None
        Known registry URL, else learned by push-pull (default: None).
    rng : random.Random | None
        Random source (default: a new ``random.Random()``).
    """

    def __init__(
        self,
        node_id: str,
        config: GossipConfig,
        host: str = "127.0.0.1",
        port: int = 0,
        advertise_host: str | None = None,
        meta: dict[str, Any] | None = None,
        observer: bool = False,
        secret: str | bytes | None = None,
        registry_url: str | None = None,
        *,
        rng: random.Random | None = None,
    ) -> None:
        self.node_id = check_id(node_id, "node id")
        self.config = config
        self.host, self.port, self.advertise_host = host, port, advertise_host
        self._meta = dict(meta or {})
        self.observer = observer
        self._keys = keys_for(secret)
        self._initial_registry_url = registry_url
        self._rng = rng or random.Random()
        self._clock = time.monotonic
        self.address: str | None = None
        self._core: GossipCore | None = None
        self._transport: ZmqTransport | None = None
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._commands: SimpleQueue[tuple[Callable[[GossipCore, float], Any], Future[Any]]] = (
            SimpleQueue()
        )
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self._lock = threading.Lock()
        self._subscribers: list[Callable[[GossipEvent], None]] = []
        self._joined = threading.Condition()
        self._failure: str | None = None
        self.containment = Containment(log, f"gossip {node_id}")

    # ------------------------------------------------------------------ life cycle

    def start(self) -> None:
        """Bind the ROUTER and start the gossip thread; ``address`` is then ``host:port``."""
        if self._thread is not None:
            raise RuntimeError("GossipNode already started")
        self._transport = ZmqTransport(
            self.config, self.host, self.port, self.advertise_host, self._keys
        )
        self.address = self._transport.address
        self._core = GossipCore(
            self.node_id,
            self.address,
            self.config,
            self._rng,
            self._clock(),
            meta=self._meta,
            observer=self.observer,
            registry_url=self._initial_registry_url,
        )
        self._thread = threading.Thread(target=self._run, name=f"gossip-{self.node_id}")
        self._thread.daemon = True
        self._thread.start()

    def join(self, seeds: list[str], timeout: float) -> bool:
        """Push-pull with the first seed that answers; True once one did within ``timeout``."""
        seeds = [s for s in seeds if s and s != self.address]
        if not seeds:
            return False
        deadline = time.monotonic() + timeout
        share = timeout / len(seeds)
        for seed in seeds:
            try:
                check_address(seed, "seed")
            except WireError as exc:
                log.warning("skipping seed: %s", exc)
                continue
            before = self._call(lambda core, now: core.join_responses)
            self._call(lambda core, now, s=seed: self._send(core.join(s, now)))
            end = min(deadline, time.monotonic() + share)
            with self._joined:
                answered = self._joined.wait_for(
                    lambda b=before: self._core is not None and self._core.join_responses > b,
                    timeout=max(0.0, end - time.monotonic()),
                )
            if answered:
                return True
        return False

    def leave(self, timeout: float = 1.0) -> None:
        """Announce a graceful leave, let the news go out (bounded by ``timeout``), stop."""
        if self._thread is None or not self._thread.is_alive():
            self.stop()
            return
        self._call(lambda core, now: self._send(core.leave(now)))
        subject = ("m", self.node_id)
        deadline = time.monotonic() + min(timeout, 10 * self.config.gossip_interval)
        while time.monotonic() < deadline:
            sent = self._call(lambda core, now: core.queue.transmits(subject))
            if sent is None or sent >= self.config.fanout:
                break
            self._stopping.wait(self.config.gossip_interval / 2)
        self.stop()

    def stop(self) -> None:
        """Stop the thread and close the sockets (idempotent)."""
        self._stopping.set()
        self._wake()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=5.0)
        if self._transport is not None and (self._thread is None or not self._thread.is_alive()):
            self._transport.close()
            self._transport = None
            for fd in (self._wake_r, self._wake_w):
                with contextlib.suppress(OSError):
                    os.close(fd)

    # ------------------------------------------------------------------ API

    def update_meta(self, **fields: Any) -> None:
        """Merge ``fields`` into own metadata, bump incarnation, gossip it (ValueError if bad)."""
        self._call(lambda core, now: core.update_meta(**fields))

    def members(self) -> list[MemberView]:
        """Every known member (self first): id, address, status, incarnation, meta."""
        return self._call(lambda core, now: core.members())

    def groups(self) -> dict[str, GroupRecord]:
        """Live (non-dissolved) group records by id."""
        return self._call(lambda core, now: core.groups.live())

    def group_members(self, group_id: str) -> list[str]:
        """Live non-observer member ids whose ``meta.group`` is ``group_id`` (for leaders)."""
        return self._call(lambda core, now: core.group_members(group_id))

    def next_version(self, group_id: str, term: int) -> int:
        """Version to publish next for ``(group_id, term)``: highest seen + 1."""
        return self._call(lambda core, now: core.groups.next_version(group_id, term))

    def publish_group(self, record: GroupRecord) -> bool:
        """Gossip our group's record; True if it was strictly newer (and we lead the group)."""
        return self._call(lambda core, now: core.publish_group(record, now))

    @property
    def registry_url(self) -> str | None:
        """Configured, or learned from a peer by push-pull."""
        core = self._core
        return core.registry_url if core is not None else self._initial_registry_url

    def subscribe(self, callback: Callable[[GossipEvent], None]) -> None:
        """Call ``callback(event)`` on the gossip thread for every event (keep it quick)."""
        with self._lock:
            self._subscribers.append(callback)

    def stats(self) -> dict[str, Any]:
        """Core counters plus transport counters (``transport`` key)."""

        def snap(core: GossipCore, now: float) -> dict[str, Any]:
            s = core.stats()
            t = self._transport
            s["transport"] = dict(t.stats) if t is not None else {}
            s["transport"]["peers"] = t.peer_count if t is not None else 0
            return s

        return self._call(snap)

    def set_model_provider(self, fn: Callable[[str], tuple[int, bytes] | None]) -> None:
        """Answer MODEL_REQUEST{group_id} with ``fn(group_id) -> (round, payload) | None``.

        ``fn`` runs on the gossip thread: keep it fast (serialize a cached model).
        """
        self._call(lambda core, now: setattr(core, "model_provider", fn))

    def request_model(
        self, address: str, group_id: str, timeout: float
    ) -> tuple[int, bytes] | None:
        """Ask ``address`` for its model of ``group_id``; ``(round, payload)`` or None.

        Runs on the calling thread over a socket of its own, which alone accepts frames up to
        ``max_model_bytes`` (never call it from a subscriber callback).
        """
        if threading.current_thread() is self._thread:
            raise RuntimeError("request_model would block the gossip thread")
        transport = self._transport
        if transport is None:
            return None
        req_id, frame = self._call(lambda core, now: core.request_model(address, group_id, now))
        answer = transport.request(address, frame, timeout)
        if answer is None:
            return None
        return self._call(lambda core, now: core.model_answer(req_id, group_id, answer))

    @property
    def running(self) -> bool:
        """True while the gossip thread runs (False before ``start`` and once it ended)."""
        return self._thread is not None and self._thread.is_alive()

    @property
    def failure(self) -> str | None:
        """Why the gossip thread ended on its own, if it did (None while running or stopped)."""
        return self._failure

    # ------------------------------------------------------------------ the thread

    def _call(self, fn: Callable[[GossipCore, float], Any], timeout: float = 10.0) -> Any:
        core = self._core
        if core is None:
            raise RuntimeError("GossipNode not started")
        thread = self._thread
        if thread is threading.current_thread() or thread is None or not thread.is_alive():
            with self._lock:
                return fn(core, self._clock())
        fut: Future[Any] = Future()
        self._commands.put((fn, fut))
        self._wake()
        return fut.result(timeout=timeout)

    def _wake(self) -> None:
        with contextlib.suppress(BlockingIOError, OSError):
            os.write(self._wake_w, b"x")

    def _send(self, out: Outbound, reply_to: bytes | None = None) -> None:
        t = self._transport
        if t is None:
            return
        now = self._clock()
        for dest, frame in out:
            if dest == REPLY:
                if reply_to is not None:
                    t.reply(reply_to, frame)
            elif dest != self.address:
                t.send(dest, frame, now)

    def _run(self) -> None:
        core, transport = self._core, self._transport
        assert core is not None and transport is not None
        poller = zmq.Poller()
        poller.register(transport.router, zmq.POLLIN)
        poller.register(self._wake_r, zmq.POLLIN)
        next_idle = self._clock() + self.config.peer_idle
        unit = self.containment.unit
        try:
            while not self._stopping.is_set():
                now = self._clock()
                wait = min(max(0.0, core.next_due(now) - now), 0.25)
                ready = dict(poller.poll(wait * 1000))
                if transport.router in ready:
                    for identity, frame in transport.recv_many():
                        with unit("handling a frame"):
                            out = core.handle("", frame, self._clock())
                            self._send(out, reply_to=identity)
                if self._wake_r in ready:
                    with contextlib.suppress(BlockingIOError, OSError):
                        os.read(self._wake_r, 4096)
                self._run_commands(core)
                now = self._clock()
                if now >= core.next_due(now):
                    with unit("a timer tick"):
                        self._send(core.tick(now))
                with unit("dispatching events"):
                    self._dispatch(core, transport)
                if now >= next_idle:
                    next_idle = now + self.config.peer_idle / 2
                    transport.close_idle(now)
        except BaseException as exc:  # outside any unit: the loop itself broke
            self._failure = f"{type(exc).__name__}: {exc}"
            log.exception("gossip thread of %s crashed", self.node_id)
        finally:
            self._run_commands(core)
            self._stopping.set()

    def _run_commands(self, core: GossipCore) -> None:
        while True:
            try:
                fn, fut = self._commands.get_nowait()
            except Empty:
                return
            if not fut.set_running_or_notify_cancel():
                continue
            try:
                with self._lock:
                    fut.set_result(fn(core, self._clock()))
            except Exception as exc:
                fut.set_exception(exc)

    def _dispatch(self, core: GossipCore, transport: ZmqTransport) -> None:
        if core.join_responses:
            with self._joined:
                self._joined.notify_all()
        events = core.drain_events()
        if not events:
            return
        with self._lock:
            subscribers = list(self._subscribers)
        for ev in events:
            if ev.kind in ("member_dead", "member_left", "member_removed") and ev.member:
                transport.forget(ev.member.address)
            for cb in subscribers:
                try:
                    cb(ev)
                except Exception:
                    log.exception("gossip subscriber failed on %s", ev.kind)


# ============================================================================ runner


def main(argv: list[str] | None = None) -> int:
    """Run one gossip node until SIGTERM/SIGINT (graceful leave); print its address as JSON."""
    p = argparse.ArgumentParser(prog="python -m mycelium_p2p.gossip")
    p.add_argument("--id", required=True)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--seed", action="append", default=[])
    p.add_argument("--secret", default=None)
    p.add_argument("--preset", choices=["lan", "local", "test"], default="local")
    p.add_argument("--group", default="")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    config = getattr(GossipConfig, args.preset)()
    node = GossipNode(
        args.id, config, args.host, args.port, meta={"group": args.group}, secret=args.secret
    )
    node.start()
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    signal.signal(signal.SIGINT, lambda *_: done.set())
    joined = node.join(args.seed, timeout=5.0) if args.seed else True
    print(json.dumps({"id": args.id, "address": node.address, "joined": joined}), flush=True)
    done.wait()
    node.leave(timeout=1.0)
    return 0


if __name__ == "__main__":
    sys.exit(main())


# Re-exported for callers that build limits without a config.
__all__ += ["retransmit_limit"]
