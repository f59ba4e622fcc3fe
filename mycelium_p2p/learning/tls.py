"""TLS certificates for Flower traffic.

With node identities (a network with a token and a registry), each node holds a certificate the
registry's CA issued for its own key (``identity.py``), naming it as ``<id>.node.mycelium``:
``TlsMaterial.for_node`` serves and connects with it, both ways (*mutual* TLS: a leader's server
requires a client certificate from the CA; a member checks that the server's certificate names
the leader of record). The rest of this module is the older, derived scheme, kept for servers
and clients used on their own (benchmarks, tests):

The network has one secret (``--token`` / ``MYCELIUM_TOKEN``). From it, every node derives the
same CA: the CA's P-256 private key is HKDF-SHA256 of the secret, and its self-signed
certificate has fixed fields (name, serial, validity) and a deterministic ECDSA signature
(RFC 6979), so it is byte-identical on every node without ever being sent. A leader issues
itself a server certificate for its advertised host (IP or DNS subject alternative name),
signed by that CA, with a fresh key; members verify the server against the derived CA.

Limits: the CA key is as secret as the network secret (anyone holding the secret can issue
certificates, by design); Flower's legacy gRPC server does not ask clients for certificates, so
TLS authenticates the leader to members and encrypts the traffic, but does not authenticate
members to the leader (see ``docs/security.md``).
"""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.x509.oid import NameOID

_CURVE = ec.SECP256R1()
# Order of the P-256 group: the derived private value must lie in [1, n - 1].
_P256_ORDER = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551
_SALT = b"mycelium/flower-tls/v1"
_CA_NOT_BEFORE = datetime.datetime(2024, 1, 1, tzinfo=datetime.UTC)
_CA_NOT_AFTER = datetime.datetime(2124, 1, 1, tzinfo=datetime.UTC)


class TlsError(ValueError):
    """Bad TLS input: an empty secret, a bad host, or certificates that do not fit."""


@dataclass(frozen=True)
class TlsMaterial:
    """PEM material for one end of a Flower connection.

    ``ca_cert`` is the network CA (both ends); ``cert_chain`` and ``private_key`` are the
    leader's server certificate and key (None on a member), or with ``mutual`` the node's own,
    used both ways.
    """

    ca_cert: bytes
    cert_chain: bytes | None = None
    private_key: bytes | None = None
    #: Both ends present a certificate from ``ca_cert`` (``for_node``).
    mutual: bool = False

    @classmethod
    def for_node(cls, ca_cert: bytes, cert_chain: bytes, private_key: bytes) -> TlsMaterial:
        """A node's own material: its certificate and key, as a leader's server (which then
        requires client certificates from ``ca_cert``) and as a member (which presents it)."""
        return cls(ca_cert, cert_chain, private_key, mutual=True)

    def client_pair(self) -> tuple[bytes | None, bytes | None]:
        """``(private_key, cert_chain)`` a member presents (None, None unless mutual)."""
        if not self.mutual:
            return None, None
        return self.private_key, self.cert_chain

    @property
    def is_server(self) -> bool:
        return self.cert_chain is not None and self.private_key is not None

    def server_certificates(self) -> tuple[bytes, bytes, bytes]:
        """``(ca_cert, server_cert, server_key)`` as Flower's ``start_grpc_server`` takes them."""
        if self.cert_chain is None or self.private_key is None:
            raise TlsError("this TLS material has no server certificate (use for_server)")
        return self.ca_cert, self.cert_chain, self.private_key

    @classmethod
    def for_member(cls, secret: str | bytes) -> TlsMaterial:
        """What a member needs: the network CA, to verify its leader."""
        return cls(ca_cert=ca_certificate(secret))

    @classmethod
    def for_server(
        cls, secret: str | bytes, hosts: list[str] | str, days: int = 365
    ) -> TlsMaterial:
        """A leader's material: the CA and a fresh server certificate for ``hosts``."""
        cert, key = issue_server_certificate(secret, [hosts] if isinstance(hosts, str) else hosts)
        return cls(ca_cert=ca_certificate(secret), cert_chain=cert, private_key=key)


def _secret_bytes(secret: str | bytes) -> bytes:
    raw = secret.encode() if isinstance(secret, str) else bytes(secret)
    if not raw:
        raise TlsError("the network secret is empty; TLS needs a secret")
    return raw


def _hkdf(secret: bytes, info: bytes, length: int) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=length, salt=_SALT, info=info).derive(secret)


def derive_ca_key(secret: str | bytes) -> ec.EllipticCurvePrivateKey:
    """The network CA's P-256 key, a pure function of the secret.

    48 bytes of HKDF output reduced modulo ``n - 1`` (plus one) give a private value whose
    bias is below 2^-128.
    """
    material = _hkdf(_secret_bytes(secret), b"ca-key", 48)
    value = int.from_bytes(material, "big") % (_P256_ORDER - 1) + 1
    return ec.derive_private_key(value, _CURVE)


def _ca_name(key: ec.EllipticCurvePrivateKey) -> x509.Name:
    # The key id in the name keeps CAs of different networks apart in logs.
    key_id = x509.SubjectKeyIdentifier.from_public_key(key.public_key()).digest.hex()[:16]
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Mycelium network"),
            x509.NameAttribute(NameOID.COMMON_NAME, f"Mycelium CA {key_id}"),
        ]
    )


def ca_certificate(secret: str | bytes) -> bytes:
    """The network CA's self-signed certificate (PEM), identical on every node."""
    raw = _secret_bytes(secret)
    key = derive_ca_key(raw)
    name = _ca_name(key)
    serial = int.from_bytes(_hkdf(raw, b"ca-serial", 16), "big") >> 1 or 1
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(serial)
        .not_valid_before(_CA_NOT_BEFORE)
        .not_valid_after(_CA_NOT_AFTER)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256(), ecdsa_deterministic=True)
    )
    return cert.public_bytes(serialization.Encoding.PEM)


def _san(host: str) -> x509.GeneralName:
    host = host.strip().strip("[]")
    if not host:
        raise TlsError("empty host name for a server certificate")
    try:
        return x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        pass
    if any(c.isspace() for c in host) or len(host) > 253:
        raise TlsError(f"not a host name or IP address: {host!r}")
    return x509.DNSName(host)


def issue_server_certificate(
    secret: str | bytes, hosts: list[str], days: int = 365
) -> tuple[bytes, bytes]:
    """A server certificate for ``hosts`` (IP or DNS SANs) signed by the network CA.

    Returns ``(cert_pem, key_pem)``; the key is fresh (from the OS's randomness) and never
    leaves the leader.
    """
    if not hosts:
        raise TlsError("a server certificate needs at least one host")
    if days < 1:
        raise TlsError("days must be at least 1")
    sans = [_san(h) for h in hosts]
    ca_key = derive_ca_key(secret)
    key = ec.generate_private_key(_CURVE)
    now = datetime.datetime.now(datetime.UTC)
    first = str(hosts[0]).strip().strip("[]")
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, first[:64])]))
        .issuer_name(_ca_name(ca_key))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))  # tolerate small clock skew
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return cert.public_bytes(serialization.Encoding.PEM), key_pem
