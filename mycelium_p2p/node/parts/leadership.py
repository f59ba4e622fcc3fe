"""Leadership: lead a group, follow its leader, and take over when the leader is gone.

A leader publishes its group's record after every round (members from gossip metadata) and when
its members change, reports figures to the registry (``registry_sync.report_due``), and steps
down when gossip shows a newer term led by another node. A member follows the record: a new term
or a moved server makes it switch; a leader that is dead, left, or moved to another group is
replaced: after a grace of ``min(push_pull_interval, 5 x probe_interval)`` (time for a wrongly
declared death to be refuted; none for a leader that left or moved to another group) the lowest
live member claims at the registry with term + 1, the others after a head start of
``3 x probe_interval`` per rank; the registry's compare-and-set lets one win. A member that
holds no model of this group yet (it joined just before the leader went) ranks after all the
others: a claim restarts the group from the model the claimer holds, and it would start from
its own. A member whose claim is lost waits for the winner's record, unless gossip sees the
winner dead (a partition: it gives the group up at once), and gives up after
``max_lost_claims``.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

from mycelium_p2p import limits
from mycelium_p2p.node.events import Claim, Command, DropGroup, Follow, Publish, StepDown
from mycelium_p2p.node.ports import RoundSummary
from mycelium_p2p.node.state import GossipView, NodeState

log = logging.getLogger("mycelium.node")


@dataclass(frozen=True)
class LeadershipParams:
    """When a member takes over from a leader that is gone.

    Parameters
    ----------
    grace : float
        Seconds a leader must stay gone before anyone claims (default: 5.0).
    rank_delay : float
        Head start, in seconds, given to each lower-ranked member (default: 3.0).
    max_lost_claims : int
        Lost claims in a row, with no winner's record in sight, before giving the group up
        (default: 3).
    """

    grace: float = 5.0
    rank_delay: float = 3.0
    max_lost_claims: int = 3


def lead(state: NodeState, view: GossipView) -> list[Command]:
    """One step as the leader: step down for a newer term, else keep the record current."""
    record = view.groups.get(state.group_id or "")
    if record is not None and record.term > state.term and record.leader != state.id:
        return [StepDown(f"{record.leader} leads term {record.term}")]
    return [Publish()]  # published only if the members changed


def follow(
    state: NodeState,
    view: GossipView,
    params: LeadershipParams,
    now: float,
    *,
    holds_model: bool,
) -> list[Command]:
    """One step as a member: follow the record, or take over from a leader that is gone.
    ``holds_model``: the last group model this member received is this group's."""
    record = view.groups.get(state.group_id or "")
    if record is None or record.dissolved:
        return [DropGroup("group dissolved")]
    if record.round > state.rounds_logged:
        state.rounds_logged = record.round
        log.info(
            "%s: group %s round %d accuracy %.3f loss %.3f",
            state.name,
            record.id,
            record.round,
            record.accuracy,
            record.loss,
        )
    members = view.members_of(record.id)
    if record.leader in view.alive and record.leader in members:
        state.leader_gone_at = None
        state.lost_claims = 0
        moved = record.flower_address and record.flower_address != state.following
        return [Follow(record)] if record.term > state.term or moved else []
    leader = next((m for m in view.members if m.id == record.leader), None)
    # A leader that left, or lives on in another group, went on purpose: no death to refute.
    # (Metadata naming no group may be a founder's from before it founded, not yet refreshed.)
    left = leader is not None and leader.status == "left"
    elsewhere = (
        leader is not None
        and record.leader in view.alive
        and leader.node_meta.group not in ("", record.id)
    )
    if state.leader_gone_at is None:
        state.leader_gone_at = now
        (log.info if left or elsewhere else log.warning)(
            "%s: leader %s of %s is %s",
            state.name,
            record.leader,
            record.id,
            "leaving" if left else "in another group" if elsewhere else "gone",
        )
    rank = members.index(state.id) if state.id in members else len(members)
    # Others first: one without the group's model would restart the group from its own, and
    # one whose data changed no longer speaks for the group's and is about to leave it.
    if not holds_model or state.data_changed:
        rank += len(members)
    grace = 0.0 if left or elsewhere else params.grace
    if now - state.leader_gone_at >= grace + rank * params.rank_delay:
        return [Claim(record)]
    return []


def on_claim_lost(
    state: NodeState,
    view: GossipView,
    group_id: str,
    winner: str | None,
    params: LeadershipParams,
    now: float,
) -> list[Command]:
    """The registry refused this node's claim; ``winner`` is the leader it names (if any)."""
    state.leader_gone_at = now  # wait for the winner's record
    state.lost_claims += 1
    if winner is not None and winner not in view.alive:
        # The winner is dead to this node's gossip: a partition, most likely. This side of the
        # group cannot train with it, so choose again here.
        state.lost_claims = 0
        return [DropGroup(f"{winner} won {group_id} but is out of reach")]
    if state.lost_claims >= params.max_lost_claims:
        # No winner's record ever came (nor could the registry name one): give up too rather
        # than claim forever.
        state.lost_claims = 0
        return [DropGroup(f"lost {params.max_lost_claims} claims on {group_id}, winner unseen")]
    return []


def on_round(state: NodeState, result: RoundSummary) -> list[Command]:
    """The group's server finished a round: record it, publish it, queue it for the registry."""
    if not state.leading:
        return []
    if not (math.isfinite(result.accuracy) and math.isfinite(result.loss)):
        return []  # no client evaluated this round: nothing to report
    if not (
        limits.is_accuracy(result.accuracy)
        and limits.is_loss(result.loss)
        and limits.is_counter(result.round)
        and limits.is_counter(result.examples)
    ):
        # Never gossip or report what peers and the registry would refuse.
        log.warning("%s: round %d has figures out of range: %s", state.name, result.round, result)
        return []
    state.latest_round = result
    state.rounds_logged = result.round
    state.unreported = result
    log.info(
        "%s: group %s round %d accuracy %.3f loss %.3f clients %d",
        state.name,
        state.group_id,
        result.round,
        result.accuracy,
        result.loss,
        result.clients,
    )
    return [Publish(force=True)]
