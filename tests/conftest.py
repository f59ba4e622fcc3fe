"""Test environment: headless pygame, quiet and offline Flower."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from tests.reliability_support import Processes

os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
os.environ.setdefault("SDL_AUDIODRIVER", "dummy")
os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")
os.environ.setdefault("FLWR_DISABLE_UPDATE_CHECK", "1")
# Nodes with a token keep their identity in a per-user state folder: never the user's own.
os.environ["XDG_STATE_HOME"] = tempfile.mkdtemp(prefix="mycelium-test-state-")


@pytest.fixture
def cleanup() -> Iterator[list[Any]]:
    """Things a test started (Flower servers, member clients), stopped last-first at the end."""
    things: list[Any] = []
    yield things
    for thing in reversed(things):
        close = getattr(thing, "close", None)
        close() if close is not None else thing.stop()


@pytest.fixture
def nodes(cleanup: list[Any]) -> list[Any]:
    """Gossip nodes a test started, stopped at the end (``cleanup`` under the name tests use)."""
    return cleanup


@pytest.fixture
def procs(tmp_path: Path) -> Iterator[Processes]:
    """Child processes of one test (registries, nodes), all stopped at its end."""
    from tests.reliability_support import Processes

    processes = Processes(tmp_path)
    yield processes
    processes.stop_all()
