"""CURVE keys derived from the network secret.

Every node derives the same two key pairs from the secret: a *server* pair used by every ROUTER
and a *client* pair used by every DEALER. A CURVE client must know the server's public key before
its first message, and that key is never sent on the wire, so a peer without the secret (or with
another one) cannot complete the handshake: it gets no answer and learns nothing, and its frames
never reach the gossip code. Traffic between holders is encrypted and authenticated.

Derivation: ``secret_key = blake2b(secret, key=b"mycelium-gossip", person=ROLE, digest_size=32)``
and ``public = curve_public(z85(secret_key))``; the two roles use different ``person`` strings.

Knowing the server's public key is not enough to be heard: libzmq alone accepts any client key
pair once the client knows it. Every CURVE ROUTER is therefore admitted through a ZAP handler
(``admit_only``) that accepts only the client keys it trusts, so a stranger's random key pair gets
no answer and its frames never reach the gossip code.
"""

from __future__ import annotations

import hashlib
import itertools
import logging
import threading
from collections.abc import Iterable
from dataclasses import dataclass

import zmq
from zmq.auth.thread import ThreadAuthenticator
from zmq.utils import z85

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CurveKeys:
    """Z85-encoded CURVE key pairs (bytes, 40 characters each)."""

    server_public: bytes
    server_secret: bytes
    client_public: bytes
    client_secret: bytes


def _pair(secret: bytes, role: bytes) -> tuple[bytes, bytes]:
    raw = hashlib.blake2b(secret, key=b"mycelium-gossip", person=role, digest_size=32).digest()
    secret_z85 = z85.encode(raw)
    return zmq.curve_public(secret_z85), secret_z85


def derive_keys(secret: str | bytes) -> CurveKeys:
    """Derive the network's CURVE key pairs from ``secret``.

    Raises
    ------
    ValueError
        If the secret is empty or libzmq lacks CURVE support.
    """
    data = secret.encode() if isinstance(secret, str) else bytes(secret)
    if not data:
        raise ValueError("the network secret must not be empty")
    if not zmq.has("curve"):
        raise ValueError("this libzmq has no CURVE support; cannot use a network secret")
    server_public, server_secret = _pair(data, b"server")
    client_public, client_secret = _pair(data, b"client")
    return CurveKeys(server_public, server_secret, client_public, client_secret)


def keys_for(secret: str | bytes | None, warn: bool = True) -> CurveKeys | None:
    """Keys for ``secret``, or None without one (with a warning that gossip is open, unless
    ``warn`` is false: an observer owns nothing and only reads)."""
    if secret is None or secret == "" or secret == b"":
        if warn:
            log.warning("gossip is open (no secret): any peer that can reach this port can join")
        return None
    return derive_keys(secret)


# ---------------------------------------------------------------------------- admission (ZAP)

_authenticators: dict[int, ThreadAuthenticator] = {}
_auth_lock = threading.Lock()
_domains = itertools.count(1)


class Admission:
    """The client keys one CURVE ROUTER admits; asked by the context's ZAP handler thread.

    The callback runs on that thread for every new connection: it is a set lookup, never I/O.
    """

    def __init__(self, auth: ThreadAuthenticator, domain: str, keys: Iterable[bytes]) -> None:
        self._auth = auth
        self.domain = domain
        self._keys = frozenset(keys)

    def callback(self, domain: str, client_key: bytes) -> bool:
        return domain == self.domain and client_key in self._keys

    def allow(self, keys: Iterable[bytes]) -> None:
        """Replace the set of admitted client keys (Z85)."""
        self._keys = frozenset(keys)

    def close(self) -> None:
        """Forget this ROUTER's domain (its connections are refused from now on)."""
        self._auth.credentials_providers.pop(self.domain, None)


def admit_only(ctx: zmq.Context, router: zmq.Socket, keys: Iterable[bytes]) -> Admission:
    """Admit to ``router`` (a CURVE server, before it binds) only clients holding ``keys``.

    A context has one ZAP handler; it is started on first use and serves every ROUTER of the
    context, each under a ZAP domain of its own with its own set of keys.
    """
    with _auth_lock:
        auth = _authenticators.get(id(ctx))
        if auth is None:
            auth = ThreadAuthenticator(ctx, log=logging.getLogger("mycelium.zap"))
            auth.start()
            _authenticators[id(ctx)] = auth
    domain = f"mycelium-{next(_domains)}"
    admission = Admission(auth, domain, keys)
    auth.configure_curve_callback(domain=domain, credentials_provider=admission)
    router.zap_domain = domain.encode()
    return admission
