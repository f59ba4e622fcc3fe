"""``mycelium bench gossip``: spread and detection on the in-memory network and on ZeroMQ.

For each N (and loss rate) a ``SimCluster`` on a fake clock publishes one group record and
counts gossip rounds (``gossip_interval`` each) until 50 %, 99 % and 100 % of live nodes hold
it, then kills one node and times until every live node declares it dead. A real-ZeroMQ run
does the same with N threaded ``GossipNode``s in this process (wall clock). Results sit beside
Serf's analytic epidemic curve ``1/(1 + (N+1) e^{-1.5 r})`` (fanout 3).
"""

from __future__ import annotations

import gc
import math
import time
from typing import Any

from mycelium_p2p.config import GossipConfig
from mycelium_p2p.gossip.membership import suspicion_bounds
from mycelium_p2p.gossip.sim import SimCluster
from mycelium_p2p.groups import GossipNode, GroupDelegate, GroupRecord


def analytic_rounds(n: int, fraction: float) -> float:
    """Rounds r at which ``1/(1+(N+1)e^{-1.5r})`` reaches ``fraction`` (fanout 3)."""
    return math.log((n + 1) * fraction / (1.0 - fraction)) / 1.5


def _rounds(times: dict[float, float | None], interval: float) -> dict[float, float | None]:
    return {f: (None if t is None else round(t / interval, 1)) for f, t in times.items()}


def group_cluster(n: int, config: GossipConfig, **kw: Any) -> SimCluster:
    """A ``SimCluster`` whose nodes carry groups (a ``GroupDelegate`` each)."""
    return SimCluster(n, config, delegate=lambda: GroupDelegate(config.tombstone_ttl), **kw)


def publish(cluster: SimCluster, record: GroupRecord, address: str | None = None) -> bool:
    """Publish ``record`` from the node at ``address`` (default: the first node)."""
    address = address or next(iter(cluster.cores))
    return cluster.delegates[address].publish(record, cluster.now)


def holders(cluster: SimCluster, group_id: str, version: tuple[int, int]) -> int:
    """Live nodes holding ``group_id`` at ``(term, version)`` or newer."""
    n = 0
    for address, delegate in cluster.delegates.items():
        r = delegate.table.get(group_id)
        if r is not None and r.order >= version and address not in cluster.dead:
            n += 1
    return n


def run_sim(n: int, loss: float, fanout: int, seed: int = 1) -> dict[str, Any]:
    """One simulated run; returns a JSON row."""
    cfg = GossipConfig.lan().replace(fanout=fanout)
    # The cluster holds N^2 references that live to the end of the run (10^8 at 10,000 nodes):
    # the cyclic collector would walk them again and again, for nothing (a run makes next to no
    # cyclic garbage; the cluster itself is freed afterwards).
    enabled = gc.isenabled()
    gc.disable()
    try:
        return _run_sim(group_cluster(n, cfg, seed=seed, loss=loss), cfg, n, loss, fanout)
    finally:
        if enabled:
            gc.enable()


