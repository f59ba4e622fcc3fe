"""1,000 gossip nodes on the in-memory network with a fake clock."""

from __future__ import annotations

import pytest

from mycelium_p2p.config import GossipConfig
from mycelium_p2p.gossip import SimCluster
from mycelium_p2p.gossip.bench import group_cluster, holders, publish
from mycelium_p2p.gossip.membership import suspicion_bounds
from mycelium_p2p.groups import GroupRecord

N = 1000


def _publish(cluster: SimCluster) -> None:
    leader = next(iter(cluster.cores.values()))
    rec = GroupRecord("g-1", leader=leader.node_id, term=1, version=1, accuracy=0.5)
    assert publish(cluster, rec)


@pytest.mark.slow
def test_thousand_nodes_spread_and_detect_without_false_deaths() -> None:
    cfg = GossipConfig.lan()
    c = group_cluster(N, cfg, seed=11)
    c.run_until(2.0)
    _publish(c)
    assert c.run_while(lambda: holders(c, "g-1", (1, 1)) < N, 10.0, cfg.gossip_interval)
    victim = list(c.cores)[123]
    vid = c.cores[victim].node_id
    c.kill(victim)
    killed_at = c.now
    _, high, _ = suspicion_bounds(cfg, N)
    bound = high + 5 * cfg.probe_interval
    assert c.run_while(lambda: c.declared_dead(vid) < N - 1, bound, 0.5)
    assert c.now - killed_at <= bound
    assert c.false_deaths == 0


@pytest.mark.slow
def test_thousand_nodes_converge_with_ten_percent_loss() -> None:
    cfg = GossipConfig.lan()
    c = group_cluster(N, cfg, seed=12, loss=0.1)
    c.run_until(2.0)
    _publish(c)
    assert c.run_while(lambda: holders(c, "g-1", (1, 1)) < N, 30.0, cfg.gossip_interval)
