"""Discovery: find peers through the registry, alone or to merge gossip islands.

Alone (first node, or cut off) the node asks the registry for live peers every
``lookup_interval`` and waits for the first to answer. Once it knows peers it stops asking:
every heartbeat's answer names a few live peers at random, and the node push-pulls with those
gossip does not see. That is how nodes that started together in separate gossip islands (each
later node found a different lone first node) find each other, and how the two sides of a healed
partition do once gossip stopped trying the members it declared dead: within about one heartbeat
interval, at no cost to the registry beyond the heartbeats themselves.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from mycelium_p2p.node.events import Command, JoinPeers, LookUpPeers
from mycelium_p2p.node.scheduler import Scheduler, Timer
from mycelium_p2p.node.state import GossipView

PEERS_PER_LOOKUP = 5


@dataclass(frozen=True)
class DiscoveryParams:
    """Timings of the registry look-ups (seconds).

    Parameters
    ----------
    lookup_interval : float
        Between look-ups while alone (default: 2.0).
    """

    lookup_interval: float = 2.0


def look_up(
    view: GossipView, params: DiscoveryParams, timers: Scheduler, now: float
) -> list[Command]:
    """The look-up timer fired: schedule the next one, and ask the registry if alone."""
    timers.at(Timer.PEER_LOOKUP, now + params.lookup_interval)
    return [] if view.others() else [LookUpPeers()]


def on_peers(
    view: GossipView,
    own_address: str,
    peers: Sequence[str] | None,
) -> list[Command]:
    """The registry named ``peers``, in a look-up or a heartbeat's answer (None: no answer)."""
    if peers is None:
        return []
    others = view.others()
    known = {m.address for m in view.members if m.id in others} | {own_address}
    seeds = tuple(p for p in peers if p not in known)
    if seeds and not others:
        return [JoinPeers(seeds, timeout=2.0)]  # alone: wait for the network's state
    if seeds:
        return [JoinPeers(seeds, timeout=0.0)]  # push-pull; answers merge when they come
    return []
