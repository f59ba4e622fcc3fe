"""Test environment: headless pygame, quiet and offline Flower."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest

os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
os.environ.setdefault("SDL_AUDIODRIVER", "dummy")
os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")
os.environ.setdefault("FLWR_DISABLE_UPDATE_CHECK", "1")


@pytest.fixture
def cleanup() -> Iterator[list[Any]]:
    """Things a test started (Flower servers, member clients), stopped last-first at the end."""
    things: list[Any] = []
    yield things
    for thing in reversed(things):
        close = getattr(thing, "close", None)
        close() if close is not None else thing.stop()
