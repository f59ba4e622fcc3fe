"""Who a node is: its keys, and what the network's certificate authority (the registry) says of it.

Every node has two key pairs, made at its first start and kept in its state directory:

- a **CURVE** pair (X25519, Z85 as ``zmq.curve_keypair()`` makes it): its gossip ROUTER serves
  with it and its DEALERs connect with it. X25519 only agrees keys; it cannot sign.
- a **TLS** key (ECDSA P-256, which gRPC's TLS takes): its Flower server and its Flower client
  present the certificate the registry issued for it.

The registry holds the network's CA key (P-256) and signs; nodes only verify, with the CA
certificate they received when they enrolled (:class:`Trust`). What it signs:

- a **certificate** (X.509) for a node's TLS key, naming the node id twice: as a URI
  ``mycelium:node:<id>`` (read by a Flower server to know who a session is) and as a DNS name
  derived from the id (checked by a Flower member against the leader of record);
- a **ticket** binding a node id to its CURVE public key (:class:`Ticket`, at most 167 bytes, so
  that it fits ZeroMQ's 255-byte routing id: every gossip connection carries its sender's);
- a **lease** naming a group's leader for one term with its Flower address (:class:`Lease`);
- the **revocation list**: the ids of nodes removed by the operator (:class:`Revocations`).

Signatures are ECDSA P-256 with SHA-256 in raw ``r || s`` form (64 bytes), over a tag naming
what is signed, so that no signed thing can pass for another. The signing half
(:class:`CertificateAuthority`) is pure too: the registry keeps its key in files
(``bootstrap/ca.py``), tests and standalone gossip make one in memory.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import struct
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field

import msgpack
import zmq
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
    encode_dss_signature,
)
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from zmq.utils import z85

_CURVE = ec.SECP256R1()
# Deterministic (RFC 6979): the same lease signed twice, or by two registries, is the same bytes.
_SIG = ec.ECDSA(hashes.SHA256(), deterministic_signing=True)
_SIG_LEN = 64
#: Longest node id (as everywhere: registry, gossip).
MAX_ID = 64
#: ZeroMQ's routing id holds at most this many bytes; a ticket and an 8-byte nonce must fit.
MAX_TICKET = 1 + 1 + 4 + 32 + 1 + MAX_ID + _SIG_LEN
#: Most ids a revocation list may name: the signed list rides in every push-pull, in one frame.
MAX_REVOKED = 1000
#: Largest signed revocation list, in bytes: gossip carries it whole, in one frame.
MAX_REVOCATIONS_BYTES = 16 * 1024
#: Days a node's ticket and certificate are valid (renewed at every registration).
NODE_DAYS = 365
#: Days an observer's ticket is valid (the viewer and ``status`` ask for a new one each run).
OBSERVER_DAYS = 7

ROLE_NODE, ROLE_OBSERVER = 0, 1
_ROLES = {ROLE_NODE: "node", ROLE_OBSERVER: "observer"}
_TAG_TICKET = b"mycelium/ticket/v1\x00"
_TAG_LEASE = b"mycelium/lease/v1\x00"
_TAG_REVOCATIONS = b"mycelium/revocations/v1\x00"
_DNS_SUFFIX = "node.mycelium"
_URI_PREFIX = "mycelium:node:"


class IdentityError(ValueError):
    """Material that does not verify, does not parse, or does not fit."""


# ---------------------------------------------------------------------------- encodings


def to_text(raw: bytes) -> str:
    """Bytes as URL-safe base64 without padding (tickets, leases and lists in JSON)."""
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def from_text(text: str, limit: int = 1 << 20) -> bytes:
    """The bytes of :func:`to_text` (IdentityError if not base64 or over ``limit`` bytes)."""
    if not isinstance(text, str) or len(text) > limit * 4 // 3 + 4:
        raise IdentityError("not a short base64 text")
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (ValueError, TypeError) as exc:
        raise IdentityError(f"not base64: {exc}") from None


def _sign(key: ec.EllipticCurvePrivateKey, tag: bytes, body: bytes) -> bytes:
    r, s = decode_dss_signature(key.sign(tag + body, _SIG))
    return r.to_bytes(32, "big") + s.to_bytes(32, "big")


def _verify(key: ec.EllipticCurvePublicKey, tag: bytes, body: bytes, sig: bytes) -> None:
    if len(sig) != _SIG_LEN:
        raise IdentityError("bad signature length")
    der = encode_dss_signature(int.from_bytes(sig[:32], "big"), int.from_bytes(sig[32:], "big"))
    try:
        key.verify(der, tag + body, _SIG)
    except InvalidSignature:
        raise IdentityError("signature does not verify against the network's CA") from None


def check_node_id(node_id: str) -> str:
    """``node_id`` if it is a valid id (1..64 URL-safe characters), else IdentityError."""
    ok = isinstance(node_id, str) and 0 < len(node_id) <= MAX_ID
    if not ok or any(not (c.isascii() and (c.isalnum() or c in "._~-")) for c in node_id):
        raise IdentityError(f"not a node id: {str(node_id)[:80]!r}")
    return node_id


def dns_name(node_id: str) -> str:
    """The DNS name a node's certificate carries: the id's hex in labels of at most 60 digits.

    Hex keeps every id a valid, case-free name (TLS compares names without case, ids are not).
    """
    digits = node_id.encode().hex()
    return ".".join([digits[i : i + 60] for i in range(0, len(digits), 60)] + [_DNS_SUFFIX])


def node_uri(node_id: str) -> str:
    """The URI a node's certificate carries: ``mycelium:node:<id>``."""
    return _URI_PREFIX + node_id


