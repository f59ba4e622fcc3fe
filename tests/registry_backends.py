"""The registry's database backends for tests: an SQLite file, or a fresh PostgreSQL database.

PostgreSQL comes from ``MYCELIUM_TEST_POSTGRES`` (``postgresql://USER@HOST:PORT/DB``, a user
allowed to create databases; ``.ci/run`` starts such a server and sets it). Without the variable
the PostgreSQL cases are skipped, visibly; with it set, an unreachable server fails them.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit

import pytest

ENV = "MYCELIUM_TEST_POSTGRES"
BACKENDS = ["sqlite", "postgresql"]


def postgres_url() -> str | None:
    """The test server's URL, or None when the variable is unset."""
    return os.environ.get(ENV) or None


def _admin(url: str):  # type: ignore[no-untyped-def]
    import psycopg2

    parts = urlsplit(url)
    conn = psycopg2.connect(
        dbname=parts.path.lstrip("/") or "postgres",
        user=parts.username,
        password=parts.password,
        host=parts.hostname,
        port=parts.port,
        connect_timeout=10,
    )
    conn.autocommit = True
    return conn


@contextmanager
def fresh_postgres() -> Iterator[str]:
    """A new, empty database on the test server, dropped afterwards; its URL."""
    url = postgres_url()
    if url is None:
        pytest.skip(f"{ENV} is not set (.ci/run starts a PostgreSQL server and sets it)")
    name = f"reg_{uuid.uuid4().hex[:12]}"
    admin = _admin(url)  # an unreachable server fails here: the variable promised one
    try:
        with admin.cursor() as cur:
            cur.execute(f"CREATE DATABASE {name}")
        yield urlsplit(url)._replace(path=f"/{name}").geturl()
    finally:
        with admin.cursor() as cur:
            cur.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        admin.close()


@contextmanager
def database(backend: str, tmp_path: Path) -> Iterator[str | Path]:
    """An empty database of ``backend``: an SQLite path or a PostgreSQL URL."""
    if backend == "sqlite":
        yield tmp_path / "registry.db"
    else:
        with fresh_postgres() as url:
            yield url
