"""Scoring and reporting of an experiment: purity, the results JSON, a rich table and a plot.

The results JSON (``build_results``) is shared by the in-process simulation and the real-system
experiment; other programs read its keys, so they stay as they are::

    {"nodes": [{"name", "shard", "concept", "group", "accuracy"}, ...], "mean_accuracy", "purity",
     "groups", "migrations", "rounds", "wall_seconds",
     "baselines": {"global", "alone", "oracle", "ifca"}, "policy"}

``baselines`` maps each baseline to its mean accuracy (``None`` when it was not run); details
(per-node accuracies, history, runtime) go under ``baseline_details``. Runs of several seeds are
summarised by :func:`summarise` (median, min and max of every figure).
"""

from __future__ import annotations

import json
import statistics
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.table import Table

if TYPE_CHECKING:
    from mycelium_p2p.experiment.baselines import BaselineResult

BASELINE_NAMES = ("global", "alone", "oracle", "ifca")  # as in baselines.BASELINES
#: Figures of a run summarised over seeds (besides every baseline's mean accuracy).
FIGURES = (
    "mean_accuracy", "purity", "groups", "migrations", "rounds", "wall_seconds",
    "seconds_to_target", "baseline_seconds", "blends",
)  # fmt: skip


def purity(groups: Mapping[str, Sequence[int | None]]) -> float | None:
    """Cluster purity: each group's majority-concept share, weighted by group size.

    Parameters
    ----------
    groups
        Group id -> the concepts of its members (``None`` for an unknown concept).

    Returns
    -------
    float or None
        ``sum_g max_c |g ∩ c| / sum_g |g|``; ``None`` when there are no members or any concept
        is unknown.
    """
    total = 0
    majority = 0
    for concepts in groups.values():
        if any(c is None for c in concepts):
            return None
        if concepts:
            total += len(concepts)
            majority += Counter(concepts).most_common(1)[0][1]
    return majority / total if total else None


