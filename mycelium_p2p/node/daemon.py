"""The node daemon: the controller on its control thread, wired to ZeroMQ, HTTP and Flower.

Threads and what they may do:

- **control**: the only one that runs the controller (every decision, all node state);
- **heartbeat**: sends what the control thread published and posts the registry's answers;
- **gossip** (in ``GossipNode``): answers model probes from what the control thread published;
- **Flower server and client** (in the learner): post each finished round;
- **watchdog**: if any of them died, the node says so in one line, leaves the registry and
  gossip, and stops (``mycelium join`` then exits non-zero, so a supervisor restarts it).

No other thread reads or writes the controller's state: they post events to its queue.
"""

from __future__ import annotations

import logging
import queue
import random
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

from mycelium_p2p import keystore
from mycelium_p2p.containment import Containment
from mycelium_p2p.gossip.transport import Transport
from mycelium_p2p.groups import GossipNode, GroupRecord
from mycelium_p2p.identity import IdentityError, NodeIdentity
from mycelium_p2p.learning import admission, models
from mycelium_p2p.learning.admission import MemberLimits
from mycelium_p2p.learning.builtin import ModelTask
from mycelium_p2p.learning.data import NodeData, load_node_data
from mycelium_p2p.learning.loader import load_task
from mycelium_p2p.learning.task import GuardedTask, Task, TaskError, check_task
from mycelium_p2p.lifecycle import Phase
from mycelium_p2p.meta import NodeMeta
from mycelium_p2p.node.controller import Controller, ControllerParams
from mycelium_p2p.node.events import DataChanged, Event, RoundDone, ThreadDied
from mycelium_p2p.node.flower_learning import FlowerLearning, FlowerSettings
from mycelium_p2p.node.heartbeats import Heartbeats
from mycelium_p2p.node.parts.choice import ChoiceParams
from mycelium_p2p.node.parts.discovery import DiscoveryParams
from mycelium_p2p.node.parts.leadership import LeadershipParams
from mycelium_p2p.node.ports import MemberLike, RoundSummary
from mycelium_p2p.node.registry_link import RegistryLink
from mycelium_p2p.node.state import NodeState
from mycelium_p2p.node_config import NodeConfig
from mycelium_p2p.policy import Decision, PolicyParams
from mycelium_p2p.registry_client import RegistryError, RegistryUnavailable

log = logging.getLogger("mycelium.node")

TICK = 0.2  # seconds between control steps when nothing wakes the loop sooner
WATCH_INTERVAL = 0.5  # seconds between two looks of the watchdog at the node's threads
REPORT_EVERY = 4  # heartbeat intervals between two round reports of a leader to the registry


class _Gossip:
    """The gossip port over a ``GossipNode``."""

    def __init__(self, node: GossipNode) -> None:
        self.node = node

    @property
    def address(self) -> str:
        return str(self.node.address)

    @property
    def registry_url(self) -> str | None:
        return self.node.registry_url

    def members(self) -> list[MemberLike]:
        return self.node.members()  # type: ignore[return-value]

    def groups(self) -> dict[str, GroupRecord]:
        return self.node.groups()

    def set_meta(self, meta: NodeMeta) -> None:
        self.node.update_meta(**meta.to_map())

    def publish_group(self, record: GroupRecord) -> bool:
        return self.node.publish_group(record)

    def join(self, seeds: list[str], timeout: float) -> bool:
        return self.node.join(seeds, timeout)

    def request_model(
        self, address: str, group_id: str, timeout: float
    ) -> tuple[int, bytes] | None:
        return self.node.request_model(address, group_id, timeout)

    def leave(self, timeout: float) -> None:
        self.node.leave(timeout)


