"""Group choice: probe the candidate groups, ask the policy, and act on its decision.

Every ``evaluation_interval`` (and whenever the node is in no group) the node trains its own
model one more step, probes compatible groups with room (fetches the leader's latest model over
gossip, cached by round, checked for shape and NaN/inf, scored on its own validation split),
scores its current group's model, and lets ``policy.decide`` say stay, join or found. A join
carries the model its probe fetched (fetched again when the score came from the cache): the new
member holds it as the group's until the group's first round reaches it, rather than the model
of the group it left, by which it would score (and, its leader gone, claim) its new group.

At most ``max_probes`` models are fetched per choice, however many groups there are: half go to
the groups that scored best on this node's data before (their newer rounds), the rest explore
groups never probed, in random order. A probe of a round already scored costs nothing and is
always used. In a network of a few groups every group with room is probed each time.

The first "found" of a node waits a random 0.5-3 s and looks again, so that nodes starting
together do not all found singletons; a node in a group founds only when two re-evaluations in
a row say so. A node whose data changed founds at once, except while a group with room did not
answer its probe (its leader just left it, say): then it looks again within a second, a few
times, before it founds or joins a group that serves it worse than its own model. A join the
registry refuses (the view was stale, or the group full) makes that group count as full until
its record changes (a leader still mixes its model in, a drifted node may found from it), and
the next choice comes within a second, in a group or not; only an unreachable registry makes
the node back off.

A leader also probes full groups, and mixes the new rounds of those that serve its data about
as well as its own group (within ``merge_samples``) into its group's model (not while its own
data has changed since it last moved: then its data no longer speaks for the group's), at most
``blend_weight`` of it, shared by the other groups' sizes. Groups that capacity keeps apart
but whose data agree (one concept in more groups than one, or skews no probe can tell apart)
so learn from each other's data, as if they were one group; a group of another concept scores
far lower on the leader's data and is never mixed in. A node whose data changed probes full
groups too: when they serve its new data clearly better than any group with room, it founds a
group that starts from their model (``policy.decide``'s third rule; confirmed by a second look
within a second, by when nodes drifting away have freed places; alone there, it trains nothing
of its own into it while some group serves it as well: ``NodeState.follows_kin``); when it
founds on its own model, its group mixes theirs in by the same rule as a leader's. Until it
moves, it scores groups on its new training split as well as on its validation split: no
group has trained on that data yet, and concepts that agree on many labels can score alike on
a dozen validation samples.
"""

from __future__ import annotations

import enum
import logging
import random
from collections import Counter
from dataclasses import dataclass, field, replace

from mycelium_p2p import view as views
from mycelium_p2p.groups import GroupRecord
from mycelium_p2p.limits import MAX_REASON
from mycelium_p2p.node.events import Announce, Command, FoundGroup, JoinGroup, Register
from mycelium_p2p.node.ports import GossipPort, LearningPort
from mycelium_p2p.node.scheduler import Scheduler, Timer
from mycelium_p2p.node.state import GossipView, NodeState
from mycelium_p2p.policy import (
    Candidate,
    Decision,
    Observation,
    PolicyParams,
    blend_shares,
    confirm_found,
    decide,
)

log = logging.getLogger("mycelium.node")

PROBE_TIMEOUT = 2.0  # seconds to wait for a leader's model
MAX_UNSCORED_WAITS = 4  # evaluations a drifted node waits for a group it could not score


class Attempt(enum.Enum):
    """How a join or a founding went."""

    MOVED = "moved"
    REFUSED = "refused"  # the registry said no: this node's view was stale
    UNREACHABLE = "unreachable"  # no answer from the registry: back off


@dataclass(frozen=True)
class ChoiceParams:
    """The policy's thresholds and how often the choice is made again.

    Parameters
    ----------
    policy : PolicyParams
        Thresholds and mode of ``policy.decide`` (default: ``PolicyParams()``).
    evaluation_interval : float
        Seconds between two re-evaluations while in a group (default: 60).
    max_probes : int
        Models fetched per choice at most (default: 8).
    blend_weight : float
        Largest share of other groups' models a leader mixes into its group's model per
        re-evaluation (default: 0.5; 0: never).
    """

    policy: PolicyParams = field(default_factory=PolicyParams)
    evaluation_interval: float = 60.0
    max_probes: int = 8
    blend_weight: float = 0.5


