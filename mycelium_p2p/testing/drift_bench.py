"""``mycelium bench drift``: how fast drifted nodes find a group of their new concept again.

N complete nodes of K concepts (node i holds concept i mod K) on the in-memory network, with the
test preset (re-evaluation every 3 s) and groups of at most ``capacity``, on a fake clock. At
``drift_at`` simulated seconds a third of the nodes switch, all at the same instant, to the next
concept (``c + 1 mod K``): the same nodes, chosen by the same draw of the seed, as the real
experiment's ``--scenario drift``. The network then runs ``horizon`` simulated seconds more.

A drifted node has *recovered* once it sits in a group whose other members all share its new
concept, and either that group holds another member or no other live node holds its concept (then
a group of its own is the best it can do). Per seed (JSON keys in parentheses): the drifted nodes
(``drifters``), the most nodes any concept holds after the drift (``max_per_concept``) and whether
every concept still fits in one group (``fits``), the simulated seconds from the drift until each
drifted node first recovered (``recovered_seconds``, None: never within the horizon) and the
slowest of them (``slowest``, None if one never recovered), and how often the nodes that did not
drift changed group meanwhile (``others_moved``: a drift should disturb no one else).

The summary splits the seeds in two, because a concept that overflows capacity must be split
over several groups, which is slower and not always possible for the newcomer: ``fits`` and
``overflows``, each with its count of seeds, the median and maximum of the slowest recoveries
that happened, the seeds slower than ``threshold`` or never recovered (``over_threshold``), and
those never recovered (``never``).
"""

from __future__ import annotations

import random
import statistics
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from typing import Any

from mycelium_p2p.node.events import DataChanged
from mycelium_p2p.node_config import NodeConfig
from mycelium_p2p.testing.memory_network import MemoryNetwork, SimNode, StoreFactory

#: Simulated seconds between two control steps of a node (as the node-logic tests run).
STEP_INTERVAL = 0.2
#: Simulated seconds between two looks at the drifted nodes: the resolution of the times.
CHECK_EVERY = 0.1


def drifters(nodes: int, seed: int) -> list[int]:
    """The nodes that drift: a third (at least one), the draw ``--scenario drift`` makes, so that
    a seed here drifts the nodes it drifts in a real experiment."""
    return sorted(random.Random(seed).sample(range(nodes), max(1, nodes // 3)))


def recovered(net: MemoryNetwork, node: SimNode) -> bool:
    """``node`` is in a group of its own concept only, with company if company exists."""
    if not node.alive or node.state.group_id is None:
        return False
    live = [n for n in net.live_nodes() if n is not node]
    others = [n for n in live if n.state.group_id == node.state.group_id]
    if any(n.concept != node.concept for n in others):
        return False
    return bool(others) or not any(n.concept == node.concept for n in live)


@dataclass(frozen=True)
class DriftSetup:
    """The network and its drift: N nodes of K concepts in groups of at most ``capacity``, with
    ``val_size`` validation samples each; the drift at ``drift_at`` simulated seconds, watched
    ``horizon`` seconds more."""

    nodes: int = 12
    concepts: int = 3
    capacity: int = 5
    drift_at: float = 45.0
    horizon: float = 60.0
    val_size: int = 100


def run_drift(seed: int, store: StoreFactory, setup: DriftSetup) -> dict[str, Any]:
    """One network, one drift (see the module docstring); its row of figures."""
    nodes, concepts, capacity = setup.nodes, setup.concepts, setup.capacity
    if concepts < 2:
        raise ValueError(f"drift needs at least 2 concepts, got {concepts}")
    started = time.perf_counter()
    config = NodeConfig.test().replace(group_capacity=capacity)
    net = MemoryNetwork(
        nodes,
        concepts,
        store,
        config=config,
        seed=seed,
        step_interval=STEP_INTERVAL,
        val_size=setup.val_size,
    )
    net.start()
    net.run_for(setup.drift_at)
    chosen = drifters(nodes, seed)
    moved = [net.nodes[i] for i in chosen]
    for node in moved:
        node.concept = (node.concept + 1) % concepts  # the network's bookkeeping (purity, here)
        node.events.append(DataChanged(node.concept))  # the fake learner's data is its concept
    migrations = {n.index: n.state.migrations for n in net.nodes}
    switched = net.now
    took: dict[int, float | None] = {n.index: None for n in moved}
    while net.now < switched + setup.horizon:
        net.clock.run_until(min(switched + setup.horizon, net.now + CHECK_EVERY))
        for node in moved:
            if took[node.index] is None and recovered(net, node):
                took[node.index] = round(net.now - switched, 2)
    per_concept = Counter(n.concept for n in net.nodes)
    times = list(took.values())
    return {
        "seed": seed,
        "drifters": chosen,
        "max_per_concept": max(per_concept.values()),
        "fits": max(per_concept.values()) <= capacity,
        "recovered_seconds": {str(i): s for i, s in took.items()},
        "slowest": None if None in times else max(t for t in times if t is not None),
        "others_moved": sum(
            n.state.migrations - migrations[n.index] for n in net.nodes if n.index not in chosen
        ),
        "wall_seconds": round(time.perf_counter() - started, 2),
    }


def summary(rows: list[dict[str, Any]], threshold: float) -> dict[str, Any]:
    """The slowest recoveries of some seeds: how many, median, worst, slow and never."""
    slowest = [r["slowest"] for r in rows]
    done = [s for s in slowest if s is not None]
    return {
        "seeds": len(rows),
        "median_slowest": statistics.median(done) if done else None,
        "max_slowest": max(done) if done else None,
        "over_threshold": sum(1 for s in slowest if s is None or s > threshold),
        "never": len(slowest) - len(done),
    }


def bench_drift(
    seeds: Iterable[int],
    store: StoreFactory,
    setup: DriftSetup,
    threshold: float = 9.0,
    progress: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """:func:`run_drift` on every seed; the settings, a row per seed and the summary by whether
    every concept fits in one group (``threshold``: default three re-evaluation intervals)."""
    rows = []
    for seed in seeds:
        rows.append(run_drift(seed, store, setup))
        if progress is not None:
            progress(rows[-1])
    return {
        **asdict(setup),
        "threshold": threshold,
        "runs": rows,
        "summary": {
            "fits": summary([r for r in rows if r["fits"]], threshold),
            "overflows": summary([r for r in rows if not r["fits"]], threshold),
        },
    }
