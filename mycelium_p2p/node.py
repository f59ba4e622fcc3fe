"""The node daemon: gossip, registry, group choice and Flower training, tied together.

One control thread makes every decision (choose, join, found, migrate, claim leadership, step
down); Flower's server and client and the gossip loop run on their own threads and only hand
results to the control thread through a queue. That keeps the decisions sequential and easy to
reason about, and a slow registry never stalls training.
"""

from __future__ import annotations

import enum
import logging
import math
import queue
import random
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from mycelium_p2p import limits, view
from mycelium_p2p.containment import Containment
from mycelium_p2p.gossip.transport import Transport
from mycelium_p2p.groups import GossipNode, GroupRecord
from mycelium_p2p.learning import admission, models, train
from mycelium_p2p.learning.data import NodeData, Split, load_node_data
from mycelium_p2p.learning.flower import GroupServer, MemberClient, RoundResult
from mycelium_p2p.learning.tls import TlsMaterial
from mycelium_p2p.lifecycle import Lifecycle, Phase
from mycelium_p2p.node_config import NodeConfig
from mycelium_p2p.policy import Candidate, Decision, Observation, PolicyParams, decide
from mycelium_p2p.registry_client import RegistryClient, RegistryError, RegistryUnavailable

log = logging.getLogger("mycelium.node")

TICK = 0.2  # seconds between control-loop passes when nothing wakes it sooner
PEER_LOOKUP_INTERVAL = 2.0  # seconds between registry look-ups while a node knows no peer
ISLAND_CHECK_INTERVAL = 10.0  # seconds to the first look-up for gossip islands once joined
ISLAND_CHECK_MAX = 160.0  # the interval doubles up to this while look-ups find nothing new
MAX_LOST_CLAIMS = 3  # lost leadership claims in a row before a member gives its group up
WATCH_INTERVAL = 0.5  # seconds between two looks of the watchdog at the node's threads


class Attempt(enum.Enum):
    """How a join or a founding went."""

    MOVED = "moved"
    REFUSED = "refused"  # the registry said no: this node's view was stale
    UNREACHABLE = "unreachable"  # no answer from the registry: back off


@dataclass
class ProbeCache:
    """Accuracy of a group's model on this node's validation split, cached by (group, round)."""

    entries: dict[str, tuple[int, float]]

    def get(self, group_id: str, round_: int) -> float | None:
        hit = self.entries.get(group_id)
        return hit[1] if hit and hit[0] == round_ else None

    def put(self, group_id: str, round_: int, accuracy: float) -> None:
        self.entries[group_id] = (round_, accuracy)


