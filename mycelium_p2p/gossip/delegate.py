"""The delegate: how an application rides on gossip without the SWIM core owning its state.

As in memberlist, the core knows members only; everything else belongs to a ``Delegate`` that
the core calls on its own thread (never concurrently, never re-entrantly):

- ``parse_item(raw)`` / ``parse_header(raw)``: validate the application's parts of a frame as it
  is decoded (a ``ValueError`` drops the whole frame as ``invalid``, like any bad field).
- ``notify(item, now)``: an item a peer gossiped (an entry of an updates list tagged ``"g"``);
  True if it was news. A ``ValueError`` there is counted ``invalid`` and only that item dropped.
- ``local_state()`` / ``merge_remote_state(header, items, now)``: push-pull. ``local_state``
  returns the header (scalar keys sent beside ``r``, ``m``, ``g``) and the items, which the core
  splits across frames within ``max_frame_bytes``.
- ``answer_model(group_id)``: a MODEL_REQUEST, answered ``(round, payload)`` or None.
- ``tick(now)``: every ``probe_interval`` (e.g. expire tombstones).
- ``attach(broadcast, emit)``: called once by the core. ``broadcast(key, item)`` queues an item
  to gossip (a newer item with the same key replaces the queued one; retransmitted
  ``retransmit_mult * ceil(log10(N + 1))`` times); ``emit(kind, item)`` raises a ``GossipEvent``
  for the node's subscribers.

Items are any objects with ``to_dict()`` (their wire map, see ``messages.AppItem``); the core
never looks inside. ``NullDelegate`` does nothing and is the base of real delegates.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import Any, Protocol

Broadcast = Callable[[Hashable, Any], None]
Emit = Callable[[str, Any], None]


class Delegate(Protocol):
    """What the core asks of the application (see the module docstring)."""

    def attach(self, broadcast: Broadcast, emit: Emit) -> None: ...

    def parse_item(self, raw: dict[str, Any]) -> Any: ...

    def parse_header(self, raw: dict[str, Any]) -> dict[str, Any]: ...

    def notify(self, item: Any, now: float) -> bool: ...

    def local_state(self) -> tuple[dict[str, Any], list[Any]]: ...

    def merge_remote_state(self, header: dict[str, Any], items: list[Any], now: float) -> None: ...

    def answer_model(self, group_id: str) -> tuple[int, bytes] | None: ...

    def tick(self, now: float) -> None: ...


class NullDelegate:
    """No application: items are refused, the state has none, no model is ever found.

    Subclass it and override what the application needs.
    """

    def __init__(self) -> None:
        self.broadcast: Broadcast = _nowhere
        self.emit: Emit = _nowhere

    def attach(self, broadcast: Broadcast, emit: Emit) -> None:
        """Keep the core's ``broadcast`` and ``emit`` (called once, by the core)."""
        self.broadcast, self.emit = broadcast, emit

    def parse_item(self, raw: dict[str, Any]) -> Any:
        raise ValueError("this node carries no application items")

    def parse_header(self, raw: dict[str, Any]) -> dict[str, Any]:
        return {}

    def notify(self, item: Any, now: float) -> bool:
        return False

    def local_state(self) -> tuple[dict[str, Any], list[Any]]:
        return {}, []

    def merge_remote_state(self, header: dict[str, Any], items: list[Any], now: float) -> None:
        return None

    def answer_model(self, group_id: str) -> tuple[int, bytes] | None:
        return None

    def tick(self, now: float) -> None:
        return None


def _nowhere(key: Any, item: Any) -> None:
    raise RuntimeError("the delegate is not attached to a core yet")
