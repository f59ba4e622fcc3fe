"""Group choice: a pure function from what a node observes to what it should do.

The node gathers an :class:`Observation` (its current group, the compatible candidate groups with
their sizes, capacities and accuracies on its own validation split, and the accuracy of its own
locally trained model), calls :func:`decide`, and gets a :class:`Decision`: stay, join a group, or
found a new one, always with a human-readable reason that carries the numbers.

Two modes:

``probe`` (default)
    Candidate accuracies are *probed*: each candidate group's latest model is evaluated on the
    node's own validation split (n samples). With ``a(h)`` the accuracy of group h's model,
    ``L`` the accuracy of the node's own local model, ``g`` the current group, ``R`` the other
    groups with room and ``b = argmax_R a(h)``:

    1. **improve**: join ``b`` if ``a(b) - a(g) >= max(switch_threshold * a(g), switch_samples/n)``,
       unless ``L >= a(b) + found_samples/n`` (the node's own model serves it clearly better
       than ``b``: a drifted node whose new concept's groups are full founds rather than join
       a group of a third concept that merely beats its old one);
    2. **merge**: else join the largest group in ``R`` that is larger than ``g`` (or as large and
       older) and scores ``a(h) >= max(a(g), L) - merge_samples/n`` (not for a node whose data
       changed since it last moved: its group and its own model serve it near chance then, and
       the floor with them);
    3. **found from a full group**: else, for a node whose data changed since it last moved,
       with ``f`` the best full group: if ``g`` has other members, ``f`` beats both ``a(g)``
       and ``a(b)`` by the improve gain and ``a(f) >= L - merge_samples/n`` (it serves the node
       about as well as its own model at least), found a new group that starts from ``f``'s
       model (the decision names ``f`` as its ``seed``): a drifted node whose new concept's
       groups are full leaves its old concept's group at once, with its new concept's model,
       rather than after its own model has caught up;
    4. **found**: else, if ``g`` has other members and ``L >= max(a(g), a(b)) + found_samples/n``,
       found a new group (seeded with the local model);
    5. **stay** otherwise, and always right after a move (hysteresis).

    A node without a group joins the best group with room, or founds one when none has room.

    A node whose data changed scores the groups on its new training split too (no group has
    trained on it): ``probe_size`` samples. Thresholds between groups (the improve gain, the
    merge floor below ``a(g)``) are then counted in those; thresholds against ``L``, trained on
    that split, stay counted in the n validation samples.

    Why (measured, see ``docs/experiments.md``): with 9-18 validation samples a 5 % relative
    gain is less than one sample, so a pure relative threshold moves nodes on noise forever;
    counting the thresholds in samples stops that churn. Groups of the same concept never beat
    each other by a threshold, so without the merge rule they stay split; a merge only moves a
    node into a group at least as large as its own, which strictly raises the sum of squared group
    sizes, so merges cannot cycle. The found rule is how a group for a new kind of data is born;
    it requires other members in the current group so that a lone node does not found a copy of
    its own group.
    This rule reached the oracle within 0.03 with purity >= 0.9 in 27 of 27 simulated runs.

``reported``
    The original prototype's rule, kept for comparison: candidate accuracies are the ones groups
    *report* through gossip, and the node switches to the best group with room when it reports at
    least ``switch_threshold`` (relative) more than the current group. It never sorted a
    label-shifted network in simulation: a one-member group reports a high accuracy because its
    model fits its only member, and nodes of other concepts pile in.

Both modes never choose a full group and stay put right after a move.

Two more rules, used by the node's choice part and by the in-process simulation alike:
:func:`confirm_found` (a member founds only when two re-evaluations in a row say so) and
:func:`blend_shares` (which other groups' models a leader mixes into its own, and how much).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol, TypeVar

Mode = Literal["probe", "reported"]
Action = Literal["stay", "join", "found"]

MODES: tuple[Mode, ...] = ("probe", "reported")

# Accuracies are ratios k/n; compare with a small tolerance so that "exactly 3 samples" counts.
_EPS = 1e-9


@dataclass(frozen=True)
class PolicyParams:
    """Thresholds of the group choice rule.

    Parameters
    ----------
    switch_threshold
        Relative gain needed to switch groups, as a fraction of the current group's accuracy
        (default: 0.05, the seed's 5 %).
    switch_samples
        Noise floor of a switch, in validation samples: the gain must also be at least
        ``switch_samples / n`` (default: 3). Probe mode only.
    merge_samples
        Slack of a merge, in validation samples: a larger group may score up to
        ``merge_samples / n`` below ``max(a(g), L)`` (default: 2). Probe mode only.
    found_samples
        Margin by which the local model must beat every group to found one, in validation samples
        (default: 4). Probe mode only.
    mode
        ``"probe"`` (evaluate candidate models on own data) or ``"reported"`` (trust the accuracy
        groups report through gossip) (default: ``"probe"``).
    """

    switch_threshold: float = 0.05
    switch_samples: int = 3
    merge_samples: int = 2
    found_samples: int = 4
    mode: Mode = "probe"

    def __post_init__(self) -> None:
        if not (math.isfinite(self.switch_threshold) and self.switch_threshold >= 0):
            raise ValueError(f"switch_threshold must be >= 0, got {self.switch_threshold!r}")
        for name in ("switch_samples", "merge_samples", "found_samples"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"{name} must be an integer >= 0, got {value!r}")
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {self.mode!r}")


@dataclass(frozen=True)
class Candidate:
    """A compatible group as the node sees it.

    Parameters
    ----------
    group_id
        The group's id.
    size
        Current number of members (the node itself included when it is the current group).
    capacity
        Maximum number of members.
    created_at
        Creation time or any order key; smaller means older (tie-break of the merge rule).
    accuracy
        Accuracy of the group's model on the node's own validation split (probe mode) or the
        accuracy the group reports (reported mode); ``None`` when unknown (not probed yet).
    is_current
        True for the node's current group.
    """

    group_id: str
    size: int
    capacity: int
    created_at: float = 0.0
    accuracy: float | None = None
    is_current: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.group_id, str) or not self.group_id:
            raise ValueError(f"group_id must be a non-empty string, got {self.group_id!r}")
        if self.size < 0:
            raise ValueError(f"group {self.group_id}: size must be >= 0, got {self.size}")
        if self.capacity < 1:
            raise ValueError(f"group {self.group_id}: capacity must be >= 1, got {self.capacity}")
        _check_accuracy(f"group {self.group_id}: accuracy", self.accuracy)

    @property
    def has_room(self) -> bool:
        """Whether one more member fits."""
        return self.size < self.capacity


@dataclass(frozen=True)
class Observation:
    """Everything the policy looks at.

    Parameters
    ----------
    current_group
        Id of the node's group, or ``None`` when it has none.
    local_accuracy
        Accuracy of the node's own locally trained model on its validation split (``None`` when
        the node has no local model yet; then it never founds while other groups have room).
    val_size
        Number of validation samples n behind the accuracies (the noise floor is counted in 1/n).
    probe_size
        Samples behind the groups' accuracies when more than ``val_size`` (after a data change
        the training split, which no group has trained on, scores groups too; the local model
        trained on it, so it stays scored on ``val_size``); None: ``val_size``.
    candidates
        Compatible groups, the current one included (marked ``is_current``).
    just_moved
        True when the node joined or founded a group at its previous evaluation (hysteresis).
    has_other_members
        True when the current group has members other than this node.
    data_changed
        True when the node's data changed since it last moved (full groups are among the
        candidates then, and rule 3 may found from one).
    """

    current_group: str | None
    local_accuracy: float | None
    val_size: int
    candidates: tuple[Candidate, ...] = field(default_factory=tuple)
    just_moved: bool = False
    has_other_members: bool = False
    probe_size: int | None = None
    data_changed: bool = False

    def __post_init__(self) -> None:
        if isinstance(self.val_size, bool) or not isinstance(self.val_size, int):
            raise ValueError(f"val_size must be an integer, got {self.val_size!r}")
        if self.val_size < 0:
            raise ValueError(f"val_size must be >= 0, got {self.val_size}")
        if self.probe_size is not None and (
            isinstance(self.probe_size, bool)
            or not isinstance(self.probe_size, int)
            or self.probe_size < self.val_size
        ):
            raise ValueError(f"probe_size must be an integer >= val_size, got {self.probe_size!r}")
        _check_accuracy("local_accuracy", self.local_accuracy)
        object.__setattr__(self, "candidates", tuple(self.candidates))
        ids = [c.group_id for c in self.candidates]
        if len(ids) != len(set(ids)):
            raise ValueError(f"duplicate group ids among candidates: {sorted(ids)}")
        current = [c for c in self.candidates if c.is_current]
        if len(current) > 1:
            raise ValueError("more than one candidate is marked current")
        if current and current[0].group_id != self.current_group:
            raise ValueError(
                f"candidate {current[0].group_id} is marked current but current_group is "
                f"{self.current_group!r}"
            )
        if self.current_group is not None and not current:
            raise ValueError(f"current group {self.current_group} is missing from the candidates")

    @property
    def current(self) -> Candidate | None:
        """The current group's candidate entry, if any."""
        return next((c for c in self.candidates if c.is_current), None)


