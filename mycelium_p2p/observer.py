"""Observers (the viewer, ``status --peer``) on gossip: open, or with a ticket of their own.

In a network with a token every gossip connection carries its sender's ticket, so an observer
needs one too. It makes a CURVE key pair, names itself after it (``obs-`` and the first 16 hex
digits of the key's SHA-256, as the registry does) and asks the registry for an observer ticket
with the token it holds (``POST /observers/ticket``). Without a registry URL it asks the first
peer that answers its introduction listener.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

from mycelium_p2p.config import GossipConfig
from mycelium_p2p.groups import GossipNode
from mycelium_p2p.identity import IdentityError, NodeIdentity, NodeKeys, credential_hash
from mycelium_p2p.registry_client import RegistryClient, RegistryError, RegistryUnavailable


class ObserverError(Exception):
    """The observer could not get a ticket (no registry known, or the registry refused)."""


def start_observer(
    config: GossipConfig,
    *,
    host: str,
    token: str | None,
    peers: Sequence[str] = (),
    registry_url: str | None = None,
    meta: dict[str, Any] | None = None,
    prefix: str = "observer",
) -> GossipNode:
    """A started observer ``GossipNode``: open without ``token``, else holding an observer
    ticket from the registry (``registry_url``, or the one the first of ``peers`` names).

    Raises
    ------
    ObserverError
        With a token, if no registry is known or it refused the ticket.
    """
    if not token:
        node = GossipNode(
            f"{prefix}-{uuid.uuid4().hex[:8]}",
            config,
            host=host,
            meta=meta,
            observer=True,
            registry_url=registry_url,
        )
        node.start()
        return node
    keys = NodeKeys.generate()
    identity = NodeIdentity("obs-" + credential_hash(keys.curve_public.decode())[:16], keys)
    node = GossipNode(
        identity.node_id,
        config,
        host=host,
        meta=meta,
        observer=True,
        registry_url=registry_url,
        identity=identity,
    )
    node.start()
    try:
        url = registry_url
        for peer in peers:
            if url:
                break
            url = node.introduce(peer, 2.0)
        if not url:
            raise ObserverError(
                "no registry known to ask for an observer ticket (give --bootstrap URL)"
            )
        try:
            with RegistryClient(url, token=token, retries=1, timeout=5.0) as client:
                answer = client.observer_ticket(keys.curve_public.decode())
            identity.accept(answer.ca_certificate, answer.ticket)
        except (RegistryError, RegistryUnavailable, IdentityError) as exc:
            raise ObserverError(f"no observer ticket from {url}: {exc}") from exc
        node.set_ticket()
    except BaseException:
        node.stop()
        raise
    return node
