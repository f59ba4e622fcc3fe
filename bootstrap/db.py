"""The registry's database: SQLite (one file, the default) or PostgreSQL (shared by several
registries), its peewee models and its versioned schema.

Models are built per database by :func:`build_models` (not bound to a global database), so that
several registries can live in one process (tests, benchmarks) without sharing state. The store
writes its hot statements as SQL with ``?`` placeholders; :meth:`Backend.q` adapts them to the
driver (``%s`` for psycopg2).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import sqlite3
import threading
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import peewee as pw

#: Version of the schema this code writes. A later release adds an entry to ``MIGRATIONS``.
#: (The change feed's tables, the ``last_seen`` index and the identity tables are additive:
#: created on start, and ignored by older code, so they need no new version.)
SCHEMA_VERSION = 1

#: ``MIGRATIONS[v]`` upgrades a database from version ``v`` to ``v + 1`` (inside one transaction).
MIGRATIONS: dict[int, Callable[[Database, Models], None]] = {}

PRAGMAS = (
    ("journal_mode", "wal"),
    ("synchronous", "normal"),
    ("busy_timeout", 5000),
    ("foreign_keys", 1),
)

#: URL schemes that name a PostgreSQL server rather than an SQLite file.
POSTGRES_SCHEMES = ("postgresql", "postgres")


class SchemaError(RuntimeError):
    """The database has a schema this code cannot use (e.g. written by a newer release)."""


class DatabaseInUse(RuntimeError):
    """Another registry holds the database's lock."""


class DatabaseLock:
    """An exclusive lock on the sidecar file ``<db>.lock``, held while a registry uses ``<db>``.

    SQLite only: two registries on one file would each keep a view of it that the other's
    writes never reach. ``flock`` is dropped by the OS when the holder exits, SIGKILL included,
    so a crash leaves no stale lock; the (empty) lock file itself stays.
    """

    def __init__(self, db_path: str | Path) -> None:
        self.db_path = Path(db_path)
        self.path = Path(f"{db_path}.lock")
        self._fd: int | None = None

    def acquire(self) -> None:
        """Take the lock (no-op if held).

        Raises
        ------
        DatabaseInUse
            If another registry (any process, this one included) holds it.
        OSError
            If the lock file cannot be created (e.g. its folder does not exist).
        """
        if self._fd is not None:
            return
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)  # not inherited by children
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise DatabaseInUse(
                f"database {self.db_path} is in use by another registry (it holds {self.path})"
            ) from None
        self._fd = fd

    def release(self) -> None:
        """Drop the lock (no-op if not held)."""
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor drops the flock
            self._fd = None


@dataclass(frozen=True)
class Models:
    """The model classes bound to one database."""

    SchemaVersion: type[pw.Model]
    Node: type[pw.Model]
    Group: type[pw.Model]
    Event: type[pw.Model]
    State: type[pw.Model]
    Change: type[pw.Model]
    Identity: type[pw.Model]
    Authority: type[pw.Model]

    def all(self) -> list[type[pw.Model]]:
        """Every model, in creation order."""
        return [
            self.SchemaVersion,
            self.Group,
            self.Node,
            self.Event,
            self.State,
            self.Change,
            self.Identity,
            self.Authority,
        ]


