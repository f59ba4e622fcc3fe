"""The registry's state and rules over SQLite or PostgreSQL: no HTTP here.

:class:`RegistryStore` puts the parts together: durable writes (:mod:`bootstrap.rules`) run by
the commit thread (:mod:`bootstrap.commits`), many to a transaction, each acknowledged only
after its commit; heartbeats kept in memory (:mod:`bootstrap.liveness`) and written in batches;
reads of groups, peers and the network served from versioned snapshots (:mod:`bootstrap.snapshot`).
Errors are :class:`StoreError` subclasses carrying the HTTP status the API layer maps them to.
"""

from __future__ import annotations

import logging
import random
import secrets
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import msgspec

from bootstrap.access import Enrolled, Entry
from bootstrap.commits import CommitQueue
from bootstrap.db import (
    DatabaseLock,
    Models,
    build_models,
    ensure_schema,
    is_database_url,
    marks,
    open_database,
    redact,
)
from bootstrap.errors import Conflict, Forbidden, NotFound, StoreError
from bootstrap.liveness import Flushed, LivenessConfig, LivenessTable
from bootstrap.rows import EVENT_COLUMNS, GROUP_COLUMNS, LIVE, NODE_COLUMNS, Rows
from bootstrap.rules import CHUNK, Writes, chunks
from bootstrap.snapshot import Snapshots, View, with_liveness
from mycelium_p2p.identity import CertificateAuthority, Trust, credential_hash, from_text
from mycelium_p2p.registry_api import (
    CreateGroupBody,
    EventOut,
    GroupOut,
    HeartbeatBody,
    HeartbeatOut,
    LeaderBody,
    NetworkOut,
    NodeOut,
    PerformanceBody,
    RegisterBody,
    RevocationsOut,
)

__all__ = [
    "LIVE",
    "Conflict",
    "Forbidden",
    "LivenessConfig",
    "NotFound",
    "RegistryStore",
    "StoreError",
]

log = logging.getLogger("mycelium.registry")

Clock = Callable[[], float]
T = TypeVar("T")

#: How often a registry on a shared database looks for the others' writes, in seconds.
POLL_INTERVAL = 0.2
#: Live peers a heartbeat's answer names: enough for islands to find each other within a few
#: heartbeats, few enough that the answer stays small.
HEARTBEAT_PEERS = 3


class AuthorityMismatch(RuntimeError):
    """The database's nodes were enrolled by another CA than this registry's."""


_IDENTITY_COLUMNS = "node_id, credential_hash, curve_key, revoked_at"


def _entry(row: tuple[Any, ...]) -> Entry:
    return Entry(row[0], row[1], row[2], row[3] is not None)


