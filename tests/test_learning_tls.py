"""Flower over TLS with certificates derived from the network secret (real gRPC, port 0)."""

from __future__ import annotations

import datetime
from typing import Any

import pytest
from cryptography import x509
from helpers import wait_for

from mycelium_p2p.learning.data import NodeData, load_node_data
from mycelium_p2p.learning.flower import GroupServer, MemberClient, RoundResult, wait_for_server
from mycelium_p2p.learning.models import build_model, get_weights
from mycelium_p2p.learning.tls import (
    TlsError,
    TlsMaterial,
    ca_certificate,
    derive_ca_key,
    issue_server_certificate,
)

SPEC = "mlp:1x8x8:10"
SECRET = "correct horse battery staple"


# --- pure: the derived CA and issued certificates ---------------------------------------------


def test_ca_is_a_pure_function_of_the_secret() -> None:
    assert ca_certificate(SECRET) == ca_certificate(SECRET.encode())
    assert ca_certificate(SECRET) != ca_certificate(SECRET + "!")
    one, two = derive_ca_key(SECRET), derive_ca_key(SECRET)
    assert one.private_numbers().private_value == two.private_numbers().private_value
    ca = x509.load_pem_x509_certificate(ca_certificate(SECRET))
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    ca.verify_directly_issued_by(ca)  # self-signed, with the derived key


def test_server_certificate_is_signed_by_the_ca_and_names_the_host() -> None:
    ca = x509.load_pem_x509_certificate(ca_certificate(SECRET))
    cert_pem, key_pem = issue_server_certificate(SECRET, ["10.0.0.7", "leader.lan"])
    cert = x509.load_pem_x509_certificate(cert_pem)
    cert.verify_directly_issued_by(ca)
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert [str(ip) for ip in san.get_values_for_type(x509.IPAddress)] == ["10.0.0.7"]
    assert san.get_values_for_type(x509.DNSName) == ["leader.lan"]
    assert cert.not_valid_after_utc > datetime.datetime.now(datetime.UTC)
    assert b"PRIVATE KEY" in key_pem
    other_ca = x509.load_pem_x509_certificate(ca_certificate("another network"))
    with pytest.raises((ValueError, TypeError)):
        cert.verify_directly_issued_by(other_ca)


@pytest.mark.parametrize(
    ("secret", "hosts"), [("", ["127.0.0.1"]), (SECRET, []), (SECRET, ["bad host"])]
)
def test_bad_tls_input_is_a_clear_error(secret: str, hosts: list[str]) -> None:
    with pytest.raises(TlsError):
        TlsMaterial.for_server(secret, hosts)


def test_server_refuses_member_material() -> None:
    with pytest.raises(TlsError, match="server certificate"):
        GroupServer(get_weights(build_model(SPEC, seed=0)), tls=TlsMaterial.for_member(SECRET))


# --- real Flower over TLS ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def datas() -> list[NodeData]:
    return [load_node_data("digits:iid", i, 3, seed=0) for i in range(3)]


def _tls_server(cleanup: list[Any], **kwargs: Any) -> tuple[GroupServer, list[RoundResult]]:
    rounds: list[RoundResult] = []
    server = GroupServer(
        get_weights(build_model(SPEC, seed=0)),
        on_round=rounds.append,
        tls=TlsMaterial.for_server(SECRET, "127.0.0.1"),
        **kwargs,
    )
    cleanup.append(server)
    server.start()
    return server, rounds


@pytest.mark.slow
def test_members_holding_the_secret_complete_rounds_over_tls(
    datas: list[NodeData], cleanup: list[Any]
) -> None:
    server, rounds = _tls_server(cleanup, min_clients=2)
    for i in range(2):
        # Each member derives the CA on its own: nothing but the secret is shared.
        client = MemberClient(
            datas[i], SPEC, seed=i, local_epochs=1, tls=TlsMaterial.for_member(SECRET)
        )
        cleanup.append(client)
        client.connect(str(server.address))
    wait_for(lambda: len(rounds) >= 2, timeout=60, what="two TLS rounds")
    assert rounds[-1].clients == 2
    assert rounds[-1].accuracy > 0.3  # the model learns, so the updates came through intact
    assert all(c.last_round >= 1 for c in cleanup if isinstance(c, MemberClient))


@pytest.mark.slow
def test_strangers_cannot_reach_a_tls_group(datas: list[NodeData], cleanup: list[Any]) -> None:
    server, rounds = _tls_server(cleanup, min_clients=1)
    address = str(server.address)
    right = TlsMaterial.for_member(SECRET).ca_cert
    wrong = TlsMaterial.for_member("not the secret").ca_cert
    assert wait_for_server(address, timeout=10, root_certificates=right)
    # A wrong CA fails the handshake; a plaintext client cannot speak to a TLS port.
    assert not wait_for_server(address, timeout=1.5, root_certificates=wrong)
    assert not wait_for_server(address, timeout=1.5)
    stranger = MemberClient(
        datas[2], SPEC, seed=9, local_epochs=1, tls=TlsMaterial.for_member("not the secret")
    )
    cleanup.append(stranger)
    stranger.connect(address)
    plain = MemberClient(datas[1], SPEC, seed=8, local_epochs=1)
    cleanup.append(plain)
    plain.connect(address)
    # Then a member with the secret joins: rounds run with it alone.
    member = MemberClient(
        datas[0], SPEC, seed=0, local_epochs=1, tls=TlsMaterial.for_member(SECRET)
    )
    cleanup.append(member)
    member.connect(address)
    wait_for(lambda: len(rounds) >= 2, timeout=60, what="rounds with the member")
    assert all(r.clients == 1 for r in rounds)
    assert server.num_clients() == 1
    assert stranger.sessions == 0 and stranger.fits == 0 and stranger.last_round == 0
    assert plain.sessions == 0 and plain.fits == 0