def build_results(
    *,
    nodes: Sequence[Mapping[str, Any]],
    rounds: int,
    wall_seconds: float,
    migrations: int,
    policy: str,
    baselines: Mapping[str, BaselineResult] | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """Build the results dictionary (see the module docstring) from per-node rows.

    Parameters
    ----------
    nodes
        One mapping per node with ``name``, ``shard``, ``concept``, ``group``, ``accuracy``.
    rounds, wall_seconds, migrations, policy
        Run totals and the policy mode.
    baselines
        Baseline results by name (``global``, ``alone``, ``oracle``); missing ones are ``None``.
    extra
        More keys (e.g. ``history``, ``scenario``); they cannot override the fixed ones.
    """
    keys = ("name", "shard", "concept", "group", "accuracy")
    rows = []
    for row in nodes:
        missing = [k for k in keys if k not in row]
        if missing:
            raise ValueError(f"node row {dict(row)!r} lacks {missing}")
        rows.append({k: row[k] for k in keys})
    if not rows:
        raise ValueError("results need at least one node")
    members: dict[str, list[int | None]] = {}
    for row in rows:
        if row["group"] is not None:
            members.setdefault(str(row["group"]), []).append(row["concept"])
    baselines = baselines or {}
    out: dict[str, Any] = {
        "nodes": rows,
        "mean_accuracy": round(sum(float(r["accuracy"]) for r in rows) / len(rows), 4),
        "purity": purity(members),
        "groups": len(members),
        "migrations": int(migrations),
        "rounds": int(rounds),
        "wall_seconds": round(float(wall_seconds), 3),
        "baselines": {
            name: (round(baselines[name].mean, 4) if name in baselines else None)
            for name in BASELINE_NAMES
        },
        "policy": policy,
    }
    clash = set(extra) & set(out)
    if clash:
        raise ValueError(f"extra keys clash with fixed ones: {sorted(clash)}")
    out["baseline_details"] = {name: b.to_json() for name, b in baselines.items()}
    out.update(extra)
    return out


def figures(results: Mapping[str, Any]) -> dict[str, float | None]:
    """The numbers of one run that a summary over seeds reports (see :func:`summarise`).

    Besides :data:`FIGURES` and ``baseline_<name>``: ``drift_recovered`` (share of the drifted
    nodes that recovered), ``drift_recovery_seconds`` (the slowest recovery; None when one never
    recovered), ``drift_others_moved``; ``arrivals_placed`` (share of late nodes placed with their
    kin) and ``arrivals_placed_seconds`` (the slowest); ``departures_kept_model`` (share of the
    groups that lost a member or leader and went on training).
    """
    out: dict[str, float | None] = {k: results.get(k) for k in FIGURES}
    for name, value in results.get("baselines", {}).items():
        out[f"baseline_{name}"] = value
    drift = results.get("drift")
    if drift:
        times = list(drift["recovered_seconds"].values())
        done = [t for t in times if t is not None]
        out["drift_recovered"] = len(done) / len(times) if times else None
        out["drift_recovery_seconds"] = max(done) if done and len(done) == len(times) else None
        out["drift_others_moved"] = drift.get("others_moved")
    arrivals = results.get("arrivals")
    if arrivals:
        placed = [a["placed_seconds"] for a in arrivals]
        done = [t for t in placed if t is not None]
        out["arrivals_placed"] = len(done) / len(placed)
        out["arrivals_placed_seconds"] = max(done) if len(done) == len(placed) else None
        out["arrivals_others_moved"] = results.get("others_moved_after_arrivals")
    departures = results.get("departures")
    if departures:
        kept = [d["kept_model"] for d in departures if d["others_accuracy_before"] is not None]
        out["departures_kept_model"] = sum(kept) / len(kept) if kept else None
    return out


def summarise(runs: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """Median, min and max of every figure over runs (e.g. seeds); ``missing`` counts the runs
    where a figure was None (e.g. a target never reached), which the three numbers leave out."""
    per_run = [figures(r) for r in runs]
    keys = list(dict.fromkeys(k for f in per_run for k in f))
    out: dict[str, dict[str, Any]] = {}
    for key in keys:
        values = [f.get(key) for f in per_run]
        known = sorted(float(v) for v in values if v is not None)
        out[key] = {
            "median": round(statistics.median(known), 4) if known else None,
            "min": round(known[0], 4) if known else None,
            "max": round(known[-1], 4) if known else None,
            "missing": len(values) - len(known),
        }
    return out


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def print_summary(
    runs: Mapping[str, Mapping[str, Any]],
    baselines: Mapping[str, BaselineResult],
    console: Console | None = None,
    title: str = "Group choice",
) -> Table:
    """Print one row per policy run and per baseline; return the rich table."""
    table = Table(title=title)
    for col in ("run", "mean acc", "purity", "groups", "migrations", "rounds", "seconds"):
        table.add_column(col, justify="left" if col == "run" else "right")
    for name, r in runs.items():
        table.add_row(
            name,
            _fmt(r["mean_accuracy"]),
            _fmt(r["purity"]),
            str(r["groups"]),
            str(r["migrations"]),
            str(r["rounds"]),
            f"{r['wall_seconds']:.1f}",
        )
    for name, b in baselines.items():
        table.add_row(
            f"baseline {name}", _fmt(b.mean), "", str(b.groups), "", "", f"{b.seconds:.1f}"
        )
    (console or Console()).print(table)
    return table


def plot_accuracy(
    curves: Mapping[str, Sequence[float]], path: str | Path, title: str = "Mean accuracy"
) -> Path:
    """Plot mean accuracy per round, one line per policy mode or baseline, to a PNG.

    matplotlib (the ``plot`` extra) is imported here only, with the non-interactive backend.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for name, ys in curves.items():
        style = "--" if name.startswith("baseline") else "-"
        ax.plot(range(1, len(ys) + 1), list(ys), style, label=name)
    ax.set_xlabel("round")
    ax.set_ylabel("mean accuracy (own test split)")
    ax.set_ylim(0, 1)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize="small")
    out = Path(path)
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out


def compare(
    scenario: str,
    nodes: int,
    concepts: int,
    capacity: int,
    modes: Sequence[str],
    rounds: int,
    seed: int = 0,
    eval_every: int = 1,
    *,
    epochs: int = 2,
    alpha: float = 0.5,
    blend_weight: float = 0.5,
    json_path: str | Path | None = None,
    plot_path: str | Path | None = None,
    console: Console | None = None,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Simulate each policy mode and the baselines on the same shards; print, save, plot.

    ``progress`` (default: None) is told what starts: ``baselines``, then ``MODE round R``.
    """
    from mycelium_p2p.experiment.baselines import run_baselines
    from mycelium_p2p.experiment.scenarios import load_scenario
    from mycelium_p2p.experiment.simulate import simulate

    tell = progress or (lambda _what: None)
    exp = load_scenario(scenario, nodes, concepts, seed, alpha=alpha)
    tell("baselines")
    baselines = run_baselines(exp, capacity, rounds, epochs, seed)
    runs: dict[str, dict[str, Any]] = {}
    for mode in modes:
        sim = simulate(
            capacity=capacity,
            policy_mode=mode,
            rounds=rounds,
            seed=seed,
            eval_every=eval_every,
            epochs=epochs,
            blend_weight=blend_weight,
            data=exp,
            on_round=lambda r, mode=mode: tell(f"{mode} round {r}"),  # type: ignore[misc]
        )
        runs[mode] = build_results(
            nodes=sim.nodes,
            rounds=sim.rounds,
            wall_seconds=sim.wall_seconds,
            migrations=sim.migrations,
            policy=mode,
            baselines=baselines,
            history=sim.history,
            foundings=sim.foundings,
            scenario=scenario,
            capacity=capacity,
            eval_every=eval_every,
            seed=seed,
            blend_weight=blend_weight,
        )
    title = f"Simulation: {scenario}, {nodes} nodes, {concepts} concepts, capacity {capacity}"
    print_summary(runs, baselines, console, title)
    out = {"scenario": scenario, "nodes": nodes, "concepts": concepts, "runs": runs}
    if json_path is not None:
        Path(json_path).write_text(json.dumps(out, indent=1))
    if plot_path is not None:
        curves = {m: [h["mean_accuracy"] for h in r["history"]] for m, r in runs.items()}
        curves.update({f"baseline {k}": b.history for k, b in baselines.items()})
        plot_accuracy(curves, plot_path, title)
    return out
