"""Containment: one unit of work that fails unexpectedly is counted and logged, never fatal.

A long-lived thread (gossip, control, heartbeat, Flower) handles many units of work: a frame, a
timer tick, an HTTP answer, a round's result. A bug or a hostile input that makes one of them
raise must not end the thread. ``Containment`` wraps each unit: the exception is counted per
place, logged with its traceback the first time that (place, exception type) is seen and at
DEBUG afterwards (a flood of the same bad input must not flood the log), and the thread goes on.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager


class Containment:
    """Counts and logs the exceptions of contained units of work, by place.

    Parameters
    ----------
    log : logging.Logger
        Where the first occurrence of each (place, exception type) is logged at ERROR.
    owner : str
        Who runs the work, for the log line (e.g. a node's name).
    """

    def __init__(self, log: logging.Logger, owner: str) -> None:
        self.log = log
        self.owner = owner
        self.errors: Counter[str] = Counter()
        self._seen: set[tuple[str, str]] = set()
        self._lock = threading.Lock()

    @contextmanager
    def unit(self, place: str) -> Iterator[None]:
        """Run the body; an ``Exception`` it raises is counted under ``place`` and swallowed."""
        try:
            yield
        except Exception as exc:
            key = (place, type(exc).__name__)
            with self._lock:
                self.errors[place] += 1
                first = key not in self._seen
                self._seen.add(key)
            if first:
                self.log.error(
                    "%s: %s failed (%s: %s); contained, the thread goes on",
                    self.owner,
                    place,
                    type(exc).__name__,
                    exc,
                    exc_info=True,
                )
            else:
                self.log.debug("%s: %s failed again: %r", self.owner, place, exc)

    def total(self) -> int:
        """Every contained exception so far."""
        with self._lock:
            return sum(self.errors.values())
