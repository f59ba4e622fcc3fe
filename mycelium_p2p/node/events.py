"""Typed events (what other threads tell the control thread) and commands (what parts ask of it).

Events are the only way another thread changes the node: the Flower server finished a round,
the registry answered a heartbeat, the registry no longer knows the node. Commands are what the
decision parts return; the controller executes each with the ports, and hands the outcome of the
ones that can fail back to the part that asked (never to another part).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from mycelium_p2p.groups import GroupRecord
from mycelium_p2p.node.ports import RoundSummary

# ---------------------------------------------------------------------------------- events


@dataclass(frozen=True)
class RoundDone:
    """The Flower server of the group this node leads finished a round."""

    result: RoundSummary


@dataclass(frozen=True)
class HeartbeatAnswered:
    """The registry answered a heartbeat sent at membership ``epoch``; it places the node in
    ``group`` (None: in none) and names a few live ``peers``."""

    epoch: int
    group: str | None
    peers: tuple[str, ...] = ()


@dataclass(frozen=True)
class RegistryForgot:
    """A heartbeat got 404: the registry lost the node (it expired it, or it is a new file)."""


@dataclass(frozen=True)
class ThreadDied:
    """The watchdog found a thread of the node dead."""

    what: str


@dataclass(frozen=True)
class DataChanged:
    """The node's data is to be replaced by ``data`` (same node, same id; the learner's kind of
    data, e.g. ``NodeData``): switched on the control thread, so that no choice runs half on the
    old data and half on the new."""

    data: Any


Event = RoundDone | HeartbeatAnswered | RegistryForgot | ThreadDied | DataChanged

# -------------------------------------------------------------------------------- commands


@dataclass(frozen=True)
class Register:
    """Register (again) with the registry; ``rejoin`` puts the node back in its group too."""

    rejoin: bool = False


@dataclass(frozen=True)
class LookUpPeers:
    """Ask the registry for a few live peers (the outcome goes back to discovery)."""


@dataclass(frozen=True)
class JoinPeers:
    """Exchange state with these gossip seeds, waiting up to ``timeout`` for an answer."""

    seeds: tuple[str, ...]
    timeout: float


@dataclass(frozen=True)
class JoinGroup:
    """Join (or migrate to) a group through the registry (the outcome goes back to choice);
    ``model``: the group's model as this node's probe fetched it, (round, model), held as the
    group's until the group's first round reaches the new member."""

    group_id: str
    reason: str
    first: bool
    model: tuple[int, bytes] | None = None


@dataclass(frozen=True)
class FoundGroup:
    """Found a group and lead it (the outcome goes back to choice); ``blend``: other groups'
    models mixed into its first round, as (group id, model, weight); ``seed``: the full group
    whose model it starts from (``policy.Decision.seed``), if any."""

    reason: str
    first: bool
    blend: tuple[tuple[str, bytes, float], ...] = ()
    seed: str | None = None


@dataclass(frozen=True)
class Claim:
    """Claim the leadership of a group whose leader is gone, at ``record.term + 1``."""

    record: GroupRecord


@dataclass(frozen=True)
class Follow:
    """Train with the group's current leader (a new term, or its server moved)."""

    record: GroupRecord


@dataclass(frozen=True)
class StepDown:
    """Stop leading: follow the newer leader if there is one in sight, else give the group up."""

    why: str


@dataclass(frozen=True)
class DropGroup:
    """Give the group up (at the registry too) and choose again."""

    why: str


@dataclass(frozen=True)
class Publish:
    """Gossip this node's group record (the leader's): when members changed, or ``force``."""

    force: bool = False


@dataclass(frozen=True)
class Report:
    """Send the latest round's figures to the registry."""


@dataclass(frozen=True)
class Rejoin:
    """Put the node back into its group at the registry (the registry lost it)."""


@dataclass(frozen=True)
class LeaveRegistryGroup:
    """Free the slot the registry still gives this node (it is in no group)."""


@dataclass(frozen=True)
class Announce:
    """Gossip this node's metadata again (new accuracy, round)."""


@dataclass(frozen=True)
class Fail:
    """Stop the node for good (a dead thread, a token the registry refuses)."""

    why: str


Command = (
    Register
    | LookUpPeers
    | JoinPeers
    | JoinGroup
    | FoundGroup
    | Claim
    | Follow
    | StepDown
    | DropGroup
    | Publish
    | Report
    | Rejoin
    | LeaveRegistryGroup
    | Announce
    | Fail
)
