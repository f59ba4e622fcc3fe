"""Attacks on a registry run with a token, by a stranger or by a holder of the token.

Each test drives a real uvicorn server on a free loopback port over real HTTP (or raw TCP), with
a real SQLite file: deeply nested maps, rows no current write can make, half-open connections and
stalled bodies, a node whose one bad metric would get it expired, numbers past every bound.
"""

from __future__ import annotations

import json
import logging
import socket
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from bootstrap.server import RegistryServer, ServerLimits
from bootstrap.store import LivenessConfig
from mycelium_p2p.limits import MAX_COUNTER, MAX_LOSS
from mycelium_p2p.registry_api import (
    MAP_MAX_BYTES,
    MAP_MAX_KEY_LENGTH,
    MAP_MAX_KEYS,
    MAP_MAX_STRING_LENGTH,
)
from tests.helpers import wait_until

TOKEN = "s3cret"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
#: Any 40 characters of Z85 do as a node's CURVE key for the registry.
KEY = "x" * 40


def enrol(http: httpx.Client, node: dict[str, Any]) -> dict[str, str]:
    """Register a new node with the admission token; the headers of its own credential."""
    r = http.post("/nodes/register", json={**node, "public_key": KEY}, headers=AUTH)
    assert r.status_code == 200, r.text
    return {"Authorization": f"Bearer {r.json()['credential']}"}


MODEL = "mlp:1x8x8:10"


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[RegistryServer]:
    server = RegistryServer(tmp_path / "r.db", token=TOKEN)
    server.start()
    yield server
    server.stop()


def url(server: RegistryServer) -> str:
    assert server.url is not None
    return server.url


def nested(depth: int) -> str:
    """A JSON object nested ``depth`` levels deep, as text (json.dumps would recurse)."""
    return '{"a":' * (depth - 1) + "{}" + "}" * (depth - 1)


def register_raw(base: str, node_id: str, data_json: str) -> httpx.Response:
    body = (
        f'{{"id":"{node_id}","name":"n","gossip_address":"127.0.0.1:1","public_key":"{KEY}",'
        f'"data":{data_json}}}'
    )
    headers = {**AUTH, "content-type": "application/json"}
    return httpx.post(f"{base}/nodes/register", content=body, headers=headers, timeout=30)


# ---- 1. free-form maps ------------------------------------------------------------------------


