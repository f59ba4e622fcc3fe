"""Shared test helpers: waiting for conditions with a deadline (never sleep-and-hope)."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import TypeVar

os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
os.environ.setdefault("SDL_AUDIODRIVER", "dummy")
os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")
os.environ.setdefault("FLWR_DISABLE_UPDATE_CHECK", "1")

T = TypeVar("T")


def wait_for(
    probe: Callable[[], T], timeout: float, interval: float = 0.1, what: str = "condition"
) -> T:
    """Return the first truthy ``probe()`` within ``timeout`` seconds, else fail the test."""
    deadline = time.monotonic() + timeout
    value = probe()
    while not value:
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)
        value = probe()
    return value
