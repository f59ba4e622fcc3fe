"""Registry API through Litestar's test client: every endpoint and every error code."""

from __future__ import annotations

import random
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from litestar.testing import TestClient

from bootstrap.app import create_app
from bootstrap.store import LivenessConfig

MODEL = "mlp:1x8x8:10"


class FakeClock:
    def __init__(self, now: float = 1_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def client(tmp_path: Path, clock: FakeClock) -> Iterator[TestClient[Any]]:
    app = create_app(
        tmp_path / "r.db",
        liveness=LivenessConfig(suspect_after=10, dead_after=30),
        clock=clock,
        rng=random.Random(1),
        expiry=False,
    )
    with TestClient(app) as c:
        yield c


def register(c: TestClient[Any], node_id: str, model: str | None = MODEL, **extra: Any) -> Any:
    body = {"id": node_id, "name": f"name-{node_id}", "gossip_address": "127.0.0.1:7000"}
    body.update({"model": model, **extra})
    r = c.post("/nodes/register", json=body)
    assert r.status_code == 200, r.text
    return r.json()


def found(c: TestClient[Any], group_id: str, leader: str, **extra: Any) -> Any:
    body = {"id": group_id, "name": group_id, "leader": leader, "flower_address": "h:1"}
    body.update({"model": MODEL, **extra})
    r = c.post("/groups", json=body)
    assert r.status_code == 201, r.text
    return r.json()


def kinds(c: TestClient[Any], after: int = 0) -> list[str]:
    return [e["kind"] for e in c.get("/events", params={"after": after}).json()]


def test_register_is_idempotent_and_listed(client: TestClient[Any]) -> None:
    first = register(client, "n1", data={"samples": 120})
    again = register(client, "n1", data={"samples": 130})
    assert first["registered_at"] == again["registered_at"]
    nodes = client.get("/nodes").json()
    assert [n["id"] for n in nodes] == ["n1"]
    node = nodes[0]
    assert node["status"] == "alive" and node["group"] is None
    assert node["data"] == {"samples": 130} and node["gossip_address"] == "127.0.0.1:7000"
    assert client.get("/nodes/n1").json()["name"] == "name-n1"
    assert kinds(client) == ["registered"]


def test_group_shape_and_join_leave(client: TestClient[Any]) -> None:
    for n in ("a", "b"):
        register(client, n)
    g = found(client, "g1", "a", capacity=3)
    for key in ("id", "name", "leader", "term", "flower_address", "members", "capacity", "model"):
        assert key in g
    assert g["metrics"] == {"accuracy": None, "loss": None, "round": 0, "examples": 0}
    assert (g["leader"], g["term"], g["members"], g["status"]) == ("a", 1, ["a"], "active")
    joined = client.post("/groups/join", json={"node_id": "b", "group_id": "g1"}).json()
    assert joined["members"] == ["a", "b"] and joined["version"] == g["version"] + 1
    # Joining the same group again is a no-op.
    same = client.post("/groups/join", json={"node_id": "b", "group_id": "g1"}).json()
    assert same["version"] == joined["version"]
    left = client.post("/groups/leave", json={"node_id": "b"}).json()
    assert left["group"] is None
    assert client.get("/groups/g1").json()["members"] == ["a"]
    assert kinds(client)[-3:] == ["joined", "joined", "left"]


def test_migration_is_one_event_and_empty_group_dissolves(client: TestClient[Any]) -> None:
    for n in ("a", "b"):
        register(client, n)
    found(client, "g1", "a")
    found(client, "g2", "b")
    mark = client.get("/events").json()[-1]["id"]
    r = client.post("/groups/join", json={"node_id": "a", "group_id": "g2", "reason": "better"})
    assert r.status_code == 200 and r.json()["members"] == ["a", "b"]
    events = client.get("/events", params={"after": mark}).json()
    assert [e["kind"] for e in events] == ["dissolved", "migrated"]
    migrated = events[1]["data"]
    assert migrated == {"from": "g1", "to": "g2", "reason": "better"}
    assert [g["id"] for g in client.get("/groups").json()] == ["g2"]
    every = client.get("/groups", params={"all": "true"}).json()
    assert {g["id"]: g["status"] for g in every} == {"g1": "dissolved", "g2": "active"}
    # A node is never in two groups.
    assert client.get("/nodes/a").json()["group"] == "g2"


def test_full_group_is_409(client: TestClient[Any]) -> None:
    for n in ("a", "b", "c"):
        register(client, n)
    found(client, "g1", "a", capacity=2)
    assert client.post("/groups/join", json={"node_id": "b", "group_id": "g1"}).status_code == 200
    r = client.post("/groups/join", json={"node_id": "c", "group_id": "g1"})
    assert r.status_code == 409 and "full" in r.json()["detail"]


def test_invite_only_and_model_mismatch(client: TestClient[Any]) -> None:
    for n in ("a", "b", "c"):
        register(client, n)
    register(client, "other", model="cnn:1x8x8:10")
    found(client, "g1", "a", join_policy="invite-only", invited=["b"])
    assert client.post("/groups/join", json={"node_id": "b", "group_id": "g1"}).status_code == 200
    r = client.post("/groups/join", json={"node_id": "c", "group_id": "g1"})
    assert r.status_code == 403 and "invite-only" in r.json()["detail"]
    found(client, "g2", "c")
    r = client.post("/groups/join", json={"node_id": "other", "group_id": "g2"})
    assert r.status_code == 409 and "model spec" in r.json()["detail"]


def test_unknown_ids_are_404(client: TestClient[Any]) -> None:
    register(client, "a")
    found(client, "g1", "a")
    perf = {"node_id": "a", "term": 1, "accuracy": 0.5, "loss": 1.0, "round": 1, "examples": 9}
    claim = {"node_id": "a", "term": 2, "flower_address": "h:2"}
    cases = [
        client.post("/nodes/ghost/heartbeat", json={}),
        client.delete("/nodes/ghost"),
        client.get("/nodes/ghost"),
        client.get("/groups/nope"),
        client.post("/groups/join", json={"node_id": "ghost", "group_id": "g1"}),
        client.post("/groups/join", json={"node_id": "a", "group_id": "nope"}),
        client.post("/groups/leave", json={"node_id": "ghost"}),
        client.put("/groups/nope/performance", json=perf),
        client.put("/groups/nope/leader", json=claim),
        client.post("/groups", json={"name": "x", "leader": "ghost", "flower_address": "h:1",
                                     "model": MODEL}),
    ]  # fmt: skip
    for r in cases:
        assert r.status_code == 404, r.text
        assert "unknown" in r.json()["detail"]


def test_duplicate_group_id_is_409(client: TestClient[Any]) -> None:
    register(client, "a")
    register(client, "b")
    found(client, "g1", "a")
    body = {"id": "g1", "name": "again", "leader": "b", "flower_address": "h:1", "model": MODEL}
    r = client.post("/groups", json=body)
    assert r.status_code == 409 and "already exists" in r.json()["detail"]


def test_generated_group_id(client: TestClient[Any]) -> None:
    register(client, "a")
    body = {"name": "anon", "leader": "a", "flower_address": "h:1", "model": MODEL}
    g = client.post("/groups", json=body).json()
    assert re.fullmatch(r"g-[0-9a-f]{8}", g["id"])


def test_performance_only_from_leader_of_current_term(client: TestClient[Any]) -> None:
    register(client, "a")
    register(client, "b")
    found(client, "g1", "a")
    client.post("/groups/join", json={"node_id": "b", "group_id": "g1"})
    perf = {"node_id": "a", "term": 1, "accuracy": 0.8, "loss": 0.4, "round": 3, "examples": 90}
    r = client.put("/groups/g1/performance", json=perf)
    assert r.status_code == 200
    assert r.json()["metrics"] == {"accuracy": 0.8, "loss": 0.4, "round": 3, "examples": 90}
    r = client.put("/groups/g1/performance", json={**perf, "node_id": "b"})
    assert r.status_code == 409 and "not the leader" in r.json()["detail"]
    r = client.put("/groups/g1/performance", json={**perf, "term": 7})
    assert r.status_code == 409 and "stale term" in r.json()["detail"]


def test_leader_claim_compare_and_set(client: TestClient[Any]) -> None:
    for n in ("a", "b", "c", "outsider"):
        register(client, n)
    found(client, "g1", "a")
    for n in ("b", "c"):
        client.post("/groups/join", json={"node_id": n, "group_id": "g1"})
    claim = {"node_id": "b", "term": 2, "flower_address": "h:2"}
    first = client.put("/groups/g1/leader", json=claim)
    second = client.put("/groups/g1/leader", json={**claim, "node_id": "c"})
    assert first.status_code == 200 and second.status_code == 409
    g = client.get("/groups/g1").json()
    assert (g["leader"], g["term"], g["flower_address"]) == ("b", 2, "h:2")
    r = client.put("/groups/g1/leader", json={**claim, "node_id": "outsider", "term": 3})
    assert r.status_code == 409 and "not a live member" in r.json()["detail"]
    assert kinds(client)[-1] == "leader-changed"


def test_leader_leaving_makes_group_leaderless(client: TestClient[Any]) -> None:
    register(client, "a")
    register(client, "b")
    found(client, "g1", "a")
    client.post("/groups/join", json={"node_id": "b", "group_id": "g1"})
    client.post("/groups/leave", json={"node_id": "a"})
    g = client.get("/groups/g1").json()
    assert (g["leader"], g["status"]) == (None, "leaderless")
    claim = {"node_id": "b", "term": 2, "flower_address": "h:9"}
    g = client.put("/groups/g1/leader", json=claim).json()
    assert (g["leader"], g["status"]) == ("b", "active")


def test_deregister_marks_gone(client: TestClient[Any]) -> None:
    register(client, "a")
    found(client, "g1", "a")
    r = client.delete("/nodes/a")
    assert r.status_code == 200 and r.json()["status"] == "gone"
    assert client.get("/groups").json() == []
    r = client.post("/nodes/a/heartbeat", json={})
    assert r.status_code == 409 and "register" in r.json()["detail"]
    assert client.get("/peers").json() == []
    assert kinds(client)[-3:] == ["left", "dissolved", "removed"]


def test_heartbeat_metrics_peers_network_health(client: TestClient[Any], clock: FakeClock) -> None:
    for i in range(5):
        register(client, f"n{i}", gossip_address=f"127.0.0.1:{7000 + i}")
    clock.now += 5
    r = client.post("/nodes/n1/heartbeat", json={"accuracy": 0.75, "loss": 0.5, "round": 4})
    assert r.status_code == 200
    assert r.json()["metrics"] == {"accuracy": 0.75, "loss": 0.5, "round": 4}
    assert r.json()["last_seen"] == clock.now
    named = r.json()["peers"]  # a few other live nodes: how gossip islands find each other
    assert len(named) == 3 and len(set(named)) == 3 and "127.0.0.1:7001" not in named
    assert set(named) <= {f"127.0.0.1:{7000 + i}" for i in range(5)}
    peers = client.get("/peers", params={"limit": 3}).json()
    assert len(peers) == 3 and len(set(peers)) == 3
    assert all(re.fullmatch(r"127\.0\.0\.1:70\d\d", p) for p in peers)
    assert len(client.get("/peers", params={"limit": 50}).json()) == 5
    snap = client.get("/network", params={"events": 2}).json()
    assert set(snap) == {"time", "groups", "nodes", "events"}
    assert len(snap["nodes"]) == 5 and len(snap["events"]) == 2
    assert snap["events"][-1]["id"] == 5
    health = client.get("/health").json()
    assert health["status"] == "ok" and health["schema_version"] == 1


def test_events_after_pages(client: TestClient[Any]) -> None:
    for i in range(4):
        register(client, f"n{i}")
    ids = [e["id"] for e in client.get("/events").json()]
    assert ids == sorted(ids) and len(ids) == 4
    assert [e["id"] for e in client.get("/events", params={"after": ids[1]}).json()] == ids[2:]
    assert len(client.get("/events", params={"limit": 1}).json()) == 1


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/nodes/register", {"id": "a", "name": "x"}),  # missing field
        ("/nodes/register", {"id": 5, "name": "x", "gossip_address": "h:1"}),  # wrong type
        ("/nodes/register", {"id": "a b", "name": "x", "gossip_address": "h:1"}),  # bad id
        ("/nodes/register", {"id": "a", "name": "x", "gossip_address": "nope"}),  # bad address
        ("/nodes/register", {"id": "a", "name": "x", "gossip_address": "h:1", "zzz": 1}),
        ("/groups", {"name": "g", "leader": "a", "flower_address": "h:1", "model": "m",
                     "capacity": 0}),
        ("/groups", {"name": "g", "leader": "a", "flower_address": "h:1", "model": "m",
                     "join_policy": "closed"}),
        ("/nodes/a/heartbeat", {"accuracy": 1.5}),
        ("/nodes/a/heartbeat", {"round": 2**70}),
        ("/groups/join", {"node_id": "a"}),
    ],
)  # fmt: skip
def test_bad_input_is_400(client: TestClient[Any], path: str, body: Any) -> None:
    register(client, "a")
    r = client.post(path, json=body)
    assert r.status_code == 400, r.text
    assert r.json()["detail"]


