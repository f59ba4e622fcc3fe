"""Round-based, in-process simulation of group choice (no network, plain torch FedAvg).

Every round each group runs one FedAvg round over its members, and every node also trains its
own local model (probe mode needs it to found groups). Every ``eval_every`` rounds each node, in a
random order, builds an :class:`~mycelium_p2p.policy.Observation` and applies
:func:`~mycelium_p2p.policy.decide`:

* probe mode: a candidate's accuracy is its model's accuracy on the node's validation split;
* reported mode: a candidate's accuracy is what the group reports, the example-weighted mean of
  its members' validation accuracy (a federated evaluation), or the founder's for a new group.

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

from mycelium_p2p.experiment.baselines import Engine, ExperimentData, Weights, load_scenario
from mycelium_p2p.experiment.report import purity
from mycelium_p2p.policy import MODES, Candidate, Observation, PolicyParams, decide


@dataclass
class _Group:
    gid: str
    members: list[int]
    weights: Weights
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
    data: ExperimentData | None = None,
    on_round: Callable[[int], None] | None = None,
) -> SimResult:
    """Simulate ``rounds`` rounds of self-organisation and report where the nodes ended.

    Parameters
    ----------
    scenario, nodes, concepts
        Data of the nodes (``iid``, ``label-shift`` or ``rotation`` of the bundled digits);
        ignored when ``data`` is given.
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
    rng = random.Random(seed)
    engine = Engine(exp.spec, epochs, random.Random(seed + 1))
    use_local = params.mode == "probe"
    local: list[Weights] = [engine.init() for _ in range(n)]
    groups: dict[str, _Group] = {}
    where: list[str | None] = [None] * n
    just_moved = [False] * n
    counter = {"groups": 0, "migrations": 0, "foundings": 0}
    log: list[str] = []
    probe_cache: dict[tuple[str, int], float] = {}

    def probe(gid: str, i: int) -> float:
        key = (gid, i)
        if key not in probe_cache:
            probe_cache[key] = engine.accuracy(groups[gid].weights, exp.data[i].val)
        return probe_cache[key]

    def observe(i: int) -> Observation:
        cands = []
        for gid, g in groups.items():
            acc = probe(gid, i) if params.mode == "probe" else g.reported
            cands.append(
                Candidate(gid, len(g.members), capacity, g.created, acc, is_current=where[i] == gid)
            )
        local_acc = engine.accuracy(local[i], exp.data[i].val) if use_local else None
        cur = where[i]
        return Observation(
            current_group=cur,
            local_accuracy=local_acc,
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
            reported = probe_local(i)
            groups[gid] = _Group(
                gid, [i], [w.copy() for w in local[i]], counter["groups"], reported
            )
        where[i] = gid
        just_moved[i] = had_group
        if had_group:
            counter["migrations"] += 1
        log.append(f"round {rnd} {exp.names[i]} {decision.action} {gid}: {decision.reason}")

    def probe_local(i: int) -> float:
        return engine.accuracy(local[i], exp.data[i].val)

    def report_groups() -> None:
        # The federated evaluation a leader gossips: members' val accuracy weighted by examples.
        for g in groups.values():
            sizes = [len(exp.data[i].val) for i in g.members]
            accs = [engine.accuracy(g.weights, exp.data[i].val) for i in g.members]
            g.reported = sum(a * s for a, s in zip(accs, sizes, strict=True)) / max(sum(sizes), 1)

    # Cold start: nodes arrive one by one.
    order = list(range(n))
    rng.shuffle(order)
    for i in order:
        apply(i, 0)
        just_moved[i] = False
    history: list[dict[str, Any]] = []
    accs = [0.0] * n
    for rnd in range(1, rounds + 1):
        for g in groups.values():
            g.weights = engine.fedavg_round(g.weights, [exp.data[i] for i in g.members])
        if use_local:
            local = [engine.train(local[i], exp.data[i].train) for i in range(n)]
        for g in groups.values():
            for i in g.members:
                accs[i] = engine.accuracy(g.weights, exp.data[i].test)
        history.append(_snapshot(rnd, accs, exp, where, counter["migrations"]))
        if rnd % eval_every == 0 and rnd < rounds:
            probe_cache.clear()
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
            "accuracy": round(accs[i], 4),
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
