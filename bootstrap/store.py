"""The registry's state and rules over SQLite: no HTTP here.

Every write is one ``BEGIN IMMEDIATE`` transaction, so a check (capacity, term, membership) and
the write that depends on it are atomic, and a write is either wholly there or not at all.
Errors are :class:`StoreError` subclasses carrying the HTTP status the API layer maps them to.
"""

from __future__ import annotations

import json
import logging
import math
import random
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import peewee as pw

from bootstrap.db import DatabaseLock, Models, build_models, ensure_schema, open_database
from mycelium_p2p.registry_api import (
    CreateGroupBody,
    EventOut,
    GroupMetrics,
    GroupOut,
    HeartbeatBody,
    LeaderBody,
    NetworkOut,
    NodeMetrics,
    NodeOut,
    PerformanceBody,
    RegisterBody,
    flat_map_problem,
)

log = logging.getLogger("mycelium.registry")

Clock = Callable[[], float]

#: Node statuses that count as live (may join, lead, be sampled as a peer).
LIVE = ("alive", "suspect")


class StoreError(Exception):
    """A request the registry refuses; ``status`` is the HTTP status it maps to."""

    status = 400

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class NotFound(StoreError):
    """An unknown node or group id."""

    status = 404


class Forbidden(StoreError):
    """Not allowed by the group's join policy."""

    status = 403


class Conflict(StoreError):
    """The request conflicts with the current state (full group, stale term, not leader...)."""

    status = 409


@dataclass(frozen=True)
class LivenessConfig:
    """When silent nodes become suspect and dead, and how often the registry checks.

    Parameters
    ----------
    suspect_after : float
        Seconds without a heartbeat before a node is ``suspect`` (default: 45, one and a half
        of the nodes' default 30 s heartbeat). A suspect node is still a member of its group.
    dead_after : float
        Seconds without a heartbeat before a node is ``dead`` and leaves its group (default: 90,
        three missed heartbeats).
        Shorter reacts faster to crashes but drops nodes on a slow network.
    sweep_interval : float
        Seconds between two expiry sweeps (default: 1). Expiry lags by up to this much.
    retention : float
        Seconds after which a dead or gone node is forgotten, counted from when it was last seen
        (default: 86400, a day). Its row is deleted by the sweep; the event log keeps its history.
    """

    suspect_after: float = 45.0
    dead_after: float = 90.0
    sweep_interval: float = 1.0
    retention: float = 86400.0

    def __post_init__(self) -> None:
        if not (0 < self.suspect_after <= self.dead_after):
            raise ValueError("need 0 < suspect_after <= dead_after")
        if self.sweep_interval <= 0:
            raise ValueError("sweep_interval must be > 0")
        if not self.retention > 0:
            raise ValueError("retention must be > 0")


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), allow_nan=False)


def _finite(value: Any) -> float | None:
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