def test_malformed_json_is_400_and_oversize_is_413(client: TestClient[Any]) -> None:
    headers = {"Content-Type": "application/json"}
    r = client.post("/nodes/register", content=b'{"id": ', headers=headers)
    assert r.status_code == 400 and r.json()["detail"]
    big = b'{"id": "a", "name": "' + b"x" * 200_000 + b'"}'
    r = client.post("/nodes/register", content=big, headers=headers)
    assert r.status_code == 413 and r.json()["detail"]
    r = client.get("/peers", params={"limit": 0})
    assert r.status_code == 400


def test_token_required_for_writes_and_reads(tmp_path: Path) -> None:
    """The token enrols; every other request needs a credential (tests/test_identity_*.py)."""
    app = create_app(tmp_path / "t.db", token="s3cret", expiry=False)
    key = "x" * 40  # any 40 characters of Z85
    body = {"id": "a", "name": "a", "gossip_address": "h:1", "public_key": key}
    with TestClient(app) as c:
        r = c.post("/nodes/register", json=body)
        assert r.status_code == 401 and "Bearer" in r.json()["detail"]
        r = c.post("/nodes/register", json=body, headers={"Authorization": "Bearer wrong"})
        assert r.status_code == 401 and "invalid" in r.json()["detail"]
        r = c.post("/nodes/register", json=body, headers={"Authorization": "Bearer s3cret"})
        assert r.status_code == 200 and r.json()["credential"]
        assert c.delete("/nodes/a").status_code == 401
        assert c.get("/nodes").status_code == 401
        assert c.get("/nodes", headers={"Authorization": "Bearer s3cret"}).status_code == 200


def test_docs_served_offline(client: TestClient[Any]) -> None:
    page = client.get("/docs")
    assert page.status_code == 200 and "SwaggerUIBundle" in page.text
    head = page.text.split("<body>")[0]
    refs = re.findall(r"""(?:src|href)=["']([^"']+)["']""", head)
    assert refs, "the page should load Swagger UI files"
    assert all(ref.startswith("/docs/assets/") for ref in refs), refs
    assert "https://" not in head and "http://" not in head
    for ref in refs:
        asset = client.get(ref)
        assert asset.status_code == 200 and len(asset.content) > 500, ref
    bundle = client.get("/docs/assets/swagger-ui-bundle.js")
    assert "javascript" in bundle.headers["content-type"]
    schema = client.get("/docs/openapi.json").json()
    assert schema["openapi"].startswith("3.1")
    assert "/groups/{group_id}/leader" in schema["paths"]