class Backend:
    """What the store needs of a database beyond peewee's: one long-lived connection per
    thread that :meth:`close_all` can close from any thread, SQL adapted to the driver, and a
    few facts about the backend. Mixed into the SQLite and PostgreSQL database classes.
    """

    #: Several registries may share this database (PostgreSQL), or only one may (SQLite).
    shared = False
    #: A text name for messages.
    kind = ""

    def _track_init(self) -> None:
        self._opened: list[Any] = []
        self._opened_lock = threading.Lock()
        self._generation = 0  # bumped by close_all; a thread with an older one reconnects

    def _tracked(self, conn: Any) -> Any:
        with self._opened_lock:
            self._opened.append(conn)
        return conn

    def ensure_connected(self) -> None:
        """Give this thread an open connection, reusing the one it has."""
        db: Any = self
        state = db._state
        if getattr(state, "generation", None) != self._generation:
            state.reset()  # forget a connection that close_all closed under this thread
            state.generation = self._generation
        if db.is_closed():
            db.connect()

    def drop_connection(self) -> None:
        """Forget this thread's connection after an error that may have broken it."""
        db: Any = self
        conn = None if db.is_closed() else db._state.conn
        db._state.reset()
        if conn is not None:
            with self._opened_lock:
                if conn in self._opened:
                    self._opened.remove(conn)
            with contextlib.suppress(Exception):  # already broken: closing it is best effort
                conn.close()

    def close_all(self) -> None:
        """Close every connection this database opened, on any thread (at shutdown only)."""
        with self._opened_lock:
            opened, self._opened = self._opened, []
            self._generation += 1
        for conn in opened:
            with contextlib.suppress(Exception):  # a broken connection is closed enough
                conn.close()

    def q(self, text: str) -> str:
        """``text`` with its ``?`` placeholders in the driver's style."""
        return _placeholders(text, self.param)  # type: ignore[attr-defined]

    def run(self, text: str, params: Sequence[Any] = ()) -> Any:
        """Execute one statement (``?`` placeholders) on this thread's connection; the cursor."""
        return self.execute_sql(self.q(text), params)  # type: ignore[attr-defined]

    def rows(self, text: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """Every row of a query (``?`` placeholders)."""
        return list(self.run(text, params).fetchall())

    def run_many(self, text: str, rows: Iterable[Sequence[Any]]) -> None:
        """One statement for each of ``rows`` (``?`` placeholders)."""
        db: Any = self
        with pw.__exception_wrapper__:
            db.cursor().executemany(self.q(text), list(rows))


@lru_cache(maxsize=512)
def _placeholders(text: str, param: str) -> str:
    return text if param == "?" else text.replace("?", param)


def marks(n: int) -> str:
    """``n`` placeholders for an ``IN (...)`` list."""
    return ", ".join("?" * n)


class RegistryDatabase(Backend, pw.SqliteDatabase):
    """An SQLite database that keeps one connection per thread open and can close them all.

    Connections stay open across requests on purpose: closing the last connection of a WAL
    database checkpoints it, which measured ~9 ms per write here against ~2 ms with the
    connection kept. Every transaction starts with ``BEGIN IMMEDIATE``: a write transaction takes
    the write lock before it reads, so check-then-write sequences never race.
    """

    kind = "sqlite"

    def __init__(self, path: str) -> None:
        extra: dict[str, object] = {}
        if path == ":memory:":
            # One database for every thread of this registry (its commit thread included),
            # private to it: a named in-memory database with a shared cache.
            path, extra = (
                f"file:registry-{uuid.uuid4().hex}?mode=memory&cache=shared",
                {"uri": True},
            )
        super().__init__(
            path, pragmas=PRAGMAS, lock_type="IMMEDIATE", check_same_thread=False, **extra
        )
        self._track_init()

    def _connect(self) -> sqlite3.Connection:
        return self._tracked(super()._connect())  # type: ignore[no-any-return]


class RegistryPostgres(Backend, pw.PostgresqlDatabase):
    """A PostgreSQL database (psycopg2), one connection per thread, shared by several registries.

    Every write transaction of every registry first takes the row lock of ``registry_state``
    (the store does), so writes are serialised across registries like SQLite's writer lock
    serialises them in one file, and read committed sees all that came before.
    """

    shared = True
    kind = "postgresql"

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        name = unquote(parts.path.lstrip("/"))
        if not name:
            raise ValueError(f"no database name in {redact(url)} (postgresql://USER@HOST:PORT/DB)")
        params: dict[str, Any] = {"connect_timeout": 10}
        if parts.hostname:
            params["host"] = parts.hostname
        if parts.port:
            params["port"] = parts.port
        if parts.username:
            params["user"] = unquote(parts.username)
        if parts.password:
            params["password"] = unquote(parts.password)
        super().__init__(name, **params)
        self._track_init()

    def _connect(self) -> Any:
        return self._tracked(super()._connect())


def is_database_url(target: str | Path) -> bool:
    """Whether ``target`` is a PostgreSQL URL rather than an SQLite file path."""
    return isinstance(target, str) and urlsplit(target).scheme in POSTGRES_SCHEMES


def redact(target: str | Path) -> str:
    """``target`` for messages: a URL's password replaced by ``***``."""
    text = str(target)
    if not is_database_url(text):
        return text
    parts = urlsplit(text)
    if parts.password is None:
        return text
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return parts._replace(netloc=netloc).geturl()


Database = RegistryDatabase | RegistryPostgres


def open_database(target: str | Path) -> Database:
    """The database for ``target``: an SQLite file path, or ``postgresql://USER@HOST:PORT/DB``
    (not yet connected).

    Raises
    ------
    ValueError
        If a PostgreSQL URL names no database.
    """
    if is_database_url(target):
        return RegistryPostgres(str(target))
    return RegistryDatabase(str(target))


def build_models(db: pw.Database) -> Models:
    """Create the model classes bound to ``db``.

    Numbers that may exceed 2^31 (terms, rounds, counts, revisions) are 64-bit and times are
    double precision: on SQLite both are what its INTEGER and REAL are anyway, on PostgreSQL
    plain INTEGER and REAL would overflow or round a timestamp to minutes.
    """

    class Base(pw.Model):
        class Meta:
            database = db

    class SchemaVersion(Base):
        version = pw.IntegerField()

        class Meta:
            table_name = "schema_version"

    class Group(Base):
        id = pw.CharField(primary_key=True, max_length=64)
        name = pw.CharField(max_length=128)
        # The leader is a plain column, not a foreign key: a node row and the group row refer to
        # each other, and the registry's transactions keep them consistent.
        leader = pw.CharField(null=True, max_length=64)
        flower_address = pw.CharField(max_length=300)
        model = pw.CharField(max_length=128)
        capacity = pw.IntegerField()
        join_policy = pw.CharField(max_length=32)
        invited = pw.TextField(default="[]")  # JSON list of node ids
        status = pw.CharField(index=True, max_length=32)  # active | leaderless | dissolved
        term = pw.BigIntegerField()
        version = pw.BigIntegerField()
        accuracy = pw.DoubleField(null=True)
        loss = pw.DoubleField(null=True)
        round = pw.BigIntegerField(default=0)
        examples = pw.BigIntegerField(default=0)
        created_at = pw.DoubleField()
        updated_at = pw.DoubleField()

        class Meta:
            table_name = "groups"

    class Node(Base):
        id = pw.CharField(primary_key=True, max_length=64)
        name = pw.CharField(max_length=128)
        gossip_address = pw.CharField(max_length=300)
        flower_address = pw.CharField(null=True, max_length=300)
        model = pw.CharField(null=True, max_length=128)
        data = pw.TextField(default="{}")  # JSON object
        status = pw.CharField(index=True, max_length=32)  # alive | suspect | dead | gone
        group = pw.ForeignKeyField(Group, null=True, backref="members", on_delete="SET NULL")
        accuracy = pw.DoubleField(null=True)
        loss = pw.DoubleField(null=True)
        round = pw.BigIntegerField(null=True)
        registered_at = pw.DoubleField()
        last_seen = pw.DoubleField(index=True)  # expiry looks up the silent ones

        class Meta:
            table_name = "nodes"

    class Event(Base):
        id = pw.BigAutoField()
        ts = pw.DoubleField()
        kind = pw.CharField(max_length=32)
        node = pw.CharField(null=True, max_length=64)
        group = pw.CharField(null=True, max_length=64)
        data = pw.TextField(default="{}")  # JSON object

        class Meta:
            table_name = "events"

    class State(Base):
        """One row: the revision of the last committed write, and up to which the change feed
        was pruned. Every write transaction updates it first (see :class:`RegistryPostgres`)."""

        id = pw.IntegerField(primary_key=True)
        rev = pw.BigIntegerField(default=0)
        pruned = pw.BigIntegerField(default=0)

        class Meta:
            table_name = "registry_state"

    class Change(Base):
        """The change feed: which node or group rows the write of revision ``rev`` touched
        (kind ``n``, ``g``; ``l``: liveness flushed by registry ``origin``), so that every
        registry's in-memory view catches up with the others' writes."""

        id = pw.BigAutoField()
        rev = pw.BigIntegerField(index=True)
        kind = pw.CharField(max_length=1)
        key = pw.CharField(max_length=64)
        origin = pw.CharField(max_length=32)

        class Meta:
            table_name = "changes"

    class Identity(Base):
        """Who enrolled (with a token): a node id, the hash of its credential, its CURVE key.
        Kept when the node's row is forgotten, so an id stays its enroller's; a revoked id is
        never enrolled again."""

        node_id = pw.CharField(primary_key=True, max_length=64)
        credential_hash = pw.CharField(unique=True, max_length=64)
        curve_key = pw.CharField(max_length=40)
        enrolled_at = pw.DoubleField()
        revoked_at = pw.DoubleField(null=True)

        class Meta:
            table_name = "identities"

    class Authority(Base):
        """One row: the fingerprint of the CA the nodes were enrolled with, and the revocation
        list it signed last (``crl``, base64) with its serial."""

        id = pw.IntegerField(primary_key=True)
        ca_fingerprint = pw.CharField(max_length=64)
        crl_serial = pw.BigIntegerField(default=0)
        crl = pw.TextField(default="")

        class Meta:
            table_name = "authority"

    return Models(
        SchemaVersion=SchemaVersion,
        Node=Node,
        Group=Group,
        Event=Event,
        State=State,
        Change=Change,
        Identity=Identity,
        Authority=Authority,
    )


#: The advisory lock PostgreSQL registries take while creating or migrating the schema.
SCHEMA_LOCK = 0x6D79_6365_0001


def ensure_schema(db: Database, models: Models) -> int:
    """Create the schema on first start, migrate an older one, refuse a newer one.

    Returns
    -------
    int
        The schema version in force.

    Raises
    ------
    SchemaError
        If the database was written by a newer schema version.
    """
    db.ensure_connected()
    with db.atomic():
        if db.shared:  # registries starting together create the tables once
            db.execute_sql("SELECT pg_advisory_xact_lock(%s)", (SCHEMA_LOCK,))
        db.create_tables(models.all(), safe=True)
        if models.State.select().count() == 0:
            models.State.create(id=1, rev=0, pruned=0)
        row = models.SchemaVersion.select().first()
        if row is None:
            models.SchemaVersion.create(version=SCHEMA_VERSION)
            return SCHEMA_VERSION
        version = int(row.version)
        if version > SCHEMA_VERSION:
            raise SchemaError(
                f"database schema version {version} is newer than this registry's "
                f"({SCHEMA_VERSION}); upgrade mycelium"
            )
        while version < SCHEMA_VERSION:
            migrate = MIGRATIONS[version]
            migrate(db, models)
            version += 1
        models.SchemaVersion.update(version=version).execute()
        return version
