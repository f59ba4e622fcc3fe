"""One scheduler for every timer of the node: named deadlines on the node's clock.

A timer is a name and a due time; setting it again moves it (there is at most one per name).
The control loop asks which timers are due, runs the part each belongs to, and sleeps until the
next one (or an event). Back-off is a property of the part that schedules, not of the timer.
"""

from __future__ import annotations

import math
from enum import StrEnum


class Timer(StrEnum):
    """The node's timers."""

    PEER_LOOKUP = "peer-lookup"  # ask the registry for live peers (discovery)
    CHOOSE = "choose"  # choose a group while in none (choice)
    EVALUATE = "evaluate"  # re-evaluate the group choice (choice)


class Scheduler:
    """Named deadlines; at most one per name."""

    def __init__(self) -> None:
        self._due: dict[Timer, float] = {}

    def at(self, timer: Timer, when: float) -> None:
        """Set ``timer`` to fire at ``when`` (replacing any earlier setting)."""
        self._due[timer] = when

    def cancel(self, timer: Timer) -> None:
        self._due.pop(timer, None)

    def when(self, timer: Timer) -> float | None:
        """When ``timer`` fires, or None if it is not set."""
        return self._due.get(timer)

    def is_due(self, timer: Timer, now: float) -> bool:
        due = self._due.get(timer)
        return due is not None and now >= due

    def pop_due(self, now: float) -> list[Timer]:
        """The timers due at ``now``, earliest first; they are unset (parts set them again)."""
        due = sorted((t for t, when in self._due.items() if now >= when), key=self._due.get)
        for timer in due:
            del self._due[timer]
        return due

    def next_due(self) -> float:
        """The earliest deadline (infinity when none is set)."""
        return min(self._due.values(), default=math.inf)
