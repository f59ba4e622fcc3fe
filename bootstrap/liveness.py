"""Liveness in memory: who heartbeated when, with which metrics.

A heartbeat is answered from here without touching the database; the commit queue writes the
heartbeats of the last interval (at most a second) in one transaction, and expiry reads the
silence of each node from here too (after that write). What a crash loses is the last second of
liveness and metrics: the next heartbeat of each node restores it, and expiry gives every node a
full interval after a restart before counting its silence.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

from bootstrap.rows import LIVE
from mycelium_p2p.registry_api import HeartbeatBody


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
    flush_interval : float
        Longest time, in seconds, a heartbeat stays in memory only before it is written to the
        database (default: 1; at most 1). Heartbeats of one interval share one transaction.
    """

    suspect_after: float = 45.0
    dead_after: float = 90.0
    sweep_interval: float = 1.0
    retention: float = 86400.0
    flush_interval: float = 1.0

    def __post_init__(self) -> None:
        if not (0 < self.suspect_after <= self.dead_after):
            raise ValueError("need 0 < suspect_after <= dead_after")
        if self.sweep_interval <= 0:
            raise ValueError("sweep_interval must be > 0")
        if not self.retention > 0:
            raise ValueError("retention must be > 0")
        if not 0 < self.flush_interval <= 1:
            raise ValueError("flush_interval must be in (0, 1]")


class Live:
    """One node's liveness: last heartbeat, status and latest metrics."""

    __slots__ = ("accuracy", "last_seen", "loss", "round", "status")

    def __init__(
        self,
        last_seen: float,
        status: str,
        accuracy: float | None = None,
        loss: float | None = None,
        round: int | None = None,
    ) -> None:
        self.last_seen = last_seen
        self.status = status
        self.accuracy = accuracy
        self.loss = loss
        self.round = round

    def copy(self) -> Live:
        return Live(self.last_seen, self.status, self.accuracy, self.loss, self.round)


#: A flushed row: (node id, last_seen, accuracy, loss, round).
Flushed = tuple[str, float, float | None, float | None, int | None]


class LivenessTable:
    """Every known node's :class:`Live`, and which changed since the last flush.

    ``version`` counts every change (views with last_seen or metrics are rebuilt after it),
    ``status_version`` only changes of status (the set of live nodes). Thread-safe: heartbeats
    arrive on the event loop, flushes and merges on the commit thread.
    """

    def __init__(self) -> None:
        self._entries: dict[str, Live] = {}
        self._dirty: set[str] = set()
        self._lock = threading.Lock()
        self.version = 0
        self.status_version = 0

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, node_id: str) -> Live | None:
        """A copy of the node's liveness, or None if unknown."""
        with self._lock:
            entry = self._entries.get(node_id)
            return None if entry is None else entry.copy()

    def beat(self, node_id: str, body: HeartbeatBody, now: float) -> Live | None:
        """Record a heartbeat: the node is alive, with the metrics ``body`` carries.

        Returns the node's liveness after it, or None if the node is unknown. A ``gone`` node
        is returned unchanged (the caller refuses it).
        """
        with self._lock:
            entry = self._entries.get(node_id)
            if entry is None or entry.status == "gone":
                return None if entry is None else entry.copy()
            if entry.status != "alive":
                entry.status = "alive"
                self.status_version += 1
            entry.last_seen = now
            if body.accuracy is not None:
                entry.accuracy = body.accuracy
            if body.loss is not None:
                entry.loss = body.loss
            if body.round is not None:
                entry.round = body.round
            self._dirty.add(node_id)
            self.version += 1
            return entry.copy()

    def dirty(self) -> bool:
        """Whether heartbeats wait to be flushed."""
        return bool(self._dirty)

    def take_dirty(self) -> list[Flushed]:
        """The heartbeats to flush (the latest state of each node), forgetting them as dirty."""
        with self._lock:
            taken, self._dirty = self._dirty, set()
            out: list[Flushed] = []
            for node_id in taken:
                e = self._entries.get(node_id)
                if e is not None and e.status != "gone":
                    out.append((node_id, e.last_seen, e.accuracy, e.loss, e.round))
            return out

    def restore(self, flushed: list[Flushed]) -> None:
        """Mark ``flushed`` dirty again (their transaction did not commit)."""
        with self._lock:
            self._dirty.update(row[0] for row in flushed if row[0] in self._entries)

    def merge(
        self,
        node_id: str,
        last_seen: float,
        status: str,
        accuracy: float | None,
        loss: float | None,
        round: int | None,
    ) -> None:
        """Take a node's liveness as the database has it, unless this table knows a later
        heartbeat (``gone`` always wins: a node that left stays gone)."""
        with self._lock:
            entry = self._entries.get(node_id)
            if entry is not None and last_seen < entry.last_seen and status != "gone":
                return  # our heartbeat is newer; it will be flushed
            if entry is None or entry.status != status:
                self.status_version += 1
            self._entries[node_id] = Live(last_seen, status, accuracy, loss, round)
            if status == "gone":
                self._dirty.discard(node_id)
            self.version += 1

    def drop(self, node_id: str) -> None:
        """Forget a node (its row was deleted)."""
        with self._lock:
            if self._entries.pop(node_id, None) is not None:
                self._dirty.discard(node_id)
                self.status_version += 1
                self.version += 1

    def last_seen(self, node_id: str) -> float | None:
        """When the node was last heard of, or None if unknown."""
        with self._lock:
            entry = self._entries.get(node_id)
            return None if entry is None else entry.last_seen

    def items(self) -> list[tuple[str, Live]]:
        """Copies of every entry (for building views)."""
        with self._lock:
            return [(node_id, e.copy()) for node_id, e in self._entries.items()]

    def live_ids(self) -> list[str]:
        """Ids of the nodes alive or suspect."""
        with self._lock:
            return [node_id for node_id, e in self._entries.items() if e.status in LIVE]
