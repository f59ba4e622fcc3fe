"""What a group's leader lets into a round: bounded numbers, a named member, strikes and drops.

Pure logic (no Flower, no gRPC): `flower.GroupServer` calls it on every fit and evaluate result
before any strategy or metric sees one.

A result is refused when a number is out of bounds (accuracy outside [0, 1], a loss that is not
finite or beyond `MAX_LOSS`, ``num_examples`` below 1 or above what its member announced), when
its metrics carry a key other than the known ones (refused, not dropped: honest clients send
only those), or, when the leader checks identity, when the ``node_id`` it states is not a live
member of the group. A session refused in `STRIKES` rounds in a row is dropped, and the node id
it stated gets no new session from the same host for `COOL_DOWN` seconds.

Identity is what a session states until per-node certificates exist: a member can state another
member's id (and be held to that member's announced sizes). That is why a refusal, a strike and
a drop only ever touch the session that sent the bad result, and why the cool-down is keyed by
(stated id, peer host): an impersonator from another machine cannot keep the real member out.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from mycelium_p2p.limits import MAX_COUNTER, MAX_LOSS
from mycelium_p2p.view import LIVE_STATUSES, MemberLike

#: Metric keys a fit result may carry (a member's id and its mean training loss).
FIT_METRICS = frozenset({"node_id", "loss"})
#: Metric keys an evaluate result may carry; ``accuracy`` is required.
EVALUATE_METRICS = frozenset({"node_id", "accuracy"})
#: Examples a result may claim when its member announced no data size: ten times the largest
#: shard the bundled data sets give a node, so one unannounced member cannot swamp a group.
MAX_UNANNOUNCED_EXAMPLES = 100_000
#: Rounds in a row with a refused result before a session is dropped (K). An honest member is
#: never refused at all, so 3 only forgives nothing twice; it keeps a drop rare and deliberate.
STRIKES = 3
#: Seconds a dropped (node id, host) gets no new session.
COOL_DOWN = 300.0
#: Most cool-downs remembered at once (the oldest go first).
MAX_COOLING = 1024
MAX_NODE_ID = 64
#: Gossip metadata keys under which a node announces its training and validation sizes
#: (``meta.NodeMeta.train`` and ``.val``).
META_TRAIN, META_VAL = "train", "val"


@dataclass(frozen=True)
class MemberLimits:
    """A member's announced data sizes (None: not announced)."""

    train: int | None = None
    val: int | None = None


@dataclass(frozen=True)
class Refusal:
    """Why a result was left out; ``strike`` is False when honest code could have sent it."""

    reason: str
    strike: bool = True


def announcement(train: int, val: int) -> dict[str, int]:
    """The gossip metadata fields announcing a node's data sizes."""
    return {META_TRAIN: int(train), META_VAL: int(val)}


def _count(value: Any) -> int | None:
    ok = isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MAX_COUNTER
    return value if ok else None


def limits_from_meta(meta: Mapping[str, Any]) -> MemberLimits:
    """The sizes announced in a member's metadata (a missing or invalid field: not announced)."""
    return MemberLimits(train=_count(meta.get(META_TRAIN)), val=_count(meta.get(META_VAL)))


def limits_in_view(
    members: Iterable[MemberLike], group_id: str | None, node_id: str
) -> MemberLimits | None:
    """``node_id``'s announced sizes if gossip has it live in ``group_id``, else None."""
    if not group_id:
        return None
    for member in members:
        if member.id == node_id:
            live = member.status in LIVE_STATUSES and member.meta.get("role") != "observer"
            if live and member.meta.get("group") == group_id:
                return limits_from_meta(member.meta)
            return None
    return None


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def _check_keys(metrics: Mapping[str, Any], allowed: frozenset[str]) -> Refusal | None:
    unknown = sorted(str(k)[:32] for k in metrics if k not in allowed)
    return Refusal(f"unknown metric keys {unknown[:4]}") if unknown else None


def _check_loss(value: Any, what: str) -> Refusal | None:
    loss = _number(value)
    if loss is None or not 0.0 <= loss <= MAX_LOSS:
        return Refusal(f"{what} {value!r} is not a finite number in [0, {MAX_LOSS:g}]")
    return None


def _check_examples(value: Any, announced: int | None, cap: int, split: str) -> Refusal | None:
    if isinstance(value, bool) or not isinstance(value, int):
        return Refusal(f"num_examples {value!r} is not an integer")
    if value == 0:  # weighs nothing: left out, but honest code with an empty split sends it
        return Refusal("num_examples is 0", strike=False)
    bound = cap if announced is None else announced
    source = f"its announced {split} size" if announced is not None else "the unannounced cap"
    if not 1 <= value <= bound:
        return Refusal(f"num_examples {value} is outside [1, {bound}] ({source})")
    return None