def choose(
    state: NodeState,
    view: GossipView,
    params: ChoiceParams,
    gossip: GossipPort,
    learning: LearningPort,
    rng: random.Random,
    timers: Scheduler,
    now: float,
    *,
    first: bool,
) -> list[Command]:
    """Make the choice: ``first`` while the node is in no group, else a re-evaluation.

    A re-evaluation after a data change looks before the own model trains on the new data (a
    catch-up of several fits, which at 24 nodes in one process held the look back by 10-15 s):
    the own model's accuracy on the old data stands in for it, and only a join or a founding
    from a full group's model is acted on; staying or founding on its own model is decided
    again once it has caught up, unless a group with room is still to be scored (it looks again
    within a second first). A join the registry refused (the group was still full of nodes that
    drift away) is tried again as quickly."""
    quick = state.data_changed and state.local_stale and not first
    if not quick:
        _train_local(state, learning)
    state.choices += 1
    requests_before = state.probe_requests
    probe_budget = params.max_probes if params.policy.mode == "probe" else None
    # Full groups are probed by a leader, to blend, and by a node whose data changed, to found
    # from the models of its new concept's groups when they are full.
    with_full = params.blend_weight > 0 and not first and (state.leading or state.data_changed)
    fetch = Fetch()
    candidates = _candidates(state, view, gossip, learning, probe_budget, rng, with_full, fetch)
    state.most_probes = max(state.most_probes, state.probe_requests - requests_before)
    others = [m for m in view.members_of(state.group_id or "") if m != state.id]
    observation = Observation(
        current_group=state.group_id,
        local_accuracy=state.local_accuracy,
        val_size=learning.val_size,
        # A group the registry refused a join of is full until its record changes.
        candidates=tuple(_as_full(c) if c.group_id in fetch.refused else c for c in candidates),
        just_moved=state.just_moved,
        has_other_members=bool(others),
        probe_size=learning.probe_size(with_train=state.data_changed),
        data_changed=state.data_changed,
    )
    decision = decide(observation, params.policy)
    unscored = None if first else _unscored_to_wait_for(state, decision, candidates, fetch,
                                                         learning, params)  # fmt: skip
    if quick and not _acts_without_own_model(decision) and not unscored:
        _train_local(state, learning)
        observation = replace(observation, local_accuracy=state.local_accuracy)
        decision = decide(observation, params.policy)
        unscored = _unscored_to_wait_for(state, decision, candidates, fetch, learning, params)
    if decision.action == "found" and not candidates:
        # Only groups of the node's own spec are candidates: say what the others use.
        reason = founding_reason(view, learning.spec)
        decision = replace(decision, reason=reason) if reason else decision
    if first and decision.action == "found" and not state.looked_twice:
        # Nodes that start together would all found singletons: look again after a random
        # pause, by when the first founder's record has had time to spread.
        state.looked_twice = True
        timers.at(Timer.CHOOSE, now + rng.uniform(0.5, 3.0))
        return []
    if not first:
        state.just_moved = False
        timers.at(Timer.EVALUATE, now + params.evaluation_interval)
        if unscored:
            state.unscored_waits += 1
            timers.at(Timer.EVALUATE, now + rng.uniform(0.5, 1.0))
            decision = Decision("stay", None, f"{decision.reason}; first scoring {unscored}")
        decision, state.found_pending = confirm_found(
            decision, state.found_pending, state.data_changed
        )
        if state.found_pending and state.data_changed:  # from a full group: ask again soon
            timers.at(Timer.EVALUATE, now + rng.uniform(0.5, 1.0))
    own = next((c for c in candidates if c.is_current), None)
    kin: tuple[tuple[str, bytes, float], ...] = ()
    # A leader whose data changed no longer speaks for its group's data: mixing in the groups
    # that serve its new data would hand its members' model to another concept.
    speaks_for_group = state.leading and not state.data_changed
    if with_full and decision.action == "stay" and speaks_for_group and own is not None:
        blend_into_group(
            state, learning, _kin(state, own, candidates, fetch.models, params, learning)
        )
        # Scored from the cache or just fetched: some group still serves it as well.
        serving = _kin_shares(state, own, _scored_others(candidates), params, learning)
        state.follows_kin = state.follows_kin and bool(serving)
    elif decision.action == "found":
        kin = _founding_kin(state, view, decision, candidates, fetch, params, gossip, learning)
    model = None
    if decision.action == "join" and decision.group_id and probe_budget is not None:
        model = _fetched(state, view, decision.group_id, fetch, gossip, learning)
    state.decisions.append(decision)
    # A re-evaluation measured the group's model afresh: observers and the viewer get it.
    return _act(state, decision, first, kin, model) + ([] if first else [Announce()])


def _as_full(candidate: Candidate) -> Candidate:
    return replace(candidate, size=max(candidate.size, candidate.capacity))