@dataclass(frozen=True)
class Decision:
    """What the node should do.

    ``action`` is ``"stay"``, ``"join"`` (``group_id`` = the group to join) or ``"found"``
    (``group_id`` is ``None``: the caller picks the new id; ``seed``: the full group whose model
    the new group starts from, None: the node's own model). ``reason`` explains it with numbers.
    """

    action: Action
    group_id: str | None
    reason: str
    seed: str | None = None


def _check_accuracy(name: str, value: float | None) -> None:
    if value is None:
        return
    if not (isinstance(value, int | float) and math.isfinite(value) and 0.0 <= value <= 1.0):
        raise ValueError(f"{name} must be in [0, 1] or None, got {value!r}")


def _fmt(value: float | None) -> str:
    return "?" if value is None else f"{value:.3f}"


def _best(groups: Sequence[Candidate]) -> Candidate | None:
    """Highest accuracy; ties go to the larger, then older group (then the smaller id)."""
    scored = [c for c in groups if c.accuracy is not None]
    if not scored:
        return None
    return min(scored, key=lambda c: (-(c.accuracy or 0.0), -c.size, c.created_at, c.group_id))


def _entry(obs: Observation) -> Decision:
    """No group: join the best group with room (largest if none is scored), or found one."""
    if not obs.candidates:
        return Decision("found", None, "no group: no group trains this node's model yet")
    room = [c for c in obs.candidates if c.has_room]
    if not room:
        full = len(obs.candidates)
        groups = "the one compatible group is" if full == 1 else f"all {full} compatible groups are"
        return Decision("found", None, f"no group: {groups} full")
    best = _best(room)
    if best is not None:
        return Decision(
            "join",
            best.group_id,
            f"no group: joining best group with room {best.group_id} "
            f"(accuracy {_fmt(best.accuracy)}, {best.size}/{best.capacity} members)",
        )
    largest = min(room, key=lambda c: (-c.size, c.created_at, c.group_id))
    return Decision(
        "join",
        largest.group_id,
        f"no group: no accuracies known, joining the largest group "
        f"with room {largest.group_id} ({largest.size}/{largest.capacity} members)",
    )