class RegistryStore:
    """The registry's lookup table over one SQLite file.

    Parameters
    ----------
    path : str or Path
        The SQLite file (created on first start).
    liveness : LivenessConfig
        Expiry timings (default: ``LivenessConfig()``).
    clock : callable
        Wall-clock seconds (default: ``time.time``); inject a fake clock in tests.
    rng : random.Random
        Source for peer sampling (default: a fresh ``random.Random()``).
    """

    def __init__(
        self,
        path: str | Path,
        liveness: LivenessConfig | None = None,
        clock: Clock | None = None,
        rng: random.Random | None = None,
    ) -> None:
        import time

        self.path = Path(path)
        self.liveness = liveness or LivenessConfig()
        self.clock: Clock = clock or time.time
        # Silence is only counted from the service's start: a registry restarted after a long
        # outage must not expire every node before they have had a chance to heartbeat again.
        self.started_at = self.clock()
        self._rng = rng or random.Random()
        self._rng_lock = threading.Lock()
        self._write_lock = threading.Lock()
        self.db = open_database(self.path)
        self.m: Models = build_models(self.db)
        self.schema_version = 0
        # A database in memory is private to this process: nothing to lock.
        self._lock = DatabaseLock(self.path) if str(path) != ":memory:" else None
        self._warned: set[str] = set()  # rows already reported as unreadable

    # ---- life cycle ---------------------------------------------------------------------------

    def open(self) -> None:
        """Lock the database file, then create or migrate the schema (idempotent).

        Raises
        ------
        DatabaseInUse
            If another registry holds the file's lock.
        OSError, peewee.DatabaseError, SchemaError
            If the file cannot be opened or has an unusable schema.
        """
        if self._lock is not None:
            self._lock.acquire()
        try:
            self.schema_version = ensure_schema(self.db, self.m)
        except BaseException:
            self.db.close_all()
            if self._lock is not None:
                self._lock.release()
            raise

    def close(self) -> None:
        """Close every connection and drop the lock (call once no request runs any more)."""
        self.db.close_all()
        if self._lock is not None:
            self._lock.release()

    def _connected(self) -> None:
        """Make sure this thread has its (long-lived) connection."""
        self.db.ensure_connected()

    @contextmanager
    def _write(self) -> Iterator[None]:
        """One write transaction (``BEGIN IMMEDIATE``) on this thread's connection.

        Writers of this process queue on a lock first: SQLite's busy handler polls with growing
        sleeps and starved some of 64 concurrent writers past the 5 s busy timeout (503s).
        """
        with self._write_lock:
            self._connected()
            with self.db.atomic():
                yield

    # ---- helpers ------------------------------------------------------------------------------

    def _event(self, kind: str, node: str | None, group: str | None, **data: Any) -> None:
        self.m.Event.create(ts=self.clock(), kind=kind, node=node, group=group, data=_dumps(data))

    def _node(self, node_id: str) -> Any:
        node = self.m.Node.get_or_none(self.m.Node.id == node_id)
        if node is None:
            raise NotFound(f"unknown node {node_id!r}")
        return node

    def _group(self, group_id: str) -> Any:
        group = self.m.Group.get_or_none(self.m.Group.id == group_id)
        if group is None:
            raise NotFound(f"unknown group {group_id!r}")
        return group

    def _member_ids(self, group_id: str) -> list[str]:
        Node = self.m.Node
        rows = Node.select(Node.id).where(Node.group == group_id).order_by(Node.id).tuples()
        return [r[0] for r in rows]

    def _touch(self, group: Any, now: float) -> None:
        group.version += 1
        group.updated_at = now
        group.save()

    def _detach(self, node: Any, now: float, reason: str | None) -> str | None:
        """Remove ``node`` from its group; fix the group (leader, dissolution).

        Logs ``left`` (with ``reason``) unless ``reason`` is None (the caller logs a migration).
        Returns the group id it left, if any.
        """
        group_id = node.group_id
        if group_id is None:
            return None
        node.group = None
        node.save()
        group = self.m.Group.get_by_id(group_id)
        if reason is not None:
            self._event("left", node.id, group_id, reason=reason)
        if group.leader == node.id:
            group.leader = None
            group.status = "leaderless"
        if not self._member_ids(group_id):
            group.status = "dissolved"
            group.leader = None
            self._touch(group, now)
            self._event("dissolved", None, group_id, reason="empty")
        else:
            self._touch(group, now)
        return group_id

    # ---- views --------------------------------------------------------------------------------
    # A row that no write of this version can make (an older version's, or edited by hand) is
    # shown with its unreadable column as empty, and logged once: a read never fails on it.

    def _unreadable(self, where: str, problem: str) -> None:
        if where not in self._warned:
            self._warned.add(where)
            log.warning("%s is unreadable (%s); shown as empty", where, problem[:200])

    def _stored_map(self, text: Any, where: str) -> dict[str, Any]:
        """A free-form map column (node data, event data); ``{}`` if it is not a valid one."""
        value = _decoded(text)
        problem = "not JSON, or nested too deeply" if value is None else flat_map_problem(value)
        if problem is not None:
            self._unreadable(where, problem)
            return {}
        return value  # type: ignore[no-any-return]

    def _stored_ids(self, text: Any, where: str) -> list[str]:
        """A JSON list of ids (a group's invitations); ``[]`` if it is not one."""
        value = _decoded(text)
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            return value
        self._unreadable(where, "not a list of ids")
        return []

    def _node_out(self, n: Any) -> NodeOut:
        return NodeOut(
            id=n.id,
            name=n.name,
            status=n.status,
            group=n.group_id,
            gossip_address=n.gossip_address,
            flower_address=n.flower_address,
            model=n.model,
            data=self._stored_map(n.data, f"data of node {n.id!r}"),
            metrics=NodeMetrics(accuracy=_finite(n.accuracy), loss=_finite(n.loss), round=n.round),
            registered_at=n.registered_at,
            last_seen=n.last_seen,
        )

    def _group_out(self, g: Any, members: list[str] | None = None) -> GroupOut:
        return GroupOut(
            id=g.id,
            name=g.name,
            leader=g.leader,
            term=g.term,
            version=g.version,
            flower_address=g.flower_address,
            members=members if members is not None else self._member_ids(g.id),
            capacity=g.capacity,
            model=g.model,
            join_policy=g.join_policy,
            invited=self._stored_ids(g.invited, f"invitations of group {g.id!r}"),
            status=g.status,
            metrics=GroupMetrics(
                accuracy=_finite(g.accuracy),
                loss=_finite(g.loss),
                round=g.round,
                examples=g.examples,
            ),
            created_at=g.created_at,
            updated_at=g.updated_at,
        )

    def _groups_out(self, include_dissolved: bool) -> list[GroupOut]:
        Group, Node = self.m.Group, self.m.Node
        query = Group.select().order_by(Group.created_at, Group.id)
        if not include_dissolved:
            query = query.where(Group.status != "dissolved")
        members: dict[str, list[str]] = {}
        rows = Node.select(Node.id, Node.group).where(Node.group.is_null(False)).order_by(Node.id)
        for node_id, group_id in rows.tuples():
            members.setdefault(group_id, []).append(node_id)
        return [self._group_out(g, members.get(g.id, [])) for g in query]

    def _events_out(self, after: int, limit: int) -> list[EventOut]:
        Event = self.m.Event
        query = Event.select().where(Event.id > after).order_by(Event.id).limit(limit)
        return [
            EventOut(
                id=e.id,
                ts=e.ts,
                kind=e.kind,
                node=e.node,
                group=e.group,
                data=self._stored_map(e.data, f"data of event {e.id}"),
            )
            for e in query
        ]

    # ---- reads --------------------------------------------------------------------------------

    def nodes(self) -> list[NodeOut]:
        """Every node, including dead and gone ones, ordered by id."""
        self._connected()
        return [self._node_out(n) for n in self.m.Node.select().order_by(self.m.Node.id)]

    def node(self, node_id: str) -> NodeOut:
        """One node; :class:`NotFound` if unknown."""
        self._connected()
        return self._node_out(self._node(node_id))

    def groups(self, include_dissolved: bool = False) -> list[GroupOut]:
        """Active and leaderless groups (and dissolved ones if asked), oldest first."""
        self._connected()
        with self.db.atomic("DEFERRED"):  # groups and members from one snapshot
            return self._groups_out(include_dissolved)

    def group(self, group_id: str) -> GroupOut:
        """One group (dissolved ones too); :class:`NotFound` if unknown."""
        self._connected()
        return self._group_out(self._group(group_id))

    def events(self, after: int = 0, limit: int = 1000) -> list[EventOut]:
        """Events with id greater than ``after``, oldest first, at most ``limit``."""
        self._connected()
        return self._events_out(after, limit)

    def peers(self, limit: int) -> list[str]:
        """A uniform random sample of at most ``limit`` live nodes' gossip addresses."""
        Node = self.m.Node
        self._connected()
        query = Node.select(Node.gossip_address).where(Node.status.in_(LIVE)).order_by(Node.id)
        rows = list(query.tuples())
        with self._rng_lock:
            sample = self._rng.sample(rows, min(limit, len(rows)))
        return [row[0] for row in sample]

    def network(self, events: int = 100) -> NetworkOut:
        """One consistent snapshot: groups, nodes and the last ``events`` events."""
        Event = self.m.Event
        self._connected()
        with self.db.atomic("DEFERRED"):
            last = Event.select(pw.fn.MAX(Event.id)).scalar() or 0
            return NetworkOut(
                time=self.clock(),
                groups=self._groups_out(False),
                nodes=[self._node_out(n) for n in self.m.Node.select().order_by(self.m.Node.id)],
                events=self._events_out(max(0, last - events), events),
            )

    # ---- writes -------------------------------------------------------------------------------

    def register(self, body: RegisterBody) -> NodeOut:
        """Register or update a node (idempotent for the same id); it becomes ``alive``."""
        now = self.clock()
        with self._write():
            node = self.m.Node.get_or_none(self.m.Node.id == body.id)
            fields = {
                "name": body.name,
                "gossip_address": body.gossip_address,
                "flower_address": body.flower_address,
                "model": body.model,
                "data": _dumps(body.data or {}),
                "status": "alive",
                "last_seen": now,
            }
            if node is None:
                node = self.m.Node.create(id=body.id, registered_at=now, **fields)
                self._event("registered", body.id, None)
            else:
                if node.group_id is not None and body.model not in (None, node.model):
                    raise Conflict(
                        f"node {body.id!r} is in group {node.group_id!r}: leave it before "
                        "changing its model spec"
                    )
                was = node.status
                for key, value in fields.items():
                    setattr(node, key, value)
                node.save()
                if was in ("dead", "gone"):
                    self._event("registered", body.id, None, again=True)
            return self._node_out(node)

    def heartbeat(self, node_id: str, body: HeartbeatBody) -> NodeOut:
        """Record liveness and metrics; a suspect or dead node is alive again (dead: groupless)."""
        with self._write():
            node = self._node(node_id)
            if node.status == "gone":
                raise Conflict(f"node {node_id!r} has left the network; register it again")
            node.status = "alive"
            node.last_seen = self.clock()
            if body.accuracy is not None:
                node.accuracy = body.accuracy
            if body.loss is not None:
                node.loss = body.loss
            if body.round is not None:
                node.round = body.round
            node.save()
            return self._node_out(node)

    def remove(self, node_id: str) -> NodeOut:
        """Graceful leave: the node leaves its group and is marked ``gone``."""
        now = self.clock()
        with self._write():
            node = self._node(node_id)
            self._detach(node, now, reason="removed")
            if node.status != "gone":
                node.status = "gone"
                node.save()
                self._event("removed", node_id, None)
            return self._node_out(node)

    def create_group(self, body: CreateGroupBody) -> GroupOut:
        """Create a group led by its founder (term 1), who leaves any previous group."""
        now = self.clock()
        group_id = body.id or f"g-{self._random_hex()}"
        with self._write():
            founder = self._node(body.leader)
            if founder.status not in LIVE:
                raise Conflict(f"node {body.leader!r} is {founder.status}; it cannot found a group")
            if founder.model is not None and founder.model != body.model:
                raise Conflict(
                    f"model spec {body.model!r} differs from founder's {founder.model!r}"
                )
            if self.m.Group.get_or_none(self.m.Group.id == group_id) is not None:
                raise Conflict(f"group {group_id!r} already exists")
            previous = self._detach(founder, now, reason=None)
            invited = sorted(set(body.invited or []))
            self.m.Group.create(
                id=group_id,
                name=body.name,
                leader=founder.id,
                flower_address=body.flower_address,
                model=body.model,
                capacity=body.capacity,
                join_policy=body.join_policy,
                invited=_dumps(invited),
                status="active",
                term=1,
                version=1,
                created_at=now,
                updated_at=now,
            )
            founder.group = group_id
            founder.save()
            why = {"reason": body.reason} if body.reason else {}
            self._event("created", founder.id, group_id, name=body.name, model=body.model, **why)
            if previous is not None:
                moved = {"from": previous, "to": group_id, **why}
                self._event("migrated", founder.id, group_id, **moved)
            else:
                self._event("joined", founder.id, group_id, **why)
            return self._group_out(self.m.Group.get_by_id(group_id))

    def join(self, node_id: str, group_id: str, reason: str | None = None) -> GroupOut:
        """Join a group, leaving the previous one in the same transaction (one ``migrated``)."""
        now = self.clock()
        with self._write():
            node = self._node(node_id)
            group = self._group(group_id)
            if node.group_id == group_id:
                return self._group_out(group)  # idempotent
            if node.status not in LIVE:
                raise Conflict(f"node {node_id!r} is {node.status}; register or heartbeat first")
            if group.status == "dissolved":
                raise Conflict(f"group {group_id!r} is dissolved")
            if node.model is not None and node.model != group.model:
                raise Conflict(
                    f"model spec mismatch: node has {node.model!r}, group has {group.model!r}"
                )
            invited = self._stored_ids(group.invited, f"invitations of group {group_id!r}")
            if group.join_policy == "invite-only" and node_id not in invited:
                raise Forbidden(f"group {group_id!r} is invite-only and {node_id!r} is not invited")
            members = self._member_ids(group_id)
            if len(members) >= group.capacity:
                raise Conflict(f"group {group_id!r} is full ({group.capacity} members)")
            previous = self._detach(node, now, reason=None)
            node.group = group_id
            node.save()
            group = self._group(group_id)
            self._touch(group, now)
            why = {"reason": reason} if reason else {}
            if previous is not None:
                self._event(
                    "migrated", node_id, group_id, **{"from": previous, "to": group_id}, **why
                )
            else:
                self._event("joined", node_id, group_id, **why)
            return self._group_out(group)

    def leave(self, node_id: str) -> NodeOut:
        """The node leaves its group (no-op if it is in none)."""
        now = self.clock()
        with self._write():
            node = self._node(node_id)
            self._detach(node, now, reason="leave")
            return self._node_out(node)

    def report_performance(self, group_id: str, body: PerformanceBody) -> GroupOut:
        """The leader of the current term reports round metrics; anyone else gets 409."""
        now = self.clock()
        with self._write():
            group = self._group(group_id)
            self._node(body.node_id)
            if group.status == "dissolved":
                raise Conflict(f"group {group_id!r} is dissolved")
            if body.term != group.term:
                raise Conflict(
                    f"stale term {body.term}: group {group_id!r} is at term {group.term}"
                )
            if group.leader != body.node_id:
                raise Conflict(f"node {body.node_id!r} is not the leader of group {group_id!r}")
            group.accuracy = body.accuracy
            group.loss = body.loss
            group.round = body.round
            group.examples = body.examples
            self._touch(group, now)
            return self._group_out(group)

    def claim_leader(self, group_id: str, body: LeaderBody) -> GroupOut:
        """Compare-and-set leadership: succeeds iff ``term == current + 1`` and the claimant is
        a live member; of two claims for the same term exactly one wins."""
        now = self.clock()
        with self._write():
            group = self._group(group_id)
            node = self._node(body.node_id)
            if group.status == "dissolved":
                raise Conflict(f"group {group_id!r} is dissolved")
            if body.term != group.term + 1:
                raise Conflict(
                    f"stale term {body.term}: group {group_id!r} is at term {group.term}, "
                    f"claim term {group.term + 1}"
                )
            if node.group_id != group_id or node.status not in LIVE:
                raise Conflict(f"node {body.node_id!r} is not a live member of {group_id!r}")
            previous = group.leader
            group.leader = body.node_id
            group.term = body.term
            group.flower_address = body.flower_address
            group.status = "active"
            self._touch(group, now)
            self._event("leader-changed", body.node_id, group_id, term=body.term, previous=previous)
            return self._group_out(group)

    # ---- liveness -----------------------------------------------------------------------------

    def sweep(self) -> int:
        """Mark silent nodes suspect, then dead (leaving their groups), and forget nodes dead or
        gone for longer than ``retention``. Returns how many nodes changed or were forgotten.

        Called by the service's expiry thread every ``sweep_interval``; tests call it directly
        with a fake clock.
        """
        now = self.clock()
        Node = self.m.Node
        suspect_before = now - self.liveness.suspect_after
        dead_before = now - self.liveness.dead_after
        with self._write():
            # Dead and gone nodes are in no group; the event log keeps their history.
            forgotten: int = (
                Node.delete()
                .where(
                    Node.status.in_(("dead", "gone"))
                    & (Node.last_seen < now - self.liveness.retention)
                )
                .execute()
            )
            if forgotten:
                log.info("forgot %d node(s) dead or gone for longer than the retention", forgotten)
            if self.started_at >= suspect_before:
                return forgotten  # not up long enough to call anyone silent
            changed = forgotten + (
                Node.update(status="suspect")
                .where((Node.status == "alive") & (Node.last_seen < suspect_before))
                .execute()
            )
            if self.started_at >= dead_before:
                return changed
            dying = list(
                Node.select().where(Node.status.in_(LIVE) & (Node.last_seen < dead_before))
            )
            for node in dying:
                node.status = "dead"
                node.save()
                self._event("expired", node.id, node.group_id, last_seen=node.last_seen)
                self._detach(node, now, reason="expired")
            return changed + len(dying)

    def _random_hex(self) -> str:
        with self._rng_lock:
            return f"{self._rng.getrandbits(32):08x}"
