"""The node's life cycle as an explicit state machine (pure; the daemon logs each transition)."""

from __future__ import annotations

from enum import StrEnum


class Phase(StrEnum):
    """Where a node is in its life."""

    STARTING = "starting"
    DISCOVERING = "discovering"
    JOINING = "joining"
    MEMBER = "member"
    LEADER = "leader"
    LEAVING = "leaving"
    STOPPED = "stopped"


# Which phase may follow which. DISCOVERING follows MEMBER/LEADER when the node's group vanished
# (dissolved, or the registry forgot it) and it has to choose again.
TRANSITIONS: dict[Phase, frozenset[Phase]] = {
    Phase.STARTING: frozenset({Phase.DISCOVERING, Phase.LEAVING}),
    Phase.DISCOVERING: frozenset({Phase.JOINING, Phase.LEAVING}),
    Phase.JOINING: frozenset({Phase.MEMBER, Phase.LEADER, Phase.DISCOVERING, Phase.LEAVING}),
    Phase.MEMBER: frozenset({Phase.JOINING, Phase.LEADER, Phase.DISCOVERING, Phase.LEAVING}),
    Phase.LEADER: frozenset({Phase.JOINING, Phase.MEMBER, Phase.DISCOVERING, Phase.LEAVING}),
    Phase.LEAVING: frozenset({Phase.STOPPED}),
    Phase.STOPPED: frozenset(),
}


class IllegalTransition(RuntimeError):
    """A transition the life cycle does not allow (a bug in the daemon)."""


class Lifecycle:
    """Current phase plus the rule of which phase may come next."""

    def __init__(self) -> None:
        self.phase = Phase.STARTING

    def move(self, target: Phase) -> Phase:
        """Enter ``target`` and return the phase that was left.

        Raises
        ------
        IllegalTransition
            When ``target`` may not follow the current phase.
        """
        if target not in TRANSITIONS[self.phase]:
            raise IllegalTransition(f"{self.phase} -> {target} is not a legal transition")
        previous, self.phase = self.phase, target
        return previous