def _run_sim(c: SimCluster, cfg: GossipConfig, n: int, loss: float, fanout: int) -> dict[str, Any]:
    c.run_until(2.0)
    sent0, bytes0, t_start = c.net.stats["sent"], c.net.stats["bytes"], c.now
    leader = next(iter(c.cores.values()))
    publish(c, GroupRecord("g-b", leader=leader.node_id, term=1, version=1))
    t0 = c.now
    reached: dict[float, float | None] = {0.5: None, 0.99: None, 1.0: None}
    deadline = t0 + 60.0
    while c.now < deadline and reached[1.0] is None:
        c.run_until(c.now + cfg.gossip_interval / 4)
        frac = holders(c, "g-b", (1, 1)) / n
        for f in reached:
            if reached[f] is None and frac >= f:
                reached[f] = c.now - t0
    victim = list(c.cores)[n // 2]
    vid = c.cores[victim].node_id
    c.kill(victim)
    t_kill = c.now
    bound = suspicion_bounds(cfg, n)[1] + 10 * cfg.probe_interval
    detected = c.run_while(lambda: c.declared_dead(vid) < n - 1, bound, 0.25)
    elapsed = c.now - t_start
    rounds = _rounds(reached, cfg.gossip_interval)
    return {
        "nodes": n,
        "loss": loss,
        "fanout": fanout,
        "transport": "memory",
        "rounds_to_50": rounds[0.5],
        "rounds_to_99": rounds[0.99],
        "rounds_to_100": rounds[1.0],
        "seconds_to_100": None if reached[1.0] is None else round(reached[1.0], 3),
        "detect_seconds": round(c.now - t_kill, 2) if detected else None,
        "false_deaths": c.false_deaths,
        "msgs_per_node_per_s": round((c.net.stats["sent"] - sent0) / n / elapsed, 2),
        "bytes_per_node_per_s": round((c.net.stats["bytes"] - bytes0) / n / elapsed, 1),
    }


def run_zmq(n: int, fanout: int) -> dict[str, Any]:
    """N threaded nodes over ZeroMQ on loopback in this process (wall-clock timings)."""
    cfg = GossipConfig.lan().replace(fanout=fanout)
    nodes = [GossipNode(f"z{i:03d}", cfg) for i in range(n)]
    try:
        for node in nodes:
            node.start()
        for node in nodes[1:]:
            node.join([nodes[0].address or ""], timeout=5.0)
        _wait(lambda: all(len(x.members()) == n for x in nodes), 60.0)
        before = [x.stats() for x in nodes]
        t_start = time.monotonic()
        nodes[0].publish_group(GroupRecord("g-z", leader="z000", term=1, version=1))
        t0 = time.monotonic()
        reached: dict[float, float | None] = {0.5: None, 0.99: None, 1.0: None}
        while time.monotonic() - t0 < 30.0 and reached[1.0] is None:
            frac = sum("g-z" in x.groups() for x in nodes) / n
            for f in reached:
                if reached[f] is None and frac >= f:
                    reached[f] = time.monotonic() - t0
            time.sleep(0.01)
        victim = nodes.pop(n // 2)
        victim.stop()  # a crash: no leave announced
        t_kill = time.monotonic()
        gone = _wait(
            lambda: all(
                next((m.status for m in x.members() if m.id == victim.node_id), "dead") == "dead"
                for x in nodes
            ),
            suspicion_bounds(cfg, n)[1] + 10 * cfg.probe_interval,
        )
        detect = time.monotonic() - t_kill
        after = [x.stats() for x in nodes]
        elapsed = time.monotonic() - t_start
        idx = [i for i in range(n) if i != n // 2]
        msgs = sum(after[j]["frames_out"] - before[i]["frames_out"] for j, i in enumerate(idx))
        nbytes = sum(after[j]["bytes_out"] - before[i]["bytes_out"] for j, i in enumerate(idx))
        rounds = _rounds(reached, cfg.gossip_interval)
        return {
            "nodes": n,
            "loss": 0.0,
            "fanout": fanout,
            "transport": "zmq",
            "rounds_to_50": rounds[0.5],
            "rounds_to_99": rounds[0.99],
            "rounds_to_100": rounds[1.0],
            "seconds_to_100": None if reached[1.0] is None else round(reached[1.0], 3),
            "detect_seconds": round(detect, 2) if gone else None,
            "false_deaths": sum(
                1
                for x in nodes
                for m in x.members()
                if m.status == "dead" and m.id != victim.node_id
            ),
            "msgs_per_node_per_s": round(msgs / (n - 1) / elapsed, 2),
            "bytes_per_node_per_s": round(nbytes / (n - 1) / elapsed, 1),
        }
    finally:
        for node in nodes:
            node.stop()


def _wait(pred: Any, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.05)
    return bool(pred())
