"""A whole Mycelium network in memory, on one fake clock: the test base of node logic.

Every node is complete: the real controller with its parts and policy, the real heartbeats, the
real gossip core speaking the real wire format over a memory transport, and a fake learner
(``fake_learner.py``) whose accuracy depends on the concept a model was trained on. The registry
is the real registry store on an in-memory SQLite database, reached without HTTP. Nothing sleeps:
a discrete-event loop runs the clock forward from one scheduled event to the next, so hundreds
of nodes and minutes of network life run in seconds, and a run is a function of its seed.

Typical use::

    net = MemoryNetwork(nodes=12, concepts=3, store=store_factory, seed=1)
    net.start()
    net.run_until(lambda: net.purity() == 1.0, timeout=300)
    net.crash(net.leader_of(group))
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from mycelium_p2p import view
from mycelium_p2p.gossip.core import REPLY, GossipCore
from mycelium_p2p.gossip.messages import Gossip, Kind, MemberUpdate, Message, Status
from mycelium_p2p.gossip.transport.memory import FakeClock
from mycelium_p2p.gossip.transport.memory import MemoryNetwork as FrameNetwork
from mycelium_p2p.groups import GroupDelegate, GroupRecord
from mycelium_p2p.lifecycle import Phase
from mycelium_p2p.meta import NodeMeta
from mycelium_p2p.node.controller import Controller
from mycelium_p2p.node.daemon import controller_params
from mycelium_p2p.node.events import Event
from mycelium_p2p.node.heartbeats import Heartbeats
from mycelium_p2p.node.ports import MemberLike
from mycelium_p2p.node.state import NodeState
from mycelium_p2p.node_config import NodeConfig
from mycelium_p2p.testing.fake_learner import FakeLearner, FakeWorld
from mycelium_p2p.testing.store_registry import StoreRegistry

#: Seconds since the epoch at simulated time 0 (group records and the registry stamp wall time).
EPOCH = 1_700_000_000.0

StoreFactory = Callable[[Callable[[], float], random.Random], Any]


class SimGossip:
    """The gossip port of one in-memory node: its gossip core, sending on the frame network."""

    def __init__(self, core: GossipCore, groups: GroupDelegate, network: MemoryNetwork) -> None:
        self.core = core
        self.groups_app = groups
        self.network = network

    @property
    def address(self) -> str:
        return self.core.address

    @property
    def registry_url(self) -> str | None:
        return self.groups_app.registry_url

    def members(self) -> list[MemberLike]:
        return self.core.members()  # type: ignore[return-value]

    def groups(self) -> dict[str, GroupRecord]:
        return self.groups_app.table.live()

    def set_meta(self, meta: NodeMeta) -> None:
        self.core.update_meta(**meta.to_map())

    def publish_group(self, record: GroupRecord) -> bool:
        if record.leader != self.core.node_id:
            return False  # only a group's leader publishes its record
        return self.groups_app.publish(record, self.network.now)

    def join(self, seeds: list[str], timeout: float) -> bool:
        del timeout  # nothing waits on a fake clock: answers merge when they arrive
        for seed in seeds:
            self.network.send(self.address, self.core.join(seed, self.network.now))
        return bool(seeds)

    def request_model(
        self, address: str, group_id: str, timeout: float
    ) -> tuple[int, bytes] | None:
        """A request and its answer in no simulated time, through both nodes' real codecs."""
        req_id, frame = self.core.request_model(address, group_id, self.network.now)
        answer = self.network.request(self.address, address, frame)
        return None if answer is None else self.core.model_answer(req_id, group_id, answer)

    def leave(self, timeout: float) -> None:
        self.network.send(self.address, self.core.leave(self.network.now))


@dataclass
class SimNode:
    """One in-memory node and the parts the network drives."""

    index: int
    concept: int
    core: GossipCore
    groups: GroupDelegate
    learner: FakeLearner
    registry: StoreRegistry
    controller: Controller
    heartbeats: Heartbeats
    alive: bool = True
    events: list[Event] = field(default_factory=list)

    @property
    def id(self) -> str:
        return self.controller.state.id

    @property
    def state(self) -> NodeState:
        return self.controller.state


