"""The registry port over HTTP: a client for whichever registry URL the node knows right now.

A node may start with only a peer and learn the registry's URL by gossip; until then every call
raises ``RegistryUnavailable``. When the URL changes the client is replaced.

With an identity (a network with a token) the node speaks as itself: every request carries its
credential once it has one (the admission token only until then), and every registration sends
its CURVE public key and, until it holds a certificate, a CSR for its TLS key; what the answer
issues is verified and taken (``NodeIdentity.accept``), then ``on_enrolled`` runs (the node saves
its state directory and gossips its new ticket).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from mycelium_p2p.identity import IdentityError, NodeIdentity
from mycelium_p2p.registry_api import GroupOut, NodeOut, RevocationsOut
from mycelium_p2p.registry_client import (
    RegistryClient,
    RegistryUnavailable,
    UntrustedAnswer,
)


class RegistryLink:
    """The registry port (see ``ports.RegistryPort``).

    Parameters
    ----------
    url : callable
        Returns the registry URL the node knows now (configured, or learned by gossip), or None.
    token : str | None
        Bearer token (default: None).
    timeout : float
        Seconds per attempt (default: 3).
    retries : int
        Extra attempts on connection errors and 5xx (default: 1).
    identity : NodeIdentity | None
        The node's identity (with a token): see the module docstring (default: None).
    on_enrolled : callable | None
        Called after a registration issued something new (default: None).
    """

    def __init__(
        self,
        url: Callable[[], str | None],
        token: str | None = None,
        timeout: float = 3.0,
        retries: int = 1,
        identity: NodeIdentity | None = None,
        on_enrolled: Callable[[], None] | None = None,
    ) -> None:
        self._url = url
        self._token = token
        self._timeout = timeout
        self._retries = retries
        self._identity = identity
        self._on_enrolled = on_enrolled
        self._client: RegistryClient | None = None
        self._bearer: str | None = None

    def _http(self) -> RegistryClient:
        url = self._url()
        if not url:
            raise RegistryUnavailable("no registry known yet")
        identity = self._identity
        bearer = (identity.credential if identity is not None else None) or self._token
        if (
            self._client is None
            or self._client.base_url != url.rstrip("/")
            or bearer != self._bearer
        ):
            if self._client is not None:
                self._client.close()
            self._client = RegistryClient(
                url, token=bearer, timeout=self._timeout, retries=self._retries
            )
            self._bearer = bearer
        return self._client

    def register(self, **fields: Any) -> NodeOut:
        identity = self._identity
        if identity is None or not self._token:
            return self._http().register(**fields)
        fields["public_key"] = identity.keys.curve_public.decode()
        if identity.certificate is None or identity.trust is None:
            fields["csr"] = identity.keys.csr(identity.node_id).decode()
        answer = self._http().register(**fields)
        before = (identity.ticket is None, identity.credential, identity.certificate)
        try:
            identity.accept(
                answer.ca_certificate, answer.ticket, answer.certificate, answer.credential
            )
        except IdentityError as exc:  # a registry of another network, or a broken answer
            raise UntrustedAnswer(409, f"the registry's answer does not verify: {exc}") from None
        # A fresh ticket alone (every registration renews it) changes nothing worth saying.
        if (identity.ticket is None, identity.credential, identity.certificate) != before:
            identity.registry = self._url()
            if self._on_enrolled is not None:
                self._on_enrolled()
        return answer

    def heartbeat(self, node_id: str, **metrics: Any) -> NodeOut:
        return self._http().heartbeat(node_id, **metrics)

    def deregister(self, node_id: str) -> NodeOut:
        return self._http().deregister(node_id)

    def revocations(self) -> RevocationsOut:
        return self._http().revocations()

    def peers(self, limit: int) -> list[str]:
        return self._http().peers(limit=limit)

    def group(self, group_id: str) -> GroupOut:
        return self._http().group(group_id)

    def create_group(self, **fields: Any) -> GroupOut:
        return self._http().create_group(**fields)

    def join_group(self, **fields: Any) -> GroupOut:
        return self._http().join_group(**fields)

    def leave_group(self, *, node_id: str) -> NodeOut:
        return self._http().leave_group(node_id=node_id)

    def claim_leadership(self, group_id: str, **fields: Any) -> GroupOut:
        return self._http().claim_leadership(group_id, **fields)

    def report_performance(self, group_id: str, **fields: Any) -> GroupOut:
        return self._http().report_performance(group_id, **fields)

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None