def id_from_uri(uri: str | bytes) -> str | None:
    """The node id of a certificate's URI, or None if it is not one."""
    text = uri.decode(errors="replace") if isinstance(uri, bytes) else uri
    if not text.startswith(_URI_PREFIX):
        return None
    try:
        return check_node_id(text[len(_URI_PREFIX) :])
    except IdentityError:
        return None


# ---------------------------------------------------------------------------- a node's keys


@dataclass(frozen=True)
class NodeKeys:
    """A node's two key pairs (see the module docstring); ``curve_*`` are Z85 bytes."""

    curve_public: bytes
    curve_secret: bytes
    tls_key: ec.EllipticCurvePrivateKey

    @classmethod
    def generate(cls) -> NodeKeys:
        public, secret = zmq.curve_keypair()
        return cls(public, secret, ec.generate_private_key(_CURVE))

    def tls_key_pem(self) -> bytes:
        return self.tls_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )

    @classmethod
    def load(cls, curve_secret: bytes, tls_key_pem: bytes) -> NodeKeys:
        """Keys from their stored forms (IdentityError if they do not parse)."""
        try:
            public = zmq.curve_public(curve_secret)
            key = serialization.load_pem_private_key(tls_key_pem, password=None)
        except (ValueError, TypeError, zmq.ZMQError) as exc:
            raise IdentityError(f"unreadable key: {exc}") from None
        if not isinstance(key, ec.EllipticCurvePrivateKey) or key.curve.name != _CURVE.name:
            raise IdentityError("the TLS key is not a P-256 key")
        return cls(public, curve_secret, key)

    def csr(self, node_id: str) -> bytes:
        """A certificate signing request (PEM) for the TLS key, naming ``node_id``."""
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, check_node_id(node_id))])
        request = x509.CertificateSigningRequestBuilder().subject_name(subject)
        return request.sign(self.tls_key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)


def check_curve_key(text: str) -> bytes:
    """A Curve25519 public key in Z85 (40 characters) as bytes, else IdentityError."""
    if not isinstance(text, str) or len(text) != 40:
        raise IdentityError("public_key must be 40 characters of Z85 (zmq.curve_keypair())")
    try:
        raw = z85.decode(text.encode())
    except (ValueError, KeyError, TypeError):
        raise IdentityError("public_key is not Z85") from None
    if len(raw) != 32:
        raise IdentityError("public_key must encode 32 bytes")
    return text.encode()


# ---------------------------------------------------------------------------- signed things


@dataclass(frozen=True)
class Ticket:
    """The CA's word that ``node_id`` speaks with the CURVE key ``curve_public`` (Z85) until
    ``not_after`` (seconds since the epoch). ``raw`` is the signed encoding."""

    node_id: str
    curve_public: bytes
    role: int
    not_after: int
    raw: bytes

    @property
    def observer(self) -> bool:
        return self.role == ROLE_OBSERVER

    def text(self) -> str:
        return to_text(self.raw)

    def expired(self, now: float | None = None) -> bool:
        return (time.time() if now is None else now) >= self.not_after


def _ticket_body(node_id: str, curve_public: bytes, role: int, not_after: int) -> bytes:
    ident = check_node_id(node_id).encode()
    key = z85.decode(curve_public)
    return struct.pack(">BBI", 1, role, not_after) + key + bytes([len(ident)]) + ident


