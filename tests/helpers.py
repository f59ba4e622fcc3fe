"""Test helpers: waiting for a condition with a deadline (never sleep-and-hope)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

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
