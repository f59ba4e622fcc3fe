"""``GossipCore``: the sans-I/O gossip of one node (SWIM membership, dissemination, push-pull).

``handle(sender, frame, now)`` and ``tick(now)`` return the ``(address, frame)`` pairs to send;
the core never touches a socket or a clock, so the same code runs threaded on a transport
(``node.SwimNode``) and by the thousand on a fake clock (``sim.SimCluster``). It owns members
only: the application's state lives in its ``Delegate`` (``delegate.py``).

Each message struct of ``messages`` has one handler here (``GossipCore.handlers``); the updates
a frame carries are applied before its handler runs.

Dissemination: member updates and the delegate's items (``broadcast``) are queued in a
``BroadcastQueue``; they ride on every ping, ping-req and ack (as much as fits in
``max_frame_bytes``), and every ``gossip_interval`` a GOSSIP frame carries them to ``fanout``
random live peers (and to members declared dead less than ``dead_ttl / 2`` ago, so that one
wrongly declared dead hears of it and refutes). Each is sent ``retransmit_mult *
ceil(log10(N + 1))`` times. Every ``push_pull_interval`` (scaled up above 32 members, see
``push_pull_period``) the full state is exchanged with one random peer; a newcomer does the same
with its seed (kind JOIN). Big states are split into several frames.
"""

from __future__ import annotations

import logging
import math
import random
from collections import Counter
from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass, replace
from typing import Any

from mycelium_p2p.config import GossipConfig
from mycelium_p2p.gossip.broadcast import BroadcastQueue
from mycelium_p2p.gossip.codec import Codec, encoded_size
from mycelium_p2p.gossip.delegate import Delegate, NullDelegate
from mycelium_p2p.gossip.membership import Membership, MemberView
from mycelium_p2p.gossip.messages import (
    Ack,
    Body,
    Gossip,
    Join,
    Leave,
    MemberUpdate,
    Message,
    ModelRequest,
    ModelResponse,
    Packed,
    Ping,
    PingReq,
    PushPull,
    Status,
    WireError,
    check_address,
    check_id,
    message,
    pack_update,
)

log = logging.getLogger(__name__)

Outbound = list[tuple[str, bytes]]
Intent = tuple[str, Body]

#: Destination of a frame that answers a request on the connection the request came in on (a
#: model response): the requester's dedicated socket, never its gossip ROUTER. Unsolicited big
#: frames therefore have nowhere to land (the ROUTER takes ``max_frame_bytes`` at most).
REPLY = ""

_FRAME_SLACK = 256  # envelope bytes kept free when filling a frame with updates


