"""The controller: owns the node's state, runs the parts, and executes what they return.

It is driven from outside: ``start`` once, then ``handle(event)`` for what other threads report
and ``step(now)`` a few times a second, then ``leave``. The daemon calls these from its one
control thread; the in-memory network calls them from its event loop on a fake clock. Either
way every decision runs here, one at a time, on the node's state, and every effect goes through
a port.

Parts decide (``parts/``); the controller executes (``_execute`` and the ``_do_*`` methods), and
hands the outcome of a command that can fail back to the part that returned it.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from mycelium_p2p.groups import GroupRecord
from mycelium_p2p.lifecycle import Phase
from mycelium_p2p.meta import NodeMeta
from mycelium_p2p.node.events import (
    Announce,
    Claim,
    Command,
    DataChanged,
    DropGroup,
    Event,
    Fail,
    Follow,
    FoundGroup,
    HeartbeatAnswered,
    JoinGroup,
    JoinPeers,
    LeaveRegistryGroup,
    LookUpPeers,
    Publish,
    Register,
    RegistryForgot,
    Rejoin,
    Report,
    RoundDone,
    StepDown,
    ThreadDied,
)
from mycelium_p2p.node.parts import choice, discovery, leadership, registry_sync
from mycelium_p2p.node.parts.choice import Attempt, ChoiceParams
from mycelium_p2p.node.parts.discovery import DiscoveryParams
from mycelium_p2p.node.parts.leadership import LeadershipParams
from mycelium_p2p.node.ports import Clock, GossipPort, LearningPort, RegistryPort, ServerHandle
from mycelium_p2p.node.scheduler import Scheduler, Timer
from mycelium_p2p.node.state import GossipView, NodeState, Published
from mycelium_p2p.registry_client import RegistryError, RegistryUnavailable, UntrustedAnswer

log = logging.getLogger("mycelium.node")


@dataclass(frozen=True)
class ControllerParams:
    """Each part's settings, plus what the controller itself needs.

    Parameters
    ----------
    discovery, choice, leadership
        The parts' sections (defaults: their own defaults).
    capacity : int
        Capacity of a group this node founds (default: 5).
    report_interval : float
        Seconds between two round reports to the registry (default: 30, one heartbeat).
    record_interval : float
        Seconds between two gossiped records carrying round figures (default: 5).
    seed_timeout : float
        Seconds to wait for the first seed to answer at start (default: 5).
    leave_timeout : float
        Seconds a graceful leave may take on gossip (default: 2).
    """

    discovery: DiscoveryParams = field(default_factory=DiscoveryParams)
    choice: ChoiceParams = field(default_factory=ChoiceParams)
    leadership: LeadershipParams = field(default_factory=LeadershipParams)
    capacity: int = 5
    report_interval: float = 30.0
    record_interval: float = 5.0
    seed_timeout: float = 5.0
    leave_timeout: float = 2.0


class Controller:
    """The node's logic over its ports (see the module docstring).

    Parameters
    ----------
    state : NodeState
        The node's identity (id, name, spec) and, from then on, everything it knows.
    params : ControllerParams
        The parts' settings.
    gossip, registry, learning : ports
        The world (``ports.py``).
    clock : callable
        The node's clock (seconds, monotonic).
    wall_clock : callable
        Seconds since the epoch, stamped on group records (default: ``time.time``).
    rng : random.Random
        Every random choice (jitter, new group ids).
    on_fail : callable
        Called once with the reason when the node must stop for good (default: nothing).
    """

    def __init__(
        self,
        state: NodeState,
        params: ControllerParams,
        *,
        gossip: GossipPort,
        registry: RegistryPort,
        learning: LearningPort,
        clock: Clock,
        rng: random.Random,
        wall_clock: Clock = time.time,
        on_fail: Callable[[str], None] | None = None,
    ) -> None:
        self.state = state
        self.params = params
        self.gossip = gossip
        self.registry = registry
        self.learning = learning
        self.clock = clock
        self.wall_clock = wall_clock
        self.rng = rng
        self.timers = Scheduler()
        self.published = Published()
        self._on_fail = on_fail
        self._server: ServerHandle | None = None
        self._viewed: tuple[float, GossipView] | None = None
        self._next_report = 0.0
        self._next_record = 0.0  # round figures wait for this time (members never wait)
        self._record_due = False
        self._handlers: dict[type, Callable[[Any], None]] = {
            Register: self._do_register,
            LookUpPeers: self._do_look_up_peers,
            JoinPeers: self._do_join_peers,
            JoinGroup: self._do_join_group,
            FoundGroup: self._do_found_group,
            Claim: self._do_claim,
            Follow: self._do_follow,
            StepDown: self._do_step_down,
            DropGroup: self._do_drop_group,
            Publish: self._do_publish,
            Report: self._do_report,
            Rejoin: self._do_rejoin,
            LeaveRegistryGroup: self._do_leave_registry_group,
            Announce: self._do_announce,
            Fail: self._do_fail,
        }

    # ------------------------------------------------------------------ driving

    def start(self, seeds: list[str]) -> None:
        """Join gossip through ``seeds``, register, look for peers, plan the first choice."""
        now = self.clock()
        self._enter(Phase.DISCOVERING, f"gossip bound at {self.gossip.address}")
        if seeds and not self.gossip.join(seeds, self.params.seed_timeout):
            log.warning("%s: no seed answered (%s)", self.state.name, ", ".join(seeds))
        self._execute([Register()])
        self._execute(discovery.look_up(self._view(), self.params.discovery, self.timers, now))
        # A short random delay spreads the first choices of nodes started together.
        self.timers.at(Timer.CHOOSE, now + self.rng.uniform(0.0, 1.0))
        self._publish_state()

    def handle(self, event: Event) -> None:
        """Take in what another thread reported."""
        if isinstance(event, RoundDone):
            self._execute(leadership.on_round(self.state, event.result))
        elif isinstance(event, HeartbeatAnswered):
            self._execute(registry_sync.on_heartbeat(self.state, event))
            self._execute(discovery.on_peers(self._view(), self.gossip.address, event.peers))
        elif isinstance(event, RegistryForgot):
            self._execute(registry_sync.on_forgotten(self.state))
        elif isinstance(event, ThreadDied):
            self._execute([Fail(f"its {event.what} died")])
        elif isinstance(event, DataChanged):
            self.learning.switch_data(event.data)
            self._execute(choice.data_changed(self.state, self.timers, self.clock()))
        self._hold_group_training()
        self._publish_state()

    def step(self) -> None:
        """Run every timer that is due, then one step of leading or following."""
        now = self.clock()
        chose = False  # one choice per step: a second would see the view from before the first
        for timer in self.timers.pop_due(now):
            view = self._view()
            if timer is Timer.PEER_LOOKUP:
                self._execute(discovery.look_up(view, self.params.discovery, self.timers, now))
            elif timer is Timer.CHOOSE and self.state.group_id is None and not chose:
                self._choose(view, now, first=True)
                chose = True
            elif timer is Timer.EVALUATE and self.state.group_id is not None and not chose:
                self._choose(view, now, first=False)
                chose = True
        if self.state.group_id is not None:
            view = self._view()
            if self.state.phase is Phase.LEADER:
                self._execute(registry_sync.report_due(self.state, self._next_report, now))
                self._execute(leadership.lead(self.state, view))
            elif self.state.phase is Phase.MEMBER:
                holds = self._holds_group_model()
                self._execute(
                    leadership.follow(
                        self.state, view, self.params.leadership, now, holds_model=holds
                    )
                )
        self._hold_group_training()
        self._publish_state()

    def next_due(self) -> float:
        """When ``step`` next has a timer to run."""
        return self.timers.next_due()

    def leave(self) -> None:
        """Leave gracefully: out of the group, deregistered, leave announced on gossip."""
        state = self.state
        if state.phase in (Phase.LEAVING, Phase.STOPPED):
            return
        self._enter(Phase.LEAVING, "shutting down")
        self.learning.unfollow()
        self._leave_leadership(handing_over=True)
        try:
            if state.group_id is not None:
                self.registry.leave_group(node_id=state.id)
            self.registry.deregister(state.id)
        except (RegistryError, RegistryUnavailable) as exc:
            log.warning("%s: registry leave incomplete: %s", state.name, exc)
        state.group_id = None
        state.epoch += 1
        try:
            self.gossip.set_meta(self.meta())
            self.gossip.leave(self.params.leave_timeout)
        finally:
            self.learning.close()
            self.registry.close()
            self._publish_state()
            self._enter(Phase.STOPPED, "left")

    def crash(self) -> None:
        """Stop the learner and the server without leaving anything (fault tests)."""
        self.learning.close()
        if self._server is not None:
            self._server.stop()
        self.registry.close()

    # ------------------------------------------------------------------ what others read

    def meta(self) -> NodeMeta:
        """This node's metadata as gossip carries it."""
        state = self.state
        return NodeMeta(
            name=state.name,
            role="node",
            group=state.group_id or "",
            model=state.spec,
            flower_address=state.server_address or "",
            accuracy=state.accuracy,
            round=state.rounds_logged,
            **self.learning.sizes(),
        )

    def answer_model(self, group_id: str) -> tuple[int, bytes] | None:
        """A probe's answer: the latest model of the group this node leads (any thread)."""
        published, server = self.published, self._server
        if not published.leading or published.group != group_id or server is None:
            return None
        return server.payload()

    def server_running(self) -> bool | None:
        """Whether the Flower server of the group this node leads runs (None: it leads none)."""
        server = self._server
        return None if server is None else server.running()

    # ------------------------------------------------------------------ internals

    def _view(self) -> GossipView:
        """The gossip view, read again unless it was read at this very moment (one step)."""
        now = self.clock()
        if self._viewed is None or self._viewed[0] != now:
            self._viewed = (
                now,
                GossipView(self.state.id, self.gossip.members(), self.gossip.groups()),
            )
        return self._viewed[1]

    def _record(self) -> GroupRecord | None:
        return self.gossip.groups().get(self.state.group_id or "")

    def _hold_group_training(self) -> None:
        """A node whose data changed trains nothing into its group until it has moved or its
        own model has caught up (it has chosen again): a drifter that waits (its new
        concept's group full, or not scored yet) pulled its old group's model toward its new
        data, and nodes that drifted into that group took seconds longer to recover. Nor does
        a leader alone in a group founded from a full group's model, while it mixes that
        group's newer models in: it is there only because that group had no room, and its
        rounds on its own few samples pulled the model below the one it started from."""
        state = self.state
        record = self._record() if state.follows_kin and state.leading else None
        alone = record is not None and tuple(record.members) == (state.id,)
        self.learning.hold_group_training((state.data_changed and state.local_stale) or alone)

    def _publish_state(self) -> None:
        self.published = self.state.publishable(self._record() if self.state.group_id else None)

    def _enter(self, phase: Phase, why: str) -> None:
        previous = self.state.lifecycle.move(phase)
        log.info("%s: %s -> %s (%s)", self.state.name, previous, phase, why)

    def _execute(self, commands: list[Command]) -> None:
        for command in commands:
            self._handlers[type(command)](command)

    def _choose(self, view: GossipView, now: float, *, first: bool) -> None:
        commands = choice.choose(
            self.state,
            view,
            self.params.choice,
            self.gossip,
            self.learning,
            self.rng,
            self.timers,
            now,
            first=first,
        )
        self._execute(commands)
        self._viewed = None  # a move changed what the node sees of its own group

    def _attempted(self, outcome: Attempt, first: bool) -> None:
        choice.on_attempt(
            self.state,
            outcome,
            self.params.choice,
            self.rng,
            self.timers,
            self.clock(),
            first=first,
        )

    def _fallback_phase(self) -> None:
        """After a refused join: back to where the node was."""
        state = self.state
        if state.phase is Phase.JOINING:
            if state.group_id is None:
                self._enter(Phase.DISCOVERING, "join refused")
            elif state.leading:
                self._enter(Phase.LEADER, "join refused, still leading")
            else:
                self._enter(Phase.MEMBER, "join refused, staying")

    def _enter_group(self, group_id: str, term: int) -> None:
        """The registry took this node into ``group_id`` (as a member or its founder)."""
        self._leave_leadership(handing_over=True)
        state = self.state
        state.group_id = group_id
        state.epoch += 1
        state.term = term
        state.probes = {}
        state.leader_gone_at = None
        state.lost_claims = 0
        state.group_servers = set()
        state.follows_kin = False

    def _become_leader(self, server: ServerHandle, why: str) -> None:
        state = self.state
        self._server = server
        state.server_address = server.address
        state.version = 0
        state.latest_round = None
        state.unreported = None
        self._follow(server.address)  # the leader trains in its own group too
        state.probes = {}
        self.gossip.set_meta(self.meta())
        self._enter(Phase.LEADER, f"leader of {state.group_id} ({why}), Flower at {server.address}")
        if self.timers.when(Timer.EVALUATE) is None:
            self.timers.at(Timer.EVALUATE, self.clock() + self.params.choice.evaluation_interval)
        self._publish(force=True)

    def _stop_server(self) -> None:
        # Forget the server before stopping it: the watchdog must never see a stopped server
        # still named as the group's (it would take it for a dead thread).
        server, self._server = self._server, None
        self.state.server_address = None
        if server is not None:
            server.stop()

    def _leave_leadership(self, *, handing_over: bool) -> None:
        """Stop leading the current group (before a move, or on stepping down)."""
        if self._server is None:
            return
        state = self.state
        if handing_over and state.group_id is not None:
            others = [m for m in self._view().members_of(state.group_id) if m != state.id]
            if not others:
                self._publish(dissolved=True)  # last one out: a tombstone, never a zombie
        self._stop_server()

    def _publish(self, *, force: bool = False, dissolved: bool = False) -> None:
        state = self.state
        if state.group_id is None or state.server_address is None:
            return
        view = self._view()
        current = tuple(sorted({*view.members_of(state.group_id), state.id}))
        if not force and not dissolved and current == state.published_members:
            return
        seen = view.groups.get(state.group_id)
        if seen is not None and seen.term == state.term:
            state.version = max(state.version, seen.version)
        state.version += 1
        result = state.latest_round
        # Before its first round a leader (new, or after a failover) carries the last known
        # metrics forward: the model is the same one they describe.
        carried = seen if seen is not None and result is None else None
        now = self.wall_clock()
        record = GroupRecord(
            id=state.group_id,
            name=f"group-{state.group_id[2:8]}",
            leader=state.id,
            leader_address=self.gossip.address,
            flower_address=state.server_address,
            members=current,
            model=state.spec,
            capacity=self.params.capacity,
            accuracy=result.accuracy if result else (carried.accuracy if carried else 0.0),
            loss=result.loss if result else (carried.loss if carried else 0.0),
            round=result.round if result else (carried.round if carried else 0),
            examples=result.examples if result else (carried.examples if carried else 0),
            term=state.term,
            version=state.version,
            dissolved=dissolved,
            created_at=seen.created_at if seen is not None else now,
            updated_at=now,
            lease=state.lease,
        )
        self.gossip.publish_group(record)
        state.published_members = current
        self._record_due = False
        self._next_record = self.clock() + self.params.record_interval

    # ------------------------------------------------------------------ commands

    def _register(self) -> None:
        state = self.state
        self.registry.register(
            id=state.id,
            name=state.name,
            gossip_address=self.gossip.address,
            flower_address=state.server_address,
            model=state.spec,
            data=self.learning.summary(),
        )

    def _do_register(self, command: Register) -> None:
        state = self.state
        try:
            self._register()
        except RegistryError as exc:
            if exc.status == 401:  # a wrong token stays wrong: retrying cannot help
                why = "a wrong token, or a state directory enrolled with another network"
                self._execute([Fail(f"the registry refused this node ({exc.detail}): {why}")])
            elif isinstance(exc, UntrustedAnswer):  # another network's registry: the same
                self._execute([Fail(exc.detail)])
            else:
                log.warning("%s: registration refused: %s", state.name, exc)
            return
        except RegistryUnavailable as exc:
            log.warning("%s: registration failed: %s", state.name, exc)
            return
        state.registry_answered()
        if command.rejoin and state.group_id is not None:
            self._do_rejoin(Rejoin())

    def _do_look_up_peers(self, command: LookUpPeers) -> None:
        try:
            peers: list[str] | None = self.registry.peers(discovery.PEERS_PER_LOOKUP)
        except (RegistryUnavailable, RegistryError):
            peers = None
        self._execute(discovery.on_peers(self._view(), self.gossip.address, peers))

    def _do_join_peers(self, command: JoinPeers) -> None:
        self.gossip.join(list(command.seeds), command.timeout)

    def _do_join_group(self, command: JoinGroup) -> None:
        state = self.state
        record = self.gossip.groups().get(command.group_id)
        if record is None:
            self._attempted(Attempt.REFUSED, command.first)
            return
        if state.phase is not Phase.JOINING:
            self._enter(Phase.JOINING, f"joining {command.group_id}")
        try:
            self.registry.join_group(node_id=state.id, group_id=record.id, reason=command.reason)
        except RegistryError as exc:
            log.warning("%s: join %s refused: %s", state.name, record.id, exc)
            choice.refused(state, record)
            self._fallback_phase()
            self._attempted(Attempt.REFUSED, command.first)
            return
        except RegistryUnavailable as exc:
            log.warning("%s: join %s not done: %s", state.name, record.id, exc)
            self._fallback_phase()
            self._attempted(Attempt.UNREACHABLE, command.first)
            return
        self._enter_group(record.id, record.term)
        self._follow(record.flower_address)
        if command.model is not None:
            self._adopt(record, *command.model)
        self.gossip.set_meta(self.meta())
        self._enter(Phase.MEMBER, f"member of {record.id}, leader {record.leader}")
        self._attempted(Attempt.MOVED, command.first)

    def _adopt(self, record: GroupRecord, server_round: int, model: bytes) -> None:
        """Hold the model the probe fetched as the group's: until the group's first round
        reaches it, a new member would otherwise score, claim and report the group by the model
        of the group it left (or by none)."""
        try:
            self.learning.adopt(model, record.flower_address, server_round)
        except ValueError as exc:
            log.warning("%s: did not take %s's probed model: %s", self.state.name, record.id, exc)

    def _do_found_group(self, command: FoundGroup) -> None:
        state = self.state
        if state.phase is not Phase.JOINING:
            self._enter(Phase.JOINING, "founding a group")
        group_id = self._new_group_id()
        server = self.learning.start_server(0, from_group=False)
        try:
            created = self._create_group(group_id, server.address, command.reason)
        except (RegistryError, RegistryUnavailable) as exc:
            log.warning("%s: could not found a group: %s", state.name, exc)
            server.stop()
            self._fallback_phase()
            refused = isinstance(exc, RegistryError)
            self._attempted(Attempt.REFUSED if refused else Attempt.UNREACHABLE, command.first)
            return
        self._enter_group(created.id, created.term)
        self.state.follows_kin = command.seed is not None
        self.state.lease = getattr(created, "lease", None) or ""
        self._become_leader(server, "founded")
        if command.blend:
            choice.blend_into_group(state, self.learning, command.blend)
        self._attempted(Attempt.MOVED, command.first)

    def _do_claim(self, command: Claim) -> None:
        state, record = self.state, command.record
        # A member that joined just before the leader went, and whose join brought no model of
        # the group, holds the model of the group it left (or none): it goes on from its own
        # model rather than from another group's.
        from_group = self._holds_group_model()
        start = (self.learning.last_round() if from_group else 0) or record.round
        server = self.learning.start_server(start, from_group=from_group)
        try:
            granted = self.registry.claim_leadership(
                record.id, node_id=state.id, term=record.term + 1, flower_address=server.address
            )
        except RegistryUnavailable:
            server.stop()  # no claims while the registry is unreachable
            return
        except RegistryError as exc:
            log.info("%s: claim on %s lost: %s", state.name, record.id, exc.detail)
            server.stop()
            winner = self._registry_leader(record.id)
            self._execute(
                leadership.on_claim_lost(
                    state, self._view(), record.id, winner, self.params.leadership, self.clock()
                )
            )
            return
        state.term = record.term + 1
        state.lease = getattr(granted, "lease", None) or ""
        state.leader_gone_at = None
        state.lost_claims = 0
        self._become_leader(server, f"claimed term {state.term}")

    def _registry_leader(self, group_id: str) -> str | None:
        """The leader the registry names for ``group_id`` (None if it names none or is away)."""
        try:
            return self.registry.group(group_id).leader
        except (RegistryError, RegistryUnavailable):
            return None

    def _follow(self, address: str) -> None:
        self.learning.follow(address)
        self.state.following = address
        self.state.group_servers.add(address)

    def _holds_group_model(self) -> bool:
        """The last group model this node received is its group's: one of its servers' rounds,
        or the model its join brought (a join without one leaves a member holding the model of
        the group it left, or none, until the group's first round)."""
        return self.learning.model_source() in self.state.group_servers

    def _do_follow(self, command: Follow) -> None:
        self.state.term = command.record.term
        self._follow(command.record.flower_address)

    def _do_step_down(self, command: StepDown) -> None:
        state = self.state
        log.warning(
            "%s: stepping down as leader of %s: %s", state.name, state.group_id, command.why
        )
        self._stop_server()
        record = self._record()
        if record is not None and record.leader not in (None, state.id) and not record.dissolved:
            state.term = record.term
            self._follow(record.flower_address)
            self.gossip.set_meta(self.meta())  # no Flower address: not leading any more
            self._enter(Phase.MEMBER, f"following {record.leader} (term {record.term})")
        else:
            self._do_drop_group(DropGroup(command.why))

    def _do_drop_group(self, command: DropGroup) -> None:
        state = self.state
        self._leave_leadership(handing_over=False)
        self.learning.unfollow()
        state.following = None
        state.group_id = None
        state.epoch += 1
        self._do_leave_registry_group(LeaveRegistryGroup())
        state.term = 0
        self.gossip.set_meta(self.meta())
        if state.phase is not Phase.DISCOVERING:
            self._enter(Phase.DISCOVERING, command.why)
        self.timers.at(Timer.CHOOSE, self.clock())

    def _do_publish(self, command: Publish) -> None:
        if command.force:  # round news: at most one record per record_interval
            self._record_due = True
        force = self._record_due and self.clock() >= self._next_record
        self._publish(force=force)

    def _do_report(self, command: Report) -> None:
        state, result = self.state, self.state.unreported
        if result is None or state.group_id is None:
            return
        self._next_report = self.clock() + self.params.report_interval
        state.unreported = None
        try:
            self.registry.report_performance(
                state.group_id,
                node_id=state.id,
                term=state.term,
                accuracy=result.accuracy,
                loss=result.loss,
                round=result.round,
                examples=result.examples,
            )
        except RegistryUnavailable:
            pass  # training goes on; the next round reports again
        except RegistryError as exc:
            if exc.status != 409:
                log.warning("%s: registry refused the round report: %s", state.name, exc)
                return
            try:
                known = self._registry_group(state.group_id)
            except (RegistryError, RegistryUnavailable):
                return  # not sure why: the next report asks again
            if known is None or known.status == "dissolved":
                self._do_rejoin(Rejoin())  # the registry lost the group, not this node its lead
            else:
                self._do_step_down(StepDown(f"registry refused the report: {exc.detail}"))

    def _do_rejoin(self, command: Rejoin) -> None:
        """Put this node back into its group at the registry after the registry lost it.

        A leader whose group the registry no longer has (a new database) creates it again; one
        whose group the registry dissolved (every member expired during a long outage) founds it
        anew under a new id with the same server, so the group's model and rounds go on, and
        leaves a tombstone for the old id so that its members choose again at once.
        """
        state = self.state
        if state.group_id is None:
            return
        try:
            self._register()  # alive again first: a node the registry expired may not join
            try:
                self.registry.join_group(node_id=state.id, group_id=state.group_id, reason=None)
            except RegistryError as exc:
                server = self._server
                if server is None or exc.status not in (404, 409):
                    raise
                known = self._registry_group(state.group_id)
                if known is not None and known.status != "dissolved":
                    raise
                group_id = state.group_id if known is None else self._new_group_id()
                why = "the registry lost the group" if known is None else "re-founded"
                created = self._create_group(group_id, server.address, why)
                if created.id != state.group_id:
                    log.warning(
                        "%s: registry dissolved %s; leading it on as %s",
                        state.name,
                        state.group_id,
                        created.id,
                    )
                    self._publish(dissolved=True)
                    state.group_id, state.term, state.version = created.id, created.term, 0
                    state.epoch += 1
                    self.gossip.set_meta(self.meta())
                    self._publish(force=True)
        except RegistryError as exc:
            log.warning(
                "%s: cannot rejoin %s (%s); choosing again", state.name, state.group_id, exc
            )
            self._do_drop_group(DropGroup("registry refused the rejoin"))
        except RegistryUnavailable:
            pass

    def _create_group(self, group_id: str, flower_address: str, reason: str) -> Any:
        """Create ``group_id`` at the registry, led by this node (it raises what the port does)."""
        return self.registry.create_group(
            id=group_id,
            name=f"group-{group_id[2:8]}",
            leader=self.state.id,
            flower_address=flower_address,
            model=self.state.spec,
            capacity=self.params.capacity,
            reason=reason,
        )

    def _registry_group(self, group_id: str) -> Any:
        """The registry's record of ``group_id``, or None if it has none (404)."""
        try:
            return self.registry.group(group_id)
        except RegistryError as exc:
            if exc.status == 404:
                return None
            raise

    def _new_group_id(self) -> str:
        return f"g-{self.rng.getrandbits(32):08x}"

    def _do_leave_registry_group(self, command: LeaveRegistryGroup) -> None:
        """Free this node's slot at the registry (best effort: heartbeats reconcile later)."""
        try:
            self.registry.leave_group(node_id=self.state.id)
        except (RegistryError, RegistryUnavailable) as exc:
            log.info("%s: registry leave not done now: %s", self.state.name, exc)

    def _do_announce(self, command: Announce) -> None:
        self.gossip.set_meta(self.meta())

    def _do_fail(self, command: Fail) -> None:
        if self.state.failure is not None:
            return
        self.state.failure = command.why
        log.error("%s: %s; leaving the network and stopping", self.state.name, command.why)
        if self._on_fail is not None:
            self._on_fail(command.why)