def _acts_without_own_model(decision: Decision) -> bool:
    """A join, or a founding from a full group's model, does not rest on the own model's
    figure: a drifted node acts on it before its own model has caught up."""
    return decision.action == "join" or decision.seed is not None


def _train_local(state: NodeState, learning: LearningPort) -> None:
    state.local_accuracy = learning.train_local()
    state.local_stale = False


def _unscored_to_wait_for(
    state: NodeState,
    decision: Decision,
    candidates: list[Candidate],
    fetch: Fetch,
    learning: LearningPort,
    params: ChoiceParams,
) -> str | None:
    """A node whose data changed does not found, nor join a group that serves it worse than its
    own model, nor (its own model not yet caught up) stay, while a group with room could not be
    scored (its leader just left, and a failover takes seconds): it looks again within a
    second, ``MAX_UNSCORED_WAITS`` times at most. Returns the groups it waits for, or None to
    act now."""
    if not state.data_changed or (decision.action == "stay" and not state.local_stale):
        return None
    if state.unscored_waits >= MAX_UNSCORED_WAITS:
        return None
    unscored = sorted(fetch.failed)
    if not unscored:
        return None
    if decision.action == "join":
        target = next(c for c in candidates if c.group_id == decision.group_id)
        slack = params.policy.merge_samples / max(learning.val_size, 1)
        floor = (state.local_accuracy or 0.0) - slack
        if (target.accuracy or 0.0) >= floor:
            return None  # it serves the node as well as its own model: go
    return ", ".join(unscored[:3])


def _kin(
    state: NodeState,
    own: Candidate,
    candidates: list[Candidate],
    models: dict[str, bytes],
    params: ChoiceParams,
    learning: LearningPort,
) -> tuple[tuple[str, bytes, float], ...]:
    """The models just fetched of the groups that serve this node's data about as well as
    ``own`` (``policy.blend_shares``), with their weights."""
    fresh = [c for c in candidates if c.group_id in models and not c.is_current]
    shares = _kin_shares(state, own, fresh, params, learning)
    return tuple((g, models[g], weight) for g, weight in shares.items())


def _kin_shares(
    state: NodeState,
    own: Candidate,
    others: list[Candidate],
    params: ChoiceParams,
    learning: LearningPort,
) -> dict[str, float]:
    """A leader's ``policy.blend_shares`` among ``others``, by its own model and settings."""
    return blend_shares(
        own, others, state.local_accuracy, learning.val_size, params.policy, params.blend_weight
    )


def _scored_others(candidates: list[Candidate]) -> list[Candidate]:
    return [c for c in candidates if not c.is_current and c.accuracy is not None]


def _founding_kin(
    state: NodeState,
    view: GossipView,
    decision: Decision,
    candidates: list[Candidate],
    fetch: Fetch,
    params: ChoiceParams,
    gossip: GossipPort,
    learning: LearningPort,
) -> tuple[tuple[str, bytes, float], ...]:
    """What a founded group mixes into its first round: the models that serve this node as well
    as its own, at most ``blend_weight`` of it; founded from a full group (``decision.seed``),
    that group's model and those that serve the node as well as it, and nothing of its own. A
    group scored from the cache this time is fetched again for its model."""
    seed = next((c for c in candidates if c.group_id == decision.seed), None)
    if seed is not None:
        alone = Candidate("founding", 0, 1, accuracy=seed.accuracy)
        local, most = None, 1.0
    else:
        alone = Candidate("founding", 1, 1, accuracy=state.local_accuracy)
        local, most = state.local_accuracy, params.blend_weight
    scored = _scored_others(candidates)
    for group_id in blend_shares(alone, scored, local, learning.val_size, params.policy, most):
        _fetched(state, view, group_id, fetch, gossip, learning)
    fetched = [c for c in scored if c.group_id in fetch.models]
    shares = blend_shares(alone, fetched, local, learning.val_size, params.policy, most)
    return tuple((g, fetch.models[g], weight) for g, weight in shares.items())


def _fetched(
    state: NodeState,
    view: GossipView,
    group_id: str,
    fetch: Fetch,
    gossip: GossipPort,
    learning: LearningPort,
) -> tuple[int, bytes] | None:
    """``group_id``'s model as this choice fetched it, (round, model); a group scored from the
    cache this time is fetched again. None when its leader does not answer."""
    if group_id not in fetch.models and group_id in view.groups:
        state.probes.pop(group_id, None)
        _probe(state, view.groups[group_id], gossip, learning, fetch)
    if group_id not in fetch.models:
        return None
    return state.probes[group_id][0], fetch.models[group_id]