def parse_ticket(data: bytes) -> tuple[bytes, bytes, int]:
    """Split the front of ``data`` into a ticket's body and signature; returns ``(body, sig,
    length)`` (IdentityError if it is no ticket). Anything after ``length`` is not the ticket's
    (a routing id adds a nonce)."""
    if len(data) < 39 or data[0] != 1:
        raise IdentityError("not a ticket")
    n = data[38]
    end = 39 + n
    if not 0 < n <= MAX_ID or len(data) < end + _SIG_LEN:
        raise IdentityError("truncated ticket")
    return data[:end], data[end : end + _SIG_LEN], end + _SIG_LEN


@dataclass(frozen=True)
class Lease:
    """The registry's grant: ``leader`` leads ``group_id`` for ``term``, serving Flower at
    ``flower_address``. ``raw`` is the signed encoding."""

    group_id: str
    term: int
    leader: str
    flower_address: str
    raw: bytes = b""

    def text(self) -> str:
        return to_text(self.raw)

    def names(self, group_id: str, term: int, leader: str | None, flower_address: str) -> bool:
        """Whether this lease grants exactly that leadership."""
        return (self.group_id, self.term, self.leader, self.flower_address) == (
            group_id,
            term,
            leader,
            flower_address,
        )


@dataclass(frozen=True)
class Revocations:
    """The CA's list of revoked node ids, numbered ``serial`` (higher is newer)."""

    serial: int = 0
    issued_at: float = 0.0
    ids: frozenset[str] = field(default_factory=frozenset)
    raw: bytes = b""

    def text(self) -> str:
        return to_text(self.raw)


# ---------------------------------------------------------------------------- the CA


def _name(cn: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Mycelium network"),
            x509.NameAttribute(NameOID.COMMON_NAME, cn[:64]),
        ]
    )


def _fingerprint(cert: x509.Certificate) -> str:
    return cert.fingerprint(hashes.SHA256()).hex()


