"""Round-based, in-process simulation of group choice (no network, plain torch FedAvg).

Every round each group runs one FedAvg round over its members, and every node also trains its
own local model (probe mode needs it to found groups). Every ``eval_every`` rounds each node, in a
random order, builds an :class:`~mycelium_p2p.policy.Observation` and applies
:func:`~mycelium_p2p.policy.decide`:

* probe mode: a candidate's accuracy is its model's accuracy on the node's validation split;
* reported mode: a candidate's accuracy is what the group reports, the example-weighted mean of
  its members' validation accuracy (a federated evaluation), or the founder's for a new group.

As in a real node, a member founds only when two decision passes in a row say so
(``policy.confirm_found``), and before each pass every group's first member, its leader, mixes
in the models of the groups that serve its data about as well (``policy.blend_shares``, at most
``blend_weight`` of the model).

Cold start: nodes arrive one by one (random order) and each joins the best group with room or
founds one. A group emptied by migrations dissolves. A node's accuracy is its group's model on
the node's own test split. This is a cheap check of the policy, not the real system.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from mycelium_p2p.experiment.engine import BatchEngine, Stack
from mycelium_p2p.experiment.report import purity
from mycelium_p2p.experiment.scenarios import ExperimentData, load_scenario
from mycelium_p2p.policy import (
    MODES,
    Candidate,
    Observation,
    PolicyParams,
    blend_shares,
    confirm_found,
    decide,
)


@dataclass
class _Group:
    gid: str
    members: list[int]
    weights: Stack  # one model
    created: int
    reported: float | None = None


@dataclass
class SimResult:
    """Outcome of one simulation run (see :func:`simulate`)."""

    policy: str
    nodes: list[dict[str, Any]]
    mean_accuracy: float
    purity: float | None
    groups: int
    migrations: int
    foundings: int
    rounds: int
    wall_seconds: float
    history: list[dict[str, Any]] = field(default_factory=list)
    decisions: list[str] = field(default_factory=list)


def simulate(
    scenario: str = "label-shift",
    nodes: int = 16,
    concepts: int = 4,
    capacity: int = 5,
    policy_mode: str = "probe",
    rounds: int = 40,
    seed: int = 0,
    eval_every: int = 1,
    *,
    epochs: int = 2,
    params: PolicyParams | None = None,
    blend_weight: float = 0.5,
    data: ExperimentData | None = None,
    on_round: Callable[[int], None] | None = None,
) -> SimResult:
    """Simulate ``rounds`` rounds of self-organisation and report where the nodes ended.

    Parameters
    ----------
    scenario, nodes, concepts
        Data of the nodes (a scenario of :mod:`~mycelium_p2p.experiment.scenarios`); ignored
        when ``data`` is given.
    capacity
        Maximum members per group (default: 5).
    policy_mode
        ``probe`` or ``reported`` (default: ``probe``).
    rounds
        FedAvg rounds (default: 40).
    seed
        Seed of the data deal, the arrival and decision orders and training (default: 0).
    eval_every
        Rounds between two decision passes (default: 1).
    epochs
        Local epochs per round (default: 2).
    params
        Policy thresholds (default: ``PolicyParams(mode=policy_mode)``).
    blend_weight
        Largest share of other groups' models a leader mixes in per pass (default: 0.5, the
        nodes' default; 0: never; probe mode only).
    data
        Pre-loaded nodes (e.g. from ``npz`` shards).
    on_round
        Called with the round number after every round (progress bars).
    """
    if policy_mode not in MODES:
        raise ValueError(f"policy_mode must be one of {MODES}, got {policy_mode!r}")
    if capacity < 1 or rounds < 1 or eval_every < 1:
        raise ValueError("capacity, rounds and eval_every must be >= 1")
    start = time.perf_counter()
    params = params or PolicyParams(mode=policy_mode)  # type: ignore[arg-type]
    exp = data or load_scenario(scenario, nodes, concepts, seed)
    n = len(exp)
    everyone = list(range(n))
    rng = random.Random(seed)
    engine = BatchEngine(exp.spec, exp.data, epochs=epochs, seed=seed + 1)
    use_local = params.mode == "probe"
    local = engine.init(n, salt=n)
    groups: dict[str, _Group] = {}
    where: list[str | None] = [None] * n
    just_moved = [False] * n
    found_pending = [False] * n
    counter = {"groups": 0, "migrations": 0, "foundings": 0}
    log: list[str] = []
    scores: dict[str, np.ndarray] = {}  # group -> its model's accuracy on every node's val split
    local_val = np.zeros(n)

    def probe(gid: str, i: int) -> float:
        if gid not in scores:
            acc, _ = engine.matrix(groups[gid].weights, everyone, "val")
            scores[gid] = acc[:, 0]
        return float(scores[gid][i])

    def fresh_scores() -> None:
        scores.clear()
        if groups:
            ids = list(groups)
            acc, _ = engine.matrix(_concat([groups[g].weights for g in ids]), everyone, "val")
            scores.update({g: acc[:, j] for j, g in enumerate(ids)})

    def observe(i: int) -> Observation:
        cands = []
        for gid, g in groups.items():
            acc = probe(gid, i) if params.mode == "probe" else g.reported
            cands.append(
                Candidate(gid, len(g.members), capacity, g.created, acc, is_current=where[i] == gid)
            )
        cur = where[i]
        return Observation(
            current_group=cur,
            local_accuracy=float(local_val[i]) if use_local else None,
            val_size=len(exp.data[i].val),
            candidates=tuple(cands),
            just_moved=just_moved[i],
            has_other_members=cur is not None and len(groups[cur].members) > 1,
        )

    def leave(i: int) -> None:
        cur = where[i]
        if cur is None:
            return
        groups[cur].members.remove(i)
        if not groups[cur].members:
            del groups[cur]  # an emptied group dissolves
        where[i] = None

    def apply(i: int, rnd: int) -> None:
        decision = decide(observe(i), params)
        had_group = where[i] is not None
        if had_group:
            decision, found_pending[i] = confirm_found(decision, found_pending[i], False)
        if decision.action == "stay":
            just_moved[i] = False
            return
        leave(i)
        if decision.action == "join":
            gid = decision.group_id or ""
            groups[gid].members.append(i)
        else:
            counter["groups"] += 1
            counter["foundings"] += 1
            gid = f"g{counter['groups']:03d}"
            own = BatchEngine.take(local, [i])
            reported = float(engine.accuracy(own, [i], "val")[0])
            groups[gid] = _Group(gid, [i], own, counter["groups"], reported)
        where[i] = gid
        just_moved[i] = had_group
        if had_group:
            counter["migrations"] += 1
        log.append(f"round {rnd} {exp.names[i]} {decision.action} {gid}: {decision.reason}")

    def blend() -> None:
        # Every leader at once, from the models as they were before this pass.
        mixed: dict[str, Stack] = {}
        for gid, g in groups.items():
            leader = g.members[0]
            cands = {h: Candidate(h, len(o.members), capacity, o.created, probe(h, leader))
                     for h, o in groups.items()}  # fmt: skip
            others = [c for h, c in cands.items() if h != gid]
            val = len(exp.data[leader].val)
            own_model = float(local_val[leader]) if use_local else None
            shares = blend_shares(cands[gid], others, own_model, val, params, blend_weight)
            if shares:
                own = 1.0 - sum(shares.values())
                mixed[gid] = tuple(
                    own * t + sum(w * groups[h].weights[k] for h, w in shares.items())
                    for k, t in enumerate(g.weights)
                )
        for gid, weights in mixed.items():
            groups[gid].weights = weights

    def report_groups() -> None:
        # The federated evaluation a leader gossips: members' val accuracy weighted by examples.
        for gid, g in groups.items():
            sizes = [len(exp.data[i].val) for i in g.members]
            accs = [probe(gid, i) for i in g.members]
            g.reported = sum(a * s for a, s in zip(accs, sizes, strict=True)) / max(sum(sizes), 1)

    def train_round() -> None:
        nonlocal local
        ids = list(groups)
        members = [i for g in ids for i in groups[g].members]
        starts = (
            [_concat([groups[g].weights for g in ids for _ in groups[g].members])] if ids else []
        )
        if use_local:
            starts.append(local)
        trained = engine.train(_concat(starts), members + (everyone if use_local else []))
        if ids:
            spans = []
            at = 0
            for g in ids:
                spans.append(list(range(at, at + len(groups[g].members))))
                at += len(groups[g].members)
            sizes = [len(exp.data[i].train) for i in members]
            averaged = BatchEngine.average(trained, spans, sizes)
            for j, g in enumerate(ids):
                groups[g].weights = BatchEngine.take(averaged, [j])
        if use_local:
            local = tuple(t[len(members) :] for t in trained)

    # Cold start: nodes arrive one by one.
    order = list(range(n))
    rng.shuffle(order)
    if use_local:
        local_val = engine.accuracy(local, everyone, "val")
    for i in order:
        apply(i, 0)
        just_moved[i] = False
    history: list[dict[str, Any]] = []
    accs = np.zeros(n)
    for rnd in range(1, rounds + 1):
        train_round()
        grouped = [i for i in everyone if where[i] is not None]
        if grouped:
            models = _concat([groups[where[i]].weights for i in grouped])  # type: ignore[index]
            accs[grouped] = engine.accuracy(models, grouped, "test")
        history.append(_snapshot(rnd, list(accs), exp, where, counter["migrations"]))
        if rnd % eval_every == 0 and rnd < rounds:
            fresh_scores()
            if use_local:
                local_val = engine.accuracy(local, everyone, "val")
            if params.mode == "probe":
                blend()
            if params.mode == "reported":
                report_groups()
            order = list(range(n))
            rng.shuffle(order)
            for i in order:
                apply(i, rnd)
        if on_round is not None:
            on_round(rnd)
    # Final accuracies are those of the last round's models for the last round's groups; a
    # decision pass after the last round would leave movers unscored, so none runs then.
    final = history[-1]
    node_rows = [
        {
            "name": exp.names[i],
            "shard": exp.shards[i],
            "concept": exp.data[i].concept,
            "group": where[i],
            "accuracy": round(float(accs[i]), 4),
        }
        for i in range(n)
    ]
    return SimResult(
        policy=params.mode,
        nodes=node_rows,
        mean_accuracy=final["mean_accuracy"],
        purity=final["purity"],
        groups=final["groups"],
        migrations=counter["migrations"],
        foundings=counter["foundings"],
        rounds=rounds,
        wall_seconds=time.perf_counter() - start,
        history=history,
        decisions=log,
    )


def _concat(stacks: list[Stack]) -> Stack:
    return tuple(torch.cat(parts) for parts in zip(*stacks, strict=True))


def _snapshot(
    rnd: int, accs: list[float], exp: ExperimentData, where: list[str | None], migrations: int
) -> dict[str, Any]:
    members: dict[str, list[int | None]] = {}
    for i, gid in enumerate(where):
        if gid is not None:
            members.setdefault(gid, []).append(exp.data[i].concept)
    return {
        "round": rnd,
        "mean_accuracy": sum(accs) / len(accs),
        "purity": purity(members),
        "groups": len(members),
        "migrations": migrations,
    }