def blend_into_group(
    state: NodeState, learning: LearningPort, kin: tuple[tuple[str, bytes, float], ...]
) -> None:
    """Mix ``kin`` (group id, model, weight) into the next round of the group this node leads."""
    if not kin:
        return
    try:
        learning.blend([(payload, weight) for _, payload, weight in kin])
    except ValueError as exc:
        log.warning("%s: could not blend other groups' models: %s", state.name, exc)
        return
    state.blended.update(g for g, _, _ in kin)
    log.info(
        "%s: mixes %s into %s (%.0f%% of its model)",
        state.name,
        ", ".join(g for g, _, _ in kin),
        state.group_id,
        100 * sum(weight for _, _, weight in kin),
    )


def founding_reason(view: GossipView, spec: str) -> str | None:
    """Why a node without a group founds one when no live group uses its spec, e.g. "3 groups
    use spec A; none with spec B: founding one" (at most 200 characters: the registry's
    bound on a reason); None when some live group does use it (the node passed it over for
    another reason, which the policy's own reason says)."""
    occupied = view.occupied()
    counts = Counter(r.model for r in view.groups.values() if views.is_live_group(r, occupied))
    if counts.pop(spec, 0):
        return None
    if not counts:
        return f"no groups yet: founding one with spec {_short(spec, 120)}"
    top = counts.most_common(2)
    shown = [f"{n} group{'s use' if n > 1 else ' uses'} spec {_short(s, 32)}" for s, n in top]
    rest = sum(counts.values()) - sum(n for _, n in top)
    if rest:
        shown.append(f"{rest} use other specs")
    return f"{', '.join(shown)}; none with spec {_short(spec, 40)}: founding one"


def _short(text: str, most: int) -> str:
    return text if len(text) <= most else text[: most - 1] + "…"


def _act(
    state: NodeState,
    decision: Decision,
    first: bool,
    kin: tuple[tuple[str, bytes, float], ...],
    model: tuple[int, bytes] | None,
) -> list[Command]:
    if decision.action == "stay":
        log.info("%s: stays in %s: %s", state.name, state.group_id, decision.reason)
        return []
    target = f" {decision.group_id}" if decision.group_id else ""
    log.info("%s: decides to %s%s: %s", state.name, decision.action, target, decision.reason)
    reason = _short(decision.reason, MAX_REASON)  # the registry refuses a longer one
    if decision.action == "join" and decision.group_id:
        return [JoinGroup(decision.group_id, reason, first, model)]
    return [FoundGroup(reason, first, kin, decision.seed if kin else None)]


@dataclass
class Fetch:
    """What one choice's probes brought: the models fetched, the groups that did not answer
    (no leader address, no answer in time, or a model that does not fit), and the groups whose
    join the registry refused (until their records change)."""

    models: dict[str, bytes] = field(default_factory=dict)
    failed: set[str] = field(default_factory=set)
    refused: set[str] = field(default_factory=set)  # probed to blend only, never joined


def on_attempt(
    state: NodeState,
    outcome: Attempt,
    params: ChoiceParams,
    rng: random.Random,
    timers: Scheduler,
    now: float,
    *,
    first: bool,
) -> None:
    """The controller tried a join or a founding; set when to choose next."""
    if outcome is Attempt.MOVED:
        state.just_moved = True
        state.data_changed = False
        state.unscored_waits = 0
        if not first:
            state.migrations += 1
        state.registry_answered()
        timers.cancel(Timer.CHOOSE)
    elif outcome is Attempt.REFUSED:
        # The registry answered: the view was stale, and the refused group is left out until
        # its record changes. Look again soon rather than after a growing back-off (a node in
        # a group looks again through its evaluation timer).
        state.registry_answered()
        soon = now + rng.uniform(0.2, 1.0)
        timers.at(Timer.CHOOSE, soon)
        timers.at(Timer.EVALUATE, soon if not first else now + params.evaluation_interval)
        return
    else:
        timers.at(Timer.CHOOSE, now + state.registry_backoff_delay(rng))
    timers.at(Timer.EVALUATE, now + params.evaluation_interval)


def data_changed(state: NodeState, timers: Scheduler, now: float) -> list[Command]:
    """The node's data changed: scores measured on the old data are stale, and the group that
    served the old data may not serve the new, so choose again now. A node that has just moved
    still sits out one evaluation (the policy's hysteresis). The look comes before the own
    model trains on the new data (see `choose`)."""
    state.probes = {}
    state.found_pending = False
    state.data_changed = True
    state.local_stale = True
    state.unscored_waits = 0
    timers.at(Timer.EVALUATE if state.group_id is not None else Timer.CHOOSE, now)
    # The new data's sizes in gossip metadata, and its summary at the registry.
    return [Announce(), Register()]