class CertificateAuthority:
    """The network's CA: issues certificates, tickets and leases, signs the revocation list.

    Parameters
    ----------
    key : EllipticCurvePrivateKey
        The CA's P-256 key.
    cert_pem : bytes
        Its self-signed certificate (PEM).
    clock : callable
        Seconds since the epoch (default: ``time.time``).
    """

    def __init__(
        self, key: ec.EllipticCurvePrivateKey, cert_pem: bytes, clock: object = time.time
    ) -> None:
        self.key = key
        self.cert_pem = cert_pem
        self.cert = x509.load_pem_x509_certificate(cert_pem)
        self.fingerprint = _fingerprint(self.cert)
        self._clock = clock
        if self.cert.public_key() != key.public_key():
            raise IdentityError("the CA certificate is not the CA key's")

    @classmethod
    def create(cls, years: int = 100, clock: object = time.time) -> CertificateAuthority:
        """A new CA with a fresh key and a self-signed certificate."""
        key = ec.generate_private_key(_CURVE)
        key_id = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
        name = _name(f"Mycelium CA {key_id.digest.hex()[:16]}")
        now = datetime.datetime.now(datetime.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=365 * years))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(_key_usage(ca=True), critical=True)
            .add_extension(key_id, critical=False)
            .sign(key, hashes.SHA256())
        )
        return cls(key, cert.public_bytes(serialization.Encoding.PEM), clock)

    def key_pem(self) -> bytes:
        return self.key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )

    def now(self) -> float:
        return float(self._clock())  # type: ignore[operator]

    def issue_certificate(self, csr_pem: bytes | str, node_id: str, days: int = NODE_DAYS) -> bytes:
        """A certificate (PEM) for the P-256 key of ``csr_pem``, naming ``node_id``.

        The request's own subject is ignored: the registry names the node it enrolled.

        Raises
        ------
        IdentityError
            If the request does not parse, is not self-signed by its key, or the key is not
            P-256.
        """
        raw = csr_pem.encode() if isinstance(csr_pem, str) else csr_pem
        try:
            csr = x509.load_pem_x509_csr(raw)
        except ValueError as exc:
            raise IdentityError(f"csr is not a PEM certificate request: {exc}") from None
        if not csr.is_signature_valid:
            raise IdentityError("csr is not signed by its own key")
        public = csr.public_key()
        if not isinstance(public, ec.EllipticCurvePublicKey) or public.curve.name != _CURVE.name:
            raise IdentityError("csr must be for a P-256 (secp256r1) key")
        check_node_id(node_id)
        now = datetime.datetime.fromtimestamp(self.now(), datetime.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, node_id)]))
            .issuer_name(self.cert.subject)
            .public_key(public)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1))  # tolerate small clock skew
            .not_valid_after(now + datetime.timedelta(days=days))
            .add_extension(
                x509.SubjectAlternativeName(
                    [
                        x509.DNSName(dns_name(node_id)),
                        x509.UniformResourceIdentifier(node_uri(node_id)),
                    ]
                ),
                critical=False,
            )
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(_key_usage(ca=False), critical=True)
            .add_extension(
                x509.ExtendedKeyUsage(
                    [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
                ),
                critical=False,
            )
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()),
                critical=False,
            )
            .sign(self.key, hashes.SHA256())
        )
        return cert.public_bytes(serialization.Encoding.PEM)

    def issue_ticket(
        self, node_id: str, curve_public: bytes, role: int = ROLE_NODE, days: float = NODE_DAYS
    ) -> Ticket:
        """A ticket binding ``node_id`` to ``curve_public`` (Z85) for ``days``."""
        if role not in _ROLES:
            raise IdentityError(f"unknown role {role}")
        not_after = int(self.now() + days * 86400)
        body = _ticket_body(node_id, curve_public, role, not_after)
        raw = body + _sign(self.key, _TAG_TICKET, body)
        return Ticket(node_id, bytes(curve_public), role, not_after, raw)

    def sign_lease(self, group_id: str, term: int, leader: str, flower_address: str) -> Lease:
        """A lease: ``leader`` leads ``group_id`` for ``term`` at ``flower_address``."""
        body = msgpack.packb([1, group_id, term, leader, flower_address])
        raw = body + _sign(self.key, _TAG_LEASE, body)
        return Lease(group_id, term, leader, flower_address, raw)

    def sign_revocations(self, serial: int, ids: Iterable[str]) -> Revocations:
        """The revocation list number ``serial`` naming ``ids`` (sorted, at most MAX_REVOKED)."""
        names = sorted(set(ids))
        if len(names) > MAX_REVOKED:
            raise IdentityError(f"more than {MAX_REVOKED} revoked ids")
        issued = self.now()
        body = msgpack.packb([1, serial, issued, names])
        raw = body + _sign(self.key, _TAG_REVOCATIONS, body)
        return Revocations(serial, issued, frozenset(names), raw)


def _key_usage(*, ca: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=not ca,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=ca,
        crl_sign=ca,
        encipher_only=False,
        decipher_only=False,
    )


# ---------------------------------------------------------------------------- verifying