def check_fit(
    num_examples: Any,
    metrics: Mapping[str, Any],
    limits: MemberLimits | None,
    cap: int = MAX_UNANNOUNCED_EXAMPLES,
) -> Refusal | None:
    """Why a fit result must be left out, or None.

    Parameters
    ----------
    num_examples, metrics
        As the result carries them.
    limits
        The member's announced sizes (None: nothing known, ``cap`` applies).
    cap
        Bound on ``num_examples`` when no training size was announced
        (default: `MAX_UNANNOUNCED_EXAMPLES`).
    """
    refusal = _check_keys(metrics, FIT_METRICS)
    if refusal is None and "loss" in metrics:
        refusal = _check_loss(metrics["loss"], "training loss")
    announced = None if limits is None else limits.train
    return refusal or _check_examples(num_examples, announced, cap, "training")


def check_evaluate(
    loss: Any,
    num_examples: Any,
    metrics: Mapping[str, Any],
    limits: MemberLimits | None,
    cap: int = MAX_UNANNOUNCED_EXAMPLES,
) -> Refusal | None:
    """Why an evaluate result must be left out, or None (``accuracy`` in [0, 1] required).

    Parameters are those of `check_fit`, plus the result's ``loss``; ``num_examples`` is bound
    by the announced validation size.
    """
    refusal = _check_keys(metrics, EVALUATE_METRICS) or _check_loss(loss, "loss")
    if refusal is None:
        accuracy = _number(metrics.get("accuracy"))
        if accuracy is None or not 0.0 <= accuracy <= 1.0:
            refusal = Refusal(f"accuracy {metrics.get('accuracy')!r} is not a number in [0, 1]")
    announced = None if limits is None else limits.val
    return refusal or _check_examples(num_examples, announced, cap, "validation")


class Sessions:
    """Per-session bookkeeping of a leader: stated ids, strikes in a row, cool-downs.

    A session is one Flower connection (Flower's client id). Call `identify` for a result
    stating a node id, `record` for every result's outcome, and `end_round` after each round:
    it returns the sessions to disconnect.

    Parameters
    ----------
    strikes : int
        Rounds in a row with a striking refusal before a drop (default: `STRIKES`).
    cool_down : float
        Seconds a dropped (node id, host) is refused again (default: `COOL_DOWN`).
    clock : callable
        Monotonic seconds (default: ``time.monotonic``).
    """

    def __init__(
        self,
        strikes: int = STRIKES,
        cool_down: float = COOL_DOWN,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.strikes = strikes
        self.cool_down = cool_down
        self.clock = clock
        self._ids: dict[str, tuple[str, str]] = {}  # session -> (stated node id, host)
        self._strikes: dict[str, int] = {}
        self._cooling: dict[tuple[str, str], float] = {}  # (node id, host) -> until
        self._struck: set[str] = set()  # this round
        self._accepted: set[str] = set()  # this round
        self._drop: set[str] = set()

    def node_id(self, session: str) -> str | None:
        """The id ``session`` stated (None before it stated one)."""
        bound = self._ids.get(session)
        return bound[0] if bound else None

    def identify(self, session: str, host: str, node_id: Any) -> Refusal | None:
        """Bind ``session`` to the id it states; a refusal when it cannot be bound."""
        if not isinstance(node_id, str) or not 0 < len(node_id) <= MAX_NODE_ID:
            return Refusal(f"no valid node_id ({str(node_id)[:MAX_NODE_ID]!r})")
        bound = self._ids.get(session)
        if bound is not None and bound[0] != node_id:
            return Refusal(f"stated node_id {node_id!r} after {bound[0]!r}")
        self._ids[session] = (node_id, host)
        until = self._cooling.get((node_id, host))
        if until is not None and self.clock() < until:
            self._drop.add(session)
            return Refusal(f"{node_id} is in its cool-down after a drop", strike=False)
        return None

    def record(self, session: str, refusal: Refusal | None) -> None:
        """Note one result's outcome for ``session`` in the current round."""
        if refusal is None:
            self._accepted.add(session)
        elif refusal.strike:
            self._struck.add(session)

    def end_round(self, live: Iterable[str]) -> list[tuple[str, str | None, str]]:
        """Close the round; ``(session, node id, why)`` of each session to disconnect now.

        ``live`` are the sessions still connected: the state of the others is forgotten.
        """
        now = self.clock()
        for session in self._struck:
            self._strikes[session] = self._strikes.get(session, 0) + 1
        for session in self._accepted - self._struck:
            self._strikes.pop(session, None)
        out = []
        for session in self._drop:
            out.append((session, self.node_id(session), "stated an id in its cool-down"))
        for session, count in list(self._strikes.items()):
            if count >= self.strikes and session not in self._drop:
                out.append((session, self.node_id(session), f"refused {count} rounds in a row"))
                if session in self._ids:
                    self._cooling[self._ids[session]] = now + self.cool_down
        for session, _, _ in out:
            self._strikes.pop(session, None)
        self._struck.clear()
        self._accepted.clear()
        self._drop.clear()
        keep = set(live) - {session for session, _, _ in out}
        self._ids = {s: v for s, v in self._ids.items() if s in keep}
        self._strikes = {s: v for s, v in self._strikes.items() if s in keep}
        self._cooling = {k: t for k, t in self._cooling.items() if t > now}
        while len(self._cooling) > MAX_COOLING:
            del self._cooling[min(self._cooling, key=self._cooling.__getitem__)]
        return out