def refused(state: NodeState, record: GroupRecord) -> None:
    """The registry refused a join of ``record``'s group: skip it until the record changes."""
    state.refused[record.id] = (record.term, record.members)


def _candidates(
    state: NodeState,
    view: GossipView,
    gossip: GossipPort,
    learning: LearningPort,
    probe_budget: int | None,
    rng: random.Random,
    with_full: bool,
    fetch: Fetch,
) -> list[Candidate]:
    """The compatible groups as candidates; ``probe_budget`` None means reported mode.
    ``with_full``: full groups are probed too (a leader that blends); what the probes bring
    goes into ``fetch``."""
    groups = view.groups
    state.refused = {g: seen for g, seen in state.refused.items() if g in groups}
    records = [
        record
        for record in views.compatible_groups(groups.values(), learning.spec, view.occupied())
        # Our own record from before we stepped down: never follow ourselves.
        if not (record.leader == state.id and not state.leading)
    ]
    # A record the registry said no to: no join until news of it, but a leader still blends it.
    fetch.refused = {r.id for r in records if state.refused.get(r.id) == (r.term, r.members)}
    probed = (
        set()
        if probe_budget is None
        else _to_probe(state, records, probe_budget, rng, with_full=with_full, shut=fetch.refused)
    )
    out: list[Candidate] = []
    for record in records:
        if record.id in fetch.refused and record.id not in probed:
            continue
        is_current = record.id == state.group_id
        accuracy: float | None = None
        if probe_budget is None:  # reported: a group without a finished round has no accuracy
            accuracy = record.accuracy if record.round > 0 else None
        elif is_current:
            accuracy = state.accuracy = learning.group_accuracy()
            if state.data_changed and accuracy is not None:  # on the samples of the probes
                accuracy = learning.group_accuracy(with_train=True)
        elif record.id in probed:
            accuracy = _probe(state, record, gossip, learning, fetch)
            if accuracy is None and _has_room(record) and record.id not in fetch.refused:
                fetch.failed.add(record.id)
        out.append(
            Candidate(
                group_id=record.id,
                size=len(record.members),
                capacity=record.capacity,
                created_at=record.created_at,
                accuracy=accuracy,
                is_current=is_current,
            )
        )
    return out


def _to_probe(
    state: NodeState,
    records: list[GroupRecord],
    budget: int,
    rng: random.Random,
    *,
    with_full: bool = False,
    shut: set[str] | frozenset[str] = frozenset(),
) -> set[str]:
    """The groups to probe this time: those whose current round is already scored (free), then
    within ``budget`` fetches half the best scored before and half never probed (random).
    Only groups with room and not in ``shut`` (refused), unless ``with_full``."""
    pool = [
        r
        for r in records
        if r.id != state.group_id and (with_full or (_has_room(r) and r.id not in shut))
    ]
    free = {r.id for r in pool if (hit := state.probes.get(r.id)) and hit[0] == r.round}
    known = sorted(
        (r for r in pool if r.id in state.probes and r.id not in free),
        key=lambda r: -state.probes[r.id][1],
    )
    fresh = [r for r in pool if r.id not in state.probes]
    rng.shuffle(fresh)
    explore = min(len(fresh), budget // 2)
    exploit = min(len(known), budget - explore)
    explore = min(len(fresh), budget - exploit)
    return free | {r.id for r in known[:exploit]} | {r.id for r in fresh[:explore]}


def _has_room(record: GroupRecord) -> bool:
    return len(record.members) < record.capacity


def _probe(
    state: NodeState,
    record: GroupRecord,
    gossip: GossipPort,
    learning: LearningPort,
    fetch: Fetch,
) -> float | None:
    """Accuracy of ``record``'s latest model on this node's validation split (cached by round;
    after a data change, on its training split too); a model fetched goes into
    ``fetch.models``."""
    hit = state.probes.get(record.id)
    if hit is not None and hit[0] == record.round:
        return hit[1]
    if not record.leader_address:
        return None
    state.probe_requests += 1
    answer = gossip.request_model(record.leader_address, record.id, PROBE_TIMEOUT)
    if answer is None:
        return None
    round_, payload = answer
    try:
        accuracy = learning.score(payload, with_train=state.data_changed)
    except ValueError as exc:
        log.warning("%s: rejected model probed from %s: %s", state.name, record.id, exc)
        return None
    state.probes[record.id] = (round_, accuracy)
    fetch.models[record.id] = payload
    return accuracy