class MemoryNetwork:
    """N complete nodes and a registry store on one fake clock (see the module docstring).

    Parameters
    ----------
    nodes : int
        How many nodes.
    concepts : int
        Concepts K; node i holds concept ``i % K``.
    store : callable
        ``store(clock, rng)`` returns an opened registry store (``bootstrap.store.RegistryStore``
        on ``":memory:"``) whose clock is the network's.
    config : NodeConfig
        The nodes' settings (default: the LAN preset).
    seed : int
        Seed of every random choice (default: 0).
    loss : float
        Frame loss probability (default: 0).
    step_interval : float
        Simulated seconds between two control steps of a node (default: 0.5).
    arrival : float
        Nodes start at random times within this many simulated seconds (default: 5).
    val_size : int
        Validation samples per node: the noise of every accuracy a node measures (default: 20,
        as digits shards of 16-30 nodes have).
    """

    def __init__(
        self,
        nodes: int,
        concepts: int,
        store: StoreFactory,
        *,
        config: NodeConfig | None = None,
        seed: int = 0,
        loss: float = 0.0,
        latency: tuple[float, float] = (0.001, 0.005),
        step_interval: float = 0.5,
        arrival: float = 5.0,
        val_size: int = 20,
    ) -> None:
        self.config = config or NodeConfig.lan()
        self.rng = random.Random(seed)
        self.clock = FakeClock()
        self.frames = FrameNetwork(
            random.Random(self.rng.getrandbits(64)), loss, latency, driver=self.clock
        )
        self.step_interval = step_interval
        self.arrival = arrival
        self.val_size = val_size
        self.store = store(self.wall_clock, random.Random(self.rng.getrandbits(64)))
        self.world = FakeWorld(concepts, self.call_at, lambda: self.now)
        self.nodes: list[SimNode] = [self._make(i, i % concepts) for i in range(nodes)]
        self._by_address = {n.core.address: n for n in self.nodes}
        self.call_at(self.config_sweep(), self._sweep)

    # ------------------------------------------------------------------ clock

    @property
    def now(self) -> float:
        return self.clock.now

    def wall_clock(self) -> float:
        return EPOCH + self.clock.now

    def call_at(self, when: float, fn: Callable[[], None]) -> None:
        self.clock.call_at(when, fn)

    def config_sweep(self) -> float:
        return self.now + 1.0

    # ------------------------------------------------------------------ building

    def _make(self, index: int, concept: int) -> SimNode:
        node_id = f"n{index:05d}"
        address = f"10.{index // 62500}.{index // 250 % 250}.{index % 250 + 1}:7946"
        rng = random.Random(self.rng.getrandbits(64))
        learner = FakeLearner(
            self.world, concept, random.Random(rng.getrandbits(64)), val_size=self.val_size
        )
        meta = NodeMeta(name=node_id, model=learner.spec, **learner.sizes()).to_map()
        groups = GroupDelegate(self.config.gossip.tombstone_ttl)
        core = GossipCore(
            node_id, address, self.config.gossip, rng, self.now, meta=meta, delegate=groups
        )
        registry = StoreRegistry(self.store)
        state = NodeState(node_id, node_id, learner.spec)
        params = controller_params(self.config)
        controller = Controller(
            state,
            params,
            gossip=SimGossip(core, groups, self),
            registry=registry,
            learning=learner,
            clock=lambda: self.now,
            wall_clock=self.wall_clock,
            rng=random.Random(rng.getrandbits(64)),
        )
        node = SimNode(index, concept, core, groups, learner, registry, controller, None)  # type: ignore[arg-type]
        node.heartbeats = Heartbeats(
            StoreRegistry(self.store),
            node_id,
            node_id,
            lambda: controller.published,
            node.events.append,
        )
        learner.on_round = lambda result, n=node: self._post(n, result)
        groups.model_provider = controller.answer_model
        return node

    def _post(self, node: SimNode, result: Any) -> None:
        from mycelium_p2p.node.events import RoundDone

        if node.alive:
            node.controller.handle(RoundDone(result))

    # ------------------------------------------------------------------ running

    def start(self) -> None:
        """Schedule every node's start within ``arrival`` simulated seconds."""
        for node in self.nodes:
            self.frames.attach(node.core.address, self._receiver(node))
            self.call_at(self.now + self.rng.uniform(0.0, self.arrival), self._starter(node))

    def _starter(self, node: SimNode) -> Callable[[], None]:
        def start() -> None:
            node.controller.start([])
            self.call_at(self.now + self.rng.uniform(0, self.step_interval), self._stepper(node))
            beat = self.config.registry.heartbeat_interval
            self.call_at(self.now + self.rng.uniform(0, beat), self._beater(node))
            self.call_at(node.core.next_due(self.now), self._ticker(node))

        return start

    def _receiver(self, node: SimNode) -> Callable[[str, Any, bytes], None]:
        def receive(src: str, token: Any, frame: bytes) -> None:
            if node.alive:
                out = node.core.handle(src, frame, self.now)
                self.send(node.core.address, [(src if d == REPLY else d, f) for d, f in out])

        return receive

    def _ticker(self, node: SimNode) -> Callable[[], None]:
        def tick() -> None:
            if not node.alive:
                return
            self.send(node.core.address, node.core.tick(self.now))
            self.call_at(max(node.core.next_due(self.now), self.now + 1e-3), tick)

        return tick

    def _stepper(self, node: SimNode) -> Callable[[], None]:
        def step() -> None:
            if not node.alive or node.state.phase is Phase.STOPPED:
                return
            events, node.events[:] = list(node.events), []
            for event in events:
                node.controller.handle(event)
            node.controller.step()
            self.call_at(self.now + self.step_interval, step)

        return step

    def _beater(self, node: SimNode) -> Callable[[], None]:
        def beat() -> None:
            if not node.alive or node.state.phase is Phase.STOPPED:
                return
            node.heartbeats.beat()
            self.call_at(self.now + self.config.registry.heartbeat_interval, beat)

        return beat

    def _sweep(self) -> None:
        self.store.sweep()
        self.call_at(self.now + 1.0, self._sweep)

    def send(self, src: str, out: list[tuple[str, bytes]]) -> None:
        for dest, frame in out:
            self.frames.send(src, dest, frame)

    def request(self, src: str, dest: str, frame: bytes) -> bytes | None:
        """Deliver a request and return the answer at once (lost, or cut, like any frame)."""
        target = self._by_address.get(dest)
        lost = self.frames.loss and self.rng.random() < self.frames.loss
        cut = self.frames.partition.blocks(src, dest) or self.frames.partition.blocks(dest, src)
        if target is None or not target.alive or lost or cut:
            return None
        answers = [f for d, f in target.core.handle(src, frame, self.now) if d == REPLY]
        return answers[0] if answers else None

    def run_for(self, seconds: float) -> None:
        """Run the clock ``seconds`` forward."""
        self.clock.run_until(self.now + seconds)

    def run_until(self, done: Callable[[], bool], timeout: float, check_every: float = 1.0) -> bool:
        """Run until ``done()`` (True) or ``timeout`` simulated seconds passed (False)."""
        deadline = self.now + timeout
        while not done():
            if self.now >= deadline:
                return False
            self.clock.run_until(min(deadline, self.now + check_every))
        return True

    # ------------------------------------------------------------------ faults

    def partition(self, *sides: list[SimNode]) -> None:
        """Cut gossip (and model probes) between the given sets of nodes, until ``heal``."""
        addresses = [[n.core.address for n in side] for side in sides]
        for i, a in enumerate(addresses):
            for b in addresses[i + 1 :]:
                self.frames.cut(a, b)

    def heal(self) -> None:
        self.frames.heal()

    def gossip_to(self, node: SimNode, record: GroupRecord, member_in: str) -> None:
        """Deliver one gossip frame to ``node``: ``record``, and a member of its own (alive, in
        group ``member_in``, at ``record.leader_address``) so that the group is not a zombie."""
        member = MemberUpdate(
            str(record.leader),
            record.leader_address,
            Status.ALIVE,
            1,
            NodeMeta(name="puppet", group=member_in, model=record.model).to_map(),
        )
        codec = node.core.codec
        frame = codec.encode(
            Message(Kind.GOSSIP, member.node_id, member.address, Gossip((member, record)))
        )
        node.core.handle(member.address, frame, self.now)

    def registry_down(self) -> None:
        """Every node's registry calls fail as if the registry were unreachable."""
        for node in self.nodes:
            node.registry.up = node.heartbeats.registry.up = False  # type: ignore[attr-defined]

    def registry_up(self) -> None:
        for node in self.nodes:
            node.registry.up = node.heartbeats.registry.up = True  # type: ignore[attr-defined]

    def crash(self, node: SimNode) -> None:
        """Stop a node at once, as a killed process: no leave, its server and sockets gone."""
        node.alive = False
        node.controller.crash()
        self.frames.detach(node.core.address)

    def leave(self, node: SimNode) -> None:
        """A graceful leave, as on SIGTERM."""
        node.controller.leave()
        self.call_at(self.now + 2.0, lambda: self._gone(node))

    def _gone(self, node: SimNode) -> None:
        node.alive = False
        self.frames.detach(node.core.address)

    # ------------------------------------------------------------------ readings

    def live_nodes(self) -> list[SimNode]:
        return [n for n in self.nodes if n.alive and n.state.phase is not Phase.STOPPED]

    def groups(self) -> dict[str, list[SimNode]]:
        """Nodes by the group each says it is in (nodes in none left out)."""
        out: dict[str, list[SimNode]] = {}
        for node in self.live_nodes():
            if node.state.group_id is not None:
                out.setdefault(node.state.group_id, []).append(node)
        return out

    def purity(self) -> float:
        """Share of live nodes in a group whose majority concept is theirs (0: none grouped)."""
        live = self.live_nodes()
        good = 0
        for members in self.groups().values():
            good += Counter(n.concept for n in members).most_common(1)[0][1]
        return good / len(live) if live else 0.0

    def registry_calls(self) -> int:
        return sum(
            sum(n.registry.calls.values()) + sum(n.heartbeats.registry.calls.values())  # type: ignore[attr-defined]
            for n in self.nodes
        )

    def frames_sent(self) -> int:
        return int(self.frames.stats["sent"])

    def leader_of(self, group_id: str) -> SimNode | None:
        return next(
            (n for n in self.live_nodes() if n.state.group_id == group_id and n.state.leading), None
        )

    def view_of(self, node: SimNode) -> set[str]:
        return view.live_ids(node.core.members())

    def record(self, node: SimNode, group_id: str) -> GroupRecord | None:
        """``node``'s view of the record of ``group_id`` (tombstones too)."""
        return node.groups.table.get(group_id)
