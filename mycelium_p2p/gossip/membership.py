"""SWIM membership with Lifeguard-style suspicion (pure: clock and ``random.Random`` injected).

Probing: every ``probe_interval`` one member is pinged, round-robin over a shuffled list
(reshuffled each pass), so every member is probed once per pass. Without an ack after
``probe_timeout``, ``indirect_checks`` other members are asked to ping-req it; without any ack
by the end of the period it becomes *suspect*.

Suspicion (Lifeguard, as memberlist): with N live members (self included) the timeout is

    min = suspicion_mult * max(1, log10(max(1, N))) * probe_interval
    max = suspicion_max_mult * min
    k   = suspicion_mult - 2   (0 if N - 2 < k)
    timeout(c) = max(min, max - (max - min) * log(c + 1) / log(k + 1))   (min if k < 1)

where ``c`` counts independent confirmations (suspect messages from other members for the same
incarnation), measured from when the suspicion started. When it expires the member is *dead*.

Incarnations: a member told it is suspect or dead (at an incarnation >= its own) refutes by
announcing itself alive with ``incarnation + 1``; only a member raises its own incarnation
(also to publish new metadata). Dead and left members are remembered ``dead_ttl`` seconds so that
stale alive gossip cannot resurrect them, then forgotten.

Hostile updates (counted in ``invalid`` and dropped): an incarnation at ``limits.MAX_COUNTER``
(nobody could refute it), and an accusation (suspect, dead, left) or a claim about this node that
names an incarnation more than ``MAX_INCARNATION_STEP`` above the one known. An honest accuser
only knows incarnations the member itself announced, so one forged frame cannot push a node's
incarnation towards the bound, where it could no longer refute or publish metadata.
"""

from __future__ import annotations

import functools
import math
import random
from dataclasses import dataclass, field
from typing import Any

from mycelium_p2p.config import GossipConfig
from mycelium_p2p.gossip.messages import (
    Ack,
    MemberUpdate,
    Packed,
    Ping,
    PingReq,
    Status,
    check_meta,
    pack_update,
)
from mycelium_p2p.limits import MAX_COUNTER
from mycelium_p2p.meta import NodeMeta

Outbound = tuple[str, Ping | PingReq | Ack]

#: Largest jump above the known incarnation that an accusation may name (see module docstring).
#: Views lag by the updates a member missed (a partition of hours at a few per minute stays far
#: below it); beyond it an accusation is forged, or at best stale news we check for ourselves.
MAX_INCARNATION_STEP = 2**16


@dataclass(slots=True)
class Member:
    """What we know of one other member.

    ``shared`` marks an entry several views hold (a simulation's pre-filled views): a view
    copies it before changing it (``Membership._own``). ``packed`` caches the encoded state
    update (``update().packed()``), cleared on every change.
    """

    node_id: str
    address: str
    status: Status
    incarnation: int
    meta: dict[str, Any]
    since: float
    shared: bool = False
    packed: Packed | None = None
    viewed: MemberView | None = None  # the read-only view handed out, cleared on every change

    def update(self, by: str = "") -> MemberUpdate:
        """This member's state as an update to gossip."""
        return MemberUpdate(
            self.node_id, self.address, self.status, self.incarnation, self.meta, by
        )

    def state(self) -> Packed:
        """This member's update as a push-pull state carries it, encoded once per change."""
        if self.packed is None:
            self.packed = pack_update(self.update())
        return self.packed


@dataclass(frozen=True)
class MemberView:
    """A read-only view of a member for callers (status as a string).

    ``meta`` is the member's metadata map as gossiped (validated by ``check_meta``);
    ``node_meta`` reads it as Mycelium's typed ``NodeMeta`` (once per view: a view is made once
    per change of its member and handed out until the next).
    """

    id: str
    address: str
    status: str
    incarnation: int
    meta: dict[str, Any]

    @functools.cached_property
    def node_meta(self) -> NodeMeta:
        """The metadata as a ``NodeMeta`` (unknown keys ignored, bad values defaulted)."""
        return NodeMeta.from_map(self.meta)


