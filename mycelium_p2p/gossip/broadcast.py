"""Retransmit-limited broadcast queue (pure).

Each queued update is handed out at most ``retransmit_mult * ceil(log10(N + 1))`` times, then
forgotten. Updates sent fewer times go first and, among equals, the newest first (as memberlist's
``TransmitLimitedQueue``), so a fresh update overtakes old chatter. A newer update about the same
subject (a member id or a group id) replaces the queued one.
"""

from __future__ import annotations

import math
from collections.abc import Hashable
from dataclasses import dataclass
from typing import Any


def retransmit_limit(retransmit_mult: int, n_nodes: int) -> int:
    """``retransmit_mult * ceil(log10(n_nodes + 1))``, at least 1."""
    return max(1, retransmit_mult * math.ceil(math.log10(max(n_nodes, 0) + 1)))


@dataclass(slots=True)
class _Item:
    subject: Hashable
    payload: Any
    size: int
    transmits: int
    serial: int


class BroadcastQueue:
    """Updates waiting to be piggybacked or gossiped.

    Parameters
    ----------
    retransmit_mult : int
        See ``GossipConfig.retransmit_mult``.
    max_items : int
        Bound on queued updates; the most transmitted, oldest ones are dropped first
        (default: 10_000).
    """

    def __init__(self, retransmit_mult: int, max_items: int = 10_000) -> None:
        self.retransmit_mult = retransmit_mult
        self.max_items = max_items
        self._items: dict[Hashable, _Item] = {}
        self._serial = 0
        self.dropped = 0

    def queue(self, subject: Hashable, payload: Any, size: int) -> None:
        """Queue ``payload`` (``size`` encoded bytes) about ``subject``, replacing older news."""
        self._serial += 1
        self._items[subject] = _Item(subject, payload, size, 0, self._serial)
        if len(self._items) > self.max_items:
            worst = max(self._items.values(), key=lambda it: (it.transmits, -it.serial))
            del self._items[worst.subject]
            self.dropped += 1

    def get(self, budget: int, n_nodes: int) -> list[Any]:
        """Take payloads whose sizes sum to at most ``budget`` bytes; count one transmit each.

        Parameters
        ----------
        budget : int
            Bytes available in the frame.
        n_nodes : int
            Live nodes in the cluster (sets the retransmit limit).
        """
        if not self._items or budget <= 0:
            return []
        limit = retransmit_limit(self.retransmit_mult, n_nodes)
        out: list[Any] = []
        for item in sorted(self._items.values(), key=lambda it: (it.transmits, -it.serial)):
            if item.size > budget:
                continue
            budget -= item.size
            out.append(item.payload)
            item.transmits += 1
            if item.transmits >= limit:
                del self._items[item.subject]
            if budget < 16:
                break
        return out

    def transmits(self, subject: Hashable) -> int | None:
        """How often the queued update about ``subject`` was sent (None if not queued)."""
        item = self._items.get(subject)
        return None if item is None else item.transmits

    def __len__(self) -> int:
        return len(self._items)