def test_deep_or_large_maps_are_refused_naming_the_field(registry: RegistryServer) -> None:
    base = url(registry)
    cases = {
        "3000 deep": nested(3000),
        "969 deep": nested(969),
        "2 deep": nested(2),
        "list value": '{"a":[1,2]}',
        "too many keys": json.dumps({f"k{i}": i for i in range(MAP_MAX_KEYS + 1)}),
        "key too long": json.dumps({"k" * (MAP_MAX_KEY_LENGTH + 1): 1}),
        "string too long": json.dumps({"s": "x" * (MAP_MAX_STRING_LENGTH + 1)}),
        "too large": json.dumps({f"k{i}": "x" * 200 for i in range(MAP_MAX_BYTES // 200 + 1)}),
        "integer past MAX_COUNTER": json.dumps({"n": MAX_COUNTER + 1}),
    }
    answers = {}
    for i, (name, data) in enumerate(cases.items()):
        r = register_raw(base, f"n{i}", data)
        # (A stored map comes back as deep as it went in: this process could not decode it.)
        answers[name] = (r.status_code, "stored" if r.is_success else r.json()["detail"][:120])
    for name, (status, detail) in answers.items():
        print(f"{name}: {status} {detail}")
    for name, (status, detail) in answers.items():
        assert status == 400, f"{name}: {status} {detail}"
        assert "data" in detail, f"{name}: detail does not name the field: {detail}"
    ok = register_raw(base, "fine", json.dumps({"desc": "digits", "train": 100, "w": 0.5}))
    assert ok.status_code == 200 and ok.json()["data"] == {"desc": "digits", "train": 100, "w": 0.5}
    for path in ("/nodes", "/network", "/nodes/fine"):
        assert httpx.get(base + path, headers=AUTH).status_code == 200


def test_a_bad_stored_row_shows_as_empty_and_every_read_answers(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    db = tmp_path / "r.db"
    with RegistryServer(db, token=TOKEN) as server:
        base = url(server)
        with httpx.Client(base_url=base, headers=AUTH) as http:
            for node_id in ("deep", "garbled", "good"):
                body = {"id": node_id, "name": node_id, "gossip_address": "127.0.0.1:1"}
                good = enrol(http, {**body, "model": MODEL})
            group = {"name": "g", "leader": "good", "flower_address": "127.0.0.1:2", "id": "g1"}
            assert (
                http.post("/groups", json={**group, "model": MODEL}, headers=good).status_code
                == 201
            )
        # What an older version (or a hand edit) could have left in the file.
        with sqlite3.connect(db, timeout=10) as con:
            con.execute("UPDATE nodes SET data = ? WHERE id = 'deep'", (nested(5000),))
            con.execute("UPDATE nodes SET data = '{not json' WHERE id = 'garbled'")
            con.execute("UPDATE nodes SET accuracy = 'high' WHERE id = 'good'")
            con.execute("UPDATE groups SET invited = ? WHERE id = 'g1'", (nested(3),))
            con.execute("UPDATE events SET data = '[1, 2]' WHERE id = 1")
        con.close()
        caplog.set_level(logging.WARNING, logger="mycelium.registry")
        paths = ["/nodes", "/nodes/deep", "/nodes/garbled", "/network", "/groups", "/events"]
        answers = {path: httpx.get(base + path, timeout=30, headers=AUTH) for path in paths}
        for path, r in answers.items():
            print(f"GET {path}: {r.status_code} {r.text[:100]}")
        assert {path: r.status_code for path, r in answers.items()} == dict.fromkeys(paths, 200)
        nodes = {n["id"]: n for n in answers["/nodes"].json()}
        assert nodes["deep"]["data"] == {} and nodes["garbled"]["data"] == {}
        assert nodes["good"]["metrics"]["accuracy"] is None
        assert answers["/groups"].json()[0]["invited"] == []
        assert answers["/events"].json()[0]["data"] == {}
        warned = [r.getMessage() for r in caplog.records if "unreadable" in r.getMessage()]
        print("\n".join(warned))
        assert any("node 'deep'" in w for w in warned) and any("event 1" in w for w in warned)


# ---- 2. slow and half-open connections ----------------------------------------------------------


def closed_by_server(sock: socket.socket) -> bool:
    """Whether the server has closed ``sock`` (EOF or reset), without blocking.

    (Non-blocking reads, not ``select``: hundreds of sockets in one test process can have
    descriptors beyond what ``select`` takes.)
    """
    sock.setblocking(False)
    try:
        while data := sock.recv(4096):  # what the server sent before closing, if anything
            del data
        return True  # end of stream
    except BlockingIOError:
        return False
    except OSError:
        return True


@pytest.mark.slow
def test_half_open_connections_neither_block_health_nor_stay_open(tmp_path: Path) -> None:
    limits = ServerLimits(header_timeout=2.0, body_timeout=2.0)
    with RegistryServer(tmp_path / "r.db", token=TOKEN, limits=limits) as server:
        base = url(server)
        host, port = base.removeprefix("http://").split(":")
        held: list[socket.socket] = []
        try:
            for i in range(500):
                sock = socket.create_connection((host, int(port)), timeout=10)
                if i % 2:  # half send nothing, half stop in the middle of their headers
                    sock.sendall(b"GET /health HTTP/1.1\r\nHost: registry\r\nX-Slow: ")
                held.append(sock)
            opened = time.monotonic()
            started = time.perf_counter()
            health = httpx.get(f"{base}/health", timeout=10)
            latency = time.perf_counter() - started
            print(
                f"GET /health with 500 half-open connections: {health.status_code} "
                f"in {latency * 1000:.1f} ms"
            )
            assert health.status_code == 200
            all_closed = wait_until(
                lambda: all(closed_by_server(s) for s in held), timeout=20, interval=0.2
            )
            open_left = sum(not closed_by_server(s) for s in held)
            print(
                f"after {time.monotonic() - opened:.1f} s: {500 - open_left} of 500 closed "
                f"by the server (header timeout {limits.header_timeout} s)"
            )
            assert all_closed, f"{open_left} of 500 half-open connections still open"
        finally:
            for sock in held:
                sock.close()


@pytest.mark.slow
def test_a_stalled_body_is_cut_after_the_body_timeout(tmp_path: Path) -> None:
    limits = ServerLimits(header_timeout=2.0, body_timeout=2.0)
    with RegistryServer(tmp_path / "r.db", token=TOKEN, limits=limits) as server:
        host, port = url(server).removeprefix("http://").split(":")
        with socket.create_connection((host, int(port)), timeout=10) as sock:
            head = (
                "POST /nodes/register HTTP/1.1\r\nHost: registry\r\n"
                f"Authorization: Bearer {TOKEN}\r\nContent-Type: application/json\r\n"
                "Content-Length: 200\r\n\r\n"
            )
            sock.sendall(head.encode() + b'{"id": "slow", "na')  # ... and nothing more
            started = time.monotonic()
            cut = wait_until(lambda: closed_by_server(sock), timeout=20, interval=0.1)
            print(
                f"stalled body: {'cut' if cut else 'still open'} after "
                f"{time.monotonic() - started:.1f} s (body timeout {limits.body_timeout} s)"
            )
            assert cut


@pytest.mark.slow
def test_an_idle_kept_alive_connection_is_closed(tmp_path: Path) -> None:
    limits = ServerLimits(keep_alive=1.0)
    with RegistryServer(tmp_path / "r.db", limits=limits) as server:
        host, port = url(server).removeprefix("http://").split(":")
        with socket.create_connection((host, int(port)), timeout=10) as sock:
            sock.sendall(b"GET /health HTTP/1.1\r\nHost: registry\r\n\r\n")
            started = time.monotonic()
            # The first reads return the answer; then the connection idles until it is closed.
            closed = wait_until(lambda: closed_by_server(sock), timeout=20, interval=0.1)
            print(
                f"kept-alive idle connection: {'closed' if closed else 'still open'} after "
                f"{time.monotonic() - started:.1f} s (keep-alive {limits.keep_alive} s)"
            )
            assert closed


@pytest.mark.slow
def test_the_concurrency_limit_answers_503_and_recovers(tmp_path: Path) -> None:
    limits = ServerLimits(header_timeout=1.0, max_concurrency=20)
    with RegistryServer(tmp_path / "r.db", limits=limits) as server:
        base = url(server)
        host, port = base.removeprefix("http://").split(":")
        held = [socket.create_connection((host, int(port)), timeout=10) for _ in range(25)]
        try:
            # uvicorn counts the idle connections: beyond the limit it answers 503 at once.
            assert wait_until(lambda: len(server._server.server_state.connections) >= 25)
            busy = httpx.get(f"{base}/health", timeout=10)
            print(f"/health with 25 idle connections and a limit of 20: {busy.status_code}")
            closed = wait_until(lambda: all(closed_by_server(s) for s in held), timeout=20)
            again = httpx.get(f"{base}/health", timeout=10)
            print(f"idle connections closed: {closed}; then /health: {again.status_code}")
            assert (busy.status_code, closed, again.status_code) == (503, True, 200)
        finally:
            for sock in held:
                sock.close()


# ---- 3. a bad metric does not cost liveness ----------------------------------------------------


def test_a_node_sending_a_bad_metric_is_never_expired(tmp_path: Path) -> None:
    clock = FakeClock()
    liveness = LivenessConfig(suspect_after=10, dead_after=30)
    server = RegistryServer(
        tmp_path / "r.db", token=TOKEN, liveness=liveness, clock=clock, expiry=False
    )
    with server, httpx.Client(base_url=url(server), headers=AUTH) as http:
        store = server.app.state["store"]
        node = {"id": "n", "name": "n", "gossip_address": "127.0.0.1:1", "model": MODEL}
        own = enrol(http, node)
        seen = []
        for i in range(10):  # 200 fake seconds: far past dead_after
            clock.now += 20
            beat = {"accuracy": 1.5, "loss": 0.25, "round": i}
            r = http.post("/nodes/n/heartbeat", json=beat, headers=own)
            store.sweep()
            seen.append((r.status_code, http.get("/nodes/n").json()["status"]))
        print(f"heartbeats with accuracy 1.5 (answer, status after a sweep): {seen}")
        print(f"last answer: {r.json()['detail']}")
        assert all(status == "alive" for _, status in seen)
        assert r.status_code == 400
        assert "accuracy" in r.json()["detail"] and "liveness was recorded" in r.json()["detail"]
        metrics = http.get("/nodes/n").json()["metrics"]
        assert metrics == {"accuracy": None, "loss": 0.25, "round": 9}  # the valid fields apply
        assert "expired" not in [e["kind"] for e in http.get("/events").json()]


# ---- 4. every number bounded, every error answer documented ---------------------------------


def integer_bounds(node: Any, path: str = "", bound: Any = None) -> Iterator[tuple[str, Any]]:
    """Every schema of type integer in an OpenAPI document, with where it is and its maximum
    (Litestar puts the maximum of an optional number on the union around it)."""
    if isinstance(node, dict):
        bound = node.get("maximum", bound)
        if node.get("type") == "integer":
            yield path, bound
        for key, value in node.items():
            yield from integer_bounds(value, f"{path}/{key}", bound)
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from integer_bounds(value, f"{path}/{i}", bound)


@pytest.mark.slow
def test_numbers_are_bounded_and_error_answers_documented(tmp_path: Path) -> None:
    db = tmp_path / "r.db"
    with (
        RegistryServer(db, token=TOKEN) as server,
        httpx.Client(base_url=url(server), headers=AUTH, timeout=30) as http,
    ):
        spec = http.get("/docs/openapi.json").json()
        bodies = spec["components"]["schemas"]
        inputs: dict[str, Any] = {name: bodies[name] for name in bodies if name.endswith("Body")}
        for path, item in spec["paths"].items():
            for method, operation in item.items():
                inputs[f"{method.upper()} {path}"] = operation.get("parameters", [])
        unbounded = [
            where for where, bound in integer_bounds(inputs) if bound is None or bound > MAX_COUNTER
        ]
        losses = [bodies[b]["properties"]["loss"] for b in ("HeartbeatBody", "PerformanceBody")]
        undocumented = []
        for path, item in spec["paths"].items():
            for method, operation in item.items():
                codes = set(operation.get("responses", {}))
                needed = {"400", "503"} if path != "/health" else set()
                if "security" in operation:
                    needed |= {"401"}
                if "requestBody" in operation:
                    needed |= {"413"}
                if not needed <= codes:
                    undocumented.append(f"{method.upper()} {path}: lacks {needed - codes}")
        print(f"integer inputs without a bound <= MAX_COUNTER: {unbounded}")
        print(f"operations lacking documented errors: {undocumented}")
        assert unbounded == [] and undocumented == []
        assert [loss["maximum"] for loss in losses] == [MAX_LOSS, MAX_LOSS]
        heartbeat = spec["paths"]["/nodes/{node_id}/heartbeat"]["post"]["requestBody"]
        assert heartbeat["content"]["application/json"]["schema"] == {
            "$ref": "#/components/schemas/HeartbeatBody"
        }

        # Past the bounds over HTTP: refused, never stored.
        node = {"id": "a", "name": "a", "gossip_address": "127.0.0.1:1", "model": MODEL}
        http.headers.update(enrol(http, node))  # from here on, node a's own credential
        group = {"name": "g", "leader": "a", "flower_address": "127.0.0.1:2", "model": MODEL}
        assert http.post("/groups", json={**group, "id": "g1"}).status_code == 201
        perf = {"node_id": "a", "term": 1, "accuracy": 0.5, "loss": 1.0, "round": 1, "examples": 1}
        for field, value in (
            ("term", MAX_COUNTER + 1),
            ("round", MAX_COUNTER + 1),
            ("examples", 2**63),
            ("loss", MAX_LOSS * 10),
        ):
            r = http.put("/groups/g1/performance", json={**perf, field: value})
            assert r.status_code == 400 and field in r.json()["detail"], r.text
        claim = {"node_id": "a", "term": MAX_COUNTER + 1, "flower_address": "127.0.0.1:2"}
        assert http.put("/groups/g1/leader", json=claim).status_code == 400
        assert http.get("/events", params={"after": MAX_COUNTER + 1}).status_code == 400

        # The 503 answer exists and has the documented shape: hold SQLite's write lock past the
        # registry's busy timeout (5 s).
        holder = sqlite3.connect(db, timeout=10, isolation_level=None)
        holder.execute("BEGIN IMMEDIATE")
        try:
            b = {**node, "id": "b", "public_key": KEY}
            busy = http.post("/nodes/register", json=b, headers=AUTH)
        finally:
            holder.execute("ROLLBACK")
            holder.close()
        print(f"write while the database is locked: {busy.status_code} {busy.text[:100]}")
        assert busy.status_code == 503 and busy.headers["retry-after"] == "1"
        assert set(busy.json()) <= {"status_code", "detail", "extra"}
