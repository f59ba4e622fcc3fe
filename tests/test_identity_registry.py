"""The registry as the network's CA: enrolment, scoped writes, reads, leases, revocation.

Through Litestar's test client on a real SQLite file (and the CA folder beside it).
"""

from __future__ import annotations

import os
import random
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import zmq
from litestar.testing import TestClient

from bootstrap import ca as ca_files
from bootstrap.app import REVOCATIONS_HEADER, create_app
from bootstrap.store import AuthorityMismatch, LivenessConfig, RegistryStore
from mycelium_p2p.identity import NodeKeys, Trust, from_text, id_from_uri
from mycelium_p2p.registry_api import GroupOut

TOKEN = "admission-token"
ADMIN = "operator-token"
OBSERVER = "viewer-token"
MODEL = "mlp:1x8x8:10"
GROUP = {"name": "x", "flower_address": "h:1", "model": MODEL}


def app(path: Path, token: str | None = TOKEN, **extra: Any) -> Any:
    return create_app(
        path,
        token=token,
        liveness=LivenessConfig(suspect_after=10, dead_after=30),
        rng=random.Random(1),
        expiry=False,
        admin_token=ADMIN if token else None,
        observer_token=OBSERVER if token else None,
        **extra,
    )


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient[Any]]:
    with TestClient(app(tmp_path / "r.db")) as c:
        yield c


