"""Gossip over real ZeroMQ TCP on loopback: in one process, across processes, with CURVE."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest

from mycelium_p2p.config import GossipConfig
from mycelium_p2p.gossip import GossipEvent, GossipNode
from mycelium_p2p.groups import GroupRecord
from tests.helpers import wait_until

CFG = GossipConfig.test()


def _node(made: list[GossipNode], name: str, **kw: object) -> GossipNode:
    n = GossipNode(name, kw.pop("config", CFG), **kw)  # type: ignore[arg-type]
    n.start()
    made.append(n)
    return n


def _status(node: GossipNode, node_id: str) -> str | None:
    return next((m.status for m in node.members() if m.id == node_id), None)


@pytest.mark.slow
def test_twenty_nodes_join_converge_and_leave(nodes: list[GossipNode]) -> None:
    seed = _node(nodes, "n00", meta={"group": "g-1"}, registry_url="http://reg:8080")
    events: list[GossipEvent] = []
    seed.subscribe(events.append)
    for i in range(1, 20):
        n = _node(nodes, f"n{i:02d}", meta={"group": "g-1" if i < 5 else ""})
        assert n.join([seed.address], timeout=3.0)
    assert nodes[5].registry_url == "http://reg:8080"
    assert wait_until(lambda: all(len(n.members()) == 20 for n in nodes), 15.0)
    rec = GroupRecord(
        "g-1",
        name="digits",
        leader="n00",
        leader_address=seed.address,
        members=tuple(seed.group_members("g-1")),
        term=1,
        version=seed.next_version("g-1", 1),
        accuracy=0.8,
    )
    assert rec.members == ("n00", "n01", "n02", "n03", "n04")
    assert seed.publish_group(rec)
    assert not seed.publish_group(rec)  # not strictly newer
    assert not nodes[3].publish_group(GroupRecord("g-2", leader="n00"))  # not its leader
    assert wait_until(lambda: all(n.groups().get("g-1") == rec for n in nodes), 10.0)
    assert any(e.kind == "group_updated" for e in events)
    leaver = nodes.pop(7)
    leaver.leave(timeout=1.0)
    assert wait_until(lambda: all(_status(n, "n07") == "left" for n in nodes), 10.0)
    assert all(m.status == "alive" for n in nodes for m in n.members() if m.id != "n07"), (
        "no false suspicion survived"
    )
    s = seed.stats()
    assert s["frames_in"] > 0 and s["bytes_out"] > 0 and set(s["drops"]) >= {"malformed"}


@pytest.mark.slow
def test_model_request_and_meta_update(nodes: list[GossipNode]) -> None:
    a = _node(nodes, "a")
    b = _node(nodes, "b", observer=True)
    assert b.join([a.address], timeout=3.0)
    a.set_model_provider(lambda gid: (7, b"weights-" + gid.encode()) if gid == "g-1" else None)
    assert b.request_model(a.address, "g-1", timeout=3.0) == (7, b"weights-g-1")
    assert b.request_model(a.address, "g-x", timeout=3.0) is None
    a.update_meta(group="g-1", accuracy=0.9)
    assert wait_until(
        lambda: any(m.id == "a" and m.node_meta.group == "g-1" for m in b.members()), 5.0
    )
    with pytest.raises(ValueError):
        a.update_meta(blob="x" * 10_000)
    with pytest.raises(ValueError):
        b.update_meta(group="g-1")
    assert next(m for m in a.members() if m.id == "b").node_meta.role == "observer"


@pytest.mark.slow
def test_curve_admits_only_the_same_secret(nodes: list[GossipNode]) -> None:
    a = _node(nodes, "s1", secret="hunter2")
    b = _node(nodes, "s2", secret="hunter2")
    assert b.join([a.address], timeout=3.0)
    assert wait_until(lambda: _status(a, "s2") == "alive", 5.0)
    c = _node(nodes, "s3", secret="other")
    d = _node(nodes, "s4")  # no secret: plaintext
    assert not c.join([a.address], timeout=1.0)
    assert not d.join([a.address], timeout=1.0)
    assert {m.id for m in a.members()} == {"s1", "s2"}
    assert a.stats()["frames_in"] > 0
    assert c.members()[0].id == "s3" and len(c.members()) == 1


def _spawn(name: str, seed: str) -> tuple[subprocess.Popen[str], dict[str, object]]:
    env = dict(os.environ, PYTHONPATH=os.getcwd())
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mycelium_p2p.gossip",
            "--id",
            name,
            "--seed",
            seed,
            "--preset",
            "test",
        ],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    return proc, json.loads(line)


@pytest.mark.slow
def test_processes_sigkill_detected_and_sigterm_leaves(nodes: list[GossipNode]) -> None:
    hub = _node(nodes, "hub")
    procs = []
    try:
        for i in range(3):
            proc, info = _spawn(f"p{i}", hub.address)
            assert info["joined"] is True
            procs.append(proc)
        assert wait_until(lambda: len(hub.members()) == 4, 10.0)
        procs[0].send_signal(signal.SIGKILL)
        assert wait_until(lambda: _status(hub, "p0") == "dead", 20.0)
        procs[1].send_signal(signal.SIGTERM)
        assert procs[1].wait(timeout=10) == 0
        assert wait_until(lambda: _status(hub, "p1") == "left", 5.0)
        assert _status(hub, "p2") == "alive"
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
            p.wait(timeout=5)
