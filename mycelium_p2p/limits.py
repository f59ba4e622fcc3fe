"""Bounds on the numbers that cross a trust boundary: gossip, registry requests, Flower results.

One value per kind of number, shared by every side, so that what one part accepts another can
always store and answer: a term the gossip accepts is a term the registry accepts.
"""

from __future__ import annotations

#: Largest counter anywhere: incarnations, versions, terms, rounds, example counts. 2**53 is the
#: largest integer a JSON double holds exactly, and nothing legitimate comes near it (a node that
#: refuted a suspicion every millisecond would need 285,000 years). A node never tries to go past
#: it: an update that would force it to (say, a suspicion at the bound) is dropped as invalid.
MAX_COUNTER = 2**53

#: Largest loss a node reports or accepts (finite, non-negative).
MAX_LOSS = 1e12

#: Longest reason of a join or a founding the registry stores (a node shortens its own).
MAX_REASON = 200


def is_accuracy(value: object) -> bool:
    """A real number in [0, 1] (NaN, infinities and booleans are not)."""
    return isinstance(value, int | float) and not isinstance(value, bool) and 0.0 <= value <= 1.0


def is_loss(value: object) -> bool:
    """A real number in [0, MAX_LOSS]."""
    return (
        isinstance(value, int | float) and not isinstance(value, bool) and 0.0 <= value <= MAX_LOSS
    )


def is_counter(value: object) -> bool:
    """An integer in [0, MAX_COUNTER]."""
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MAX_COUNTER
