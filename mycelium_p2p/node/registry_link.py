"""The registry port over HTTP: a client for whichever registry URL the node knows right now.

A node may start with only a peer and learn the registry's URL by gossip; until then every call
raises ``RegistryUnavailable``. When the URL changes the client is replaced.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from mycelium_p2p.registry_api import GroupOut, NodeOut
from mycelium_p2p.registry_client import RegistryClient, RegistryUnavailable


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
    """

    def __init__(
        self,
        url: Callable[[], str | None],
        token: str | None = None,
        timeout: float = 3.0,
        retries: int = 1,
    ) -> None:
        self._url = url
        self._token = token
        self._timeout = timeout
        self._retries = retries
        self._client: RegistryClient | None = None

    def _http(self) -> RegistryClient:
        url = self._url()
        if not url:
            raise RegistryUnavailable("no registry known yet")
        if self._client is None or self._client.base_url != url.rstrip("/"):
            if self._client is not None:
                self._client.close()
            self._client = RegistryClient(
                url, token=self._token, timeout=self._timeout, retries=self._retries
            )
        return self._client

    def register(self, **fields: Any) -> NodeOut:
        return self._http().register(**fields)

    def heartbeat(self, node_id: str, **metrics: Any) -> NodeOut:
        return self._http().heartbeat(node_id, **metrics)

    def deregister(self, node_id: str) -> NodeOut:
        return self._http().deregister(node_id)

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
