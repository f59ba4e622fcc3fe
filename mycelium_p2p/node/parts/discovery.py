"""Discovery: find peers through the registry, alone or to merge gossip islands.

Alone (first node, or cut off) the node asks the registry for live peers every
``lookup_interval`` and waits for the first to answer. Once it knows peers it still asks, because
nodes that start together can form separate gossip islands (each later node found a different
lone first node) that nothing else would merge: after ``island_interval``, then twice as long
after each look-up that finds nothing new (up to ``island_max``, 10 minutes), so that a settled
network costs the registry little; and every ``lookup_interval`` while the registry names live
peers that gossip does not see (after a partition, once gossip stopped trying members it
declared dead).
"""

from __future__ import annotations

from dataclasses import dataclass

from mycelium_p2p.node.events import Command, JoinPeers, LookUpPeers
from mycelium_p2p.node.scheduler import Scheduler, Timer
from mycelium_p2p.node.state import GossipView, NodeState

PEERS_PER_LOOKUP = 5


@dataclass(frozen=True)
class DiscoveryParams:
    """Timings of the registry look-ups (seconds).

    Parameters
    ----------
    lookup_interval : float
        Between look-ups while alone, or while the registry names peers gossip does not see
        (default: 2.0).
    island_interval : float
        To the first look-up for islands once joined (default: 10.0).
    island_max : float
        Ceiling of the island interval, which doubles while look-ups find nothing new
        (default: 600.0: 0.1 requests per node per minute once settled).
    """

    lookup_interval: float = 2.0
    island_interval: float = 10.0
    island_max: float = 600.0


def look_up(
    state: NodeState, view: GossipView, params: DiscoveryParams, timers: Scheduler, now: float
) -> list[Command]:
    """The look-up timer fired: schedule the next one and ask the registry."""
    if not view.others():
        state.island_interval = params.island_interval
    alone = not view.others()
    timers.at(Timer.PEER_LOOKUP, now + (params.lookup_interval if alone else state.island_interval))
    return [LookUpPeers()]


def on_peers(
    state: NodeState,
    view: GossipView,
    own_address: str,
    peers: list[str] | None,
    params: DiscoveryParams,
    timers: Scheduler,
    now: float,
) -> list[Command]:
    """The registry named ``peers`` (None: it did not answer)."""
    if peers is None:
        return []
    others = view.others()
    known = {m.address for m in view.members if m.id in others} | {own_address}
    seeds = tuple(p for p in peers if p not in known)
    if seeds and not others:
        return [JoinPeers(seeds, timeout=2.0)]  # alone: wait for the network's state
    if seeds:
        # Peers the registry sees alive and gossip does not: an island, or the other side of a
        # partition that may have healed. Push-pull without waiting (answers merge when they
        # come) and look again soon, until gossip sees them.
        state.island_interval = params.island_interval
        timers.at(Timer.PEER_LOOKUP, now + params.lookup_interval)
        return [JoinPeers(seeds, timeout=0.0)]
    if others:
        state.island_interval = min(2 * state.island_interval, params.island_max)
    return []
