"""The timeline plot of real-system runs: mean accuracy over time, the baselines, and the events
(drift, arrivals, departures) as marks on the time axis.

matplotlib (in the ``test`` extra) is imported only when a plot is drawn, with the
non-interactive backend.
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

#: Line style of each event mark.
EVENT_STYLES = {
    "drift": {"color": "tab:red", "linestyle": "--"},
    "arrival": {"color": "tab:green", "linestyle": ":"},
    "crash": {"color": "black", "linestyle": "-"},
    "leave": {"color": "tab:gray", "linestyle": "-."},
}
BASELINE_COLORS = {
    "oracle": "tab:purple",
    "ifca": "tab:orange",
    "alone": "tab:brown",
    "global": "tab:olive",
}


def runs_of(results: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """The runs in a results file: one, or one per seed (``{"seeds", "runs", "summary"}``)."""
    return list(results["runs"]) if "runs" in results else [results]


def events(run: Mapping[str, Any]) -> list[tuple[str, float]]:
    """``(kind, seconds)`` of every drift, arrival and departure of a run."""
    out: list[tuple[str, float]] = []
    drift = run.get("drift")
    if drift and drift.get("at") is not None:
        out.append(("drift", float(drift["at"])))
    out += [("arrival", float(a["at"])) for a in run.get("arrivals", [])]
    out += [(d["how"], float(d["at"])) for d in run.get("departures", [])]
    return out


def plot_timelines(panels: Mapping[str, Sequence[Mapping[str, Any]]], path: str | Path) -> Path:
    """One panel per case (title -> its runs, e.g. one per seed) to a PNG.

    Each run's mean accuracy over time is a line; the baselines' median accuracy over the runs a
    horizontal line; each event a vertical mark (styles in :data:`EVENT_STYLES`).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    count = len(panels)
    columns = min(count, 2)
    rows = (count + columns - 1) // columns
    fig, axes = plt.subplots(rows, columns, figsize=(6.5 * columns, 3.6 * rows), squeeze=False)
    for ax, (title, runs) in zip(axes.flat, panels.items(), strict=False):
        for k, run in enumerate(runs):
            timeline = run.get("timeline") or []
            xs = [s["seconds"] for s in timeline]
            ys = [s["mean_accuracy"] for s in timeline]
            label = "mycelium" if k == 0 else None
            ax.plot(xs, ys, color="tab:blue", alpha=1.0 if k == 0 else 0.5, label=label)
            for kind, at in events(run):
                ax.axvline(at, linewidth=1, alpha=0.7, **EVENT_STYLES.get(kind, {}))  # type: ignore[arg-type]
        for name, color in BASELINE_COLORS.items():
            values = [r["baselines"].get(name) for r in runs if r.get("baselines")]
            known = [v for v in values if v is not None]
            if known:
                level = statistics.median(known)
                ax.axhline(
                    level, color=color, linewidth=1, linestyle="--", label=f"{name} baseline"
                )
        kinds = {kind for run in runs for kind, _ in events(run)}
        for kind in sorted(kinds):  # one legend entry per kind of event
            ax.plot([], [], linewidth=1, label=kind, **EVENT_STYLES.get(kind, {}))  # type: ignore[arg-type]
        ax.set_title(title, fontsize="medium")
        ax.set_xlabel("seconds")
        ax.set_ylabel("mean accuracy")
        ax.set_ylim(0, 1)
        ax.grid(alpha=0.3)
        ax.legend(loc="lower right", fontsize="x-small")
    for ax in list(axes.flat)[count:]:
        ax.set_visible(False)
    out = Path(path)
    fig.tight_layout()
    fig.savefig(out, dpi=90)
    plt.close(fig)
    return out
