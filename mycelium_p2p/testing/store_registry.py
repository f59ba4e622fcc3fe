"""The registry port straight onto a registry store, without HTTP (the in-memory network).

The store is the registry's real one (its rules: capacity, terms, expiry), given by the caller
so that this package does not depend on the registry's: ``bootstrap.store.RegistryStore`` on an
in-memory SQLite database. Its refusals carry an HTTP status, mapped to ``RegistryError`` as the
HTTP client would; bodies are validated as the HTTP API validates them. Calls are counted, for
the benchmark's registry load.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import msgspec

from mycelium_p2p.registry_api import (
    CreateGroupBody,
    HeartbeatBody,
    LeaderBody,
    PerformanceBody,
    RegisterBody,
)
from mycelium_p2p.registry_client import RegistryError, RegistryUnavailable


class StoreRegistry:
    """A registry port (``node.ports.RegistryPort``) over ``store``; ``up`` False refuses every
    call as an unreachable registry would."""

    def __init__(self, store: Any) -> None:
        self.store = store
        self.calls: Counter[str] = Counter()
        self.up = True

    def _call(self, name: str, fn: Any, *args: Any) -> Any:
        self.calls[name] += 1
        if not self.up:
            raise RegistryUnavailable("registry down")
        try:
            return fn(*args)
        except msgspec.ValidationError as exc:
            raise RegistryError(400, str(exc)) from exc
        except Exception as exc:
            status = getattr(exc, "status", None)
            if isinstance(status, int):
                raise RegistryError(status, str(getattr(exc, "detail", exc))) from exc
            raise

    @staticmethod
    def _body(kind: type, **fields: Any) -> Any:
        return msgspec.convert(fields, kind)

    def register(self, **fields: Any) -> Any:
        return self._call(
            "register", lambda: self.store.register(self._body(RegisterBody, **fields))
        )

    def heartbeat(self, node_id: str, **metrics: Any) -> Any:
        return self._call(
            "heartbeat",
            lambda: self.store.with_peers(
                self.store.heartbeat(node_id, self._body(HeartbeatBody, **metrics))
            ),
        )

    def deregister(self, node_id: str) -> Any:
        return self._call("deregister", self.store.remove, node_id)

    def peers(self, limit: int) -> list[str]:
        return self._call("peers", self.store.peers, limit)  # type: ignore[no-any-return]

    def group(self, group_id: str) -> Any:
        return self._call("group", self.store.group, group_id)

    def create_group(self, **fields: Any) -> Any:
        return self._call(
            "create_group", lambda: self.store.create_group(self._body(CreateGroupBody, **fields))
        )

    def join_group(self, *, node_id: str, group_id: str, reason: str | None) -> Any:
        return self._call("join_group", self.store.join, node_id, group_id, reason)

    def leave_group(self, *, node_id: str) -> Any:
        return self._call("leave_group", self.store.leave, node_id)

    def claim_leadership(self, group_id: str, **fields: Any) -> Any:
        return self._call(
            "claim_leadership",
            lambda: self.store.claim_leader(group_id, self._body(LeaderBody, **fields)),
        )

    def report_performance(self, group_id: str, **fields: Any) -> Any:
        return self._call(
            "report_performance",
            lambda: self.store.report_performance(group_id, self._body(PerformanceBody, **fields)),
        )

    def close(self) -> None:
        pass
