"""The registry's durable writes and their rules, in plain SQL: no HTTP, no threads.

Each method runs inside the transaction that :class:`bootstrap.commits.CommitQueue` opens for a
batch (one savepoint per request), so a check (capacity, term, membership) and the write that
depends on it are atomic, and a write is either wholly there or not at all. Every write
transaction first takes the row lock of ``registry_state`` (:meth:`Writes.begin`): writes are
serialised across every registry sharing a database, as SQLite's writer lock serialises them in
one file, and each revision's touched rows go to the change feed (:meth:`Writes.publish`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

from bootstrap.db import Database, marks
from bootstrap.errors import Conflict, Forbidden, NotFound
from bootstrap.liveness import Flushed, LivenessConfig
from bootstrap.rows import GROUP_COLUMNS, LIVE, NODE_COLUMNS, Rows, dumps
from mycelium_p2p.identity import MAX_REVOCATIONS_BYTES, MAX_REVOKED
from mycelium_p2p.registry_api import (
    CreateGroupBody,
    GroupOut,
    LeaderBody,
    NodeOut,
    PerformanceBody,
    RegisterBody,
)

log = logging.getLogger("mycelium.registry")

Clock = Callable[[], float]

#: Rows per statement when a write names many (IN lists, the liveness flush).
CHUNK = 500
#: Revisions of the change feed kept; a registry further behind reloads everything.
FEED_KEEP = 20_000

_FLUSH_ROW = "(?, CAST(? AS DOUBLE PRECISION), CAST(? AS DOUBLE PRECISION), "
_FLUSH_ROW += "CAST(? AS DOUBLE PRECISION), CAST(? AS BIGINT))"


def chunks(items: Sequence[Any], size: int = CHUNK) -> list[Sequence[Any]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


class Writes:
    """The writes of one registry, each inside the current batch transaction.

    Parameters
    ----------
    db : Database
        SQLite or PostgreSQL.
    clock : callable
        Wall-clock seconds.
    rows : Rows
        Row conversions (shared with the reads, for their warnings).
    origin : str
        This registry's id in the change feed.
    """

    def __init__(self, db: Database, clock: Clock, rows: Rows, origin: str) -> None:
        self.db = db
        self.clock = clock
        self.rows = rows
        self.origin = origin
        self.rev = 0
        self.pruned = 0
        self._nodes: set[str] = set()
        self._groups: set[str] = set()
        self._flushed: list[str] = []
        self._identities: set[str] = set()
        self._authority = False

    # ---- batch framing ------------------------------------------------------------------------

    def begin(self) -> int:
        """Start a batch: take the next revision (and with it the write lock of every registry on
        this database)."""
        self.db.run("UPDATE registry_state SET rev = rev + 1 WHERE id = 1")
        rev, pruned = self.db.rows("SELECT rev, pruned FROM registry_state WHERE id = 1")[0]
        self.rev, self.pruned = int(rev), int(pruned)
        self._nodes, self._groups, self._flushed = set(), set(), []
        self._identities, self._authority = set(), False
        return self.rev

    def publish(self) -> None:
        """End a batch: name its touched rows in the change feed."""
        feed = [(self.rev, "n", key, self.origin) for key in sorted(self._nodes)]
        feed += [(self.rev, "g", key, self.origin) for key in sorted(self._groups)]
        feed += [(self.rev, "i", key, self.origin) for key in sorted(self._identities)]
        if self._authority:
            feed.append((self.rev, "a", "authority", self.origin))
        if self.db.shared:  # another registry reads the heartbeats this one flushed
            feed += [(self.rev, "l", key, self.origin) for key in self._flushed]
        if feed:
            self.db.run_many(
                "INSERT INTO changes (rev, kind, key, origin) VALUES (?, ?, ?, ?)", feed
            )

    def flush(self, beats: list[Flushed]) -> None:
        """Write heartbeats kept in memory: last_seen, status ``alive`` and metrics, unless the
        row knows a later heartbeat (another registry's) or the node is gone."""
        for part in chunks(beats):
            values = ", ".join([_FLUSH_ROW] + ["(?, ?, ?, ?, ?)"] * (len(part) - 1))
            params = [x for row in part for x in row]
            self.db.run(
                f"WITH v(id, ts, acc, loss, rnd) AS (VALUES {values}) "
                "UPDATE nodes SET last_seen = v.ts, status = 'alive', "
                "accuracy = COALESCE(v.acc, nodes.accuracy), loss = COALESCE(v.loss, nodes.loss), "
                "round = COALESCE(v.rnd, nodes.round) "
                "FROM v WHERE nodes.id = v.id AND nodes.status <> 'gone' "
                "AND nodes.last_seen <= v.ts",
                params,
            )
        self._flushed.extend(row[0] for row in beats)

    # ---- helpers ------------------------------------------------------------------------------

    def _event(self, kind: str, node: str | None, group: str | None, **data: Any) -> None:
        self.db.run(
            'INSERT INTO events (ts, kind, node, "group", data) VALUES (?, ?, ?, ?, ?)',
            (self.clock(), kind, node, group, dumps(data)),
        )

    def _node_row(self, node_id: str) -> tuple[Any, ...]:
        found = self.db.rows(f"SELECT {NODE_COLUMNS} FROM nodes WHERE id = ?", (node_id,))
        if not found:
            raise NotFound(f"unknown node {node_id!r}")
        return found[0]

    def _group_row(self, group_id: str) -> tuple[Any, ...]:
        found = self.db.rows(f"SELECT {GROUP_COLUMNS} FROM groups WHERE id = ?", (group_id,))
        if not found:
            raise NotFound(f"unknown group {group_id!r}")
        return found[0]

    def _member_ids(self, group_id: str) -> list[str]:
        found = self.db.rows("SELECT id FROM nodes WHERE group_id = ? ORDER BY id", (group_id,))
        return [r[0] for r in found]

    def _count_members(self, group_id: str) -> int:
        return int(self.db.rows("SELECT COUNT(*) FROM nodes WHERE group_id = ?", (group_id,))[0][0])

    def node_out(self, node_id: str) -> NodeOut:
        return self.rows.node(self._node_row(node_id))

    def group_out(self, group_id: str) -> GroupOut:
        return self.rows.group(self._group_row(group_id), self._member_ids(group_id))

    def _set_node(self, node_id: str, **columns: Any) -> None:
        sets = ", ".join(f"{name} = ?" for name in columns)
        self.db.run(f"UPDATE nodes SET {sets} WHERE id = ?", (*columns.values(), node_id))
        self._nodes.add(node_id)

    def _touch(self, group_id: str, now: float, **columns: Any) -> None:
        """Update a group and bump its version (every change of a group does)."""
        sets = "".join(f", {name} = ?" for name in columns)
        self.db.run(
            f"UPDATE groups SET version = version + 1, updated_at = ?{sets} WHERE id = ?",
            (now, *columns.values(), group_id),
        )
        self._groups.add(group_id)

    def _detach(self, node_id: str, group_id: str | None, now: float, reason: str | None) -> None:
        """Remove the node from its group; fix the group (leader, dissolution).

        Logs ``left`` (with ``reason``) unless ``reason`` is None (the caller logs a migration).
        """
        if group_id is None:
            return
        self._set_node(node_id, group_id=None)
        leader = self.db.rows("SELECT leader FROM groups WHERE id = ?", (group_id,))[0][0]
        if reason is not None:
            self._event("left", node_id, group_id, reason=reason)
        if not self._count_members(group_id):
            self._touch(group_id, now, status="dissolved", leader=None)
            self._event("dissolved", None, group_id, reason="empty")
        elif leader == node_id:
            self._touch(group_id, now, status="leaderless", leader=None)
        else:
            self._touch(group_id, now)

    # ---- writes -------------------------------------------------------------------------------

    def register(self, body: RegisterBody) -> NodeOut:
        """Register or update a node (idempotent for the same id); it becomes ``alive``."""
        now = self.clock()
        found = self.db.rows("SELECT status, group_id, model FROM nodes WHERE id = ?", (body.id,))
        fields = {
            "name": body.name,
            "gossip_address": body.gossip_address,
            "flower_address": body.flower_address,
            "model": body.model,
            "data": dumps(body.data or {}),
            "status": "alive",
            "last_seen": now,
        }
        if not found:
            names = ", ".join(["id", "registered_at", *fields])
            self.db.run(
                f"INSERT INTO nodes ({names}) VALUES ({marks(len(fields) + 2)})",
                (body.id, now, *fields.values()),
            )
            self._nodes.add(body.id)
            self._event("registered", body.id, None)
        else:
            was, group_id, model = found[0]
            if group_id is not None and body.model not in (None, model):
                raise Conflict(
                    f"node {body.id!r} is in group {group_id!r}: leave it before "
                    "changing its model spec"
                )
            self._set_node(body.id, **fields)
            if was in ("dead", "gone"):
                self._event("registered", body.id, None, again=True)
        return self.node_out(body.id)

    def remove(self, node_id: str, **why: Any) -> NodeOut:
        """Graceful leave: the node leaves its group and is marked ``gone`` (``why`` goes into
        the ``removed`` event)."""
        now = self.clock()
        row = self._node_row(node_id)
        self._detach(node_id, row[3], now, reason="removed")
        if row[2] != "gone":
            self._set_node(node_id, status="gone")
            self._event("removed", node_id, None, **why)
        elif why:
            self._event("removed", node_id, None, **why)
        return self.node_out(node_id)

    def create_group(self, body: CreateGroupBody, group_id: str) -> GroupOut:
        """Create a group led by its founder (term 1), who leaves any previous group."""
        now = self.clock()
        founder = self._node_row(body.leader)
        status, previous, model = founder[2], founder[3], founder[6]
        if status not in LIVE:
            raise Conflict(f"node {body.leader!r} is {status}; it cannot found a group")
        if model is not None and model != body.model:
            raise Conflict(f"model spec {body.model!r} differs from founder's {model!r}")
        if self.db.rows("SELECT id FROM groups WHERE id = ?", (group_id,)):
            raise Conflict(f"group {group_id!r} already exists")
        self._detach(body.leader, previous, now, reason=None)
        invited = sorted(set(body.invited or []))
        self.db.run(
            "INSERT INTO groups (id, name, leader, flower_address, model, capacity, join_policy, "
            "invited, status, term, version, accuracy, loss, round, examples, created_at, "
            "updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, 'active', 1, 1, NULL, NULL, 0, 0, ?, ?)",
            (
                group_id,
                body.name,
                body.leader,
                body.flower_address,
                body.model,
                body.capacity,
                body.join_policy,
                dumps(invited),
                now,
                now,
            ),
        )
        self._groups.add(group_id)
        self._set_node(body.leader, group_id=group_id)
        why = {"reason": body.reason} if body.reason else {}
        self._event("created", body.leader, group_id, name=body.name, model=body.model, **why)
        if previous is not None:
            moved = {"from": previous, "to": group_id, **why}
            self._event("migrated", body.leader, group_id, **moved)
        else:
            self._event("joined", body.leader, group_id, **why)
        return self.group_out(group_id)

    def join(self, node_id: str, group_id: str, reason: str | None = None) -> GroupOut:
        """Join a group, leaving the previous one in the same transaction (one ``migrated``)."""
        now = self.clock()
        node = self._node_row(node_id)
        group = self._group_row(group_id)
        status, previous, model = node[2], node[3], node[6]
        if previous == group_id:
            return self.group_out(group_id)  # idempotent
        if status not in LIVE:
            raise Conflict(f"node {node_id!r} is {status}; register or heartbeat first")
        if group[10] == "dissolved":
            raise Conflict(f"group {group_id!r} is dissolved")
        if model is not None and model != group[7]:
            raise Conflict(f"model spec mismatch: node has {model!r}, group has {group[7]!r}")
        invited = self.rows.ids(group[9], f"invitations of group {group_id!r}")
        if group[8] == "invite-only" and node_id not in invited:
            raise Forbidden(f"group {group_id!r} is invite-only and {node_id!r} is not invited")
        if self._count_members(group_id) >= group[6]:
            raise Conflict(f"group {group_id!r} is full ({group[6]} members)")
        self._detach(node_id, previous, now, reason=None)
        self._set_node(node_id, group_id=group_id)
        self._touch(group_id, now)
        why = {"reason": reason} if reason else {}
        if previous is not None:
            self._event("migrated", node_id, group_id, **{"from": previous, "to": group_id}, **why)
        else:
            self._event("joined", node_id, group_id, **why)
        return self.group_out(group_id)

    def leave(self, node_id: str) -> NodeOut:
        """The node leaves its group (no-op if it is in none)."""
        row = self._node_row(node_id)
        self._detach(node_id, row[3], self.clock(), reason="leave")
        return self.node_out(node_id)

    def report_performance(self, group_id: str, body: PerformanceBody) -> GroupOut:
        """The leader of the current term reports round metrics; anyone else gets 409."""
        now = self.clock()
        group = self._group_row(group_id)
        self._node_row(body.node_id)
        if group[10] == "dissolved":
            raise Conflict(f"group {group_id!r} is dissolved")
        if body.term != group[3]:
            raise Conflict(f"stale term {body.term}: group {group_id!r} is at term {group[3]}")
        if group[2] != body.node_id:
            raise Conflict(f"node {body.node_id!r} is not the leader of group {group_id!r}")
        self._touch(
            group_id,
            now,
            accuracy=body.accuracy,
            loss=body.loss,
            round=body.round,
            examples=body.examples,
        )
        return self.group_out(group_id)

    def claim_leader(self, group_id: str, body: LeaderBody) -> GroupOut:
        """Compare-and-set leadership: succeeds iff ``term == current + 1`` and the claimant is
        a live member; of two claims for the same term exactly one wins."""
        now = self.clock()
        group = self._group_row(group_id)
        node = self._node_row(body.node_id)
        term = group[3]
        if group[10] == "dissolved":
            raise Conflict(f"group {group_id!r} is dissolved")
        if body.term != term + 1:
            raise Conflict(
                f"stale term {body.term}: group {group_id!r} is at term {term}, "
                f"claim term {term + 1}"
            )
        if node[3] != group_id or node[2] not in LIVE:
            raise Conflict(f"node {body.node_id!r} is not a live member of {group_id!r}")
        self._touch(
            group_id,
            now,
            leader=body.node_id,
            term=body.term,
            flower_address=body.flower_address,
            status="active",
        )
        self._event("leader-changed", body.node_id, group_id, term=body.term, previous=group[2])
        return self.group_out(group_id)

    # ---- identities (with a token) -------------------------------------------------------------

    def enrol(self, body: RegisterBody, credential_hash: str) -> NodeOut:
        """A new node's first registration: its identity (id, credential hash, CURVE key), then
        its row, in one transaction. An id enrolled before (revoked ones included) is 403."""
        if self.db.rows("SELECT 1 FROM identities WHERE node_id = ?", (body.id,)):
            raise Forbidden(
                f"node {body.id!r} is enrolled already: only its credential registers it"
            )
        self.db.run(
            "INSERT INTO identities (node_id, credential_hash, curve_key, enrolled_at, revoked_at) "
            "VALUES (?, ?, ?, ?, NULL)",
            (body.id, credential_hash, body.public_key, self.clock()),
        )
        self._identities.add(body.id)
        return self.register(body)

    def register_enrolled(self, body: RegisterBody) -> NodeOut:
        """A registration with the node's own credential; a new ``public_key`` replaces its
        CURVE key."""
        found = self.db.rows(
            "SELECT curve_key, revoked_at FROM identities WHERE node_id = ?", (body.id,)
        )
        if not found or found[0][1] is not None:
            raise Forbidden(f"node {body.id!r} is not enrolled (or was revoked)")
        if body.public_key and body.public_key != found[0][0]:
            self.db.run(
                "UPDATE identities SET curve_key = ? WHERE node_id = ?", (body.public_key, body.id)
            )
            self._identities.add(body.id)
        return self.register(body)

    def revoke(self, node_id: str, sign: Callable[[int, list[str]], str]) -> NodeOut | None:
        """The operator removes a node for good: it leaves its group, is marked gone, and its
        id joins the revocation list (``sign(serial, ids)`` returns the signed list).

        Returns the node (None if its row was forgotten already).
        """
        found = self.db.rows("SELECT revoked_at FROM identities WHERE node_id = ?", (node_id,))
        if not found:  # registered before the registry had a token: it has no credential
            if self._has_node(node_id):
                return self.remove(node_id, by="operator")
            raise NotFound(f"unknown node {node_id!r}")
        if found[0][0] is not None:  # revoked already
            return self.node_out(node_id) if self._has_node(node_id) else None
        now = self.clock()
        self.db.run("UPDATE identities SET revoked_at = ? WHERE node_id = ?", (now, node_id))
        self._identities.add(node_id)
        ids = self.db.rows("SELECT node_id FROM identities WHERE revoked_at IS NOT NULL")
        if len(ids) > MAX_REVOKED or sum(len(r[0]) + 2 for r in ids) + 256 > MAX_REVOCATIONS_BYTES:
            raise Conflict(
                f"the revocation list is full ({MAX_REVOKED} ids): start a new network (a new "
                "CA) rather than revoke more nodes of this one"
            )
        serial = int(self.db.rows("SELECT crl_serial FROM authority WHERE id = 1")[0][0]) + 1
        self.db.run(
            "UPDATE authority SET crl_serial = ?, crl = ? WHERE id = 1",
            (serial, sign(serial, sorted(r[0] for r in ids))),
        )
        self._authority = True
        if self._has_node(node_id):
            return self.remove(node_id, revoked=True, revocations=serial)
        self._event("removed", node_id, None, revoked=True, revocations=serial)
        return None

    def _has_node(self, node_id: str) -> bool:
        return bool(self.db.rows("SELECT 1 FROM nodes WHERE id = ?", (node_id,)))

    # ---- expiry -------------------------------------------------------------------------------

    def sweep(
        self,
        config: LivenessConfig,
        started_at: float,
        heard: Callable[[str], float | None],
    ) -> int:
        """Mark silent nodes suspect, then dead (leaving their groups), and forget nodes dead or
        gone for longer than the retention. Returns how many nodes changed or were forgotten.

        Silence is read from the database, where every registry's heartbeats are flushed (this
        one's just before, in the same transaction), and checked against ``heard`` (this
        registry's memory): a node is silent only if neither knows a recent heartbeat.
        Silence counts from ``started_at`` only: a registry restarted after an outage gives
        every node a full interval to heartbeat again.
        """
        now = self.clock()
        forget = [
            r[0]
            for r in self.db.rows(
                "SELECT id FROM nodes WHERE status IN ('dead', 'gone') AND last_seen < ?",
                (now - config.retention,),
            )
        ]
        for part in chunks(forget):
            self.db.run(f"DELETE FROM nodes WHERE id IN ({marks(len(part))})", tuple(part))
        self._nodes.update(forget)
        if forget:
            log.info("forgot %d node(s) dead or gone for longer than the retention", len(forget))
        changed = len(forget)
        suspect_before = now - config.suspect_after
        dead_before = now - config.dead_after

        def silent(found: list[tuple[Any, ...]], before: float) -> list[tuple[Any, ...]]:
            return [r for r in found if (heard(r[0]) or 0.0) < before]

        if started_at >= suspect_before:
            return changed  # not up long enough to call anyone silent
        quiet = silent(
            self.db.rows(
                "SELECT id FROM nodes WHERE status = 'alive' AND last_seen < ?", (suspect_before,)
            ),
            suspect_before,
        )
        for part in chunks([r[0] for r in quiet]):
            self.db.run(
                f"UPDATE nodes SET status = 'suspect' WHERE status = 'alive' AND id IN "
                f"({marks(len(part))})",
                tuple(part),
            )
        self._nodes.update(r[0] for r in quiet)
        changed += len(quiet)
        if started_at >= dead_before:
            return changed
        dying = silent(
            self.db.rows(
                "SELECT id, group_id, last_seen FROM nodes WHERE status IN ('alive', 'suspect') "
                "AND last_seen < ? ORDER BY id",
                (dead_before,),
            ),
            dead_before,
        )
        for node_id, group_id, last_seen in dying:
            self._set_node(node_id, status="dead")
            self._event("expired", node_id, group_id, last_seen=last_seen)
            self._detach(node_id, group_id, now, reason="expired")
        return changed + len(dying)

    def prune_feed(self) -> None:
        """Drop change-feed entries older than :data:`FEED_KEEP` revisions."""
        horizon = self.rev - FEED_KEEP
        if horizon - self.pruned >= 1000:  # now and then is enough
            self.db.run("DELETE FROM changes WHERE rev <= ?", (horizon,))
            self.db.run("UPDATE registry_state SET pruned = ? WHERE id = 1", (horizon,))
