"""``SimCluster``: N ``GossipCore``s on a ``MemoryNetwork`` driven by a fake clock.

Used by tests and ``mycelium bench gossip``: 10,000 nodes fit in one process. With
``full_view`` every node starts knowing every other as alive, as if they had all joined long
ago, so a run measures dissemination and detection rather than the join storm; in that steady
state each node's next push-pull falls at a random phase of its period (``push_pull_period``
for N members), as it would after a long time, rather than all within the first period.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable
from typing import Any

from mycelium_p2p.config import GossipConfig
from mycelium_p2p.gossip.core import REPLY, GossipCore, Outbound
from mycelium_p2p.gossip.delegate import Delegate
from mycelium_p2p.gossip.membership import Member
from mycelium_p2p.gossip.messages import Status
from mycelium_p2p.gossip.transport.memory import FakeClock, MemoryNetwork


def sim_address(i: int) -> str:
    """The address of simulated node ``i`` (distinct for up to 15 million nodes)."""
    return f"10.{i // 62500}.{i // 250 % 250}.{i % 250 + 1}:7946"


class SimCluster:
    """N gossip cores on one fake clock.

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
    delegate : Callable[[], Delegate] | None
        Makes each node's delegate (default: None, no application).
    steady_push_pull : bool
        With ``full_view``, each node's next push-pull at a random phase of its period for N
        members, as in a network up for long; False keeps a fresh start's, within the first
        ``push_pull_interval`` (N full states exchanged at once) (default: True).
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
        delegate: Callable[[], Delegate] | None = None,
        steady_push_pull: bool = True,
    ) -> None:
        self.config = config
        self.rng = random.Random(seed)
        self.clock = FakeClock()
        self.net = MemoryNetwork(
            random.Random(self.rng.getrandbits(64)), loss, latency, driver=self.clock
        )
        self.cores: dict[str, GossipCore] = {}
        self.delegates: dict[str, Any] = {}
        self.dead: set[str] = set()
        self.false_deaths = 0
        self.events: Counter[str] = Counter()
        for i in range(n):
            address = sim_address(i)
            app = delegate() if delegate is not None else None
            core = GossipCore(
                f"n{i:05d}",
                address,
                config,
                random.Random(self.rng.getrandbits(64)),
                0.0,
                delegate=app,
            )
            self.cores[address] = core
            self.delegates[address] = core.delegate
            self.net.attach(address, self._receiver(address))
        if full_view:
            # One entry per node, shared by every view until a view changes it (copy on write).
            known = {
                c.node_id: Member(c.node_id, a, Status.ALIVE, 0, c.membership.meta, 0.0, True)
                for a, c in self.cores.items()
            }
            for core in self.cores.values():
                core.membership.adopt(known)
                core.forget_broadcasts()
                if steady_push_pull:
                    core.stagger_push_pull(0.0)
        for address, core in self.cores.items():
            self.clock.call_at(core.next_due(0.0), self._ticker(address))

    @property
    def now(self) -> float:
        return self.clock.now

    def address_of(self, node_id: str) -> str:
        return next(a for a, c in self.cores.items() if c.node_id == node_id)

    def live(self) -> list[GossipCore]:
        return [c for a, c in self.cores.items() if a not in self.dead]

    def _receiver(self, address: str) -> Callable[[str, Any, bytes], None]:
        core = self.cores[address]

        def receive(src: str, token: Any, frame: bytes) -> None:
            if address in self.dead:
                return
            self._send(address, core.handle(src, frame, self.clock.now), token)

        return receive

    def _ticker(self, address: str) -> Callable[[], None]:
        core = self.cores[address]
        clock = self.clock

        def tick() -> None:
            if address in self.dead:
                return
            now = clock.now
            self._send(address, core.tick(now))
            clock.call_at(max(core.next_due(now), now + 1e-4), tick)

        return tick

    def _send(self, src: str, out: Outbound, token: Any = None) -> None:
        for dest, frame in out:
            if dest == REPLY:
                self.net.reply(src, token, frame)
            else:
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

    def join(self, address: str, seed: str) -> None:
        """The node at ``address`` pushes and pulls state with the node at ``seed`` (a JOIN)."""
        self._send(address, self.cores[address].join(seed, self.clock.now))

    def kill(self, address: str) -> None:
        """Crash a node: it stops sending, receiving and ticking."""
        self.dead.add(address)
        self.net.detach(address)

    def run_until(self, t: float) -> None:
        self.clock.run_until(t)

    def run_while(self, busy: Callable[[], bool], timeout: float, check_every: float) -> bool:
        """Run until ``busy()`` is False (True) or ``timeout`` simulated seconds pass (False)."""
        return self.clock.run_while(busy, self.clock.now + timeout, check_every)

    def declared_dead(self, node_id: str) -> int:
        """Live nodes that see ``node_id`` as dead (or have already forgotten it)."""
        n = 0
        for c in self.live():
            m = c.membership.members.get(node_id)
            if m is None or m.status is Status.DEAD:
                n += 1
        return n
