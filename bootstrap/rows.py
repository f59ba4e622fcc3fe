"""Rows of the registry's tables as the API's structs.

The store reads and writes with plain SQL; these are its column lists and the conversions of
their rows into :mod:`mycelium_p2p.registry_api` structs. A row that no write of this version
can make (an older version's, or edited by hand) is shown with its unreadable column as empty,
and logged once: a read never fails on it.
"""

from __future__ import annotations

import json
import logging
import math
import threading
from typing import Any

import msgspec

from mycelium_p2p.registry_api import (
    MAP_MAX_BYTES,
    EventOut,
    FlatMap,
    GroupMetrics,
    GroupOut,
    NodeMetrics,
    NodeOut,
    flat_map_problem,
)

log = logging.getLogger("mycelium.registry")

#: Decodes and checks a stored free-form map in one pass (a reused decoder keeps its type info;
#: ``json.loads`` then ``msgspec.convert`` cost a fifth of a registration).
_FLAT_MAP = msgspec.json.Decoder(FlatMap)

NODE_COLUMNS = (
    "id, name, status, group_id, gossip_address, flower_address, model, data, accuracy, loss, "
    "round, registered_at, last_seen"
)
GROUP_COLUMNS = (
    "id, name, leader, term, version, flower_address, capacity, model, join_policy, invited, "
    "status, accuracy, loss, round, examples, created_at, updated_at"
)
EVENT_COLUMNS = 'id, ts, kind, node, "group", data'

#: Node statuses that count as live (may join, lead, be sampled as a peer).
LIVE = ("alive", "suspect")


def dumps(value: Any) -> str:
    """Compact JSON for a map or list column."""
    return json.dumps(value, separators=(",", ":"), allow_nan=False)


def finite(value: Any) -> float | None:
    """A stored metric, or None if it is not a finite number (NaN, or an older version's text)."""
    if isinstance(value, int | float) and math.isfinite(value):
        return value
    return None


def _decoded(text: Any) -> Any:
    """A JSON column's value, or None if it cannot be read (not text, not JSON, nested past the
    decoder's recursion limit)."""
    try:
        return json.loads(text)
    except (TypeError, ValueError, RecursionError):
        return None


class Rows:
    """Converts rows to structs, warning once per unreadable row."""

    def __init__(self) -> None:
        self._warned: set[str] = set()
        self._lock = threading.Lock()

    def unreadable(self, where: str, problem: str) -> None:
        with self._lock:
            if where in self._warned:
                return
            self._warned.add(where)
        log.warning("%s is unreadable (%s); shown as empty", where, problem[:200])

    def flat_map(self, text: Any, where: str) -> dict[str, Any]:
        """A free-form map column (node data, event data); ``{}`` if it is not a valid one."""
        if isinstance(text, str) and len(text) <= MAP_MAX_BYTES:
            # Short text cannot encode past the size limit: one validating decode says it all.
            try:
                return _FLAT_MAP.decode(text)
            except (msgspec.DecodeError, RecursionError):
                pass  # the slow path below names the problem
        value = _decoded(text)
        problem = "not JSON, or nested too deeply" if value is None else flat_map_problem(value)
        if problem is not None:
            self.unreadable(where, problem)
            return {}
        return value  # type: ignore[no-any-return]

    def ids(self, text: Any, where: str) -> list[str]:
        """A JSON list of ids (a group's invitations); ``[]`` if it is not one."""
        value = _decoded(text)
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            return value
        self.unreadable(where, "not a list of ids")
        return []

    def node(self, row: tuple[Any, ...]) -> NodeOut:
        """A row of :data:`NODE_COLUMNS`."""
        (node_id, name, status, group, gossip, flower, model, data, acc, loss, rnd, reg, seen) = row
        return NodeOut(
            id=node_id,
            name=name,
            status=status,
            group=group,
            gossip_address=gossip,
            flower_address=flower,
            model=model,
            data=self.flat_map(data, f"data of node {node_id!r}"),
            metrics=NodeMetrics(accuracy=finite(acc), loss=finite(loss), round=rnd),
            registered_at=reg,
            last_seen=seen,
        )

    def group(self, row: tuple[Any, ...], members: list[str]) -> GroupOut:
        """A row of :data:`GROUP_COLUMNS` with its members."""
        (gid, name, leader, term, version, flower, capacity, model, policy, invited, status) = row[
            :11
        ]
        acc, loss, rnd, examples, created, updated = row[11:]
        return GroupOut(
            id=gid,
            name=name,
            leader=leader,
            term=term,
            version=version,
            flower_address=flower,
            members=members,
            capacity=capacity,
            model=model,
            join_policy=policy,
            invited=self.ids(invited, f"invitations of group {gid!r}"),
            status=status,
            metrics=GroupMetrics(
                accuracy=finite(acc), loss=finite(loss), round=rnd, examples=examples
            ),
            created_at=created,
            updated_at=updated,
        )

    def event(self, row: tuple[Any, ...]) -> EventOut:
        """A row of :data:`EVENT_COLUMNS`."""
        event_id, ts, kind, node, group, data = row
        return EventOut(
            id=event_id,
            ts=ts,
            kind=kind,
            node=node,
            group=group,
            data=self.flat_map(data, f"data of event {event_id}"),
        )