def bearer(secret: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"} if secret else {}


def body(node_id: str, keys: NodeKeys | None = None, csr: bool = True, **extra: Any) -> Any:
    keys = keys or NodeKeys.generate()
    out = {
        "id": node_id,
        "name": node_id,
        "gossip_address": "127.0.0.1:7000",
        "model": MODEL,
        "public_key": keys.curve_public.decode(),
    }
    if csr:
        out["csr"] = keys.csr(node_id).decode()
    return {**out, **extra}


def enrol(c: TestClient[Any], node_id: str, keys: NodeKeys | None = None) -> dict[str, Any]:
    r = c.post("/nodes/register", json=body(node_id, keys), headers=bearer(TOKEN))
    assert r.status_code == 200, r.text
    return r.json()  # type: ignore[no-any-return]


def test_enrolment_contract(client: TestClient[Any]) -> None:
    keys = NodeKeys.generate()
    answer = enrol(client, "a", keys)
    assert answer["id"] == "a" and answer["status"] == "alive"
    assert isinstance(answer["credential"], str) and len(answer["credential"]) >= 40
    trust = Trust(answer["ca_certificate"].encode())
    ticket = trust.ticket_text(answer["ticket"])
    assert (ticket.node_id, ticket.curve_public) == ("a", keys.curve_public)
    from cryptography import x509

    cert = x509.load_pem_x509_certificate(answer["certificate"].encode())
    cert.verify_directly_issued_by(trust.ca_cert)
    assert cert.public_key() == keys.tls_key.public_key()
    uris = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert [id_from_uri(u) for u in uris.get_values_for_type(x509.UniformResourceIdentifier)] == [
        "a"
    ]
    # Without a csr: a ticket, no certificate; registering again with the credential: no new one.
    again = client.post(
        "/nodes/register", json=body("a", keys, csr=False), headers=bearer(answer["credential"])
    )
    assert again.status_code == 200, again.text
    assert again.json()["credential"] is None and again.json()["certificate"] is None
    assert Trust(answer["ca_certificate"].encode()).ticket_text(again.json()["ticket"])


@pytest.mark.parametrize(
    ("fields", "detail"),
    [
        ({"public_key": None}, "public_key"),
        ({"public_key": "x" * 39}, "public_key"),
        ({"csr": "not a csr"}, "csr"),
    ],
)
def test_enrolment_needs_a_key_and_a_real_csr(
    client: TestClient[Any], fields: dict[str, Any], detail: str
) -> None:
    data = {k: v for k, v in {**body("a"), **fields}.items() if v is not None}
    r = client.post("/nodes/register", json=data, headers=bearer(TOKEN))
    assert r.status_code == 400 and detail in r.json()["detail"], r.text


def test_an_enrolled_id_needs_its_own_credential(client: TestClient[Any]) -> None:
    a = enrol(client, "a")
    b = enrol(client, "b")
    statuses = {}
    for who, secret in (
        ("admission", TOKEN),
        ("other node", b["credential"]),
        ("operator", ADMIN),
        ("observer", OBSERVER),
    ):
        r = client.post("/nodes/register", json=body("a"), headers=bearer(secret))
        statuses[who] = r.status_code
    for who, secret in (("none", None), ("wrong", "guess"), ("revoked", None)):
        if who == "revoked":
            continue
        statuses[who] = client.post(
            "/nodes/register", json=body("a"), headers=bearer(secret)
        ).status_code
    assert statuses == {
        "admission": 403,
        "other node": 403,
        "operator": 403,
        "observer": 403,
        "none": 401,
        "wrong": 401,
    }
    own = client.post("/nodes/register", json=body("a"), headers=bearer(a["credential"]))
    assert own.status_code == 200
    # A node credential enrols nobody else.
    r = client.post("/nodes/register", json=body("c"), headers=bearer(a["credential"]))
    assert r.status_code == 403


def _group(c: TestClient[Any], cred: str, leader: str, gid: str = "g-1") -> dict[str, Any]:
    r = c.post(
        "/groups",
        json={"id": gid, "name": gid, "leader": leader, "flower_address": "h:1", "model": MODEL},
        headers=bearer(cred),
    )
    assert r.status_code == 201, r.text
    return r.json()  # type: ignore[no-any-return]


def test_every_write_acts_for_the_credentials_node_only(client: TestClient[Any]) -> None:
    a, b = enrol(client, "a"), enrol(client, "b")
    ca, cb = a["credential"], b["credential"]
    _group(client, ca, "a")
    assert (
        client.post(
            "/groups/join", json={"node_id": "b", "group_id": "g-1"}, headers=bearer(cb)
        ).status_code
        == 200
    )
    perf = {"node_id": "a", "term": 1, "accuracy": 0.5, "loss": 1.0, "round": 1, "examples": 10}
    claim = {"node_id": "b", "term": 2, "flower_address": "h:2"}
    writes = {
        "heartbeat": ("post", "/nodes/a/heartbeat", {}),
        "leave": ("delete", "/nodes/a", None),
        "found": ("post", "/groups", {**GROUP, "id": "g-2", "leader": "a"}),
        "join": ("post", "/groups/join", {"node_id": "a", "group_id": "g-1"}),
        "leave group": ("post", "/groups/leave", {"node_id": "a"}),
        "report": ("put", "/groups/g-1/performance", perf),
        "claim": ("put", "/groups/g-1/leader", claim),
    }  # fmt: skip
    refused: dict[str, dict[str, int]] = {}
    for name, (method, path, data) in writes.items():
        for who, secret in (
            ("admission", TOKEN),
            ("other node", cb if name != "claim" else ca),
            ("observer", OBSERVER),
        ):
            kwargs = {"json": data} if data is not None else {}
            r = client.request(method.upper(), path, headers=bearer(secret), **kwargs)
            refused.setdefault(name, {})[who] = r.status_code
        r = client.request(method.upper(), path, **({"json": data} if data is not None else {}))
        refused[name]["none"] = r.status_code
    assert all(
        v == {"admission": 403, "other node": 403, "observer": 403, "none": 401}
        for v in refused.values()
    ), refused
    # Each node acting for itself is served.
    assert client.post("/nodes/a/heartbeat", json={}, headers=bearer(ca)).status_code == 200
    assert client.put("/groups/g-1/performance", json=perf, headers=bearer(ca)).status_code == 200
    r = client.put("/groups/g-1/leader", json=claim, headers=bearer(cb))
    assert r.status_code == 200 and r.json()["leader"] == "b"
    # The deposed leader reporting for itself is a stale leader: 409, as before.
    assert client.put("/groups/g-1/performance", json=perf, headers=bearer(ca)).status_code == 409


def test_reads_need_a_credential_health_and_docs_do_not(client: TestClient[Any]) -> None:
    a = enrol(client, "a")
    reads = ["/nodes", "/nodes/a", "/groups", "/peers", "/network", "/events", "/revocations"]
    for path in reads:
        assert client.get(path).status_code == 401, path
        assert client.get(path, headers=bearer("guess")).status_code == 401, path
        for secret in (a["credential"], TOKEN, ADMIN, OBSERVER):
            assert client.get(path, headers=bearer(secret)).status_code == 200, (path, secret)
    for path in ("/health", "/docs/openapi.json", "/docs"):
        assert client.get(path).status_code == 200, path


def test_leases_name_the_leader_of_each_term(client: TestClient[Any]) -> None:
    a, b = enrol(client, "a"), enrol(client, "b")
    trust = Trust(a["ca_certificate"].encode())
    founded = _group(client, a["credential"], "a")
    lease = trust.lease(from_text(founded["lease"]))
    assert lease.names("g-1", 1, "a", "h:1")
    client.post(
        "/groups/join", json={"node_id": "b", "group_id": "g-1"}, headers=bearer(b["credential"])
    )
    claimed = client.put(
        "/groups/g-1/leader",
        json={"node_id": "b", "term": 2, "flower_address": "h:2"},
        headers=bearer(b["credential"]),
    ).json()
    assert trust.lease(from_text(claimed["lease"])).names("g-1", 2, "b", "h:2")
    read = client.get("/groups/g-1", headers=bearer(TOKEN)).json()
    assert read["lease"] == claimed["lease"]  # reads carry the same bytes


def test_the_operator_revokes_and_the_list_is_signed(client: TestClient[Any]) -> None:
    a, b = enrol(client, "a"), enrol(client, "b")
    trust = Trust(a["ca_certificate"].encode())
    first = client.get("/revocations", headers=bearer(a["credential"]))
    assert first.json()["serial"] == 0 and first.headers[REVOCATIONS_HEADER] == "0"
    # A node cannot revoke, nor remove another; the operator can.
    assert client.post("/nodes/b/revoke", headers=bearer(a["credential"])).status_code == 403
    assert client.post("/nodes/b/revoke", headers=bearer(TOKEN)).status_code == 403
    gone = client.delete("/nodes/b", headers=bearer(ADMIN))
    assert gone.status_code == 200 and gone.json()["status"] == "gone"
    listed = client.get("/revocations", headers=bearer(a["credential"]))
    assert listed.headers[REVOCATIONS_HEADER] == "1"
    assert trust.install(from_text(listed.json()["signed"])) and trust.revoked("b")
    # The revoked credential is refused everywhere, and the id can never enrol again.
    assert (
        client.post("/nodes/b/heartbeat", json={}, headers=bearer(b["credential"])).status_code
        == 401
    )
    assert client.get("/groups", headers=bearer(b["credential"])).status_code == 401
    assert client.post("/nodes/register", json=body("b"), headers=bearer(TOKEN)).status_code == 403
    r = client.post("/nodes/a/revoke", headers=bearer(ADMIN))
    assert r.status_code == 200 and r.json()["ids"] == ["a", "b"] and r.json()["serial"] == 2


def test_observer_tickets(client: TestClient[Any]) -> None:
    public, _ = zmq.curve_keypair()
    r = client.post(
        "/observers/ticket", json={"public_key": public.decode()}, headers=bearer(OBSERVER)
    )
    assert r.status_code == 200, r.text
    answer = r.json()
    ticket = Trust(answer["ca_certificate"].encode()).ticket_text(answer["ticket"])
    assert ticket.observer and ticket.node_id == answer["id"] and ticket.curve_public == public
    assert client.post("/observers/ticket", json={"public_key": public.decode()}).status_code == 401


def test_rotation_keeps_enrolled_nodes_and_the_ca_files_are_private(tmp_path: Path) -> None:
    db = tmp_path / "r.db"
    with TestClient(app(db)) as c:
        a = enrol(c, "a")
    folder = ca_files.default_dir(db)
    assert stat.S_IMODE(os.stat(folder).st_mode) == 0o700
    assert stat.S_IMODE(os.stat(folder / ca_files.KEY_FILE).st_mode) == 0o600
    # Restarted with a new admission token: the node's credential still works, the old token
    # enrols nobody, the new one does; the CA (and so every ticket) is the same.
    rotated = create_app(db, token="new-token", expiry=False)
    with TestClient(rotated) as c:
        assert (
            c.post("/nodes/a/heartbeat", json={}, headers=bearer(a["credential"])).status_code
            == 200
        )
        assert c.post("/nodes/register", json=body("n"), headers=bearer(TOKEN)).status_code == 401
        r = c.post("/nodes/register", json=body("n"), headers=bearer("new-token"))
        assert r.status_code == 200 and r.json()["ca_certificate"] == a["ca_certificate"]
    # A registry given another CA refuses the database.
    store = RegistryStore(db, ca=ca_files.load_or_create(tmp_path / "other-ca"))
    with pytest.raises(AuthorityMismatch, match="same CA folder"):
        store.open()


def test_a_readable_ca_key_is_refused(tmp_path: Path) -> None:
    folder = tmp_path / "ca"
    ca_files.load_or_create(folder)
    os.chmod(folder / ca_files.KEY_FILE, 0o644)
    with pytest.raises(ca_files.CaError, match="chmod 600"):
        ca_files.load_or_create(folder)


def test_without_a_token_everything_is_open_as_before(tmp_path: Path) -> None:
    with TestClient(app(tmp_path / "r.db", token=None)) as c:
        r = c.post("/nodes/register", json={"id": "a", "name": "a", "gossip_address": "h:1"})
        assert r.status_code == 200 and r.json()["credential"] is None
        assert c.get("/groups").status_code == 200
        assert c.delete("/nodes/a").status_code == 200
        assert GroupOut.__struct_fields__[-1] == "lease"
    assert not ca_files.default_dir(tmp_path / "r.db").exists()