def controller_params(config: NodeConfig) -> ControllerParams:
    """Each part's section of the node's settings."""
    gossip, choice = config.gossip, config.choice
    return ControllerParams(
        discovery=DiscoveryParams(),
        choice=ChoiceParams(
            policy=PolicyParams(
                switch_threshold=choice.switch_threshold,
                switch_samples=choice.switch_samples,
                merge_samples=choice.merge_samples,
                found_samples=choice.found_samples,
                mode=choice.policy,
            ),
            evaluation_interval=choice.group_evaluation_interval,
            max_probes=choice.max_probes,
            blend_weight=choice.blend_weight,
        ),
        leadership=LeadershipParams(
            # The grace lets a wrongly declared death be refuted (at the latest by the next
            # push-pull) before anyone deposes a working leader.
            grace=min(gossip.push_pull_interval, 5 * gossip.probe_interval),
            rank_delay=3 * gossip.probe_interval,
        ),
        capacity=config.group.group_capacity,
        # Round figures go to the registry every fourth heartbeat: gossip carries every round
        # to the nodes; the registry's copy is for newcomers and the viewer.
        report_interval=REPORT_EVERY * config.registry.heartbeat_interval,
        record_interval=config.group.record_interval,
        leave_timeout=min(2.0, config.network.leave_timeout),
    )


