"""Registry sync: the registry is authoritative for membership; keep the node in step with it.

Heartbeats run on a thread of their own (so that slow training or probing never makes the
registry think the node is dead) and come back as events. An answer that places the node in
another group than it is in is reconciled, unless the node changed groups while the heartbeat
was on its way (its membership epoch moved): a node in no group leaves the group the registry
still gives it (else joiners are refused a slot that is free), a node in a group is put back in
it. A registry that forgot the node (404) gets it registered again. Round figures go to the
registry at most once per heartbeat interval: it needs the latest, not every one, so its
traffic grows with groups, not rounds.
"""

from __future__ import annotations

import logging

from mycelium_p2p.node.events import (
    Command,
    HeartbeatAnswered,
    LeaveRegistryGroup,
    Register,
    Rejoin,
    Report,
)
from mycelium_p2p.node.state import NodeState

log = logging.getLogger("mycelium.node")


def on_heartbeat(state: NodeState, answer: HeartbeatAnswered) -> list[Command]:
    """Reconcile the registry's idea of the node's group with the node's own."""
    if answer.epoch != state.epoch or answer.group == state.group_id:
        return []
    if state.group_id is None:
        log.warning("%s: registry still places this node in %s; leaving", state.name, answer.group)
        return [LeaveRegistryGroup()]
    log.warning(
        "%s: registry places this node in %s, not %s; reconciling",
        state.name,
        answer.group,
        state.group_id,
    )
    return [Rejoin()]


def on_forgotten(state: NodeState) -> list[Command]:
    """A heartbeat got 404."""
    log.warning("%s: registry does not know this node; registering again", state.name)
    return [Register(rejoin=state.group_id is not None)]


def report_due(state: NodeState, next_report: float, now: float) -> list[Command]:
    """A round not yet reported, and the last report long enough ago."""
    if state.unreported is None or state.group_id is None or now < next_report:
        return []
    return [Report()]
