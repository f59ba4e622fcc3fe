"""HTTP client of the bootstrap registry, with timeouts, retries with backoff, and failover.

One method per endpoint; each returns the answer decoded into the registry's own shapes
(``registry_api``: ``NodeOut``, ``GroupOut``, ...), checked on the way in, so callers read
``group.leader``. A 4xx answer raises :class:`RegistryError` at once (never retried); connection
errors, timeouts and 5xx answers are retried ``retries`` times with exponential backoff, then
raise :class:`RegistryUnavailable`, as does an answer that does not fit its shape.
Given several registry URLs (``"http://a:8000,http://b:8000"``: registries sharing one
PostgreSQL database), a failed attempt moves on to the next URL at once, and the client keeps
using the one that answered.

Retrying a write after a timeout may apply it twice; every write of the registry is idempotent
or fails cleanly the second time (a join to the same group is a no-op, a second create of the
same group id or a second claim of the same term is a 409).
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from typing import Any

import httpx
import msgspec

from mycelium_p2p.netaddr import registry_base_url
from mycelium_p2p.registry_api import (
    EventOut,
    GroupOut,
    HealthOut,
    HeartbeatOut,
    NetworkOut,
    NodeOut,
    ObserverOut,
    RegisteredOut,
    RevocationsOut,
)


class RegistryError(Exception):
    """The registry refused the request (a 4xx answer); ``fields`` names the body fields a
    validation error (400) was about, when the registry said."""

    def __init__(self, status: int, detail: str, fields: tuple[str, ...] = ()) -> None:
        super().__init__(f"registry answered {status}: {detail}")
        self.status = status
        self.detail = detail
        self.fields = fields


class UntrustedAnswer(RegistryError):
    """A registration answer this node cannot trust (another network's CA, a ticket for another
    node or key): no retry can change it."""


class RegistryUnavailable(Exception):
    """The registry could not be reached (or kept failing) after all retries."""


class RegistryClient:
    """Client of the registry's HTTP API.

    Parameters
    ----------
    base_url : str
        e.g. ``"http://127.0.0.1:8000"`` (``127.0.0.1:8000`` gets ``http://``; a path is
        dropped: the API starts at the root), or several comma-separated URLs of registries that
        share one database (``"http://a:8000,http://b:8000"``), tried in turn.
    token : str, optional
        Bearer token sent with every request (default: None).
    timeout : float
        Seconds per attempt (default: 5.0).
    retries : int
        Extra attempts after the first on connection errors and 5xx (default: 3); with several
        URLs, extra rounds through all of them.
    backoff : float
        First delay in seconds; doubles each retry, with up to 50% jitter (default: 0.2).
    rng : random.Random, optional
        Jitter source (default: a fresh ``random.Random()``).
    sleep : callable
        Sleep function, injectable for tests (default: ``time.sleep``).
    transport : httpx.BaseTransport, optional
        For tests (default: a real network transport).
    """

    def __init__(
        self,
        base_url: str,
        token: str | None = None,
        timeout: float = 5.0,
        retries: int = 3,
        backoff: float = 0.2,
        rng: random.Random | None = None,
        sleep: Callable[[float], None] = time.sleep,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        if retries < 0:
            raise ValueError("retries must be >= 0")
        # ``host:port`` and ``.../docs`` as people type them mean the registry at that address.
        urls = [registry_base_url(url) for url in base_url.split(",") if url.strip()]
        if not urls:
            raise ValueError(f"no registry URL in {base_url!r}")
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.urls = tuple(urls)
        self.base_url = ",".join(urls)
        self.retries = retries
        self.backoff = backoff
        self._rng = rng or random.Random()
        self._sleep = sleep
        self._current = 0  # index of the URL that last answered
        self._http = httpx.Client(timeout=timeout, headers=headers, transport=transport)

    # ---- plumbing -----------------------------------------------------------------------------

    def close(self) -> None:
        """Close the connection pool."""
        self._http.close()

    def __enter__(self) -> RegistryClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _request(self, method: str, path: str, answer: Any, **kwargs: Any) -> Any:
        last: str = ""
        count = len(self.urls)
        for attempt in range(self.retries + 1):
            if attempt:
                delay = self.backoff * 2 ** (attempt - 1)
                self._sleep(delay * (1 + 0.5 * self._rng.random()))
            for step in range(count):  # the URL that answered last first, then the others
                index = (self._current + step) % count
                url = self.urls[index]
                try:
                    response = self._http.request(method, f"{url}{path}", **kwargs)
                except httpx.TransportError as exc:
                    last = f"{url}: {type(exc).__name__}: {exc}"
                    continue
                if response.status_code >= 500:
                    last = f"{url}: {response.status_code}: {_detail(response)}"
                    continue
                self._current = index
                if response.status_code >= 400:
                    raise RegistryError(response.status_code, _detail(response), _fields(response))
                try:
                    return msgspec.json.decode(response.content, type=answer)
                except (msgspec.ValidationError, msgspec.DecodeError) as exc:
                    raise RegistryUnavailable(f"{method} {path}: unexpected answer: {exc}") from exc
        if count > 1:
            raise RegistryUnavailable(
                f"{method} {path} failed on each of {count} registries ({self.base_url}), "
                f"{self.retries + 1} attempts each ({last})"
            )
        raise RegistryUnavailable(
            f"{method} {self.base_url}{path} failed after {self.retries + 1} attempts ({last})"
        )

    # ---- endpoints ----------------------------------------------------------------------------

    def health(self) -> HealthOut:
        """``GET /health``."""
        return self._request("GET", "/health", HealthOut)

    def register(
        self,
        id: str,
        name: str,
        gossip_address: str,
        flower_address: str | None = None,
        model: str | None = None,
        data: dict[str, Any] | None = None,
        public_key: str | None = None,
        csr: str | None = None,
    ) -> RegisteredOut:
        """``POST /nodes/register``: register or update a node; returns the node and, with a
        token, what the registry issued it (``credential`` when it enrolled, ``ticket``, and
        ``certificate`` and ``ca_certificate`` for a ``csr``)."""
        body: dict[str, Any] = {
            "id": id,
            "name": name,
            "gossip_address": gossip_address,
            "flower_address": flower_address,
            "model": model,
            "data": data,
        }
        if public_key is not None:
            body["public_key"] = public_key
        if csr is not None:
            body["csr"] = csr
        return self._request("POST", "/nodes/register", RegisteredOut, json=body)

    def heartbeat(
        self,
        node_id: str,
        accuracy: float | None = None,
        loss: float | None = None,
        round: int | None = None,
    ) -> HeartbeatOut:
        """``POST /nodes/{id}/heartbeat`` with optional metrics; the node and a few live peers."""
        body = {"accuracy": accuracy, "loss": loss, "round": round}
        return self._request("POST", f"/nodes/{node_id}/heartbeat", HeartbeatOut, json=body)

    def deregister(self, node_id: str) -> NodeOut:
        """``DELETE /nodes/{id}``: graceful leave; returns the node (status ``gone``)."""
        return self._request("DELETE", f"/nodes/{node_id}", NodeOut)

    def nodes(self) -> list[NodeOut]:
        """``GET /nodes``."""
        return self._request("GET", "/nodes", list[NodeOut])

    def node(self, node_id: str) -> NodeOut:
        """``GET /nodes/{id}``."""
        return self._request("GET", f"/nodes/{node_id}", NodeOut)

    def create_group(
        self,
        name: str,
        leader: str,
        flower_address: str,
        model: str,
        capacity: int = 5,
        join_policy: str = "open",
        invited: list[str] | None = None,
        id: str | None = None,
        reason: str | None = None,
    ) -> GroupOut:
        """``POST /groups``: the leader founds a group (term 1); returns the group.

        ``id`` is chosen by the registry when absent; ``reason`` goes into the event log.
        """
        body: dict[str, Any] = {
            "name": name,
            "leader": leader,
            "flower_address": flower_address,
            "model": model,
            "capacity": capacity,
            "join_policy": join_policy,
            "invited": invited,
            "id": id,
            "reason": reason,
        }
        return self._request("POST", "/groups", GroupOut, json=body)

    def groups(self, include_dissolved: bool = False) -> list[GroupOut]:
        """``GET /groups`` (``?all=true`` with ``include_dissolved``)."""
        params = {"all": "true"} if include_dissolved else None
        return self._request("GET", "/groups", list[GroupOut], params=params)

    def group(self, group_id: str) -> GroupOut:
        """``GET /groups/{id}``."""
        return self._request("GET", f"/groups/{group_id}", GroupOut)

    def join_group(self, node_id: str, group_id: str, reason: str | None = None) -> GroupOut:
        """``POST /groups/join``: join (or migrate to) a group; returns the group.

        ``reason`` (why the node moves) goes into the ``joined``/``migrated`` event.
        """
        body = {"node_id": node_id, "group_id": group_id, "reason": reason}
        return self._request("POST", "/groups/join", GroupOut, json=body)

    def leave_group(self, node_id: str) -> NodeOut:
        """``POST /groups/leave``; returns the node."""
        return self._request("POST", "/groups/leave", NodeOut, json={"node_id": node_id})

    def report_performance(
        self,
        group_id: str,
        node_id: str,
        term: int,
        accuracy: float,
        loss: float,
        round: int,
        examples: int,
    ) -> GroupOut:
        """``PUT /groups/{id}/performance`` (leader of ``term`` only); returns the group."""
        body = {
            "node_id": node_id,
            "term": term,
            "accuracy": accuracy,
            "loss": loss,
            "round": round,
            "examples": examples,
        }
        return self._request("PUT", f"/groups/{group_id}/performance", GroupOut, json=body)

    def claim_leadership(
        self, group_id: str, node_id: str, term: int, flower_address: str
    ) -> GroupOut:
        """``PUT /groups/{id}/leader`` with ``term = current + 1``; 409 if another won."""
        body = {"node_id": node_id, "term": term, "flower_address": flower_address}
        return self._request("PUT", f"/groups/{group_id}/leader", GroupOut, json=body)

    def revoke(self, node_id: str) -> RevocationsOut:
        """``POST /nodes/{id}/revoke`` (operator token): remove the node for good; its id joins
        the signed revocation list, which is returned."""
        return self._request("POST", f"/nodes/{node_id}/revoke", RevocationsOut)

    def observer_ticket(self, public_key: str) -> ObserverOut:
        """``POST /observers/ticket``: a ticket for an observer's CURVE key (with a token)."""
        body = {"public_key": public_key}
        return self._request("POST", "/observers/ticket", ObserverOut, json=body)

    def revocations(self) -> RevocationsOut:
        """``GET /revocations``: the signed revocation list (with a token)."""
        return self._request("GET", "/revocations", RevocationsOut)

    def peers(self, limit: int = 8) -> list[str]:
        """``GET /peers?limit=k``: gossip addresses (``host:port``) of up to k live nodes."""
        return self._request("GET", "/peers", list[str], params={"limit": limit})

    def network(self, events: int = 100) -> NetworkOut:
        """``GET /network``: ``{"time", "groups", "nodes", "events"}``."""
        return self._request("GET", "/network", NetworkOut, params={"events": events})

    def events(self, after: int = 0, limit: int = 1000) -> list[EventOut]:
        """``GET /events?after=ID``: events with a larger id, oldest first."""
        return self._request(
            "GET", "/events", list[EventOut], params={"after": after, "limit": limit}
        )


def _detail(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        # Not JSON: another web server answered (an HTML page would fill a screen); say so.
        return f"{response.reason_phrase or 'no reason given'} (not JSON: is it a registry?)"
    if isinstance(body, dict) and "detail" in body:
        detail = str(body["detail"])
        extra = body.get("extra")
        if isinstance(extra, list) and extra:
            parts = [f"{e.get('key')}: {e.get('message')}" for e in extra if isinstance(e, dict)]
            detail = f"{detail} ({'; '.join(parts)})"
        return detail
    return str(body)[:200]


def _fields(response: httpx.Response) -> tuple[str, ...]:
    """The body fields a 400 answer's validation errors name (Litestar's ``extra`` list)."""
    try:
        extra = response.json().get("extra")
    except (ValueError, AttributeError):
        return ()
    if not isinstance(extra, list):
        return ()
    return tuple(str(e["key"]) for e in extra if isinstance(e, dict) and e.get("key"))
