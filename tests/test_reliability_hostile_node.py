"""A node under faults it cannot prevent: a thread that dies, metrics the registry refuses.

Real registry (uvicorn on a thread, SQLite file), real node (ZeroMQ gossip), unless a test says
it fakes the registry's answers.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from bootstrap.server import RegistryServer
from bootstrap.store import LivenessConfig
from mycelium_p2p.gossip import GossipCore
from mycelium_p2p.learning.data import load_node_data
from mycelium_p2p.node import Node
from mycelium_p2p.node.events import Event, HeartbeatAnswered
from mycelium_p2p.node.heartbeats import Heartbeats
from mycelium_p2p.node.state import NodeState, Published
from mycelium_p2p.node_config import NodeConfig
from mycelium_p2p.registry_client import RegistryClient, RegistryError
from tests.helpers import wait_for


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[tuple[str, RegistryClient]]:
    # Silent nodes are dead after 3 s: a node that stops heartbeating is seen gone quickly.
    server = RegistryServer(tmp_path / "r.db", liveness=LivenessConfig(1.5, 3.0, 0.2))
    url = server.start()
    client = RegistryClient(url, retries=0)
    try:
        yield url, client
    finally:
        client.close()
        server.stop()


def started_node(url: str, name: str) -> Node:
    config = NodeConfig.test().replace(registry_url=url, name=name)
    node = Node(config, load_node_data("digits:iid", 0, 4, seed=0), node_id=name)
    node.start()
    return node


def status(client: RegistryClient, node_id: str) -> str:
    try:
        return client.node(node_id).status
    except RegistryError:  # not registered yet
        return "unknown"


@pytest.mark.slow
def test_a_node_whose_gossip_thread_dies_says_so_leaves_and_stops(
    registry: tuple[str, RegistryClient],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    url, client = registry
    node = started_node(url, "doomed")
    try:
        wait_for(lambda: node.group_id is not None, 30, what="the node in a group")
        wait_for(lambda: status(client, "doomed") == "alive", 10, what="registered")

        def broken(self: GossipCore, now: float) -> float:
            raise SystemExit("injected: the gossip loop breaks outside any contained unit")

        with caplog.at_level(logging.ERROR, logger="mycelium.node"):
            monkeypatch.setattr(GossipCore, "next_due", broken)
            # No zombie that heartbeats with dead gossip: it leaves the registry and stops.
            wait_for(lambda: status(client, "doomed") == "gone", 15, what="the node gone")
            wait_for(lambda: node.phase.value == "stopped", 10, what="the node stopped")
        assert node.failure is not None and "gossip" in node.failure
        lines = [r.getMessage() for r in caplog.records if " died; leaving" in r.getMessage()]
        assert len(lines) == 1, lines
        print(lines[0])
    finally:
        monkeypatch.undo()
        node.stop()


@pytest.mark.slow
def test_metrics_out_of_range_never_cost_a_node_its_liveness(
    registry: tuple[str, RegistryClient], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Once a group's figures went wrong (a member lied), every heartbeat carried them, the
    registry refused each one (400) and expired the node: a refusal expelled the innocent."""
    url, client = registry
    bad = Published(group=None, accuracy=1.5, loss=float("inf"), round=2**60)
    monkeypatch.setattr(NodeState, "publishable", lambda self, record: bad)
    node = started_node(url, "honest")
    try:
        wait_for(lambda: status(client, "honest") == "alive", 10, what="registered")
        first = client.node("honest").last_seen
        # Long past the registry's 3 s to death, heartbeats still count.
        wait_for(lambda: client.node("honest").last_seen > first + 4.0, 15, what="4 s later")
        assert status(client, "honest") == "alive"
    finally:
        node.stop()


def test_a_refused_heartbeat_is_sent_again_at_once_without_the_refused_fields() -> None:
    """A registry stricter than this node (another version, say) refuses one metric: the node
    keeps its liveness by sending the heartbeat again without that field. (Faked registry.)"""
    bodies: list[dict[str, object]] = []

    def answer(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        bodies.append(body)
        if body.get("accuracy") is not None:
            error = {"message": "Expected `float` <= 0.5", "key": "accuracy", "source": "body"}
            detail = {"status_code": 400, "detail": "Validation failed", "extra": [error]}
            return httpx.Response(400, json=detail)
        return httpx.Response(200, json=node_out("n"))

    client = RegistryClient("http://registry.invalid", transport=httpx.MockTransport(answer))
    posted: list[Event] = []
    figures = Published(group=None, epoch=3, accuracy=0.9, loss=0.3, round=4)
    try:
        Heartbeats(client, "n", "n", lambda: figures, posted.append).beat()
    finally:
        client.close()
    assert [sorted(b) for b in bodies] == [
        ["accuracy", "loss", "round"],
        ["accuracy", "loss", "round"],
    ]
    assert bodies[1]["accuracy"] is None and bodies[1]["loss"] == 0.3
    assert posted == [HeartbeatAnswered(3, None)]  # the answer reached the control thread


def node_out(node_id: str) -> dict[str, object]:
    return {
        "id": node_id,
        "name": node_id,
        "status": "alive",
        "group": None,
        "gossip_address": "127.0.0.1:1",
        "flower_address": None,
        "model": None,
        "data": {},
        "metrics": {"accuracy": None, "loss": None, "round": None},
        "registered_at": 1.0,
        "last_seen": 1.0,
    }