def decide(obs: Observation, params: PolicyParams | None = None) -> Decision:
    """Choose to stay, join another group or found one (see the module docstring for the rule).

    Parameters
    ----------
    obs
        What the node observes.
    params
        Thresholds and mode (default: ``PolicyParams()``, probe mode).

    Returns
    -------
    Decision
        The action, its target group and a reason with the numbers.
    """
    params = params or PolicyParams()
    current = obs.current
    if current is None:
        return _entry(obs)
    if obs.just_moved:
        return Decision("stay", None, f"just moved to {current.group_id}: staying one evaluation")
    if current.accuracy is None:
        return Decision("stay", None, f"current group {current.group_id} has no accuracy yet")
    if params.mode == "reported":
        return _decide_reported(obs, current, params)
    return _decide_probe(obs, current, params)


def _decide_reported(obs: Observation, g: Candidate, params: PolicyParams) -> Decision:
    a_g = g.accuracy or 0.0
    room = [c for c in obs.candidates if not c.is_current and c.has_room]
    b = _best(room)
    if b is None:
        return Decision("stay", None, f"reported: no other group with room (current {_fmt(a_g)})")
    need = a_g * (1.0 + params.switch_threshold)
    a_b = b.accuracy or 0.0
    if a_b >= need - _EPS:
        return Decision(
            "join",
            b.group_id,
            f"reported: {b.group_id} reports {_fmt(a_b)} >= "
            f"{_fmt(a_g)} x {1 + params.switch_threshold:.2f} = {_fmt(need)} ({g.group_id})",
        )
    return Decision(
        "stay",
        None,
        f"reported: best other {b.group_id} reports {_fmt(a_b)} < {_fmt(need)} "
        f"needed (current {g.group_id} {_fmt(a_g)})",
    )