class Trust:
    """What a node believes: the CA certificate it enrolled with and the newest revocation list.

    Thread-safe: the gossip thread verifies tickets and leases, the ZAP thread asks about keys,
    Flower's threads about node ids, the heartbeat thread installs revocation lists. Verified
    tickets and leases are remembered by their bytes (bounded), so a connection or a record is
    checked once; revocation is looked up on every use.

    Parameters
    ----------
    ca_cert_pem : bytes
        The network's CA certificate (PEM).
    clock : callable
        Seconds since the epoch, for ticket expiry (default: ``time.time``).
    """

    _CACHE = 4096

    def __init__(self, ca_cert_pem: bytes, clock: object = time.time) -> None:
        try:
            self.ca_cert = x509.load_pem_x509_certificate(ca_cert_pem)
        except ValueError as exc:
            raise IdentityError(f"the CA certificate does not parse: {exc}") from None
        public = self.ca_cert.public_key()
        if not isinstance(public, ec.EllipticCurvePublicKey):
            raise IdentityError("the CA key is not an elliptic-curve key")
        self.ca_pem = ca_cert_pem
        self.fingerprint = _fingerprint(self.ca_cert)
        self._key = public
        self._clock = clock
        self._lock = threading.Lock()
        self._tickets: dict[bytes, Ticket] = {}
        self._leases: dict[bytes, Lease] = {}
        self._keys: dict[bytes, str] = {}  # CURVE public key (Z85) -> node id, from tickets
        self.revocations = Revocations()

    def now(self) -> float:
        return float(self._clock())  # type: ignore[operator]

    # -- tickets ----------------------------------------------------------------------------

    def ticket(self, data: bytes) -> Ticket:
        """The ticket at the front of ``data``, verified (IdentityError if it is not one, or if
        it expired or names a revoked node)."""
        body, sig, end = parse_ticket(data)
        raw = bytes(data[:end])
        found = self._tickets.get(raw)
        if found is None:
            _verify(self._key, _TAG_TICKET, body, sig)
            _, role, not_after = struct.unpack(">BBI", body[:6])
            if role not in _ROLES:
                raise IdentityError("unknown role")
            try:
                node_id = check_node_id(body[39:].decode())
            except UnicodeDecodeError:
                raise IdentityError("ticket id is not text") from None
            found = Ticket(node_id, z85.encode(body[6:38]), role, not_after, raw)
            with self._lock:
                if len(self._tickets) >= self._CACHE:
                    self._tickets.clear()
                self._tickets[raw] = found
                self._keys[found.curve_public] = found.node_id
        if found.expired(self.now()):
            raise IdentityError(f"the ticket of {found.node_id} expired")
        if self.revoked(found.node_id):
            raise IdentityError(f"{found.node_id} is revoked")
        return found

    def ticket_text(self, text: str) -> Ticket:
        """:meth:`ticket` of a ticket in text form."""
        return self.ticket(from_text(text, MAX_TICKET))

    def key_revoked(self, curve_public: bytes) -> bool:
        """Whether ``curve_public`` (Z85) belongs to a node the revocation list names."""
        node_id = self._keys.get(bytes(curve_public))
        return node_id is not None and self.revoked(node_id)

    # -- leases -----------------------------------------------------------------------------

    def lease(self, data: bytes) -> Lease:
        """A lease, verified (IdentityError if it is not one or does not verify)."""
        raw = bytes(data)
        found = self._leases.get(raw)
        if found is not None:
            return found
        if len(raw) <= _SIG_LEN or len(raw) > 1024:
            raise IdentityError("not a lease")
        body, sig = raw[:-_SIG_LEN], raw[-_SIG_LEN:]
        _verify(self._key, _TAG_LEASE, body, sig)
        try:
            version, group_id, term, leader, flower = msgpack.unpackb(body, raw=False)
        except (ValueError, TypeError, msgpack.UnpackException):
            raise IdentityError("lease body does not parse") from None
        if (
            version != 1
            or not isinstance(term, int)
            or not all(isinstance(v, str) for v in (group_id, leader, flower))
        ):
            raise IdentityError("lease body does not parse")
        found = Lease(group_id, term, leader, flower, raw)
        with self._lock:
            if len(self._leases) >= self._CACHE:
                self._leases.clear()
            self._leases[raw] = found
        return found

    # -- revocation -------------------------------------------------------------------------

    def parse_revocations(self, data: bytes) -> Revocations:
        """A revocation list, verified (IdentityError if not one)."""
        raw = bytes(data)
        if len(raw) <= _SIG_LEN or len(raw) > MAX_REVOCATIONS_BYTES:
            raise IdentityError("not a revocation list (or larger than gossip carries)")
        body, sig = raw[:-_SIG_LEN], raw[-_SIG_LEN:]
        _verify(self._key, _TAG_REVOCATIONS, body, sig)
        try:
            version, serial, issued, ids = msgpack.unpackb(body, raw=False)
        except (ValueError, TypeError, msgpack.UnpackException):
            raise IdentityError("revocation list does not parse") from None
        if (
            version != 1
            or not isinstance(serial, int)
            or not isinstance(ids, list)
            or len(ids) > MAX_REVOKED
            or not all(isinstance(i, str) for i in ids)
        ):
            raise IdentityError("revocation list does not parse")
        return Revocations(serial, float(issued), frozenset(ids), raw)

    def install(self, data: bytes) -> bool:
        """Take the revocation list ``data`` if it verifies and is newer; True if it was."""
        found = self.parse_revocations(data)
        with self._lock:
            if found.serial <= self.revocations.serial:
                return False
            self.revocations = found
        return True

    def revoked(self, node_id: str) -> bool:
        return node_id in self.revocations.ids


def fingerprint(cert_pem: bytes) -> str:
    """SHA-256 fingerprint (hex) of a PEM certificate."""
    return _fingerprint(x509.load_pem_x509_certificate(cert_pem))


def credential_hash(credential: str) -> str:
    """How the registry keeps a credential: its SHA-256, hex (the credential itself is never
    stored)."""
    return hashlib.sha256(credential.encode()).hexdigest()


