"""The real-system experiment: a registry and N real nodes in one process, watched and scored.

:func:`run_experiment` starts a :class:`~mycelium_p2p.testing.local_cluster.LocalCluster`
(registry on a temporary SQLite file, gossip over ZeroMQ, Flower over gRPC; the registry comes
from the caller) on the experiment's data with the ``test`` preset, and then, every half second:

- starts late nodes (``Churn.arrivals``: the last N nodes, one every ``arrival_interval`` s, from
  when every node started at first sits in a group);
- makes nodes leave (``Churn.leaves``: members, gracefully) and crash (``Churn.crashes``:
  leaders of groups with other members, killed) from ``depart_at``, one every
  ``depart_interval`` s;
- switches the drifting nodes' data at ``drift_at`` (same node, same id, new data);
- samples every ``sample_every`` s each live node's accuracy (its current group model on its
  own test split, scored with the experiment's own copy of the model), where it is, and the
  network's figures (the ``timeline``); every ``DENSE_EVERY`` s for ``DENSE_FOR`` s after a
  drift, an arrival or a departure, so that the seconds a node takes to recover or to be placed
  are measured to the second (from when the data switched, which the loop can reach late).

It stops after ``duration`` seconds (or when every group reached ``rounds``), trains the
baselines on the same shards for as many rounds as the most advanced group ran (the drifting
nodes switching at the round the run had reached when they switched), and scores the run
against them (``score.py``).
"""

from __future__ import annotations

import random
import statistics
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from torch import nn

from mycelium_p2p.experiment.baselines import BaselineDrift, run_baselines
from mycelium_p2p.experiment.report import build_results, purity
from mycelium_p2p.experiment.scenarios import ExperimentData
from mycelium_p2p.experiment.score import Sample, score_run
from mycelium_p2p.learning import models, train
from mycelium_p2p.learning.data import NodeData, Split
from mycelium_p2p.lifecycle import Phase
from mycelium_p2p.node import Node
from mycelium_p2p.node_config import NodeConfig
from mycelium_p2p.testing.local_cluster import LocalCluster, RegistryFactory

TICK = 0.5  # seconds between two looks at the cluster
DENSE_EVERY = 1.0  # seconds between two samples just after an event
DENSE_FOR = 20.0  # seconds after an event sampled densely


