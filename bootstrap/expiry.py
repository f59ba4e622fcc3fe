"""The expiry thread, and which registry runs it when several share a database.

Expiry is safe in any registry (each sweep is one serialised write transaction that re-reads
the silence it acts on), but one sweeper is enough: on PostgreSQL the registry holding an
advisory lock sweeps, and when it dies its session ends, the lock is free, and another takes it
at its next tick. On SQLite the registry is the file's only one.
"""

from __future__ import annotations

import logging
import threading

from bootstrap.store import RegistryStore

log = logging.getLogger("mycelium.registry")

#: The advisory lock key of the expiry lease (any constant the registries agree on).
EXPIRY_LOCK = 0x6D79_6365_0002


class ExpiryLease:
    """Whether this registry is the one that sweeps (PostgreSQL: a session advisory lock held
    on the expiry thread's own connection)."""

    def __init__(self, store: RegistryStore) -> None:
        self._store = store
        self.held = not store.shared

    def check(self) -> bool:
        """Take the lease if it is free, or confirm that it is still held; on the expiry thread."""
        db = self._store.db
        if not db.shared:
            return True
        try:
            db.ensure_connected()
            if self.held:
                db.execute_sql("SELECT 1")  # the lock lives as long as this session
            else:
                got = db.execute_sql("SELECT pg_try_advisory_lock(%s)", (EXPIRY_LOCK,)).fetchone()
                self.held = bool(got[0])
                if self.held:
                    log.info("this registry now runs expiry (it holds the expiry lease)")
        except Exception as exc:  # a lost session lost the lock with it
            if self.held:
                log.warning("expiry lease lost: %s", exc)
            self.held = False
            db.drop_connection()
        return self.held


class ExpiryThread(threading.Thread):
    """Runs :meth:`RegistryStore.sweep` every ``sweep_interval`` seconds, while it holds the
    lease, until stopped."""

    def __init__(self, store: RegistryStore) -> None:
        super().__init__(name="registry-expiry", daemon=True)
        self._store = store
        self._halt = threading.Event()
        self.lease = ExpiryLease(store)

    def run(self) -> None:
        interval = self._store.liveness.sweep_interval
        try:
            while not self._halt.wait(interval):
                try:
                    if not self.lease.check():
                        continue
                    changed = self._store.sweep()
                    if changed:
                        log.info("expiry: %d node(s) changed status or were forgotten", changed)
                except Exception:  # keep sweeping: a busy database must not end expiry
                    log.exception("expiry sweep failed")
        finally:
            self._store.db.drop_connection()  # ends the session: frees the lease at once

    def stop(self, timeout: float = 5.0) -> None:
        """Ask the thread to stop and wait for it."""
        self._halt.set()
        if self.is_alive():
            self.join(timeout)
