"""The versioned schema: created on first start, kept on restart, a newer one refused."""

from __future__ import annotations

from pathlib import Path

import pytest

from bootstrap.db import SCHEMA_VERSION, SchemaError
from bootstrap.store import RegistryStore
from mycelium_p2p.registry_api import RegisterBody


def test_schema_created_once_and_reopened(tmp_path: Path) -> None:
    store = RegistryStore(tmp_path / "r.db")
    store.open()
    assert store.schema_version == SCHEMA_VERSION
    store.register(RegisterBody(id="a", name="a", gossip_address="h:1"))
    store.close()
    again = RegistryStore(tmp_path / "r.db")
    again.open()
    assert [n.id for n in again.nodes()] == ["a"]
    assert again.m.SchemaVersion.select().count() == 1
    again.close()


def test_newer_schema_is_refused(tmp_path: Path) -> None:
    store = RegistryStore(tmp_path / "r.db")
    store.open()
    store.m.SchemaVersion.update(version=SCHEMA_VERSION + 1).execute()
    store.close()
    with pytest.raises(SchemaError, match="newer"):
        RegistryStore(tmp_path / "r.db").open()