def suspicion_bounds(config: GossipConfig, n: int) -> tuple[float, float, int]:
    """``(min_timeout, max_timeout, k)`` in seconds for ``n`` live members (see module doc)."""
    scale = max(1.0, math.log10(max(1, n)))
    low = config.suspicion_mult * scale * config.probe_interval
    k = config.suspicion_mult - 2
    if n - 2 < k:
        k = 0
    return low, config.suspicion_max_mult * low, k


@dataclass(slots=True)
class Suspicion:
    """A running suspicion timer whose timeout shrinks with independent confirmations."""

    start: float
    low: float
    high: float
    k: int
    confirmers: set[str] = field(default_factory=set)

    def confirm(self, by: str) -> bool:
        """Count ``by`` once; True if it was a new confirmation (worth re-gossiping)."""
        if not by or by in self.confirmers or len(self.confirmers) > self.k:
            return False
        self.confirmers.add(by)
        return True

    def deadline(self) -> float:
        """Absolute time at which the member is declared dead."""
        if self.k < 1:
            return self.start + self.low
        c = max(0, len(self.confirmers) - 1)  # the first suspector is not a confirmation
        frac = math.log(c + 1) / math.log(self.k + 1)
        return self.start + max(self.low, self.high - frac * (self.high - self.low))


@dataclass(slots=True)
class _Probe:
    seq: int
    target_id: str
    target_address: str
    sent_at: float
    indirect_sent: bool = False


