"""``mycelium bench network``: a whole network in memory, until it has sorted itself.

N complete nodes of K concepts (node i holds concept i mod K) on the in-memory network, with the
LAN preset by default, run on a fake clock until every node sits in a group of its own concept
(purity 1.0) and stays so for ``settle`` simulated seconds (the steady state whose registry load
is measured), or until ``max_seconds``. Reported (JSON keys in parentheses):

- how well: groups (``groups``), purity (``purity``), migrations (``migrations``), and the highest
  Flower round any group had reached when the network first became pure (``rounds_to_pure``,
  None if it never did);
- how fast: simulated seconds (``simulated_seconds``) and wall seconds (``wall_seconds``), and the
  same until the network first became pure (``simulated_seconds_to_pure``,
  ``wall_seconds_to_pure``);
- what it costs: models fetched to probe a group per choice of group, the mean over all
  choices of all nodes and the most any one choice fetched (``probes_per_choice``,
  ``max_probes_per_choice``), gossip frames sent per node per simulated second
  (``messages_per_node_per_s``)
  and registry requests per node per simulated minute in the steady state, once pure
  (``registry_requests_per_node_per_min``; over the whole run in
  ``registry_requests_per_node_per_min_total``).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from mycelium_p2p.node_config import NodeConfig
from mycelium_p2p.testing.memory_network import MemoryNetwork, StoreFactory


def run(
    nodes: int,
    concepts: int,
    store: StoreFactory,
    *,
    seed: int = 0,
    config: NodeConfig | None = None,
    max_seconds: float = 3600.0,
    settle: float = 600.0,
    progress: Callable[[MemoryNetwork], None] | None = None,
) -> dict[str, Any]:
    """Run one network (see the module docstring) and return its figures."""
    config = config or NodeConfig.lan()
    started = time.perf_counter()
    net = MemoryNetwork(nodes, concepts, store, config=config, seed=seed)
    net.start()
    pure_at: float | None = None
    first_pure: tuple[float, float] | None = None  # (simulated, wall) seconds
    rounds_to_pure: int | None = None
    calls_at_pure = 0
    step = 5.0
    while net.now < max_seconds:
        net.run_for(step)
        if progress is not None:
            progress(net)
        if net.purity() == 1.0:
            if pure_at is None:
                pure_at, calls_at_pure = net.now, net.registry_calls()
                rounds_to_pure = max_round(net)
                if first_pure is None:
                    first_pure = (net.now, time.perf_counter() - started)
            elif net.now - pure_at >= settle:
                break
        else:
            pure_at = None
    wall = time.perf_counter() - started
    simulated = net.now
    calls = net.registry_calls()
    settled = simulated - pure_at if pure_at is not None else 0.0
    return {
        "nodes": nodes,
        "concepts": concepts,
        "seed": seed,
        "groups": len(net.groups()),
        "purity": round(net.purity(), 4),
        "rounds_to_pure": rounds_to_pure,
        "simulated_seconds": round(simulated, 1),
        "wall_seconds": round(wall, 2),
        "simulated_seconds_to_pure": round(first_pure[0], 1) if first_pure else None,
        "wall_seconds_to_pure": round(first_pure[1], 2) if first_pure else None,
        "migrations": sum(n.state.migrations for n in net.nodes),
        "probes_per_choice": round(
            sum(n.state.probe_requests for n in net.nodes)
            / max(1, sum(n.state.choices for n in net.nodes)),
            2,
        ),
        "max_probes_per_choice": max((n.state.most_probes for n in net.nodes), default=0),
        "messages_per_node_per_s": round(net.frames_sent() / nodes / simulated, 2),
        "registry_requests_per_node_per_min": (
            round((calls - calls_at_pure) / nodes / (settled / 60.0), 3) if settled else None
        ),
        "registry_requests_per_node_per_min_total": round(calls / nodes / (simulated / 60.0), 3),
    }


def max_round(net: MemoryNetwork) -> int:
    """The highest round any live group's record shows."""
    best = 0
    for group_id in net.groups():
        leader = net.leader_of(group_id)
        record = None if leader is None else leader.groups.table.get(group_id)
        if record is not None:
            best = max(best, record.round)
    return best