class Node:
    """A Mycelium node: private data, a model, and a place in one learning group.

    Parameters
    ----------
    config
        Settings (see :class:`~mycelium_p2p.node_config.NodeConfig`).
    data
        The node's data; loaded from ``config.data`` when omitted.
    node_id
        Stable id (default: 12 random hex digits).
    rng
        Random source for jitter and policy order (default: seeded from the node id).
    wrap_gossip_transport
        Applied to the gossip transport when it is bound, e.g. ``Partition.wrap`` in tests
        (default: None).
    """

    def __init__(
        self,
        config: NodeConfig,
        data: NodeData | None = None,
        *,
        node_id: str | None = None,
        rng: random.Random | None = None,
        clock: Callable[[], float] = time.monotonic,
        wrap_gossip_transport: Callable[[Transport], Transport] | None = None,
    ) -> None:
        self.config = config = config.resolved()
        self.id = node_id or uuid.uuid4().hex[:12]
        self.name = config.name or f"node-{self.id[:6]}"
        self.data = data or load_node_data(
            config.data, config.node_index, config.num_nodes, config.seed
        )
        self.spec = models.model_spec(config.model, self.data.input_shape, self.data.classes)
        self.rng = rng or random.Random(self.id)
        self.clock = clock
        self.lifecycle = Lifecycle()
        # With a network secret, Flower runs over TLS with a certificate from the secret's CA.
        self._server_tls = (
            TlsMaterial.for_server(config.token, config.advertised_host()) if config.token else None
        )
        self.params = PolicyParams(
            switch_threshold=config.switch_threshold,
            switch_samples=config.switch_samples,
            merge_samples=config.merge_samples,
            found_samples=config.found_samples,
            mode=config.policy,
        )
        self.local_model = models.build_model(self.spec)
        self.local_accuracy: float | None = None
        self.group_id: str | None = None
        self.term = 0
        self.version = 0
        self.server: GroupServer | None = None
        self.server_address: str | None = None
        self.latest_round: RoundResult | None = None
        self.accuracy: float | None = None  # this node's group model on its own validation split
        self.registry: RegistryClient | None = None
        self.migrations = 0
        self.rounds_logged = 0
        self.round_times: list[tuple[int, float]] = []  # (round, monotonic time) while leading
        self.client = MemberClient(
            self.data,
            self.spec,
            local_epochs=config.local_epochs,
            batch_size=config.batch_size,
            lr=config.learning_rate,
            seed=config.seed + config.node_index,
            tls=TlsMaterial.for_member(config.token) if config.token else None,
            node_id=self.id,
        )
        self.gossip = GossipNode(
            self.id,
            config.gossip,
            host=config.bind_host,
            port=config.gossip_port,
            advertise_host=config.advertised_host(),
            meta=self._meta(),
            secret=config.token,
            registry_url=config.registry_url,
            wrap_transport=wrap_gossip_transport,
        )
        self.decisions: list[Decision] = []
        self.containment = Containment(log, self.name)
        self.failure: str | None = None  # why the node stopped on its own (a thread died)
        self._events: queue.Queue[Callable[[], None]] = queue.Queue()
        self._stop = threading.Event()
        self._crashed = False
        self._thread: threading.Thread | None = None
        self._heartbeats: threading.Thread | None = None
        self._probe_cache = ProbeCache({})
        self._model_bytes: tuple[int, bytes] | None = None
        self._just_moved = False
        self._looked_twice = False
        self._leader_gone_at: float | None = None
        self._lost_claims = 0  # claims lost in a row while the winner stays out of sight
        # Groups whose join the registry refused, with the (term, members) their record had then.
        self._refused: dict[str, tuple[int, tuple[str, ...]]] = {}
        self._published_members: tuple[str, ...] = ()
        self._membership_epoch = 0  # bumped on every change of group, to spot stale answers
        self._unreported: RoundResult | None = None  # the latest round not yet sent to the registry
        self._next_report = 0.0
        self._next_evaluation = 0.0
        self._next_choice = 0.0
        self._next_peer_lookup = 0.0
        self._island_interval = ISLAND_CHECK_INTERVAL
        self._registry_backoff = 1.0

    # ------------------------------------------------------------------ life cycle

    @property
    def phase(self) -> Phase:
        return self.lifecycle.phase

    def _enter(self, phase: Phase, why: str) -> None:
        previous = self.lifecycle.move(phase)
        log.info("%s: %s -> %s (%s)", self.name, previous, phase, why)

    def start(self, seeds: list[str] | None = None) -> None:
        """Bind gossip, join the network and start the control loop (returns at once)."""
        self.gossip.start()
        self.gossip.set_model_provider(self._provide_model)
        self._enter(Phase.DISCOVERING, f"gossip bound at {self.gossip.address}")
        self._thread = threading.Thread(
            target=self._run, args=(list(seeds or self.config.peers),), name=f"node-{self.name}"
        )
        self._thread.daemon = True
        self._thread.start()
        threading.Thread(target=self._watch, name=f"watch-{self.name}", daemon=True).start()

    def stop(self) -> None:
        """Leave gracefully: out of the group, deregistered, leave announced on gossip."""
        if self._stop.is_set():
            return
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.config.leave_timeout + 5)
        if self.phase not in (Phase.LEAVING, Phase.STOPPED):
            self._leave()

    def crash(self) -> None:
        """Stop at once without leaving, as a killed process would (for fault tests)."""
        self._crashed = True
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        self.client.close()
        self._stop_server()
        self.gossip.stop()
        if self.registry is not None:
            self.registry.close()  # its keep-alive connections would outlive the node

    # ------------------------------------------------------------------ control loop

    def _run(self, seeds: list[str]) -> None:
        try:
            with self.containment.unit("discovery"):
                self._discover(seeds)
            while not self._stop.is_set():
                errors = self.containment.total()
                with self.containment.unit("a control step"):
                    self._drain_events()
                    self._step()
                # After a failed step, pause rather than fail again at once.
                self._stop.wait(1.0 if self.containment.total() > errors else TICK)
        finally:
            self._leave()

    def _watch(self) -> None:
        """Watch every long-lived thread of the node; if one died, leave and stop.

        A node with a dead gossip thread would otherwise go on heartbeating: alive for the
        registry, unreachable for every peer. Failing loudly lets a supervisor restart it.
        """
        while not self._stop.wait(WATCH_INTERVAL):
            dead = self._dead_thread()
            if dead is not None and not self._stop.is_set():
                self._fail(f"its {dead} died")
                return

    def _dead_thread(self) -> str | None:
        if self._thread is not None and not self._thread.is_alive():
            return "control thread"
        if self._heartbeats is not None and not self._heartbeats.is_alive():
            return "heartbeat thread"
        if not self.gossip.running:
            why = self.gossip.failure
            return f"gossip thread ({why})" if why else "gossip thread"
        server = self.server
        if server is not None and not server.running:
            return "Flower server thread"
        if self.client.address is not None and not self.client.running:
            return "Flower client thread"
        return None

    def _fail(self, why: str) -> None:
        """Stop the node for good: one line, then the usual leave (registry, gossip)."""
        self.failure = why
        log.error("%s: %s; leaving the network and stopping", self.name, why)
        self._stop.set()
        if self._thread is None or not self._thread.is_alive():
            self._leave()  # the control thread, which normally leaves, is gone

    def _discover(self, seeds: list[str]) -> None:
        if seeds and not self.gossip.join(seeds, timeout=5.0):
            log.warning("%s: no seed answered (%s)", self.name, ", ".join(seeds))
        self._register()
        # Heartbeats start once registered (else the first one meets a 404 and re-registers).
        self._heartbeats = threading.Thread(
            target=self._heartbeat_loop, name=f"hb-{self.name}", daemon=True
        )
        self._heartbeats.start()
        self._find_peers()
        # A short random delay spreads the first choices of nodes started together.
        self._next_choice = self.clock() + self.rng.uniform(0.0, 1.0)

    def _find_peers(self) -> None:
        """Ask the registry for live peers and join those gossip does not know.

        Alone (first node, or cut off) every ``PEER_LOOKUP_INTERVAL``; otherwise too, because
        nodes that start together can form separate gossip islands (each found only the other's
        first node alone) that nothing else would merge: after ``ISLAND_CHECK_INTERVAL``, then
        twice as long after each look-up that finds nothing new (up to ``ISLAND_CHECK_MAX``), so
        that a settled network costs the registry little, and every ``PEER_LOOKUP_INTERVAL``
        while the registry names live peers that gossip does not see (after a partition, once
        gossip has stopped trying the members it declared dead).
        """
        members = self.gossip.members()
        others = view.live_ids(members) - {self.id}
        if not others:
            self._island_interval = ISLAND_CHECK_INTERVAL
        interval = self._island_interval if others else PEER_LOOKUP_INTERVAL
        self._next_peer_lookup = self.clock() + interval
        registry = self._registry_client()
        if registry is None:
            return
        known = {m.address for m in members if m.id in others} | {self.gossip.address}
        try:
            seeds = [s for s in registry.peers(limit=5) if s not in known]
        except (RegistryUnavailable, RegistryError):
            return
        if seeds and not others:
            self.gossip.join(seeds, timeout=2.0)  # alone: wait for the network's state
        elif seeds:
            # Peers the registry sees alive and gossip does not: an island, or the other side of
            # a partition that may have healed. Push-pull without waiting (answers merge when
            # they come) and look again soon, until gossip sees them.
            self.gossip.join(seeds, timeout=0.0)
            self._island_interval = ISLAND_CHECK_INTERVAL
            self._next_peer_lookup = self.clock() + PEER_LOOKUP_INTERVAL
        elif others:
            self._island_interval = min(2 * self._island_interval, ISLAND_CHECK_MAX)

    def _step(self) -> None:
        now = self.clock()
        if now >= self._next_peer_lookup:
            self._find_peers()
        if self.group_id is None:
            if now >= self._next_choice:
                self._choose()
            return
        if self.phase is Phase.LEADER:
            self._lead()
        elif self.phase is Phase.MEMBER:
            self._follow()
        if self.group_id is not None and now >= self._next_evaluation:
            self._evaluate()

    def _drain_events(self) -> None:
        while True:
            try:
                self._events.get_nowait()()
            except queue.Empty:
                return

    # ------------------------------------------------------------------ registry

    def _registry_client(self) -> RegistryClient | None:
        url = self.config.registry_url or self.gossip.registry_url
        if url and (self.registry is None or self.registry.base_url != url):
            self.registry = RegistryClient(url, token=self.config.token, timeout=3.0, retries=1)
        return self.registry

    def _backoff(self) -> float:
        delay = self._registry_backoff
        self._registry_backoff = min(self._registry_backoff * 2, 30.0)
        return delay * self.rng.uniform(0.5, 1.0)

    def _registered(self) -> None:
        self._registry_backoff = 1.0

    def _register(self) -> bool:
        registry = self._registry_client()
        if registry is None:
            return False
        try:
            registry.register(
                id=self.id,
                name=self.name,
                gossip_address=self.gossip.address,
                flower_address=self.server_address,
                model=self.spec,
                data=self.data_summary(),
            )
        except RegistryError as exc:
            if exc.status == 401:  # a wrong token stays wrong: retrying cannot help
                self._fail(f"the registry refused this node's token ({exc.detail})")
            else:
                log.warning("%s: registration refused: %s", self.name, exc)
            return False
        except RegistryUnavailable as exc:
            log.warning("%s: registration failed: %s", self.name, exc)
            return False
        self._registered()
        return True

    def _heartbeat_loop(self) -> None:
        """Heartbeats on a thread of their own, so that slow training or probing in the control
        loop never makes the registry think this node is dead."""
        client: RegistryClient | None = None
        while not self._stop.is_set():
            url = self.config.registry_url or self.gossip.registry_url
            if url and (client is None or client.base_url != url):
                client = RegistryClient(url, token=self.config.token, timeout=3.0, retries=0)
            if client is not None:
                with self.containment.unit("a heartbeat"):
                    self._heartbeat(client)
            self._stop.wait(self.config.heartbeat_interval)
        if client is not None:
            client.close()

    def _heartbeat(self, registry: RegistryClient) -> None:
        epoch, group_id = self._membership_epoch, self.group_id
        metrics = valid_metrics(self.metrics())
        try:
            try:
                answer = registry.heartbeat(self.id, **metrics)
            except RegistryError as exc:
                if exc.status != 400 or not metrics:
                    raise
                # A metric the registry will not take must not cost this node its liveness:
                # send the heartbeat again at once without the fields it named (or any).
                refused = [f for f in exc.fields if f in metrics] or list(metrics)
                log.warning(
                    "%s: registry refused heartbeat metrics %s (%s); sending it without them",
                    self.name,
                    ", ".join(refused),
                    exc.detail,
                )
                kept = {k: v for k, v in metrics.items() if k not in refused}
                answer = registry.heartbeat(self.id, **kept)
        except RegistryUnavailable:
            return
        except RegistryError as exc:
            if exc.status == 404:  # the registry forgot us (expired, or a new file)
                self._events.put(self._reregister)
            else:
                log.warning("%s: registry refused the heartbeat: %s", self.name, exc)
            return
        # The registry is authoritative for membership; the control loop reconciles, unless the
        # node changed groups while this heartbeat was on its way.
        registry_group = answer.get("group") if isinstance(answer, dict) else None
        if registry_group != group_id:
            self._events.put(lambda: self._reconcile(epoch, registry_group))

    def _reregister(self) -> None:
        log.warning("%s: registry does not know this node; registering again", self.name)
        if self._register() and self.group_id is not None:
            self._rejoin_registry()

    def _reconcile(self, epoch: int, registry_group: str | None) -> None:
        if epoch != self._membership_epoch:
            return
        if self.group_id is None:
            # A slot this node gave up (lost claims, deposed, registry away at the time):
            # free it, or joiners are refused for a group that has room.
            log.warning(
                "%s: registry still places this node in %s; leaving", self.name, registry_group
            )
            self._leave_registry_group()
            return
        log.warning(
            "%s: registry places this node in %s, not %s; reconciling",
            self.name,
            registry_group,
            self.group_id,
        )
        self._rejoin_registry()

    def _rejoin_registry(self) -> None:
        """Put this node back into its group at the registry after the registry lost it."""
        registry = self._registry_client()
        if registry is None or self.group_id is None:
            return
        try:
            if self.phase is Phase.LEADER and self.server_address:
                try:
                    registry.join_group(node_id=self.id, group_id=self.group_id)
                except RegistryError as exc:
                    if exc.status != 404:
                        raise
                    registry.create_group(**self._group_body(self.group_id, self.server_address))
            else:
                registry.join_group(node_id=self.id, group_id=self.group_id)
        except RegistryError as exc:
            log.warning("%s: cannot rejoin %s (%s); choosing again", self.name, self.group_id, exc)
            self._drop_group("registry refused the rejoin")
        except RegistryUnavailable:
            pass

    def _leave_registry_group(self) -> None:
        """Free this node's slot at the registry (best effort: heartbeats reconcile later)."""
        registry = self._registry_client()
        if registry is None:
            return
        try:
            registry.leave_group(node_id=self.id)
        except (RegistryError, RegistryUnavailable) as exc:
            log.info("%s: registry leave not done now: %s", self.name, exc)

    # ------------------------------------------------------------------ choosing

    def _gossip_state(self) -> tuple[list[Any], dict[str, GroupRecord], set[str]]:
        members = self.gossip.members()
        alive = view.live_ids(members)
        alive.add(self.id)
        return members, self.gossip.groups(), alive

    def _candidates(self, evaluate_models: bool) -> list[Candidate]:
        members, groups, _ = self._gossip_state()
        occupied = view.occupied_groups(members)
        self._refused = {g: seen for g, seen in self._refused.items() if g in groups}
        out: list[Candidate] = []
        for record in view.compatible_groups(groups.values(), self.spec, occupied):
            if record.leader == self.id and self.server is None:
                continue  # our own record from before we stepped down: never follow ourselves
            if self._refused.get(record.id) == (record.term, record.members):
                continue  # the registry said no to this very record: wait for news of it
            size = len(record.members)
            is_current = record.id == self.group_id
            if evaluate_models:
                accuracy = self._probe(record) if not is_current else self._current_accuracy()
            else:  # reported: a group that has not finished a round has no accuracy yet
                accuracy = record.accuracy if record.round > 0 else None
            out.append(
                Candidate(
                    group_id=record.id,
                    size=size,
                    capacity=record.capacity,
                    created_at=record.created_at,
                    accuracy=accuracy,
                    is_current=is_current,
                )
            )
        return out

    def _probe(self, record: GroupRecord) -> float | None:
        """Accuracy of ``record``'s latest model on this node's validation split."""
        cached = self._probe_cache.get(record.id, record.round)
        if cached is not None:
            return cached
        if not record.leader_address:
            return None
        answer = self.gossip.request_model(record.leader_address, record.id, timeout=2.0)
        if answer is None:
            return None
        round_, payload = answer
        try:
            accuracy = self._score(models.weights_from_bytes(payload), self.data.val)
        except ValueError as exc:
            log.warning("%s: rejected model probed from %s: %s", self.name, record.id, exc)
            return None
        self._probe_cache.put(record.id, round_, accuracy)
        return accuracy

    def _score(self, weights: list[np.ndarray], split: Split) -> float:
        """Accuracy of a model with ``weights`` on one of this node's splits.

        Raises
        ------
        ValueError
            When the weights do not fit this node's model spec (or are not finite).
        """
        reason = models.check_update(weights, models.get_weights(self.local_model), math.inf)
        if reason is not None:
            raise ValueError(reason)
        model = models.build_model(self.spec)
        models.set_weights(model, weights)
        return train.evaluate(model, split).accuracy

    def _current_accuracy(self) -> float | None:
        weights = self._current_weights()
        if weights is None:
            return None
        self.accuracy = self._score(weights, self.data.val)
        return self.accuracy

    def _current_weights(self) -> list[np.ndarray] | None:
        if self.server is not None:
            return self.server.latest_weights()
        return self.client.last_global_weights

    def _train_local(self) -> None:
        train.train(
            self.local_model,
            self.data.train,
            epochs=self.config.local_epochs,
            batch_size=self.config.batch_size,
            lr=self.config.learning_rate,
            seed=self.rng.randrange(2**31),
        )
        self.local_accuracy = train.evaluate(self.local_model, self.data.val).accuracy

    def _observation(self, candidates: list[Candidate]) -> Observation:
        members, _, _ = self._gossip_state()
        others = [m for m in view.members_of(self.group_id or "", members) if m != self.id]
        return Observation(
            current_group=self.group_id,
            local_accuracy=self.local_accuracy,
            val_size=len(self.data.val.y),
            candidates=tuple(candidates),
            just_moved=self._just_moved,
            has_other_members=bool(others),
        )

    def _choose(self) -> None:
        """First choice, or again after losing a group: join the best group with room or found."""
        self._train_local()
        candidates = self._candidates(evaluate_models=self.params.mode == "probe")
        decision = decide(self._observation(candidates), self.params)
        if decision.action == "found" and not self._looked_twice:
            # Nodes that start together would all found singletons: look again after a random
            # pause, by when the first founder's record has had time to spread.
            self._looked_twice = True
            self._next_choice = self.clock() + self.rng.uniform(0.5, 3.0)
            return
        self._act(decision, first=True)

    def _evaluate(self) -> None:
        """Re-run the policy: move, merge, found, or stay."""
        self._next_evaluation = self.clock() + self.config.group_evaluation_interval
        self._train_local()
        candidates = self._candidates(evaluate_models=self.params.mode == "probe")
        decision = decide(self._observation(candidates), self.params)
        self._just_moved = False
        self._act(decision, first=False)
        self.gossip.update_meta(**self._meta())  # fresh accuracy for observers and the viewer

    def _act(self, decision: Decision, *, first: bool) -> None:
        self.decisions.append(decision)
        if decision.action == "stay":
            log.debug("%s: stays in %s: %s", self.name, self.group_id, decision.reason)
            return
        log.info(
            "%s: decides to %s %s: %s",
            self.name,
            decision.action,
            decision.group_id or "",
            decision.reason,
        )
        outcome = Attempt.REFUSED
        if decision.action == "join" and decision.group_id:
            outcome = self._join(decision.group_id, decision.reason)
        elif decision.action == "found":
            outcome = self._found(decision.reason)
        if outcome is Attempt.MOVED:
            self._just_moved = True
            if not first:
                self.migrations += 1
        elif outcome is Attempt.REFUSED:
            # The registry answered: the view was stale, and the refused group is left out
            # until its record changes. Look again soon rather than after a growing back-off.
            self._next_choice = self.clock() + self.rng.uniform(0.2, 1.0)
        else:
            self._next_choice = self.clock() + self._backoff()
        self._next_evaluation = self.clock() + self.config.group_evaluation_interval

    # ------------------------------------------------------------------ joining and founding

    def _join(self, group_id: str, reason: str) -> Attempt:
        registry = self._registry_client()
        record = self.gossip.groups().get(group_id)
        if registry is None:
            return Attempt.UNREACHABLE
        if record is None:
            return Attempt.REFUSED
        if self.phase is not Phase.JOINING:
            self._enter(Phase.JOINING, f"joining {group_id}")
        try:
            registry.join_group(node_id=self.id, group_id=group_id, reason=reason)
        except RegistryError as exc:
            log.warning("%s: join %s refused: %s", self.name, group_id, exc)
            self._refused[group_id] = (record.term, record.members)
            self._fallback_phase()
            return Attempt.REFUSED
        except RegistryUnavailable as exc:
            log.warning("%s: join %s not done: %s", self.name, group_id, exc)
            self._fallback_phase()
            return Attempt.UNREACHABLE
        self._registered()
        self._leave_leadership(handing_over=True)
        self.group_id = group_id
        self._membership_epoch += 1
        self.term = record.term
        self.gossip.update_meta(**self._meta())
        self.client.switch(record.flower_address)
        self._probe_cache = ProbeCache({})
        self._enter(Phase.MEMBER, f"member of {group_id}, leader {record.leader}")
        return Attempt.MOVED

    def _group_body(self, group_id: str, flower_address: str) -> dict[str, Any]:
        return {
            "id": group_id,
            "name": f"group-{group_id[2:8]}",
            "leader": self.id,
            "flower_address": flower_address,
            "model": self.spec,
            "capacity": self.config.group_capacity,
        }

    def _found(self, reason: str) -> Attempt:
        registry = self._registry_client()
        if registry is None:
            return Attempt.UNREACHABLE
        if self.phase is not Phase.JOINING:
            self._enter(Phase.JOINING, "founding a group")
        group_id = f"g-{uuid.uuid4().hex[:8]}"
        server, address = self._new_server(models.get_weights(self.local_model), start_round=0)
        try:
            created = registry.create_group(**self._group_body(group_id, address), reason=reason)
        except (RegistryError, RegistryUnavailable) as exc:
            log.warning("%s: could not found a group: %s", self.name, exc)
            server.stop()
            self._fallback_phase()
            return Attempt.REFUSED if isinstance(exc, RegistryError) else Attempt.UNREACHABLE
        self._registered()
        self._leave_leadership(handing_over=True)
        self.server, self.server_address = server, address
        self.group_id = str(created.get("id", group_id))
        self._membership_epoch += 1
        self.term = int(created.get("term", 1))
        self.version = 0
        self.latest_round = None
        self._become_leader("founded")
        return Attempt.MOVED

    def _fallback_phase(self) -> None:
        """After a refused join: back to where the node was."""
        if self.phase is Phase.JOINING:
            if self.group_id is None:
                self._enter(Phase.DISCOVERING, "join refused")
            elif self.server is not None:
                self._enter(Phase.LEADER, "join refused, still leading")
            else:
                self._enter(Phase.MEMBER, "join refused, staying")

    def _become_leader(self, why: str) -> None:
        assert self.server_address is not None
        self.gossip.update_meta(**self._meta())
        self.client.switch(self.server_address)
        self._probe_cache = ProbeCache({})
        self._enter(
            Phase.LEADER, f"leader of {self.group_id} ({why}), Flower at {self.server_address}"
        )
        self._publish(force=True)

    def _new_server(self, weights: list[np.ndarray], start_round: int) -> tuple[GroupServer, str]:
        """Start a Flower server for a group this node may lead; returns it and its address."""
        server = GroupServer(
            weights,
            strategy=self.config.strategy,
            host=self.config.bind_host,
            port=self.config.flower_port,
            round_timeout=self.config.round_timeout,
            pause=self.config.round_pause,
            on_round=self._round_done,
            start_round=start_round,
            tls=self._server_tls,
            member_limits=self._member_limits,
        )
        port = server.start().rsplit(":", 1)[1]
        return server, f"{self.config.advertised_host()}:{port}"

    def _stop_server(self) -> None:
        if self.server is not None:
            self.server.stop()
        self.server = None
        self.server_address = None
        self._model_bytes = None

    def _leave_leadership(self, *, handing_over: bool) -> None:
        """Stop leading the current group (before a move, or on stepping down)."""
        if self.server is None:
            return
        if handing_over and self.group_id is not None:
            members, _, _ = self._gossip_state()
            if not [m for m in view.members_of(self.group_id, members) if m != self.id]:
                self._publish(dissolved=True)  # last one out: a tombstone, never a zombie
        self._stop_server()

    def _drop_group(self, why: str) -> None:
        self._leave_leadership(handing_over=False)
        self.client.disconnect()
        self.group_id = None
        self._membership_epoch += 1
        self._leave_registry_group()
        self.term = 0
        self.gossip.update_meta(**self._meta())
        if self.phase is not Phase.DISCOVERING:
            self._enter(Phase.DISCOVERING, why)
        self._next_choice = self.clock()

    # ------------------------------------------------------------------ leading

    def _round_done(self, result: RoundResult) -> None:
        """On the Flower server's thread: note the time, hand the result to the control loop."""
        self.round_times.append((result.round, time.monotonic()))
        del self.round_times[:-1000]
        self._events.put(lambda: self._on_round(result))

    def _on_round(self, result: RoundResult) -> None:
        if self.server is None or self.phase is not Phase.LEADER:
            return
        if not (math.isfinite(result.accuracy) and math.isfinite(result.loss)):
            return  # no client evaluated this round: nothing to report
        figures = {
            "accuracy": result.accuracy,
            "loss": result.loss,
            "round": result.round,
            "examples": result.examples,
        }
        if valid_metrics(figures) != figures:
            # Never gossip or report what peers and the registry would refuse.
            log.warning(
                "%s: round %d has figures out of range: %s", self.name, result.round, figures
            )
            return
        self.latest_round = result
        log.info(
            "%s: group %s round %d accuracy %.3f loss %.3f clients %d",
            self.name,
            self.group_id,
            result.round,
            result.accuracy,
            result.loss,
            result.clients,
        )
        self.rounds_logged = result.round
        self._model_bytes = None
        self._publish(force=True)
        self._unreported = result
        self._report_performance()

    def _report_performance(self) -> None:
        """Send the latest round's metrics to the registry, at most once per heartbeat interval.

        Rounds of a small model take a fraction of a second; the registry needs the latest
        figures, not every one, so its traffic stays proportional to groups, not rounds.
        """
        result = self._unreported
        registry = self._registry_client()
        if result is None or registry is None or self.group_id is None:
            return
        if self.clock() < self._next_report:
            return
        self._next_report = self.clock() + self.config.heartbeat_interval
        self._unreported = None
        try:
            registry.report_performance(
                self.group_id,
                node_id=self.id,
                term=self.term,
                accuracy=result.accuracy,
                loss=result.loss,
                round=result.round,
                examples=result.examples,
            )
        except RegistryUnavailable:
            pass  # training goes on; the next round reports again
        except RegistryError as exc:
            if exc.status == 409:
                self._step_down(f"registry refused the report: {exc.detail}")
            else:
                log.warning("%s: registry refused the round report: %s", self.name, exc)

    def _publish(self, *, force: bool = False, dissolved: bool = False) -> None:
        if self.group_id is None or self.server_address is None:
            return
        members, groups, _ = self._gossip_state()
        current = tuple(sorted({*view.members_of(self.group_id, members), self.id}))
        if not force and not dissolved and current == self._published_members:
            return
        seen = groups.get(self.group_id)
        if seen is not None and seen.term == self.term:
            self.version = max(self.version, seen.version)
        self.version += 1
        result = self.latest_round
        # Before its first round a leader (new, or after a failover) carries the last known
        # metrics forward: the model is the same one they describe.
        carried = seen if seen is not None and result is None else None
        record = GroupRecord(
            id=self.group_id,
            name=f"group-{self.group_id[2:8]}",
            leader=self.id,
            leader_address=self.gossip.address,
            flower_address=self.server_address,
            members=current,
            model=self.spec,
            capacity=self.config.group_capacity,
            accuracy=result.accuracy if result else (carried.accuracy if carried else 0.0),
            loss=result.loss if result else (carried.loss if carried else 0.0),
            round=result.round if result else (self.server.round if self.server else 0),
            examples=result.examples if result else (carried.examples if carried else 0),
            term=self.term,
            version=self.version,
            dissolved=dissolved,
            created_at=seen.created_at if seen is not None else time.time(),
            updated_at=time.time(),
        )
        self.gossip.publish_group(record)
        self._published_members = current

    def _lead(self) -> None:
        self._report_performance()
        record = self.gossip.groups().get(self.group_id or "")
        if record is not None and record.term > self.term and record.leader != self.id:
            self._step_down(f"{record.leader} leads term {record.term}")
            return
        self._publish()  # membership changes show up in gossip between rounds

    def _step_down(self, why: str) -> None:
        log.warning("%s: stepping down as leader of %s: %s", self.name, self.group_id, why)
        self._stop_server()
        record = self.gossip.groups().get(self.group_id or "")
        if record is not None and record.leader not in (None, self.id) and not record.dissolved:
            self.term = record.term
            self.client.switch(record.flower_address)
            self.gossip.update_meta(**self._meta())  # no Flower address: not leading any more
            self._enter(Phase.MEMBER, f"following {record.leader} (term {record.term})")
        else:
            self._drop_group(why)

    # ------------------------------------------------------------------ following

    def _follow(self) -> None:
        members, groups, alive = self._gossip_state()
        record = groups.get(self.group_id or "")
        if record is None or record.dissolved:
            self._drop_group("group dissolved")
            return
        if record.round > self.rounds_logged:
            self.rounds_logged = record.round
            log.info(
                "%s: group %s round %d accuracy %.3f loss %.3f",
                self.name,
                record.id,
                record.round,
                record.accuracy,
                record.loss,
            )
        leader_present = record.leader in alive and record.leader in view.members_of(
            record.id, members
        )
        if leader_present:
            moved = record.flower_address and record.flower_address != self.client.address
            if record.term > self.term or moved:
                self.term = record.term
                self.client.switch(record.flower_address)
            self._leader_gone_at = None
            self._lost_claims = 0
            return
        # The leader is dead, left, or moved to another group. After a grace period (gossip may
        # simply be late), the lowest live member claims at the registry with term + 1; the
        # others give it a head start that grows with their rank before trying themselves.
        now = self.clock()
        if self._leader_gone_at is None:
            self._leader_gone_at = now
            log.warning("%s: leader %s of %s is gone", self.name, record.leader, record.id)
        order = view.members_of(record.id, members)
        rank = order.index(self.id) if self.id in order else len(order)
        # The grace lets a wrongly declared death be refuted (at the latest by the next push-pull)
        # before anyone deposes a working leader.
        gossip = self.config.gossip
        grace = min(gossip.push_pull_interval, 5 * gossip.probe_interval)
        if now - self._leader_gone_at >= grace + 3 * rank * gossip.probe_interval:
            self._claim(record)

    def _claim(self, record: GroupRecord) -> None:
        registry = self._registry_client()
        if registry is None:
            return
        weights = self.client.last_global_weights or models.get_weights(self.local_model)
        server, address = self._new_server(weights, self.client.last_round or record.round)
        try:
            registry.claim_leadership(
                record.id, node_id=self.id, term=record.term + 1, flower_address=address
            )
        except RegistryUnavailable:
            server.stop()  # no claims while the registry is unreachable
            return
        except RegistryError as exc:
            log.info("%s: claim on %s lost: %s", self.name, record.id, exc.detail)
            server.stop()
            self._leader_gone_at = self.clock()  # wait for the winner's record
            self._lost_claims += 1
            winner = self._registry_leader(record.id)
            if winner is not None and winner not in self._gossip_state()[2]:
                # The winner is dead to this node's gossip: a partition, most likely. This side
                # of the group cannot train with it, so choose again here.
                self._lost_claims = 0
                self._drop_group(f"{winner} won {record.id} but is out of reach")
            elif self._lost_claims >= MAX_LOST_CLAIMS:
                # No winner's record ever came (nor could the registry name one): give up too
                # rather than claim forever.
                self._lost_claims = 0
                self._drop_group(f"lost {MAX_LOST_CLAIMS} claims on {record.id}, winner unseen")
            return
        self._lost_claims = 0
        self.server, self.server_address = server, address
        self.latest_round = None
        self.term = record.term + 1
        self.version = 0
        self._leader_gone_at = None
        self._become_leader(f"claimed term {self.term}")

    def _registry_leader(self, group_id: str) -> str | None:
        """The leader the registry names for ``group_id`` (None if it names none or is away)."""
        registry = self._registry_client()
        if registry is None:
            return None
        try:
            leader = registry.group(group_id).get("leader")
        except (RegistryError, RegistryUnavailable):
            return None
        return str(leader) if leader else None

    # ------------------------------------------------------------------ leaving

    def _leave(self) -> None:
        if self._crashed or self.phase in (Phase.LEAVING, Phase.STOPPED):
            return
        self._enter(Phase.LEAVING, "shutting down")
        self.client.close()
        self._leave_leadership(handing_over=True)
        registry = self._registry_client()
        if registry is not None:
            try:
                if self.group_id is not None:
                    registry.leave_group(node_id=self.id)
                registry.deregister(self.id)
            except (RegistryError, RegistryUnavailable) as exc:
                log.warning("%s: registry leave incomplete: %s", self.name, exc)
        self.group_id = None
        self._membership_epoch += 1
        try:
            self.gossip.update_meta(**self._meta())
            self.gossip.leave(timeout=min(2.0, self.config.leave_timeout))
        finally:
            self.gossip.stop()
            if self.registry is not None:
                self.registry.close()  # its keep-alive connections would outlive the node
            self._enter(Phase.STOPPED, "left")

    # ------------------------------------------------------------------ what others see

    def _meta(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "role": "node",
            "group": self.group_id or "",
            "model": self.spec,
            "flower_address": self.server_address or "",
            "accuracy": self.accuracy,
            "round": self.rounds_logged,
            **admission.announcement(len(self.data.train), len(self.data.val)),
        }

    def _member_limits(self, node_id: str) -> admission.MemberLimits | None:
        """For the Flower server: ``node_id``'s announced sizes while gossip has it in our group."""
        return admission.limits_in_view(self.gossip.members(), self.group_id, node_id)

    def _provide_model(self, group_id: str) -> tuple[int, bytes] | None:
        """Answer a probe: the latest global model of the group this node leads."""
        server = self.server
        if server is None or group_id != self.group_id:
            return None
        round_ = server.round
        cached = self._model_bytes
        if cached is None or cached[0] != round_:
            cached = (round_, models.weights_to_bytes(server.latest_weights()))
            self._model_bytes = cached
        return cached

    def metrics(self) -> dict[str, Any]:
        """The node's latest view of its group's performance (values may be None)."""
        record = self.gossip.groups().get(self.group_id or "") if self.group_id else None
        if record is None or record.round == 0:
            return {"accuracy": None, "loss": None, "round": 0}
        return {"accuracy": record.accuracy, "loss": record.loss, "round": record.round}

    def data_summary(self) -> dict[str, Any]:
        return {
            "description": self.data.description,
            "train": len(self.data.train.y),
            "val": len(self.data.val.y),
            "concept": self.data.concept,
        }

    def test_accuracy(self) -> float | None:
        """Accuracy of the node's current group model on its own held-out test split."""
        weights = self._current_weights()
        return None if weights is None else self._score(weights, self.data.test)


_CHECKS: dict[str, Callable[[object], bool]] = {
    "accuracy": limits.is_accuracy,
    "loss": limits.is_loss,
    "round": limits.is_counter,
    "examples": limits.is_counter,
}


def valid_metrics(metrics: dict[str, Any]) -> dict[str, Any]:
    """The entries of ``metrics`` that are set and within the shared bounds (``limits.py``)."""
    return {k: v for k, v in metrics.items() if v is not None and _CHECKS[k](v)}
