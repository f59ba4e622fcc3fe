"""What every member says about itself in gossip: a small typed struct, the same on every reader.

It travels as member metadata in SWIM (a flat map of at most ``GossipConfig.max_meta_bytes``
encoded bytes, refreshed by bumping the member's incarnation). Nodes own the truth of where they
are: a group is live while some live node's ``group`` names it.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Literal

from mycelium_p2p.limits import MAX_COUNTER

Role = Literal["node", "observer"]
ROLES: tuple[Role, ...] = ("node", "observer")


@dataclass(frozen=True, slots=True)
class NodeMeta:
    """A member's own state as it gossips it.

    Parameters
    ----------
    name : str
        Human-readable name (default: "").
    role : str
        ``node``, or ``observer`` for the viewer and ``status`` (never in a group) (default: node).
    group : str
        Id of the group the member is in, "" for none (default: "").
    model : str
        Model spec; only members with equal specs ever share a group (default: "").
    flower_address : str
        The member's Flower server while it leads a group, else "" (default: "").
    accuracy : float | None
        Its group's model on its own validation split, when measured (default: None).
    round : int
        The latest round of its group it has seen (default: 0).
    train, val : int
        How many training and validation examples it holds: a leader bounds the example counts
        a member reports in Flower by them (default: 0, unknown).
    probe_ms : int
        Median milliseconds its latest evaluations of a model on its validation split took
        (default: 0, unknown).
    """

    name: str = ""
    role: Role = "node"
    group: str = ""
    model: str = ""
    flower_address: str = ""
    accuracy: float | None = None
    round: int = 0
    train: int = 0
    val: int = 0
    probe_ms: int = 0

    def to_map(self) -> dict[str, Any]:
        """The wire form: a flat map of scalars."""
        return asdict(self)

    @classmethod
    def from_map(cls, raw: Any) -> NodeMeta:
        """Read a member's map leniently: unknown keys are ignored, a field of the wrong type or
        out of range falls back to its default (a peer of another version stays readable)."""
        if not isinstance(raw, dict):
            return cls()
        return cls(
            name=_text(raw.get("name")),
            role="observer" if raw.get("role") == "observer" else "node",
            group=_text(raw.get("group")),
            model=_text(raw.get("model")),
            flower_address=_text(raw.get("flower_address")),
            accuracy=_accuracy(raw.get("accuracy")),
            round=_count(raw.get("round")),
            train=_count(raw.get("train")),
            val=_count(raw.get("val")),
            probe_ms=_count(raw.get("probe_ms")),
        )


def _text(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _count(value: Any) -> int:
    ok = isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MAX_COUNTER
    return value if ok else 0


def _accuracy(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) and 0.0 <= value <= 1.0 else None
