"""Group commit: one thread runs every durable write, many requests to a transaction.

Requests queue their write; the commit thread takes all that are waiting, runs them in one
transaction (each in a savepoint of its own, so that a refused request undoes only itself),
commits, brings the in-memory view up to date, and only then answers each request: nothing is
acknowledged before it is durable, and a batch costs one commit however many requests it holds.
The heartbeats kept in memory are written at the start of each transaction, and by an empty one
when they have waited a flush interval.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any, Protocol

import peewee as pw

from bootstrap.db import Database

log = logging.getLogger("mycelium.registry")

#: Most requests in one transaction.
MAX_BATCH = 256


class Batches(Protocol):
    """What the commit thread asks of the store around each transaction."""

    def begin_batch(self) -> None:
        """First thing in the transaction (revision, heartbeats kept in memory)."""

    def end_batch(self) -> None:
        """Last thing in the transaction (the change feed)."""

    def abort_batch(self) -> None:
        """The transaction did not commit: keep what it would have flushed."""

    def catch_up(self) -> None:
        """After a commit, or when polling: bring the in-memory view up to date."""

    def flush_due(self) -> bool:
        """Whether heartbeats have waited long enough to be written without a request."""

    def poll_due(self) -> bool:
        """Whether to look for other registries' writes now."""


class ShuttingDown(pw.OperationalError):
    """The registry is stopping; the request was not run (answered 503, retry elsewhere)."""


class _Op:
    __slots__ = ("fn", "future")

    def __init__(self, fn: Callable[[], Any]) -> None:
        self.fn = fn
        self.future: Future[Any] = Future()


class CommitQueue:
    """The commit thread and its queue.

    Parameters
    ----------
    db : Database
        The database; the thread keeps one connection.
    batches : Batches
        The store's hooks around each transaction.
    tick : float
        Longest wait between two looks at ``flush_due``/``poll_due``, in seconds (default: 0.05).
    """

    def __init__(self, db: Database, batches: Batches, tick: float = 0.05) -> None:
        self.db = db
        self.batches = batches
        self.tick = tick
        self._queue: queue.SimpleQueue[_Op | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._stopping = False
        self.commits = 0  # transactions committed (for tests and benchmarks)
        self.ops = 0  # requests they held

    # ---- life cycle ---------------------------------------------------------------------------

    def start(self) -> None:
        """Start the commit thread."""
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="registry-commit", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Run what is queued, write the heartbeats kept in memory, stop the thread."""
        if self._thread is None:
            return
        self._stopping = True
        self._queue.put(None)
        self._thread.join(timeout)
        self._thread = None

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    # ---- requests -----------------------------------------------------------------------------

    def submit(self, fn: Callable[[], Any]) -> Future[Any]:
        """Queue ``fn`` (a write, run inside a transaction); its future has the result once the
        transaction committed, or the exception ``fn`` or the commit raised."""
        op = _Op(fn)
        if self._stopping or not self.running:
            op.future.set_exception(ShuttingDown("the registry is not running; retry"))
            return op.future
        self._queue.put(op)
        return op.future

    def call(self, fn: Callable[[], Any], timeout: float = 60.0) -> Any:
        """Run ``fn`` as :meth:`submit` does and wait for its result (from another thread)."""
        return self.submit(fn).result(timeout)

    # ---- the thread ---------------------------------------------------------------------------

    def _take(self) -> tuple[list[_Op], bool]:
        """The requests waiting (after waiting up to a tick for one), and whether to stop."""
        ops: list[_Op] = []
        stop = False
        try:
            first = self._queue.get(timeout=self.tick)
        except queue.Empty:
            return ops, False
        items = [first]
        while len(items) < MAX_BATCH:
            try:
                items.append(self._queue.get_nowait())
            except queue.Empty:
                break
        for item in items:
            if item is None:
                stop = True
            else:
                ops.append(item)
        return ops, stop

    def _run(self) -> None:
        self.db.ensure_connected()
        try:
            while True:
                ops, stop = self._take()
                try:
                    if ops or self.batches.flush_due() or stop:
                        self._commit(ops)
                    elif self.batches.poll_due():
                        self.batches.catch_up()
                except Exception:  # never let the commit thread die: log, go on
                    log.exception("registry commit loop")
                if stop:
                    while True:  # whatever was queued behind the stop
                        ops, _ = self._take_now()
                        if not ops:
                            break
                        self._commit(ops)
                    return
        finally:
            self.db.drop_connection()

    def _take_now(self) -> tuple[list[_Op], bool]:
        ops: list[_Op] = []
        while len(ops) < MAX_BATCH:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if item is not None:
                ops.append(item)
        return ops, False

    def _commit(self, ops: list[_Op]) -> None:
        """One transaction for ``ops`` (and the heartbeats kept in memory), then the answers."""
        results: list[tuple[bool, Any]] = []
        for attempt in range(2):
            results = []
            try:
                self.db.ensure_connected()
                with self.db.atomic():
                    self.batches.begin_batch()
                    for op in ops:
                        try:
                            with self.db.atomic():  # a savepoint: a refusal undoes only itself
                                results.append((True, op.fn()))
                        except Exception as exc:
                            results.append((False, exc))
                    self.batches.end_batch()
                break
            except Exception as exc:
                self.batches.abort_batch()
                broken = self.db.shared and not self.db.is_connection_usable()
                if broken:
                    self.db.drop_connection()  # reconnect on the next attempt
                if attempt == 0 and broken:
                    log.warning("database connection lost (%s); retrying the batch", exc)
                    time.sleep(0.1)
                    continue
                log.warning("a batch of %d write(s) failed: %s", len(ops), exc)
                for op in ops:
                    op.future.set_exception(exc)
                return
        self.commits += 1
        self.ops += len(ops)
        try:
            self.batches.catch_up()
        except Exception:  # the writes are committed; the view catches up on the next batch
            log.exception("catching up after a commit")
        for op, (ok, value) in zip(ops, results, strict=True):
            if ok:
                op.future.set_result(value)
            else:
                op.future.set_exception(value)