class RegistryStore:
    """The registry's lookup table over one database.

    Parameters
    ----------
    path : str or Path
        An SQLite file (created on first start), or ``postgresql://USER@HOST:PORT/DB``.
    liveness : LivenessConfig
        Expiry timings (default: ``LivenessConfig()``).
    clock : callable
        Wall-clock seconds (default: ``time.time``); inject a fake clock in tests.
    rng : random.Random
        Source for peer sampling and generated group ids (default: a fresh ``random.Random()``).
    ca : CertificateAuthority | None
        The network's CA, with a token: it signs the leases groups carry and the revocation
        list; the identities of enrolled nodes are kept (default: None, no token).
    """

    def __init__(
        self,
        path: str | Path,
        liveness: LivenessConfig | None = None,
        clock: Clock | None = None,
        rng: random.Random | None = None,
        ca: CertificateAuthority | None = None,
    ) -> None:
        self.path: str | Path = path if is_database_url(path) else Path(path)
        self.liveness = liveness or LivenessConfig()
        self.clock: Clock = clock or time.time
        # Silence is only counted from the service's start: a registry restarted after a long
        # outage must not expire every node before they have had a chance to heartbeat again.
        self.started_at = self.clock()
        self._rng = rng or random.Random()
        self._rng_lock = threading.Lock()
        self.db = open_database(path)
        self.m: Models = build_models(self.db)
        self.schema_version = 0
        # A database in memory is private to this process: nothing to lock.
        private = self.db.shared or str(path) == ":memory:"
        self._lock = None if private else DatabaseLock(self.path)
        self.instance = secrets.token_hex(4)  # this registry, in ETags and the change feed
        self.rows = Rows()
        self.live = LivenessTable()
        self.view = View()
        self.ca = ca
        self.enrolled = Enrolled()
        self._leases: dict[tuple[str, int, str, str], str] = {}
        self.snapshots = Snapshots(
            self.view,
            self.live,
            self.clock,
            self._rng,
            self.instance,
            decorate=self.with_lease if ca is not None else None,
        )
        self.writes = Writes(self.db, self.clock, self.rows, self.instance)
        self.commits = CommitQueue(self.db, self)
        self._pending: list[Flushed] = []
        self._flushed_at = time.monotonic()
        self._polled_at = time.monotonic()

    @property
    def shared(self) -> bool:
        """Whether several registries may share this database (PostgreSQL)."""
        return self.db.shared

    def describe(self) -> str:
        """The database, for messages (a URL's password hidden)."""
        return redact(self.path)

    # ---- life cycle ---------------------------------------------------------------------------

    def open(self) -> None:
        """Lock the database file (SQLite), create or migrate the schema, read it into memory
        and start the commit thread.

        Raises
        ------
        DatabaseInUse
            If another registry holds the SQLite file's lock.
        OSError, peewee.DatabaseError, SchemaError
            If the database cannot be opened or has an unusable schema.
        """
        if self.commits.running:
            return
        if self._lock is not None:
            self._lock.acquire()
        try:
            self.schema_version = ensure_schema(self.db, self.m)
            if self.ca is not None:
                self._check_authority(self.ca)
            self._load_all()
        except BaseException:
            self.db.close_all()
            if self._lock is not None:
                self._lock.release()
            raise
        self.commits.start()

    def close(self) -> None:
        """Write what waits in memory, close every connection and drop the lock (call once no
        request runs any more)."""
        self.commits.stop()
        self.db.close_all()
        if self._lock is not None:
            self._lock.release()

    # ---- the commit thread's hooks (see bootstrap.commits.Batches) ----------------------------

    def begin_batch(self) -> None:
        self.writes.begin()
        self._pending = self.live.take_dirty()
        if self._pending:
            self.writes.flush(self._pending)
        self._flushed_at = time.monotonic()

    def end_batch(self) -> None:
        self.writes.publish()
        self._pending = []

    def abort_batch(self) -> None:
        self.live.restore(self._pending)
        self._pending = []

    def flush_due(self) -> bool:
        due = time.monotonic() - self._flushed_at >= self.liveness.flush_interval
        return due and self.live.dirty()

    def poll_due(self) -> bool:
        return self.shared and time.monotonic() - self._polled_at >= POLL_INTERVAL

    def catch_up(self) -> None:
        """Bring the view up to date with the change feed (this and other registries' writes)."""
        self._polled_at = time.monotonic()
        rev, pruned = self.db.rows("SELECT rev, pruned FROM registry_state WHERE id = 1")[0]
        if rev == self.view.rev:
            return
        if self.view.rev < pruned:
            log.warning("this registry fell behind the change feed; reloading everything")
            self._load_all()
            return
        feed = self.db.rows(
            "SELECT kind, key, origin FROM changes WHERE rev > ? AND rev <= ?",
            (self.view.rev, rev),
        )
        nodes = {
            k
            for kind, k, origin in feed
            if kind == "n" or (kind == "l" and origin != self.instance)
        }
        groups = {k for kind, k, _ in feed if kind == "g"}
        identities = {k for kind, k, _ in feed if kind == "i"}
        self._reload_nodes(sorted(nodes))
        self._reload_groups(sorted(groups))
        self._reload_identities(sorted(identities))
        if any(kind == "a" for kind, _, _ in feed):
            self._load_authority()
        self._load_events()
        self.view.rev = int(rev)

    # ---- loading the view ---------------------------------------------------------------------

    def _load_all(self) -> None:
        self.db.ensure_connected()
        rev = self.db.rows("SELECT rev FROM registry_state WHERE id = 1")[0][0]
        self.view.clear()
        known = set()
        for row in self.db.rows(f"SELECT {NODE_COLUMNS} FROM nodes"):
            self._put_node(row)
            known.add(row[0])
        for node_id, _live in self.live.items():
            if node_id not in known:
                self.live.drop(node_id)
        for row in self.db.rows(f"SELECT {GROUP_COLUMNS} FROM groups"):
            self.view.put_group(self.rows.group(row, []))
        self.enrolled.clear()
        for row in self.db.rows(f"SELECT {_IDENTITY_COLUMNS} FROM identities"):
            self.enrolled.put(_entry(row))
        self._load_authority()
        self._load_events()
        self.view.rev = int(rev)

    def _reload_identities(self, ids: list[str]) -> None:
        for part in chunks(ids, CHUNK):
            found = self.db.rows(
                f"SELECT {_IDENTITY_COLUMNS} FROM identities WHERE node_id IN ({marks(len(part))})",
                tuple(part),
            )
            for row in found:
                self.enrolled.put(_entry(row))
            for node_id in set(part) - {row[0] for row in found}:
                self.enrolled.drop(node_id)

    def _load_authority(self) -> None:
        found = self.db.rows("SELECT crl_serial, crl FROM authority WHERE id = 1")
        if found:
            self.enrolled.crl_serial, self.enrolled.crl = int(found[0][0]), str(found[0][1] or "")

    def _check_authority(self, ca: CertificateAuthority) -> None:
        """Record this CA's fingerprint in a new database; refuse a database of another CA."""
        self.db.ensure_connected()
        with self.db.atomic():
            found = self.db.rows("SELECT ca_fingerprint FROM authority WHERE id = 1")
            if not found:
                self.db.run(
                    "INSERT INTO authority (id, ca_fingerprint, crl_serial, crl) "
                    "VALUES (1, ?, 0, '')",
                    (ca.fingerprint,),
                )
            elif found[0][0] != ca.fingerprint:
                raise AuthorityMismatch(
                    f"the nodes of {self.describe()} were enrolled by the CA with fingerprint "
                    f"{found[0][0][:16]}..., not by this registry's ({ca.fingerprint[:16]}...); "
                    "give every registry of a database the same CA folder (--ca-dir)"
                )

    def _put_node(self, row: tuple[Any, ...]) -> None:
        node = self.rows.node(row)
        self.view.put_node(node)
        m = node.metrics
        self.live.merge(node.id, node.last_seen, node.status, m.accuracy, m.loss, m.round)

    def _reload_nodes(self, ids: list[str]) -> None:
        for part in chunks(ids, CHUNK):
            found = self.db.rows(
                f"SELECT {NODE_COLUMNS} FROM nodes WHERE id IN ({marks(len(part))})", tuple(part)
            )
            for row in found:
                self._put_node(row)
            for node_id in set(part) - {row[0] for row in found}:
                self.view.drop_node(node_id)
                self.live.drop(node_id)

    def _reload_groups(self, ids: list[str]) -> None:
        for part in chunks(ids, CHUNK):
            found = self.db.rows(
                f"SELECT {GROUP_COLUMNS} FROM groups WHERE id IN ({marks(len(part))})",
                tuple(part),
            )
            for row in found:
                self.view.put_group(self.rows.group(row, []))

    def _load_events(self) -> None:
        found = self.db.rows(
            f"SELECT {EVENT_COLUMNS} FROM events WHERE id > ? ORDER BY id DESC LIMIT 1000",
            (self.view.last_event,),
        )
        self.view.add_events(self.rows.event(row) for row in reversed(found))

    # ---- writes -------------------------------------------------------------------------------

    def submit(self, fn: Callable[..., T], *args: Any) -> Future[T]:
        """Queue a write (a method of :class:`bootstrap.rules.Writes`) for the next commit."""
        return self.commits.submit(partial(fn, *args))

    def _call(self, fn: Callable[..., T], *args: Any) -> T:
        return self.submit(fn, *args).result(60.0)

    def register(self, body: RegisterBody) -> NodeOut:
        """Register or update a node (idempotent for the same id); it becomes ``alive``."""
        return self._call(self.writes.register, body)

    # ---- identities (with a token) --------------------------------------------------------------

    def enrolled_entry(self, credential: str) -> Entry | None:
        """The enrolled node of ``credential``, from the database (a shared database: another
        registry may have enrolled it a moment ago). Call from a worker thread."""
        self.db.ensure_connected()
        found = self.db.rows(
            f"SELECT {_IDENTITY_COLUMNS} FROM identities WHERE credential_hash = ?",
            (credential_hash(credential),),
        )
        if not found:
            return None
        entry = _entry(found[0])
        self.enrolled.put(entry)
        return entry

    def with_lease(self, group: GroupOut) -> GroupOut:
        """``group`` with the CA's lease of its current term (none while it has no leader).

        Signed once per (group, term, leader, address): signatures are deterministic, so every
        registry of a database hands out the same bytes.
        """
        ca = self.ca
        if ca is None or group.leader is None or group.status == "dissolved":
            return group
        key = (group.id, group.term, group.leader, group.flower_address)
        lease = self._leases.get(key)
        if lease is None:
            lease = ca.sign_lease(*key).text()
            if len(self._leases) > 100_000:
                self._leases.clear()
            self._leases[key] = lease
        return msgspec.structs.replace(group, lease=lease)

    def revoke(self, node_id: str) -> NodeOut | None:
        """Remove ``node_id`` and put it on the revocation list (the operator's removal)."""
        return self._call(self.writes.revoke, node_id, self.sign_revocations)

    def sign_revocations(self, serial: int, ids: list[str]) -> str:
        if self.ca is None:
            raise RuntimeError("no CA: the registry has no token")
        return self.ca.sign_revocations(serial, ids).text()

    def revocations(self) -> RevocationsOut:
        """The revocation list as signed last (serial 0, empty, before any revocation)."""
        if self.ca is None:
            raise RuntimeError("no CA: the registry has no token")
        text = self.enrolled.crl or self.sign_revocations(0, [])
        found = Trust(self.ca.cert_pem).parse_revocations(from_text(text))
        return RevocationsOut(
            serial=found.serial, issued_at=found.issued_at, ids=sorted(found.ids), signed=text
        )

    def remove(self, node_id: str) -> NodeOut:
        """Graceful leave: the node leaves its group and is marked ``gone``."""
        return self._call(self.writes.remove, node_id)

    def group_id(self, body: CreateGroupBody) -> str:
        """The id a new group gets: the one asked for, or ``g-`` and 8 random hex digits."""
        if body.id:
            return body.id
        with self._rng_lock:
            return f"g-{self._rng.getrandbits(32):08x}"

    def create_group(self, body: CreateGroupBody) -> GroupOut:
        """Create a group led by its founder (term 1), who leaves any previous group."""
        return self.with_lease(self._call(self.writes.create_group, body, self.group_id(body)))

    def join(self, node_id: str, group_id: str, reason: str | None = None) -> GroupOut:
        """Join a group, leaving the previous one in the same transaction (one ``migrated``)."""
        return self._call(self.writes.join, node_id, group_id, reason)

    def leave(self, node_id: str) -> NodeOut:
        """The node leaves its group (no-op if it is in none)."""
        return self._call(self.writes.leave, node_id)

    def report_performance(self, group_id: str, body: PerformanceBody) -> GroupOut:
        """The leader of the current term reports round metrics; anyone else gets 409."""
        return self._call(self.writes.report_performance, group_id, body)

    def claim_leader(self, group_id: str, body: LeaderBody) -> GroupOut:
        """Compare-and-set leadership (``term == current + 1``, a live member)."""
        return self.with_lease(self._call(self.writes.claim_leader, group_id, body))

    def sweep(self) -> int:
        """Expire silent nodes and forget long-dead ones (one transaction, after the heartbeats
        kept in memory are written); returns how many nodes changed or were forgotten.

        Called by the expiry thread every ``sweep_interval``; tests call it directly with a
        fake clock.
        """
        return self._call(self._sweep)

    def _sweep(self) -> int:
        changed = self.writes.sweep(self.liveness, self.started_at, self.live.last_seen)
        self.writes.prune_feed()
        return changed

    # ---- heartbeats ---------------------------------------------------------------------------

    def try_heartbeat(self, node_id: str, body: HeartbeatBody) -> NodeOut | None:
        """Record a heartbeat in memory and return the node, without touching the database.

        Returns None when only the database can tell whether the node exists (a registry on
        a shared database may not have read another's registration yet): then call
        :meth:`heartbeat` from a worker thread.

        Raises
        ------
        NotFound
            If the node is unknown (and this registry is the database's only one).
        Conflict
            If the node has left the network (``gone``).
        """
        live = self.live.beat(node_id, body, self.clock())
        node = self.view.node(node_id)
        if live is None or node is None:
            if self.shared:
                return None
            raise NotFound(f"unknown node {node_id!r}")
        if live.status == "gone":
            raise Conflict(f"node {node_id!r} has left the network; register it again")
        return with_liveness(node, live)

    def heartbeat(self, node_id: str, body: HeartbeatBody) -> NodeOut:
        """Record liveness and metrics; a suspect or dead node is alive again (dead: groupless)."""
        found = self.try_heartbeat(node_id, body)
        if found is not None:
            return found
        self.db.ensure_connected()
        self._reload_nodes([node_id])  # written by another registry a moment ago?
        found = self.try_heartbeat(node_id, body)
        if found is None:
            raise NotFound(f"unknown node {node_id!r}")
        return found

    def with_peers(self, node: NodeOut) -> HeartbeatOut:
        """A heartbeat's answer: ``node`` and up to ``HEARTBEAT_PEERS`` other live nodes."""
        sample = self.snapshots.recent_peers(HEARTBEAT_PEERS + 1)
        others = [a for a in sample if a != node.gossip_address][:HEARTBEAT_PEERS]
        return HeartbeatOut(**msgspec.structs.asdict(node), peers=others)

    # ---- reads --------------------------------------------------------------------------------

    def _with_memory(self, node: NodeOut) -> NodeOut:
        """A node read from the database, with this registry's later heartbeat if it has one."""
        live = self.live.get(node.id)
        if live is None or live.last_seen < node.last_seen or node.status == "gone":
            return node
        return with_liveness(node, live)

    def nodes(self) -> list[NodeOut]:
        """Every node, including dead and gone ones, ordered by id."""
        self.db.ensure_connected()
        found = self.db.rows(f"SELECT {NODE_COLUMNS} FROM nodes ORDER BY id")
        return [self._with_memory(self.rows.node(row)) for row in found]

    def node(self, node_id: str) -> NodeOut:
        """One node; :class:`NotFound` if unknown."""
        self.db.ensure_connected()
        found = self.db.rows(f"SELECT {NODE_COLUMNS} FROM nodes WHERE id = ?", (node_id,))
        if not found:
            raise NotFound(f"unknown node {node_id!r}")
        return self._with_memory(self.rows.node(found[0]))

    def groups(self, include_dissolved: bool = False) -> list[GroupOut]:
        """Active and leaderless groups (and dissolved ones if asked), oldest first."""
        groups = self.snapshots.current().groups
        return [g for g in groups if include_dissolved or g.status != "dissolved"]

    def group(self, group_id: str) -> GroupOut:
        """One group (dissolved ones too); :class:`NotFound` if unknown."""
        group = self.snapshots.current().by_id.get(group_id)
        if group is None:
            raise NotFound(f"unknown group {group_id!r}")
        return group

    def events(self, after: int = 0, limit: int = 1000) -> list[EventOut]:
        """Events with id greater than ``after``, oldest first, at most ``limit``."""
        self.db.ensure_connected()
        found = self.db.rows(
            f"SELECT {EVENT_COLUMNS} FROM events WHERE id > ? ORDER BY id LIMIT ?", (after, limit)
        )
        return [self.rows.event(row) for row in found]

    def peers(self, limit: int) -> list[str]:
        """A uniform random sample of at most ``limit`` live nodes' gossip addresses."""
        return self.snapshots.peers(limit)[1]

    def network(self, events: int = 100) -> NetworkOut:
        """One snapshot: groups, nodes and the last ``events`` events."""
        return msgspec.json.decode(self.snapshots.network(events).body, type=NetworkOut)