# ---------------------------------------------------------------------------- one node's identity


class NodeIdentity:
    """What one node (or observer) speaks with: its id, its keys, and what the registry issued.

    Attributes are replaced whole, never changed in place, so other threads read them safely.
    ``trust`` and ``ticket`` are None until the node enrolled; ``credential`` is the bearer of
    its registry requests; ``certificate`` its TLS certificate (PEM), when it asked for one.

    Parameters
    ----------
    node_id : str
        The node's id (stable across restarts when kept in a state directory).
    keys : NodeKeys
        Its key pairs (default: new ones).
    """

    def __init__(self, node_id: str, keys: NodeKeys | None = None) -> None:
        self.node_id = check_node_id(node_id)
        self.keys = keys or NodeKeys.generate()
        self.trust: Trust | None = None
        self.ticket: Ticket | None = None
        self.credential: str | None = None
        self.certificate: bytes | None = None
        self.registry: str | None = None  # the registry it enrolled with (informational)

    @property
    def enrolled(self) -> bool:
        """Whether the registry issued it a credential and a ticket."""
        return self.ticket is not None and self.trust is not None

    def accept(
        self,
        ca_certificate: str | bytes | None,
        ticket: str | None,
        certificate: str | None = None,
        credential: str | None = None,
    ) -> None:
        """Take what a registration answered: verified against the CA this node knows (or, on
        first contact, the one the answer carries), and checked to be this node's.

        Raises
        ------
        IdentityError
            If the CA changed, or the ticket or certificate is not this node's.
        """
        trust = self.trust
        if ca_certificate:
            pem = ca_certificate.encode() if isinstance(ca_certificate, str) else ca_certificate
            if trust is None:
                trust = Trust(pem)
            elif fingerprint(pem) != trust.fingerprint:
                raise IdentityError(
                    "the registry's CA is not the one this node enrolled with; a node that "
                    "should join another network needs a new state directory"
                )
        if trust is None:
            raise IdentityError("the registry sent no CA certificate")
        issued = None
        if ticket is not None:
            issued = trust.ticket_text(ticket)
            if (issued.node_id, issued.curve_public) != (self.node_id, self.keys.curve_public):
                raise IdentityError("the registry issued a ticket for another node or key")
        if certificate is not None:
            cert = x509.load_pem_x509_certificate(certificate.encode())
            cert.verify_directly_issued_by(trust.ca_cert)
            if cert.public_key() != self.keys.tls_key.public_key():
                raise IdentityError("the registry certified another key")
            self.certificate = certificate.encode()
        self.trust = trust
        if issued is not None:
            self.ticket = issued
        if credential is not None:
            self.credential = credential

    # -- the state file ---------------------------------------------------------------------

    def to_state(self) -> dict[str, str | None]:
        """Everything needed to be this node again (secrets included: keep it owner-only)."""
        return {
            "node_id": self.node_id,
            "curve_secret": self.keys.curve_secret.decode(),
            "tls_key": self.keys.tls_key_pem().decode(),
            "credential": self.credential,
            "ticket": None if self.ticket is None else self.ticket.text(),
            "certificate": None if self.certificate is None else self.certificate.decode(),
            "ca_certificate": None if self.trust is None else self.trust.ca_pem.decode(),
            "registry": self.registry,
        }

    @classmethod
    def from_state(cls, state: dict[str, str | None]) -> NodeIdentity:
        """The identity :meth:`to_state` wrote (IdentityError if it does not hold together).

        A ticket that no longer verifies (expired, say) is dropped: the next registration
        issues a new one.
        """

        def text(name: str) -> str | None:
            value = state.get(name)
            if value is not None and not isinstance(value, str):
                raise IdentityError(f"{name} is not text")
            return value

        node_id, secret, tls = text("node_id"), text("curve_secret"), text("tls_key")
        if not node_id or not secret or not tls:
            raise IdentityError("node_id, curve_secret and tls_key are required")
        identity = cls(node_id, NodeKeys.load(secret.encode(), tls.encode()))
        identity.credential = text("credential")
        identity.registry = text("registry")
        ca = text("ca_certificate")
        if ca:
            identity.trust = Trust(ca.encode())
            ticket = text("ticket")
            try:
                if ticket:
                    identity.accept(None, ticket)
            except IdentityError:
                identity.ticket = None
            cert = text("certificate")
            if cert:
                identity.certificate = cert.encode()
        return identity