@dataclass(frozen=True)
class Churn:
    """Nodes that come late and nodes that go during the run.

    Parameters
    ----------
    arrivals
        The last ``arrivals`` nodes start late (default: 0).
    arrival_interval
        Seconds between two arrivals (default: 5).
    leaves
        Members that leave gracefully (default: 0).
    crashes
        Leaders (of groups with other members) that crash (default: 0).
    depart_at
        Seconds after the start of the first departure (default: None: half the duration).
    depart_interval
        Seconds between two departures (default: 5).
    """

    arrivals: int = 0
    arrival_interval: float = 5.0
    leaves: int = 0
    crashes: int = 0
    depart_at: float | None = None
    depart_interval: float = 5.0

    def __post_init__(self) -> None:
        for name in ("arrivals", "leaves", "crashes"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0")
        if self.arrival_interval <= 0 or self.depart_interval <= 0:
            raise ValueError("arrival and departure intervals must be > 0")


@dataclass(frozen=True)
class Plan:
    """One experiment on the real system.

    Parameters
    ----------
    exp
        The nodes and their data.
    scenario
        Its name in the results (default: "shards").
    concepts
        The scenario's concept count, as given (default: None).
    policy, capacity, seed
        Group choice mode, group capacity, seed of nodes and baselines (defaults: probe, 5, 0).
    duration, rounds
        Stop after ``duration`` seconds, or once every group reached ``rounds`` (default: 120
        seconds).
    baselines
        Train and score the baselines after the run (default: True).
    drift, drift_at
        New data of the drifting nodes (node index -> data) and when they switch (seconds).
    churn
        Arrivals and departures (default: none).
    ifca_k
        IFCA's k (default: the true number of concepts).
    blend_weight
        The nodes' ``blend_weight`` (default: 0.5, their default).
    sample_every
        Seconds between two samples of the timeline (default: 5).
    config
        Node settings (default: the ``test`` preset with ``policy``, ``capacity`` and ``seed``).
    """

    exp: ExperimentData
    scenario: str = "shards"
    concepts: int | None = None
    policy: str = "probe"
    capacity: int = 5
    seed: int = 0
    duration: float | None = 120.0
    rounds: int | None = None
    baselines: bool = True
    drift: Mapping[int, NodeData] = field(default_factory=dict)
    drift_at: float | None = None
    churn: Churn = field(default_factory=Churn)
    ifca_k: int | None = None
    blend_weight: float = 0.5
    sample_every: float = 5.0
    config: NodeConfig | None = None

    def __post_init__(self) -> None:
        if self.duration is None and self.rounds is None:
            raise ValueError("give a duration or a number of rounds")
        if bool(self.drift) != (self.drift_at is not None):
            raise ValueError("drift needs both the new data and the time it switches")
        if self.churn.arrivals + self.churn.leaves + self.churn.crashes >= len(self.exp):
            raise ValueError("arrivals and departures must leave at least one node throughout")


@dataclass
class Status:
    """What a progress display shows."""

    elapsed: float
    round: int
    groups: int
    live: int
    phase: str = "run"  # "run", then "baselines"
    baseline_round: int = 0
    baseline_rounds: int = 0


Progress = Callable[[Status], None]


class _Watch:
    """The run's bookkeeping: who is where, what happened when, the samples."""

    def __init__(self, plan: Plan, cluster: LocalCluster, started: float) -> None:
        self.plan = plan
        self.cluster = cluster
        self.started = started
        self.data: dict[int, NodeData] = dict(enumerate(plan.exp.data))
        self.samples: list[Sample] = []
        self.arrivals: list[dict[str, Any]] = []
        self.departures: list[dict[str, Any]] = []
        self.drift_round: int | None = None
        self.drift_time: float | None = None  # seconds into the run when the data switched
        self.moves_at: dict[str, dict[int, int]] = {}  # event -> migrations per node at its start
        self.left_migrations = 0  # of nodes that departed
        self.scorer = GroupModelScorer()

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def concept(self, index: int) -> int | None:
        return self.data[index].concept

    def max_round(self) -> int:
        rounds = [_round_of(node) for node in self.cluster.live().values()]
        return max(rounds, default=0)

    def min_round(self) -> int:
        rounds = [_round_of(node) for node in self.cluster.live().values()]
        return min(rounds, default=0)

    def migrations(self) -> dict[int, int]:
        return {i: n.migrations for i, n in self.cluster.by_index.items()}

    def total_migrations(self) -> int:
        return sum(self.migrations().values())

    def remember_moves(self, event: str) -> None:
        self.moves_at.setdefault(event, self.migrations())

    def sample(self) -> Sample:
        """Every live node's group and accuracy, stamped with the time the sample began: one
        that began before an event and ended after it must not count as after it."""
        began = self.elapsed()
        nodes: dict[int, tuple[str | None, float]] = {}
        for index, node in self.cluster.live().items():
            weights = node.learning.group_weights()  # 0 before the node has a group model
            accuracy = (
                0.0
                if weights is None
                else self.scorer.accuracy(node.spec, weights, self.data[index].test)
            )
            nodes[index] = (node.group_id, accuracy)
        members: dict[str, list[int | None]] = {}
        for index, (group, _) in nodes.items():
            if group is not None:
                members.setdefault(group, []).append(self.concept(index))
        mean = statistics.fmean(a for _, a in nodes.values()) if nodes else 0.0
        sample = Sample(
            seconds=began,
            mean_accuracy=mean,
            purity=purity(members) if members else None,
            groups=len(members),
            migrations=self.total_migrations(),
            nodes=nodes,
            concepts={i: self.concept(i) for i in nodes},
        )
        self.samples.append(sample)
        return sample


class GroupModelScorer:
    """Scores a node's group model on its test split with the experiment's own copy of the
    model. Through the node's task a sample would queue behind every node's training (a task
    runs one call at a time): with 24 nodes on 2 cores a sample then took 10-25 s, too coarse
    to time a recovery to the second."""

    def __init__(self) -> None:
        self._models: dict[str, nn.Module] = {}  # one per model spec

    def accuracy(self, spec: str, weights: list[np.ndarray], split: Split) -> float:
        model = self._models.get(spec)
        if model is None:
            model = self._models[spec] = models.build_model(spec)
        models.set_weights(model, weights)
        return train.evaluate(model, split).accuracy


def _round_of(node: Node) -> int:
    """The round of the node's group as the node's gossip view has it (0: none)."""
    record = node.gossip.groups().get(node.group_id or "")
    return record.round if record is not None else 0


def run_experiment(
    plan: Plan, registry: RegistryFactory, progress: Progress | None = None
) -> dict[str, Any]:
    """Run ``plan`` on the real system (registry from ``registry``); return the results."""
    exp, churn = plan.exp, plan.churn
    config = plan.config or NodeConfig.test().replace(
        policy=plan.policy,
        group_capacity=plan.capacity,
        seed=plan.seed,
        blend_weight=plan.blend_weight,
    )
    rng = random.Random(plan.seed)
    first = len(exp) - churn.arrivals
    budget = plan.duration if plan.duration is not None else 3600.0
    depart_at = churn.depart_at if churn.depart_at is not None else budget / 2
    waiting = list(range(first, len(exp)))  # late nodes, in order
    departures = _departure_order(churn)
    cluster = LocalCluster(exp.data, config, names=exp.names, registry=registry)
    cluster.start(count=first)
    try:
        watch = _Watch(plan, cluster, time.monotonic())
        next_arrival: float | None = None
        next_departure = depart_at
        next_sample = 0.0
        dense_until = -1.0  # sample every DENSE_EVERY s until then

        def sample_densely(now: float) -> None:
            nonlocal dense_until, next_sample
            dense_until, next_sample = now + DENSE_FOR, min(next_sample, now + DENSE_EVERY)

        while True:
            now = watch.elapsed()
            if waiting and next_arrival is None and _all_grouped(cluster):
                next_arrival = now
                watch.remember_moves("arrivals")
            if waiting and next_arrival is not None and now >= next_arrival:
                _arrive(watch, waiting.pop(0))
                next_arrival = now + churn.arrival_interval
                sample_densely(now)
            if departures and now >= next_departure:
                watch.remember_moves("departures")
                _depart(watch, departures.pop(0), rng)
                next_departure = now + churn.depart_interval
                sample_densely(now)
            if plan.drift and watch.drift_time is None and now >= (plan.drift_at or 0.0):
                _drift(watch)
                sample_densely(now)
            if now >= next_sample:
                sample = watch.sample()
                every = plan.sample_every
                next_sample = now + (min(DENSE_EVERY, every) if now < dense_until else every)
            reached = watch.min_round()
            if progress is not None:
                progress(Status(now, reached, sample.groups, len(cluster.live())))
            if (plan.rounds is not None and reached >= plan.rounds) or now >= budget:
                break
            time.sleep(TICK)
        watch.sample()
        wall = watch.elapsed()
        live = cluster.live()
        rows = [
            {
                "name": exp.names[i],
                "shard": exp.shards[i],
                "concept": watch.concept(i),
                "group": node.group_id,
                "accuracy": round(watch.samples[-1].nodes[i][1], 4),
            }
            for i, node in live.items()
        ]
        rounds_done = watch.max_round()
        migrations = watch.total_migrations()
        blends = sum(sum(node.blended.values()) for node in live.values())
        _finish_departures(watch)
    finally:
        cluster.stop()
    kept = sorted(live)
    baseline_results = {}
    if plan.baselines:
        final = exp.subset(kept)
        drift = None
        if plan.drift and watch.drift_round is not None:
            moved = {kept.index(i): d for i, d in plan.drift.items() if i in live}
            drift = BaselineDrift(max(watch.drift_round, 1), moved)
        budget_rounds = max(rounds_done, 1)

        def tick(r: int) -> None:
            if progress is not None:
                progress(Status(wall, rounds_done, 0, len(kept), "baselines", r, budget_rounds))

        baseline_results = run_baselines(
            final,
            capacity=plan.capacity,
            rounds=budget_rounds,
            epochs=config.learning.local_epochs,
            seed=plan.seed,
            ifca_k=plan.ifca_k,
            drift=drift,
            on_round=tick,
        )
    scored = score_run(
        watch.samples,
        kept,
        baseline_results,
        drift_at=watch.drift_time,
        drifted=[i for i in sorted(plan.drift) if i in live],
        arrived={row["index"]: row["at"] for row in watch.arrivals},
        names=exp.names,
    )
    extra: dict[str, Any] = {
        "scenario": plan.scenario,
        "concepts": plan.concepts,
        "capacity": plan.capacity,
        "seed": plan.seed,
        "blend_weight": config.choice.blend_weight,
        "blends": blends,
        "history": [
            {
                "seconds": round(s.seconds, 1),
                "mean_accuracy": round(s.mean_accuracy, 4),
                "groups": s.groups,
            }
            for s in watch.samples
        ],
        "timeline": [s.to_json() for s in watch.samples],
        "seconds_to_target": scored.seconds_to_target,
        "baseline_seconds": round(sum(b.seconds for b in baseline_results.values()), 1),
    }
    if plan.drift:
        extra["drift"] = {
            "at": plan.drift_at,
            "nodes": [exp.names[i] for i in sorted(plan.drift)],
            "recovered_seconds": scored.recovered_seconds,
            "round": watch.drift_round,
            "others_moved": _others_moved(watch, "drift", set(plan.drift)),
        }
    if churn.arrivals:
        extra["arrivals"] = _arrival_rows(watch, scored.placed_seconds)
        extra["others_moved_after_arrivals"] = _others_moved(
            watch, "arrivals", set(range(first, len(exp)))
        )
    if churn.leaves or churn.crashes:
        extra["departures"] = watch.departures
    return build_results(
        nodes=rows,
        rounds=rounds_done,
        wall_seconds=wall,
        migrations=migrations,
        policy=plan.policy,
        baselines=baseline_results,
        **extra,
    )


# --- the events ------------------------------------------------------------------------------


def _all_grouped(cluster: LocalCluster) -> bool:
    live = cluster.live()
    return bool(live) and all(node.group_id is not None for node in live.values())


def _arrive(watch: _Watch, index: int) -> None:
    watch.cluster.add(index)
    watch.arrivals.append({"index": index, "at": round(watch.elapsed(), 1)})


def _departure_order(churn: Churn) -> list[str]:
    """``crash`` and ``leave`` alternating, a crash first."""
    order: list[str] = []
    for k in range(max(churn.crashes, churn.leaves)):
        order += ["crash"] * (k < churn.crashes) + ["leave"] * (k < churn.leaves)
    return order


def _depart(watch: _Watch, how: str, rng: random.Random) -> None:
    """A leader of a group with other members crashes, or a member leaves (chosen by ``rng``)."""
    cluster = watch.cluster
    live = cluster.live()
    groups = cluster.groups()
    if how == "crash":
        pool = [
            i for i, n in live.items()
            if n.phase is Phase.LEADER and len(groups.get(n.group_id or "", [])) > 1
        ]  # fmt: skip
    else:
        pool = [i for i, n in live.items() if n.phase is Phase.MEMBER]
    pool = pool or list(live)
    if len(pool) <= 1 and len(live) <= 1:
        return  # never the last node
    index = rng.choice(sorted(pool))
    node = live[index]
    group = node.group_id
    others = [i for i, n in live.items() if n.group_id == group and i != index] if group else []
    before = watch.samples[-1] if watch.samples else None
    row = {
        "name": watch.plan.exp.names[index],
        "how": how,
        "at": round(watch.elapsed(), 1),
        "was_leader": node.phase is Phase.LEADER,
        "group": group,
        "round_before": _round_of(node),
        "others": others,
        "others_accuracy_before": _mean_of(before, others),
    }
    watch.left_migrations += node.migrations
    if how == "crash":
        cluster.crash(index)
    else:
        cluster.leave(index)
    watch.departures.append(row)


def _finish_departures(watch: _Watch) -> None:
    """For each departure: where its group's other members ended, and how well."""
    live = watch.cluster.live()
    last = watch.samples[-1]
    for row in watch.departures:
        others = [i for i in row.pop("others") if i in live]
        rounds = [_round_of(live[i]) for i in others]
        row["others_accuracy_after"] = _mean_of(last, others)
        row["round_after"] = max(rounds, default=None)
        # The group kept its model when its rounds went on from where they were.
        row["kept_model"] = bool(rounds) and max(rounds) > row["round_before"]


def _mean_of(sample: Sample | None, indices: list[int]) -> float | None:
    if sample is None:
        return None
    values = [sample.nodes[i][1] for i in indices if i in sample.nodes]
    return round(statistics.fmean(values), 4) if values else None


def _drift(watch: _Watch) -> None:
    # Recovery counts from when the data switched: the loop can reach ``drift_at`` late.
    watch.drift_time = watch.elapsed()
    watch.remember_moves("drift")
    watch.drift_round = watch.max_round()
    for index, data in watch.plan.drift.items():
        node = watch.cluster.live().get(index)
        watch.data[index] = data
        if node is not None:
            node.switch_data(data)


def _others_moved(watch: _Watch, event: str, involved: set[int]) -> int:
    """Migrations, since ``event`` began, of the nodes it did not involve."""
    start = watch.moves_at.get(event)
    if start is None:
        return 0
    now = watch.migrations()
    return sum(now[i] - start.get(i, 0) for i in now if i not in involved)


def _arrival_rows(watch: _Watch, placed: Mapping[int, float | None]) -> list[dict[str, Any]]:
    last = watch.samples[-1].nodes  # where each node was at the end (the nodes are stopped)
    rows = []
    for row in watch.arrivals:
        index = row["index"]
        rows.append(
            {
                "name": watch.plan.exp.names[index],
                "concept": watch.concept(index),
                "at": row["at"],
                "placed_seconds": placed.get(index),
                "group": last[index][0] if index in last else None,
            }
        )
    return rows
