"""Plot mean node accuracy over time from ``mycelium experiment --json`` files.

Usage: ``python scripts/plot_experiments.py OUT.png TITLE=RUN.json[,RUN.json...] ...``

Each ``TITLE=...`` argument is one panel; each JSON file in it is one curve (labelled by its
policy), and the first file's baselines are drawn as dashed horizontal lines.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt


def main(out: str, panels: list[str]) -> None:
    fig, axes = plt.subplots(1, len(panels), figsize=(6 * len(panels), 4), squeeze=False)
    for ax, panel in zip(axes[0], panels, strict=True):
        title, files = panel.split("=", 1)
        runs = [json.loads(Path(f).read_text()) for f in files.split(",")]
        for run in runs:
            seconds = [h["seconds"] for h in run["history"]]
            accuracy = [h["mean_accuracy"] for h in run["history"]]
            ax.plot(seconds, accuracy, label=f"{run['policy']} (Mycelium)")
        for name, value in runs[0]["baselines"].items():
            if value is not None:
                ax.axhline(value, linestyle="--", linewidth=1, color="grey")
                ax.annotate(f"{name} {value:.2f}", (0, value), fontsize=8, va="bottom")
        ax.set_title(title)
        ax.set_xlabel("seconds since start")
        ax.set_ylabel("mean node accuracy (own test split)")
        ax.set_ylim(0, 1)
        ax.grid(alpha=0.3)
        ax.legend(loc="lower right", fontsize="small")
    fig.tight_layout()
    fig.savefig(out, dpi=100)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2:])
