"""ZAP admission for CURVE ROUTERs, and the well-known key of the introduction listener.

Every node's gossip ROUTER is a CURVE server with the node's own key pair
(``identity.NodeKeys``); peers connect with their own. libzmq passes a ZAP handler the client's
public key only (measured: the ZAP request's identity frame is the *server* socket's routing id,
not the client's), so ZAP cannot see who the client claims to be. It therefore refuses the keys
of revoked nodes and tags every connection with its client key (the ``User-Id`` each message
carries); the transport then checks each message's routing id, which is the sender's ticket,
against that key (``gossip/transport/zmq.py``).

A node also listens for introductions, on its gossip port + 1, with a well-known key pair
(:data:`INTRO_PUBLIC`): a newcomer that only knows a peer's address learns there the registry's
URL (anyone may), and an enrolled node the peer's own ticket (its gossip key). The key is public
on purpose: it encrypts against a passive listener but authenticates nobody.

Standalone gossip (``python -m mycelium_p2p.gossip --secret``, tests) may still run on one
*shared* key derived from a secret (:func:`derive_keys`): every holder of the secret is every
node there. A node of a network with a registry never does: with a token it enrols and speaks
with its own keys.
"""

from __future__ import annotations

import hashlib
import itertools
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass

import zmq
from zmq.auth.thread import ThreadAuthenticator
from zmq.utils import z85

log = logging.getLogger(__name__)


def _well_known_pair(label: bytes) -> tuple[bytes, bytes]:
    raw = hashlib.blake2b(label, key=b"mycelium-gossip", digest_size=32).digest()
    secret = z85.encode(raw)
    return zmq.curve_public(secret), secret


#: The introduction listener's CURVE key pair: public knowledge (see the module docstring).
INTRO_PUBLIC, INTRO_SECRET = _well_known_pair(b"introduction/v1")


@dataclass(frozen=True)
class CurveKeys:
    """Z85-encoded CURVE key pairs shared by every holder of one secret (bytes, 40 characters)."""

    server_public: bytes
    server_secret: bytes
    client_public: bytes
    client_secret: bytes


def _pair(secret: bytes, role: bytes) -> tuple[bytes, bytes]:
    raw = hashlib.blake2b(secret, key=b"mycelium-gossip", person=role, digest_size=32).digest()
    secret_z85 = z85.encode(raw)
    return zmq.curve_public(secret_z85), secret_z85


def derive_keys(secret: str | bytes) -> CurveKeys:
    """The shared key pairs of ``secret``: ``blake2b(secret, key=b"mycelium-gossip",
    person=ROLE)`` for the roles ``server`` and ``client``.

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


def keys_for(secret: str | bytes | None) -> CurveKeys | None:
    """Shared keys for ``secret``, or None without one (the caller says that gossip is open)."""
    if secret is None or secret == "" or secret == b"":
        return None
    return derive_keys(secret)


# ---------------------------------------------------------------------------- admission (ZAP)

_authenticators: dict[int, ThreadAuthenticator] = {}
_auth_lock = threading.Lock()
_domains = itertools.count(1)


class Admission:
    """Which client keys one CURVE ROUTER admits; asked by the context's ZAP handler thread.

    ``decide(key)`` runs on that thread for every new connection (``key`` in Z85): it must be a
    lookup, never I/O.
    """

    def __init__(
        self, auth: ThreadAuthenticator, domain: str, decide: Callable[[bytes], bool]
    ) -> None:
        self._auth = auth
        self.domain = domain
        self._decide = decide

    def callback(self, domain: str, client_key: bytes) -> bool:
        if domain != self.domain:
            return False
        try:
            return bool(self._decide(client_key))
        except Exception:  # a broken decision admits nobody
            log.exception("ZAP decision failed")
            return False

    def close(self) -> None:
        """Forget this ROUTER's domain (its connections are refused from now on)."""
        self._auth.credentials_providers.pop(self.domain, None)


def admit(ctx: zmq.Context, router: zmq.Socket, decide: Callable[[bytes], bool]) -> Admission:
    """Admit to ``router`` (a CURVE server, before it binds) the clients ``decide`` accepts.

    A context has one ZAP handler; it is started on first use and serves every ROUTER of the
    context, each under a ZAP domain of its own. The ``User-Id`` of an admitted connection's
    messages is its client key in Z85.
    """
    with _auth_lock:
        auth = _authenticators.get(id(ctx))
        if auth is None:
            auth = ThreadAuthenticator(ctx, log=logging.getLogger("mycelium.zap"))
            auth.start()
            _authenticators[id(ctx)] = auth
    domain = f"mycelium-{next(_domains)}"
    admission = Admission(auth, domain, decide)
    auth.configure_curve_callback(domain=domain, credentials_provider=admission)
    router.zap_domain = domain.encode()
    return admission