def _decide_probe(obs: Observation, g: Candidate, params: PolicyParams) -> Decision:
    n = obs.val_size
    if n == 0:
        return Decision("stay", None, "no validation samples: cannot tell groups apart")
    # Groups compared with groups: their samples; anything compared with the local model: n.
    n_probe = obs.probe_size or n
    a_g = g.accuracy or 0.0
    local = obs.local_accuracy
    room = [c for c in obs.candidates if not c.is_current and c.has_room and c.accuracy is not None]
    b = _best(room)

    # 1. improve: a clear gain, counted both relatively and in samples, to a group that serves
    # the node about as well as its own model at least.
    if b is not None:
        gain = (b.accuracy or 0.0) - a_g
        need = max(params.switch_threshold * a_g, params.switch_samples / n_probe)
        own_is_better = (
            local is not None and local >= (b.accuracy or 0.0) + params.found_samples / n - _EPS
        )
        if gain >= need - _EPS and not own_is_better:
            return Decision(
                "join",
                b.group_id,
                f"improve: {b.group_id} scores {_fmt(b.accuracy)} vs "
                f"{_fmt(a_g)} in {g.group_id}, gain {gain:.3f} >= {need:.3f} "
                f"(max of {params.switch_threshold:.0%} and "
                f"{params.switch_samples}/{n_probe} samples)",
            )

    # 2. merge: a larger (or as large and older) group that serves the node about as well. Not
    # after a data change: its group and own model then serve its data near chance, and so would
    # a group of a third kind.
    floor = a_g - params.merge_samples / n_probe
    if local is not None:
        floor = max(floor, local - params.merge_samples / n)
    merge = [
        c
        for c in room
        if not obs.data_changed
        and (c.size > g.size or (c.size == g.size and c.created_at < g.created_at))
        and (c.accuracy or 0.0) >= floor - _EPS
    ]
    if merge:
        m = min(merge, key=lambda c: (-c.size, c.created_at, -(c.accuracy or 0.0), c.group_id))
        return Decision(
            "join",
            m.group_id,
            f"merge: {m.group_id} ({m.size} members) scores {_fmt(m.accuracy)} >= {floor:.3f} "
            f"(current {_fmt(a_g)} - {params.merge_samples}/{n_probe}, "
            f"local {_fmt(local)} - {params.merge_samples}/{n}); "
            f"current {g.group_id} has {g.size}",
        )

    # 3. found from a full group: one the node cannot join serves its new data clearly better
    # than any it can, and about as well as its own model: the new group starts from its model.
    if obs.data_changed and obs.has_other_members:
        full = [c for c in obs.candidates if not c.is_current and not c.has_room]
        f = _best(full)
        if f is not None:
            top = max(a_g, b.accuracy or 0.0) if b is not None else a_g
            gain = (f.accuracy or 0.0) - top
            need = max(params.switch_threshold * top, params.switch_samples / n_probe)
            as_good_as_own = (
                local is None or (f.accuracy or 0.0) >= local - params.merge_samples / n
            )
            if gain >= need - _EPS and as_good_as_own:
                return Decision(
                    "found",
                    None,
                    f"found from full {f.group_id}: it scores {_fmt(f.accuracy)} vs "
                    f"{_fmt(top)} at best in a group with room, gain {gain:.3f} >= {need:.3f}",
                    seed=f.group_id,
                )

    # 4. found: the local model beats every group by a margin, and the group is shared.
    if local is not None and obs.has_other_members:
        top = max(a_g, b.accuracy or 0.0) if b is not None else a_g
        need = top + params.found_samples / n
        if local >= need - _EPS:
            return Decision(
                "found",
                None,
                f"found: local model {_fmt(local)} >= best group {_fmt(top)} + "
                f"{params.found_samples}/{n} = {need:.3f}",
            )

    best_txt = f", best other {b.group_id} {_fmt(b.accuracy)}" if b is not None else ""
    return Decision(
        "stay",
        None,
        f"stay: {g.group_id} scores {_fmt(a_g)}, local {_fmt(local)}{best_txt} "
        f"(n={n}{f', groups on {n_probe}' if n_probe != n else ''})",
    )