@dataclass(frozen=True, slots=True)
class GossipEvent:
    """Something changed in the gossip view.

    ``kind`` is one of ``member_alive`` (new or back), ``member_updated`` (new metadata),
    ``member_suspect``, ``member_dead``, ``member_left``, ``member_removed`` (forgotten after
    ``dead_ttl``) with ``member`` set, or a kind the delegate emits with ``item`` set (Mycelium's
    ``group_updated`` and ``group_dissolved``, with the ``GroupRecord``).
    """

    kind: str
    member: MemberView | None = None
    item: Any = None

    @property
    def group(self) -> Any:
        """The item of an application event (a ``GroupRecord`` for group events)."""
        return self.item


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
        Initial member metadata, a flat map (default: None, empty).
    delegate : Delegate | None
        The application riding on gossip (default: None, a ``NullDelegate``).
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
        delegate: Delegate | None = None,
    ) -> None:
        self.node_id = check_id(node_id, "node id")
        self.address = check_address(address)
        self.config = config
        self.rng = rng
        self.delegate: Delegate = delegate if delegate is not None else NullDelegate()
        self.codec = Codec(
            config.max_frame_bytes, config.max_model_bytes, config.max_meta_bytes, self.delegate
        )
        self.membership = Membership(self.node_id, self.address, dict(meta or {}), config, rng, now)
        self.queue = BroadcastQueue(config.retransmit_mult)
        self.counters: Counter[str] = Counter()
        self.events: list[GossipEvent] = []
        self.join_responses = 0
        self.handlers: dict[type, Callable[[Message, float], list[Intent]]] = {
            Ping: self._on_ping,
            PingReq: self._on_ping_req,
            Ack: self._on_ack,
            Gossip: self._on_gossip,
            PushPull: self._on_push_pull,
            Join: self._on_push_pull,
            Leave: self._on_leave,
            ModelRequest: self._on_model_request,
            ModelResponse: self._on_model_response,
        }
        self._req_id = 0
        self._next_gossip_at = now + rng.uniform(0.0, config.gossip_interval)
        self._next_push_pull_at = now + rng.uniform(0.5, 1.0) * config.push_pull_interval
        self._next_expire_at = now + config.probe_interval
        self.delegate.attach(self.broadcast, self.emit)
        # Announce ourselves on whatever we send first.
        self.membership.broadcasts.append(self.membership.self_update())
        self._drain()

    # ------------------------------------------------------------------ inputs

    def handle(
        self, sender_address: str, frame: bytes, now: float, peer: str | None = None
    ) -> Outbound:
        """Process one received frame; return what to send.

        ``sender_address`` is informational (ZeroMQ does not know it): replies go to the
        address advertised inside the frame. ``peer`` is the node id the transport
        authenticated the frame's sender as (None: not authenticated, e.g. in memory): a frame
        whose sender id is another is dropped (counted ``spoofed``). A frame that fails decoding
        changes nothing but a drop counter.
        """
        self.counters["frames_in"] += 1
        self.counters["bytes_in"] += len(frame) if isinstance(frame, bytes | bytearray) else 0
        msg = self.codec.decode(frame)
        if msg is None:
            return []
        if msg.sender_id == self.node_id:
            self.codec.drops["invalid"] += 1
            return []
        if peer is not None and msg.sender_id != peer:
            self.codec.drops["spoofed"] += 1
            return []
        self.counters[f"in_{msg.kind.name.lower()}"] += 1
        try:
            updates = getattr(msg.body, "updates", ())
            if updates:
                self._apply_updates(updates, now)
            intents = self.handlers[type(msg.body)](msg, now)
        except (WireError, ValueError) as exc:  # e.g. the delegate's answer to a model request
            log.warning("dropping %s from %s: %s", msg.kind.name, msg.sender_address, exc)
            self.codec.drops["invalid"] += 1
            return []
        self._drain()
        return self._encode_all(intents)

    # ------------------------------------------------------------------ handlers

    def _on_ping(self, msg: Message, now: float) -> list[Intent]:
        return list(self.membership.on_ping(msg.body, msg.sender_address))  # type: ignore[arg-type]

    def _on_ping_req(self, msg: Message, now: float) -> list[Intent]:
        return list(self.membership.on_ping_req(msg.body, msg.sender_address, now))  # type: ignore[arg-type]

    def _on_ack(self, msg: Message, now: float) -> list[Intent]:
        return list(self.membership.on_ack(msg.body))  # type: ignore[arg-type]

    def _on_gossip(self, msg: Message, now: float) -> list[Intent]:
        return []  # its updates are applied already

    def _on_push_pull(self, msg: Message, now: float) -> list[Intent]:
        state: PushPull = msg.body  # type: ignore[assignment]
        for u in state.members:
            self.membership.apply(u, now, from_state=True)
        self.delegate.merge_remote_state(state.header, list(state.items), now)
        if state.reply:
            self._drain()
            return [(msg.sender_address, body) for body in self._state_bodies(PushPull, False)]
        self.join_responses += 1
        return []

    def _on_leave(self, msg: Message, now: float) -> list[Intent]:
        leave: Leave = msg.body  # type: ignore[assignment]
        known = self.membership.members.get(msg.sender_id)
        meta = known.meta if known is not None else {}
        u = MemberUpdate(
            msg.sender_id, msg.sender_address, Status.LEFT, leave.incarnation, meta, msg.sender_id
        )
        self.membership.apply(u, now)
        return []

    def _on_model_request(self, msg: Message, now: float) -> list[Intent]:
        return [(REPLY, self._answer_model(msg.body))]  # type: ignore[arg-type]

    def _on_model_response(self, msg: Message, now: float) -> list[Intent]:
        self.codec.drops["invalid"] += 1  # only ever expected on a request's own socket
        return []

    # ------------------------------------------------------------------ timers

    def tick(self, now: float) -> Outbound:
        """Advance every timer (probe, suspicion, gossip, push-pull, delegate); return sends."""
        intents: list[Intent] = list(self.membership.tick(now))
        self._drain()
        out = self._encode_all(intents)
        if now >= self._next_gossip_at:
            self._next_gossip_at = max(self._next_gossip_at + self.config.gossip_interval, now)
            out += self._gossip(now)
        if now >= self._next_push_pull_at:
            n = self.membership.num_live()
            self._next_push_pull_at = now + push_pull_period(self.config.push_pull_interval, n)
            peers = self.membership.pick(1)
            if peers and not self.membership.leaving:
                bodies = self._state_bodies(PushPull, True)
                out += self._encode_all([(peers[0].address, b) for b in bodies])
        if now >= self._next_expire_at:
            self._next_expire_at = now + self.config.probe_interval
            self.delegate.tick(now)
            self._drain()
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
        seed = check_address(seed, "seed")
        return self._encode_all([(seed, b) for b in self._state_bodies(Join, True)])

    def leave(self, now: float) -> Outbound:
        """Announce a graceful leave: LEAVE to a few peers, and the LEFT update gossiped."""
        u = self.membership.leave()
        self._drain()
        peers = self.membership.pick(2 * self.config.fanout)
        out = self._encode_all([(p.address, Leave(u.incarnation)) for p in peers])
        return out + self._gossip(now)

    def declare_dead(self, node_ids: Iterable[str], now: float) -> int:
        """Declare the members ``node_ids`` dead here and gossip it (revoked nodes: their frames
        are refused, so they cannot refute). Returns how many were live."""
        count = 0
        for node_id in node_ids:
            member = self.membership.members.get(node_id)
            if member is None or member.status in (Status.DEAD, Status.LEFT):
                continue
            u = MemberUpdate(
                node_id, member.address, Status.DEAD, member.incarnation, member.meta, self.node_id
            )
            self.membership.apply(u, now)
            count += 1
        self._drain()
        return count

    def update_meta(self, **fields: Any) -> None:
        """Merge ``fields`` into own metadata, bump incarnation, gossip it.

        Raises
        ------
        ValueError
            If the metadata becomes invalid or too big (``max_meta_bytes``).
        """
        self.membership.set_meta({**self.membership.meta, **fields})
        self._drain()

    def broadcast(self, key: Hashable, item: Any) -> None:
        """Queue an application item for gossip; it replaces a queued item of the same ``key``.

        Raises
        ------
        ValueError
            If the item cannot be encoded.
        """
        try:  # encoded once, here: an item that cannot be sent never enters the queue
            packed = pack_update(item)
        except (OverflowError, TypeError) as exc:
            raise ValueError(f"item {key!r} cannot be encoded: {exc}") from exc
        self.queue.queue(("app", key), packed, len(packed.data))

    def emit(self, kind: str, item: Any) -> None:
        """Raise an application event for the node's subscribers."""
        self.events.append(GossipEvent(kind, item=item))

    def request_model(self, address: str, group_id: str, now: float) -> tuple[int, bytes]:
        """Build a MODEL_REQUEST for ``address``; return its id and the frame.

        The caller sends it on a connection of its own and hands the answer to ``model_answer``.
        """
        del now
        self._req_id += 1
        body = ModelRequest(self._req_id, check_id(group_id, "group id"))
        ((_, frame),) = self._encode_all([(check_address(address), body)])
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
        s["queued_updates"] = len(self.queue)
        s["incarnation"] = self.membership.incarnation
        return s

    def drain_events(self) -> list[GossipEvent]:
        """Events since the last call."""
        ev, self.events = self.events, []
        return ev

    # ------------------------------------------------------------------ internals

    def _apply_updates(self, updates: tuple[Any, ...], now: float) -> None:
        for u in updates:
            if isinstance(u, MemberUpdate):
                self.membership.apply(u, now)
                continue
            try:
                self.delegate.notify(u, now)
            except ValueError as exc:  # the delegate refused the item: drop it alone
                log.debug("dropping an application item: %s", exc)
                self.codec.drops["invalid"] += 1

    def _drain(self) -> None:
        m = self.membership
        broadcasts, m.broadcasts = m.broadcasts, []
        for u in broadcasts:
            try:  # encoded once, here: an update that cannot be sent never enters the queue
                packed = pack_update(u)
            except (OverflowError, TypeError, ValueError):
                self.codec.drops["invalid"] += 1
                continue
            self.queue.queue(("m", u.node_id), packed, len(packed.data))
        for kind, view in m.events:
            self.events.append(GossipEvent(kind, member=view))
        m.events.clear()

    def _encode(self, dest: str, body: Body) -> tuple[str, bytes]:
        msg = message(self.node_id, self.address, body)
        frame = self.codec.encode(msg)
        self.counters["frames_out"] += 1
        self.counters["bytes_out"] += len(frame)
        self.counters[f"out_{msg.kind.name.lower()}"] += 1
        return dest, frame

    def _encode_all(self, intents: list[Intent]) -> Outbound:
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
        recently_dead = self.membership.recently_dead(now, self.config.dead_ttl / 2)
        n = self.membership.num_live()
        out: Outbound = []
        budget = self.config.max_frame_bytes - _FRAME_SLACK
        for peer in self.membership.pick(self.config.fanout, recently_dead):
            updates = self.queue.get(budget, n)
            if not updates:
                break
            out.append(self._encode(peer.address, Gossip(tuple(updates))))
        return out

    def _state_bodies(self, cls: type[PushPull], reply: bool) -> list[PushPull]:
        """Our full state (members, the delegate's header and items) in bodies of ``cls`` that
        each fit ``max_frame_bytes``; only the first asks for a reply."""
        header, items = self.delegate.local_state()
        budget = self.config.max_frame_bytes - _FRAME_SLACK - encoded_size(header)
        members = [pack_update(self.membership.self_update())]
        members += [m.state() for m in self.membership.members.values()]
        chunks: list[tuple[list[Packed], list[Any]]] = [([], [])]
        used = 0
        for member in members:
            size = len(member.data)
            if used + size > budget and chunks[-1][0]:
                chunks.append(([], []))
                used = 0
            used += size
            chunks[-1][0].append(member)
        for item in items:
            size = encoded_size(item.to_dict())
            if used + size > budget and (chunks[-1][0] or chunks[-1][1]):
                chunks.append(([], []))
                used = 0
            used += size
            chunks[-1][1].append(item)
        return [
            cls(reply and i == 0, tuple(ms), tuple(gs), header) for i, (ms, gs) in enumerate(chunks)
        ]

    def _answer_model(self, req: ModelRequest) -> ModelResponse:
        none = ModelResponse(req.req_id, req.group_id, False)
        try:
            answer = self.delegate.answer_model(req.group_id)
        except Exception:
            log.exception("model provider failed for group %s", req.group_id)
            return none
        if answer is None:
            return none
        rnd, payload = answer
        if isinstance(rnd, bool) or not isinstance(rnd, int) or rnd < 0:
            raise ValueError("model provider must return (round >= 0, bytes)")
        if not isinstance(payload, bytes | bytearray):
            raise ValueError("model provider must return (round, bytes)")
        if len(payload) + 4096 > self.config.max_model_bytes:
            self.counters["model_too_big"] += 1
            log.warning("model of group %s exceeds max_model_bytes", req.group_id)
            return none
        return ModelResponse(req.req_id, req.group_id, True, rnd, bytes(payload))

    def stagger_push_pull(self, now: float) -> None:
        """Put the next push-pull at a random phase of the period for the current N.

        A node up for long has its push-pulls at a random phase; one that just started has its
        first within ``push_pull_interval`` (memberlist's stagger). A simulation that pre-fills
        every view (``SimCluster``) models the former.
        """
        n = self.membership.num_live()
        period = push_pull_period(self.config.push_pull_interval, n)
        self._next_push_pull_at = now + self.rng.uniform(0.0, period)

    def forget_broadcasts(self) -> None:
        """Empty the broadcast queue (simulation bootstrap with a pre-filled view)."""
        self.queue = BroadcastQueue(self.config.retransmit_mult)