class Membership:
    """The SWIM state machine of one node.

    Methods that change state append updates worth gossiping to ``self.broadcasts`` and
    ``(event, MemberView)`` pairs to ``self.events``; the caller drains both.

    Parameters
    ----------
    node_id, address : str
        This node's id and advertised ``host:port``.
    meta : dict
        This node's metadata (validated against ``config.max_meta_bytes``).
    config : GossipConfig
        Timing and multipliers.
    rng : random.Random
        Source of randomness (probe order, indirect helpers).
    now : float
        Current time in seconds (any monotonic clock).
    """

    def __init__(
        self,
        node_id: str,
        address: str,
        meta: dict[str, Any],
        config: GossipConfig,
        rng: random.Random,
        now: float,
    ) -> None:
        self.node_id = node_id
        self.address = address
        self.meta = check_meta(meta, config.max_meta_bytes)
        self.config = config
        self.rng = rng
        self.incarnation = 0
        self.leaving = False
        self.members: dict[str, Member] = {}
        self.suspicions: dict[str, Suspicion] = {}
        self.broadcasts: list[MemberUpdate] = []
        self.events: list[tuple[str, MemberView]] = []
        self.refutations = 0
        self.invalid = 0  # hostile updates dropped (see the module docstring)
        self.health = 0  # Lifeguard local health score: 0 is healthy (see GossipConfig)
        self._seq = 0
        self._probe: _Probe | None = None
        self._probe_order: list[str] = []
        self._probe_index = 0
        # Random phase so that nodes started together do not probe in lockstep.
        self._next_probe_at = now + rng.uniform(0.0, config.probe_interval)
        self._forwards: dict[int, tuple[str, int, float]] = {}
        # Dead/left ids (reaped after dead_ttl), and the ids of live members as a list to draw
        # peers from without copying it: a member that goes down stays listed, as stale, until
        # stale ids are half the list (each change is O(1), amortized).
        self._down: set[str] = set()
        self._listed: list[str] = []
        self._stale: set[str] = set()

    # ------------------------------------------------------------------ views

    def self_update(self) -> MemberUpdate:
        """This node's own state as an update."""
        status = Status.LEFT if self.leaving else Status.ALIVE
        return MemberUpdate(self.node_id, self.address, status, self.incarnation, self.meta)

    def live(self) -> list[Member]:
        """Other members that are alive or suspect (probe and gossip targets), a new list."""
        return [self.members[i] for i in self._listed if i not in self._stale]

    def pick(self, k: int, extra: list[Member] | None = None, exclude: str = "") -> list[Member]:
        """Up to ``k`` distinct members drawn uniformly from the live ones (but ``exclude``)
        and ``extra``, without copying the live set."""
        listed, stale = self._listed, self._stale
        extra = extra or []
        n = len(listed) + len(extra)
        want = min(n, k + len(stale) + (1 if exclude else 0))
        out: list[Member] = []
        # A uniform ordered draw, filtered, stays uniform over what the filter keeps.
        for j in self.rng.sample(range(n), want):
            if j < len(listed):
                i = listed[j]
                if i in stale or i == exclude:
                    continue
                out.append(self.members[i])
            else:
                out.append(extra[j - len(listed)])
            if len(out) == k:
                break
        return out

    def num_live(self) -> int:
        """Live members including this node (the N of the formulas)."""
        return 1 + len(self.members) - len(self._down)

    def recently_dead(self, now: float, window: float) -> list[Member]:
        """Members declared dead less than ``window`` seconds ago."""
        members = self.members
        return [
            m
            for m in (members[i] for i in self._down)
            if m.status is Status.DEAD and now - m.since < window
        ]

    def _changed(self, m: Member, was_live: bool) -> None:
        """Book a change of ``m`` (new, or ``was_live`` before it)."""
        m.packed = None
        m.viewed = None
        i = m.node_id
        if m.status <= Status.SUSPECT:
            self._down.discard(i)
            if not was_live:
                if i in self._stale:
                    self._stale.discard(i)  # still listed
                else:
                    self._listed.append(i)
        else:
            self._down.add(i)
            if was_live:
                self._stale.add(i)
                if len(self._stale) > 16 and 2 * len(self._stale) > len(self._listed):
                    self._listed = [x for x in self._listed if x not in self._stale]
                    self._stale.clear()

    def _own(self, m: Member) -> Member:
        """``m`` as this view's own entry (copied first if other views share it)."""
        if not m.shared:
            return m
        own = Member(m.node_id, m.address, m.status, m.incarnation, m.meta, m.since)
        self.members[m.node_id] = own
        return own

    def view(self, m: Member) -> MemberView:
        if m.viewed is None:
            m.viewed = MemberView(
                m.node_id, m.address, m.status.name.lower(), m.incarnation, m.meta
            )
        return m.viewed

    def self_view(self) -> MemberView:
        u = self.self_update()
        return MemberView(u.node_id, u.address, u.status.name.lower(), u.incarnation, u.meta)

    def next_due(self) -> float:
        """Earliest time at which ``tick`` has work to do."""
        due = self._next_probe_at
        p = self._probe
        if p is not None:
            due = min(due, p.sent_at + self.config.probe_interval)
            if not p.indirect_sent:
                due = min(due, p.sent_at + self.config.probe_timeout)
        for s in self.suspicions.values():
            due = min(due, s.deadline())
        return due

    # ------------------------------------------------------------------ own state

    def set_meta(self, meta: dict[str, Any]) -> None:
        """Replace own metadata, bump incarnation and gossip it (raises WireError if invalid)."""
        self.meta = check_meta(meta, self.config.max_meta_bytes)
        self.incarnation = min(self.incarnation + 1, MAX_COUNTER - 1)
        self.broadcasts.append(self.self_update())

    def leave(self) -> MemberUpdate:
        """Announce a graceful leave: incarnation + 1 with status LEFT; stop probing."""
        self.leaving = True
        self.incarnation = min(self.incarnation + 1, MAX_COUNTER - 1)
        self._probe = None
        u = self.self_update()
        self.broadcasts.append(u)
        return u

    # ------------------------------------------------------------------ updates

    def adopt(self, members: dict[str, Member]) -> None:
        """Know ``members`` (all alive, shared with other views) without gossiping them: the
        bootstrap of a simulation where every node knows every other (see ``SimCluster``)."""
        self.members = dict(members)
        self.members.pop(self.node_id, None)
        self._down, self._stale = set(), set()
        self._listed = list(self.members)

    def add_known(self, u: MemberUpdate, now: float) -> None:
        """Insert a member without gossiping it (simulation bootstrap; see ``SimCluster``)."""
        if u.node_id != self.node_id and u.node_id not in self.members:
            self.members[u.node_id] = m = Member(
                u.node_id, u.address, u.status, u.incarnation, u.meta, now
            )
            self._changed(m, False)

    def apply(self, u: MemberUpdate, now: float, *, from_state: bool = False) -> bool:
        """Apply a gossiped update with SWIM precedence; True if it changed our view.

        ``from_state`` marks updates from a push-pull state: a remote *dead* about a member we
        think alive is only taken as a suspicion (we check for ourselves), as memberlist does.
        """
        if u.incarnation >= MAX_COUNTER - 1:  # a refutation would need MAX_COUNTER
            self.invalid += 1
            return False
        if u.node_id == self.node_id:
            if u.incarnation > self.incarnation + MAX_INCARNATION_STEP:
                self.invalid += 1
                return False
            return self._about_self(u)
        m = self.members.get(u.node_id)
        if u.status is Status.ALIVE:
            return self._alive(m, u, now)
        if m is not None and u.incarnation > m.incarnation + MAX_INCARNATION_STEP:
            self.invalid += 1
            return False
        if m is None:
            if u.status in (Status.DEAD, Status.LEFT):
                # Remember it so that stale alive gossip cannot introduce it; nothing to spread.
                self.members[u.node_id] = m = Member(
                    u.node_id, u.address, u.status, u.incarnation, u.meta, now
                )
                self._changed(m, False)
            return False
        if u.incarnation < m.incarnation or m.status in (Status.DEAD, Status.LEFT):
            return False
        if u.status is Status.SUSPECT or (from_state and u.status is Status.DEAD):
            return self._suspect(m, u.incarnation, u.by or "?", now)
        # DEAD or LEFT with incarnation >= ours.
        self._set_down(m, u.status, u.incarnation, now, u.by)
        return True

    def _about_self(self, u: MemberUpdate) -> bool:
        if self.leaving:
            return False
        if u.status is Status.ALIVE and (
            u.incarnation < self.incarnation
            or (u.incarnation == self.incarnation and u.address == self.address)
        ):
            return False
        if u.status is not Status.ALIVE and u.incarnation < self.incarnation:
            return False
        # Someone thinks we are suspect/dead/left (or a stale twin claims our id): refute.
        self.incarnation = u.incarnation + 1
        self.refutations += 1
        self._health(+1)  # others could not hear us in time: we are probably the slow one
        self.broadcasts.append(self.self_update())
        return True

    def _alive(self, m: Member | None, u: MemberUpdate, now: float) -> bool:
        if m is None:
            m = Member(u.node_id, u.address, Status.ALIVE, u.incarnation, u.meta, now)
            self.members[u.node_id] = m
            self._changed(m, False)
            self.events.append(("member_alive", self.view(m)))
            self.broadcasts.append(u)
            return True
        if u.incarnation <= m.incarnation:
            return False
        m = self._own(m)
        was = m.status
        m.address, m.status, m.incarnation, m.meta, m.since = (
            u.address,
            Status.ALIVE,
            u.incarnation,
            u.meta,
            now,
        )
        self.suspicions.pop(m.node_id, None)
        self._changed(m, was <= Status.SUSPECT)
        self.events.append(
            ("member_alive" if was is not Status.ALIVE else "member_updated", self.view(m))
        )
        self.broadcasts.append(u)
        return True

    def _suspect(self, m: Member, incarnation: int, by: str, now: float) -> bool:
        if m.status is Status.SUSPECT and incarnation == m.incarnation:
            s = self.suspicions.get(m.node_id)
            if s is not None and s.confirm(by):
                self.broadcasts.append(m.update(by))
                return True
            return False
        if m.status is Status.SUSPECT and incarnation < m.incarnation:
            return False
        m = self._own(m)
        m.status, m.incarnation, m.since = Status.SUSPECT, incarnation, now
        self._changed(m, True)
        low, high, k = suspicion_bounds(self.config, self.num_live())
        s = Suspicion(now, low, high, k)
        s.confirm(by)
        self.suspicions[m.node_id] = s
        self.events.append(("member_suspect", self.view(m)))
        self.broadcasts.append(m.update(by))
        return True

    def _set_down(self, m: Member, status: Status, incarnation: int, now: float, by: str) -> None:
        m = self._own(m)
        m.status, m.incarnation, m.since = status, incarnation, now
        self._changed(m, True)
        self.suspicions.pop(m.node_id, None)
        if self._probe is not None and self._probe.target_id == m.node_id:
            self._probe = None
        self.events.append((f"member_{status.name.lower()}", self.view(m)))
        self.broadcasts.append(m.update(by))

    # ------------------------------------------------------------------ probing

    def tick(self, now: float) -> list[Outbound]:
        """Advance timers: probe stages, suspicion expiry, forgetting the dead."""
        out: list[Outbound] = []
        p = self._probe
        stretch = 1 + self.health
        timeout = self.config.probe_timeout * stretch
        if p is not None and not p.indirect_sent and now >= p.sent_at + timeout:
            p.indirect_sent = True
            for h in self.pick(self.config.indirect_checks, exclude=p.target_id):
                out.append((h.address, PingReq(p.seq, p.target_id, p.target_address)))
        if p is not None and now >= p.sent_at + self.config.probe_interval * stretch:
            self._probe = None
            self._health(+1)
            m = self.members.get(p.target_id)
            if m is not None and m.status <= Status.SUSPECT:
                # A failed probe of a suspect is an independent confirmation (Lifeguard).
                self._suspect(m, m.incarnation, self.node_id, now)
        if now >= self._next_probe_at:
            self._next_probe_at = max(
                self._next_probe_at + self.config.probe_interval * stretch, now
            )
            if self._probe is None and not self.leaving:
                target = self._next_target()
                if target is not None:
                    self._seq += 1
                    self._probe = _Probe(self._seq, target.node_id, target.address, now)
                    out.append((target.address, Ping(self._seq, target.node_id)))
        for node_id, s in list(self.suspicions.items()):
            if now >= s.deadline():
                m = self.members[node_id]
                self._set_down(m, Status.DEAD, m.incarnation, now, self.node_id)
        for seq, (_, _, expires) in list(self._forwards.items()):
            if now >= expires:
                del self._forwards[seq]
        for node_id in list(self._down):
            m = self.members[node_id]
            if now - m.since >= self.config.dead_ttl:
                del self.members[node_id]
                self._down.discard(node_id)
                self.events.append(("member_removed", self.view(m)))
        return out

    def _health(self, delta: int) -> None:
        self.health = min(max(self.health + delta, 0), self.config.awareness_max)

    def _next_target(self) -> Member | None:
        # Round-robin over a random order of the live members, a new order each pass (SWIM's
        # bounded detection). The order is drawn as the pass goes (a lazy Fisher-Yates shuffle):
        # the same uniform permutation as shuffling up front, without an O(N) shuffle per pass.
        for _ in range(2):
            order = self._probe_order
            while self._probe_index < len(order):
                i = self._probe_index
                j = self.rng.randrange(i, len(order))
                order[i], order[j] = order[j], order[i]
                self._probe_index += 1
                m = self.members.get(order[i])
                if m is not None and m.status <= Status.SUSPECT:
                    return m
            stale = self._stale
            self._probe_order = [i for i in self._listed if i not in stale]
            self._probe_index = 0
        return None

    def on_ping(self, ping: Ping, sender_address: str) -> list[Outbound]:
        """Answer a ping addressed to us."""
        if ping.target_id != self.node_id or self.leaving:
            return []
        return [(sender_address, Ack(ping.seq))]

    def on_ping_req(self, req: PingReq, sender_address: str, now: float) -> list[Outbound]:
        """Probe ``req.target_id`` for the requester; its ack will be forwarded."""
        if self.leaving or req.target_id == self.node_id:
            return []
        self._seq += 1
        self._forwards[self._seq] = (sender_address, req.seq, now + self.config.probe_interval)
        return [(req.target_address, Ping(self._seq, req.target_id))]

    def on_ack(self, ack: Ack) -> list[Outbound]:
        """Settle our probe or forward an ack to the member that asked us."""
        p = self._probe
        if p is not None and ack.seq == p.seq:
            self._probe = None
            self._health(-1)
            return []
        fwd = self._forwards.pop(ack.seq, None)
        if fwd is not None:
            return [(fwd[0], Ack(fwd[1]))]
        return []