def confirm_found(decision: Decision, pending: bool, data_changed: bool) -> tuple[Decision, bool]:
    """A member leaves its group to found one only when two re-evaluations in a row say so.

    One can be noise: when a member leaves or its data drifts, the group's model scores lower
    for a round or two, and a leader that founded then would split a group that serves it. A
    node whose own data changed since it last moved knows why its group serves it worse: it
    founds at once, except from a full group's model (``decision.seed``): nodes that drift away
    leave that group within a second or two, and then the node joins it instead of copying it.
    Returns the decision to act on and whether a found is now pending.
    """
    if decision.action != "found" or pending or (data_changed and decision.seed is None):
        return decision, False
    wait = Decision("stay", None, f"{decision.reason}; founding if the next evaluation agrees")
    return wait, True


def blend_shares(
    current: Candidate,
    others: Iterable[Candidate],
    local_accuracy: float | None,
    val_size: int,
    params: PolicyParams,
    most: float,
) -> dict[str, float]:
    """The other groups whose models a leader mixes into its group's, with their weights.

    Mixed in: groups whose model scores on the leader's validation split at least
    ``max(current group, local model) - merge_samples / val_size`` (the merge rule's "about as
    well"; the local model keeps a young group near chance from mixing in anything near
    chance), full or not. Their weights follow their sizes and sum to ``most`` at most, and to
    no more than their share of all these groups' members (``current.size`` 0: a group founded
    from theirs, which keeps nothing of its own model). Empty when none qualifies.
    """
    if current.accuracy is None or val_size <= 0 or most <= 0:
        return {}
    best = max(current.accuracy, local_accuracy if local_accuracy is not None else 0.0)
    floor = best - params.merge_samples / val_size
    kin = [c for c in others if c.accuracy is not None and c.accuracy >= floor - _EPS]
    if not kin:
        return {}
    sizes = sum(max(c.size, 1) for c in kin)
    share = min(most, sizes / (sizes + current.size))
    return {c.group_id: share * max(c.size, 1) / sizes for c in kin}


class _HasModel(Protocol):
    model: str


R = TypeVar("R", bound=_HasModel)


def compatible(records: Iterable[R], model_spec: str) -> list[R]:
    """Keep the live group records whose model spec equals ``model_spec``.

    Parameters
    ----------
    records
        Group records (anything with a ``model`` attribute; a true ``dissolved`` attribute drops
        the record).
    model_spec
        The node's own model spec, ``NAME:SHAPE:CLASSES`` (two nodes are compatible iff equal).

    Returns
    -------
    list
        The compatible records, in input order.
    """
    if not isinstance(model_spec, str) or not model_spec:
        raise ValueError(f"model_spec must be a non-empty string, got {model_spec!r}")
    return [
        r
        for r in records
        if getattr(r, "model", None) == model_spec and not getattr(r, "dissolved", False)
    ]
