"""Data sources against a real registry (uvicorn on port 0, SQLite file) and real gossip."""

from __future__ import annotations

import random
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import wait_until
from viz.scene import NetworkView, Scene
from viz.sources import (
    GossipSource,
    RegistrySnapshotSource,
    SourceError,
    StaticSource,
    SyntheticSource,
)

MODEL = "mlp:1x8x8:10"


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[str]:
    from bootstrap.server import RegistryServer

    server = RegistryServer(tmp_path / "registry.db")
    url = server.start()
    try:
        yield url
    finally:
        server.stop()


def populate(url: str) -> dict[str, str]:
    """Four nodes, two groups, one migration, one performance report; returns group ids."""
    from mycelium_p2p.registry_client import RegistryClient

    with RegistryClient(url) as c:
        for i in range(4):
            c.register(f"n{i}", f"node-{i}", f"127.0.0.1:{20000 + i}", None, MODEL)
        a = c.create_group("alpha", "n0", "127.0.0.1:1", MODEL).id
        b = c.create_group("beta", "n1", "127.0.0.1:2", MODEL).id
        c.join_group("n2", a)
        c.join_group("n3", a)
        c.join_group("n3", b)  # a migration
        c.report_performance(a, "n0", 1, 0.75, 0.5, 3, 120)
    return {"alpha": a, "beta": b}


def _gossip_available() -> bool:
    try:
        import mycelium_p2p.gossip  # noqa: F401
    except ImportError:
        return False
    return True


@pytest.mark.slow
def test_registry_snapshot_source_shows_the_real_network(registry: str) -> None:
    ids = populate(registry)
    source = RegistrySnapshotSource(registry)
    assert source.view().groups == ()  # not fetched yet
    source.start()
    view = source.view()
    groups = {g.name: g for g in view.groups}
    assert set(groups) == {"alpha", "beta"}
    assert groups["alpha"].id == ids["alpha"] and groups["alpha"].leader == "n0"
    assert groups["alpha"].members == ("n0", "n2") and groups["beta"].members == ("n1", "n3")
    assert groups["alpha"].accuracy == 0.75 and groups["alpha"].round == 3
    assert {n.id: n.group for n in view.nodes} == {
        "n0": ids["alpha"],
        "n1": ids["beta"],
        "n2": ids["alpha"],
        "n3": ids["beta"],
    }
    texts = [e.text for e in view.events]
    assert "node-3 migrated alpha -> beta" in texts
    assert "group alpha created by node-0" in texts
    assert registry in str(view.stats["registry"])
    scene = Scene()
    scene.update(view)
    assert len(scene.hubs) == 2 and len(scene.nodes) == 4
    source.close()


def test_registry_sources_fail_clearly_when_nobody_answers() -> None:
    import socket

    with socket.socket() as s:  # a port that was free a moment ago: nothing listens there
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    with pytest.raises(SourceError, match=url):
        RegistrySnapshotSource(url).start()
    with pytest.raises(SourceError):
        GossipSource(bootstrap=url).start()
    with pytest.raises(ValueError, match="peers or a bootstrap"):
        GossipSource()


@pytest.mark.slow
@pytest.mark.skipif(not _gossip_available(), reason="mycelium_p2p.gossip not written yet")
def test_gossip_source_waits_for_peers_and_shows_the_snapshot_meanwhile(registry: str) -> None:
    from mycelium_p2p.config import GossipConfig

    populate(registry)  # registered gossip addresses nobody listens on
    source = GossipSource(
        bootstrap=registry, config=GossipConfig.test(), join_timeout=0.5, retry_every=0.1
    )
    source.start()
    try:
        view = source.view()
        assert not source.joined
        assert {g.name for g in view.groups} == {"alpha", "beta"} and len(view.nodes) == 4
        assert "waiting for gossip peers" in str(view.stats["registry"])
        assert any("migrated" in e.text for e in view.events)
    finally:
        source.close()
    source.close()  # twice is fine


def test_static_and_synthetic_sources() -> None:
    clock = [50.0]
    static = StaticSource(NetworkView(1.0), clock=lambda: clock[0])
    static.start()
    assert static.view().time == 50.0
    synthetic = SyntheticSource(12, 3, rng=random.Random(5), clock=lambda: clock[0])
    synthetic.start()
    seen_groups = set()
    for _ in range(40):
        clock[0] += 0.5
        view = synthetic.view()
        seen_groups |= {g.id for g in view.groups}
    assert len(seen_groups) == 3 and len(view.nodes) == 12
    assert any(e.kind == "migrated" for e in view.events)
    with pytest.raises(ValueError):
        SyntheticSource(0, 1)


@pytest.mark.slow
@pytest.mark.skipif(not _gossip_available(), reason="mycelium_p2p.gossip not written yet")
def test_gossip_source_observes_real_nodes_over_zeromq() -> None:
    from mycelium_p2p.config import GossipConfig
    from mycelium_p2p.gossip import GossipNode
    from mycelium_p2p.groups import GroupRecord

    config = GossipConfig.test()
    nodes = []
    for i in range(3):
        meta = {"name": f"node-{i}", "role": "node", "group": "g-1", "model": MODEL,
                "flower_address": "", "accuracy": 0.5 + 0.1 * i, "round": 1}  # fmt: skip
        node = GossipNode(f"n{i}", config, meta=meta)
        node.start()
        nodes.append(node)
    source = GossipSource([nodes[0].address], config=config, join_timeout=5.0)
    try:
        for node in nodes[1:]:
            assert node.join([nodes[0].address], timeout=5.0)
        record = GroupRecord(
            id="g-1", name="ones", leader="n0", leader_address=nodes[0].address,
            flower_address="127.0.0.1:1", members=("n0", "n1", "n2"), model=MODEL, capacity=5,
            accuracy=0.8, loss=0.3, round=4, examples=90, term=1, version=1, dissolved=False,
            updated_at=time.time(),
        )  # fmt: skip
        assert nodes[0].publish_group(record)
        source.start()

        def sees_everyone() -> bool:
            view = source.view()
            alive = {n.id for n in view.nodes if n.status == "alive" and n.role == "node"}
            return alive == {"n0", "n1", "n2"} and [g.id for g in view.groups] == ["g-1"]

        assert wait_until(sees_everyone, 15.0)
        view = source.view()
        assert view.groups[0].accuracy == 0.8 and view.groups[0].leader == "n0"
        assert {n.group for n in view.nodes if n.role == "node"} == {"g-1"}
        nodes[2].leave(timeout=2.0)
        assert wait_until(
            lambda: any(e.text == "node-2 is gone" for e in source.view().events), 15.0
        )  # fmt: skip
    finally:
        source.close()
        for node in nodes:
            node.stop()
