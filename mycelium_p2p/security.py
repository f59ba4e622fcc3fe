"""CURVE keys derived from the network secret.

Every node derives the same two key pairs from the secret: a *server* pair used by every ROUTER
and a *client* pair used by every DEALER. A CURVE client must know the server's public key before
its first message, and that key is never sent on the wire, so a peer without the secret (or with
another one) cannot complete the handshake: it gets no answer and learns nothing, and its frames
never reach the gossip code. Traffic between holders is encrypted and authenticated.

Derivation: ``secret_key = blake2b(secret, key=b"mycelium-gossip", person=ROLE, digest_size=32)``
and ``public = curve_public(z85(secret_key))``; the two roles use different ``person`` strings.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass

import zmq
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


def keys_for(secret: str | bytes | None) -> CurveKeys | None:
    """Keys for ``secret``, or None (with a warning that gossip is open) without one."""
    if secret is None or secret == "" or secret == b"":
        log.warning("gossip is open (no secret): any peer that can reach this port can join")
        return None
    return derive_keys(secret)