class Node:
    """A Mycelium node: a task (its private data and model), and a place in one learning group.

    Parameters
    ----------
    config
        Settings (see :class:`~mycelium_p2p.node_config.NodeConfig`).
    data
        The node's data for the built-in task (``config.model`` on it); loaded from
        ``config.data`` when neither it nor ``task`` is given and ``config.task`` is empty.
    task
        What the node learns, instead of ``data`` (default: None: ``config.task`` when set, loaded,
        then checked by one fit and one evaluate, else the built-in task).
    node_id
        Stable id (default: 12 random hex digits).
    rng
        Random source for jitter and policy order (default: seeded from the node id).
    clock
        Monotonic seconds (default: ``time.monotonic``).
    wrap_gossip_transport
        Applied to the gossip transport when it is bound, e.g. ``Partition.wrap`` in tests
        (default: None).
    """

    def __init__(
        self,
        config: NodeConfig,
        data: NodeData | None = None,
        *,
        task: Task | GuardedTask | None = None,
        node_id: str | None = None,
        rng: random.Random | None = None,
        clock: Any = time.monotonic,
        wrap_gossip_transport: Callable[[Transport], Transport] | None = None,
    ) -> None:
        self.config = config = config.resolved()
        net, learn = config.network, config.learning
        self.identity = _identity(config, node_id)
        self.id = self.identity.node_id if self.identity is not None else None
        self.id = self.id or node_id or uuid.uuid4().hex[:12]
        self.name = config.network.name or f"node-{self.id[:6]}"
        self.data = data
        self.task = task if task is not None else self._build_task(data)
        self.rng = rng or random.Random(self.id)
        self.clock = clock
        self.failure: str | None = None
        self.containment = Containment(log, self.name)
        self._events: queue.Queue[Event | None] = queue.Queue()
        self._stop = threading.Event()
        self._crashed = False
        self._thread: threading.Thread | None = None
        self._heartbeat_thread: threading.Thread | None = None
        host = config.advertised_host()
        self.learning = FlowerLearning(
            self.task,
            FlowerSettings(
                strategy=config.group.strategy,
                bind_host=net.bind_host,
                port=net.flower_port,
                advertised_host=host,
                round_timeout=config.group.round_timeout,
                round_pause=config.group.round_pause,
                seed=learn.seed + learn.node_index,
                token=net.token,
                identity=self.identity,
            ),
            on_round=self._round_done,
            rng=self.rng,
            node_id=self.id,
            member_limits=self.member_limits,
            leader_of=self._leader_of,
            admit=self._admit,
        )
        self.spec = self.learning.spec
        self.state = NodeState(self.id, self.name, self.spec)
        self.gossip = GossipNode(
            self.id,
            config.gossip,
            host=net.bind_host,
            port=net.gossip_port,
            advertise_host=host,
            meta=NodeMeta(name=self.name, model=self.spec, **self.learning.sizes()).to_map(),
            registry_url=net.registry_url,
            identity=self.identity,
            wrap_transport=wrap_gossip_transport,
        )
        url = self._registry_url
        self.controller = Controller(
            self.state,
            controller_params(config),
            gossip=_Gossip(self.gossip),
            registry=RegistryLink(
                url,
                net.token,
                timeout=3.0,
                retries=1,
                identity=self.identity,
                on_enrolled=self._enrolled,
            ),
            learning=self.learning,
            clock=clock,
            rng=self.rng,
            on_fail=self._failed,
        )
        self.heartbeats = Heartbeats(
            RegistryLink(url, net.token, timeout=3.0, retries=0, identity=self.identity),
            self.id,
            self.name,
            lambda: self.controller.published,
            self._events.put,
        )

    def _build_task(self, data: NodeData | None) -> Task | GuardedTask:
        """The task of ``config``: the user's (loaded and checked), else the built-in one.

        Raises
        ------
        TaskError
            The user's task does not load or fails its check (one line naming the problem).
        """
        learn = self.config.learning
        if learn.task and data is None:
            task = load_task(learn.task, learn.task_options)
            report = check_task(task)
            log.info(
                "%s: task %s, spec %s: %d parameters, %.3f s per fit, %.3f s per probe",
                self.name,
                learn.task,
                report.spec.key,
                report.spec.parameter_count,
                report.fit_seconds,
                report.probe_seconds,
            )
            return task
        if data is None:
            data = self.data = load_node_data(
                learn.data, learn.node_index, learn.num_nodes, learn.seed
            )
        return ModelTask(
            data,
            learn.model,
            local_epochs=learn.local_epochs,
            batch_size=learn.batch_size,
            lr=learn.learning_rate,
            seed=learn.seed + learn.node_index,
        )

    def _enrolled(self) -> None:
        """The registry issued something new: keep it, and gossip the new ticket."""
        identity = self.identity
        if identity is None:
            return
        if self.config.network.state_dir:
            keystore.save(identity, self.config.network.state_dir)
        log.info("%s: enrolled with the registry (id %s)", self.name, self.id)
        self.learning.enrolled()
        self.gossip.set_ticket()

    def _refresh_revocations(self) -> None:
        """Ask the registry for its revocation list; a newer one is installed and gossiped, so
        nodes that cannot reach the registry learn it too."""
        trust = None if self.identity is None else self.identity.trust
        if trust is None or not self.identity or not self.identity.credential:
            return
        try:
            listed = self.heartbeats.registry.revocations()  # type: ignore[attr-defined]
        except (RegistryError, RegistryUnavailable):
            return
        newer = listed.serial > trust.revocations.serial and self.gossip.running
        if newer and self.gossip.install_revocations(listed.signed):
            log.warning("%s: revoked by the operator: %s", self.name, ", ".join(listed.ids))

    def _leader_of(self, flower_address: str) -> str | None:
        """The leader of record serving Flower at ``flower_address`` (records carry leases)."""
        if not self.gossip.running:
            return None
        for record in self.gossip.groups().values():
            if record.flower_address == flower_address:
                return record.leader
        return None

    def _admit(self, node_id: str) -> bool:
        """Whether a Flower session of ``node_id`` may go on: certified and not revoked."""
        trust = None if self.identity is None else self.identity.trust
        return trust is not None and not trust.revoked(node_id)

    def _registry_url(self) -> str | None:
        return self.config.network.registry_url or self.gossip.registry_url

    # ------------------------------------------------------------------ life cycle

    def start(self, seeds: list[str] | None = None) -> None:
        """Bind gossip, join the network and start the control loop (returns at once)."""
        self.gossip.start()
        self.gossip.set_model_provider(self.controller.answer_model)
        self._thread = threading.Thread(
            target=self._run,
            args=(list(seeds or self.config.network.peers),),
            name=f"node-{self.name}",
        )
        self._thread.daemon = True
        self._thread.start()
        threading.Thread(target=self._watch, name=f"watch-{self.name}", daemon=True).start()

    def stop(self) -> None:
        """Leave gracefully: out of the group, deregistered, leave announced on gossip."""
        if self._stop.is_set() and self.phase in (Phase.STOPPED, Phase.LEAVING):
            return
        self._stop.set()
        self._events.put(None)
        if self._thread is not None:
            self._thread.join(timeout=self.config.network.leave_timeout + 5)
        if self._thread is None or not self._thread.is_alive():
            self.controller.leave()  # a no-op when the control thread already left

    def crash(self) -> None:
        """Stop at once without leaving, as a killed process would (for fault tests)."""
        self._crashed = True
        self._stop.set()
        self._events.put(None)
        if self._thread is not None:
            self._thread.join(timeout=10)
        self.controller.crash()
        self.heartbeats.close()
        self.gossip.stop()

    def switch_data(self, data: NodeData) -> None:
        """Hold ``data`` from now on (same node, same id): its world changed. The control thread
        switches training, probing, validation and test to it, forgets what it measured on the
        old data and chooses its group again (call from any thread; takes effect within a tick).

        Raises
        ------
        ValueError
            When ``data`` does not fit the node's model (other input shape or classes).
        """
        if self.data is None:  # the user's task loads its own data
            raise ValueError("the node runs its own task: only a built-in task switches data")
        spec = models.model_spec(self.config.learning.model, data.input_shape, data.classes)
        if spec != self.spec:
            raise ValueError(f"new data needs model {spec}, the node runs {self.spec}")
        self.data = data
        self._events.put(DataChanged(data))

    # ------------------------------------------------------------------ threads

    def _run(self, seeds: list[str]) -> None:
        unit = self.containment.unit
        try:
            with unit("discovery"):
                self.controller.start(seeds)
            heartbeat = threading.Thread(
                target=self._heartbeat_loop, name=f"hb-{self.name}", daemon=True
            )
            heartbeat.start()
            # Named only once it runs: the watchdog takes a named thread that is not alive for
            # a dead one (a loaded machine can let it look between creation and start).
            self._heartbeat_thread = heartbeat
            while not self._stop.is_set():
                errors = self.containment.total()
                for event in self._next_events():
                    with unit("an event"):
                        self.controller.handle(event)
                with unit("a control step"):
                    try:
                        self.controller.step()
                    except TaskError as exc:
                        self._task_failed(str(exc))
                if self.containment.total() > errors:
                    self._stop.wait(1.0)  # after a failure, pause rather than fail again at once
        finally:
            if not self._crashed:
                self.controller.leave()

    def _next_events(self) -> list[Event]:
        """Events that arrived, waiting up to a tick (or the next timer) for the first."""
        wait = max(0.0, min(TICK, self.controller.next_due() - self.clock()))
        events: list[Event] = []
        try:
            first = self._events.get(timeout=wait)
            while True:
                if first is not None:
                    events.append(first)
                first = self._events.get_nowait()
        except queue.Empty:
            return events

    def _heartbeat_loop(self) -> None:
        """Heartbeats on a thread of their own, so that slow training or probing in the control
        loop never makes the registry think this node is dead."""
        while not self._stop.is_set():
            with self.containment.unit("a heartbeat"):
                self.heartbeats.beat()
            with self.containment.unit("fetching the revocation list"):
                self._refresh_revocations()
            self._stop.wait(self.config.registry.heartbeat_interval)
        self.heartbeats.close()

    def _round_done(self, result: RoundSummary) -> None:
        self._events.put(RoundDone(result))

    def _task_failed(self, why: str) -> None:
        """The task broke (a failure or a wrong answer of its code): say so and stop."""
        if self.failure is None:
            log.error("%s: its task failed: %s; leaving the network and stopping", self.name, why)
            self._failed(f"its task failed: {why}")

    def _watch(self) -> None:
        """Every long-lived thread of the node is watched (see the module docstring)."""
        while not self._stop.wait(WATCH_INTERVAL):
            if self.learning.failure is not None:  # the task broke on a Flower thread
                self._task_failed(self.learning.failure)
                return
            dead = self._dead_thread()
            if dead is None or self._stop.is_set():
                continue
            if self._thread is not None and self._thread.is_alive():
                self._events.put(ThreadDied(dead))  # the control thread leaves
            else:
                self._failed(f"its {dead} died")
                log.error("%s: %s; leaving the network and stopping", self.name, self.failure)
                self.controller.leave()
            return

    def _dead_thread(self) -> str | None:
        if self._thread is not None and not self._thread.is_alive():
            return "control thread"
        if self._heartbeat_thread is not None and not self._heartbeat_thread.is_alive():
            return "heartbeat thread"
        if not self.gossip.running:
            why = self.gossip.failure
            return f"gossip thread ({why})" if why else "gossip thread"
        if self.controller.server_running() is False:
            return "Flower server thread"
        dead = self.learning.dead_threads()
        return dead[0] if dead else None

    def _failed(self, why: str) -> None:
        self.failure = why
        self._stop.set()
        self._events.put(None)

    # ------------------------------------------------------------------ what others read

    @property
    def phase(self) -> Phase:
        return self.state.phase

    @property
    def group_id(self) -> str | None:
        return self.state.group_id

    @property
    def term(self) -> int:
        return self.state.term

    @property
    def server_address(self) -> str | None:
        """The Flower address of the group this node leads (None while it leads none)."""
        return self.state.server_address

    @property
    def migrations(self) -> int:
        """Moves so far, as of the control thread's last step (a move in progress shows in
        ``group_id`` before it counts here)."""
        return self.controller.published.migrations

    @property
    def placement(self) -> tuple[str | None, int]:
        """The group and the moves so far, both as of the control thread's last step."""
        published = self.controller.published
        return published.group, published.migrations

    @property
    def blended(self) -> dict[str, int]:
        """Models of other groups this node mixed into the group it leads: times, by group."""
        return dict(self.state.blended)

    @property
    def decisions(self) -> list[Decision]:
        return self.state.decisions

    @property
    def latest_round(self) -> RoundSummary | None:
        return self.state.latest_round

    @property
    def round_times(self) -> list[tuple[int, float]]:
        return self.learning.round_times

    def member_limits(self, node_id: str) -> MemberLimits | None:
        """``node_id``'s announced data sizes while gossip has it live in this node's group (the
        Flower server of a group this node leads holds each member's results to them)."""
        return admission.limits_in_view(
            self.gossip.members(), self.controller.published.group, node_id
        )

    def metrics(self) -> dict[str, Any]:
        """The node's latest view of its group's performance."""
        p = self.controller.published
        return {"accuracy": p.accuracy, "loss": p.loss, "round": p.round or 0}

    def data_summary(self) -> dict[str, Any]:
        return self.learning.summary()

    def test_accuracy(self) -> float | None:
        """Accuracy of the node's current group model on its own held-out test split."""
        return self.learning.test_accuracy()


def _identity(config: NodeConfig, node_id: str | None) -> NodeIdentity | None:
    """The node's own identity with a token (kept in ``state_dir`` if one is set), else None,
    said loudly: without a token nothing checks who speaks."""
    net = config.network
    if not net.token:
        log.warning(
            "no token: this node runs open (the registry, gossip and Flower accept anyone who "
            "reaches them); fine on one development machine, never on a shared network"
        )
        return None
    if not net.state_dir:
        return NodeIdentity(node_id or uuid.uuid4().hex[:12])
    try:
        return keystore.load_or_create(net.state_dir, node_id)
    except (IdentityError, OSError) as exc:
        raise ValueError(f"state directory {net.state_dir}: {exc}") from exc
