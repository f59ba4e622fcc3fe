"""The registry port over HTTP: a client for whichever registry URL the node knows right now.

A node may start with only a peer and learn the registry's URL by gossip; until then every call
raises ``RegistryUnavailable``. When the URL changes the client is replaced.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from mycelium_p2p.registry_client import RegistryClient, RegistryUnavailable


@dataclass(frozen=True)
class RegisteredNode:
    id: str
    group: str | None


@dataclass(frozen=True)
class RegisteredGroup:
    id: str
    leader: str | None
    term: int


def _node(answer: Any) -> RegisteredNode:
    answer = answer if isinstance(answer, dict) else {}
    group = answer.get("group")
    return RegisteredNode(str(answer.get("id", "")), str(group) if group else None)


def _group(answer: Any) -> RegisteredGroup:
    answer = answer if isinstance(answer, dict) else {}
    leader = answer.get("leader")
    term = answer.get("term")
    return RegisteredGroup(
        str(answer.get("id", "")),
        str(leader) if leader else None,
        term if isinstance(term, int) and not isinstance(term, bool) else 0,
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

    def register(self, **fields: Any) -> RegisteredNode:
        return _node(self._http().register(**fields))

    def heartbeat(self, node_id: str, **metrics: Any) -> RegisteredNode:
        return _node(self._http().heartbeat(node_id, **metrics))

    def deregister(self, node_id: str) -> RegisteredNode:
        return _node(self._http().deregister(node_id))

    def peers(self, limit: int) -> list[str]:
        answer = self._http().peers(limit=limit)
        return [p for p in answer if isinstance(p, str)] if isinstance(answer, list) else []

    def group(self, group_id: str) -> RegisteredGroup:
        return _group(self._http().group(group_id))

    def create_group(self, **fields: Any) -> RegisteredGroup:
        return _group(self._http().create_group(**fields))

    def join_group(self, **fields: Any) -> RegisteredGroup:
        return _group(self._http().join_group(**fields))

    def leave_group(self, *, node_id: str) -> RegisteredNode:
        return _node(self._http().leave_group(node_id=node_id))

    def claim_leadership(self, group_id: str, **fields: Any) -> RegisteredGroup:
        return _group(self._http().claim_leadership(group_id, **fields))

    def report_performance(self, group_id: str, **fields: Any) -> RegisteredGroup:
        return _group(self._http().report_performance(group_id, **fields))

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None
