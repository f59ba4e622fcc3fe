"""``mycelium bench byzantine``: each group strategy against one poisoning member of five."""

from __future__ import annotations

import logging
import statistics
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
from rich.table import Table

from cli.main import bench
from cli.output import Results, json_options, steps

DEFAULT_STRATEGIES = "fedavg,trimmed-mean,median,krum,multikrum,bulyan"
DEFAULT_ATTACKS = "scaled,signflip,random"


def _names(value: str, known: tuple[str, ...], what: str) -> list[str]:
    names = [n.strip().lower() for n in value.split(",") if n.strip()]
    unknown = [n for n in names if n not in known]
    if not names or unknown:
        raise click.BadParameter(
            f"unknown {what} {', '.join(unknown) or '(none given)'}; known: {', '.join(known)}"
        )
    return names


def run_bench(
    strategies: list[str],
    attacks: list[str],
    rounds: int,
    seeds: list[int],
    step: Callable[[str], None] = lambda _what: None,
) -> list[dict[str, Any]]:
    """Clean and attacked accuracy (mean over ``seeds``) for every strategy and attack;
    ``step`` is told what starts (one step per strategy and per attack)."""
    from mycelium_p2p.learning.byzantine import CLEAN, measure

    rows: list[dict[str, Any]] = []
    for strategy in strategies:
        step(f"{strategy}, clean")
        clean = [measure(strategy, CLEAN, seed=s, rounds=rounds).accuracy for s in seeds]
        clean_mean = statistics.fmean(clean)
        for attack in attacks:
            step(f"{strategy}, {attack}")
            runs = [measure(strategy, attack, seed=s, rounds=rounds) for s in seeds]
            attacked = statistics.fmean(r.accuracy for r in runs)
            rows.append(
                {
                    "strategy": strategy,
                    "attack": attack,
                    "clean_accuracy": clean_mean,
                    "attacked_accuracy": attacked,
                    "drop": clean_mean - attacked,
                    "clean_runs": clean,
                    "attacked_runs": [r.accuracy for r in runs],
                    "rejected": sum(r.rejected for r in runs),
                    "seconds": sum(r.seconds for r in runs),
                }
            )
    return rows


@bench.command("byzantine")
@click.option("--strategies", default=DEFAULT_STRATEGIES, show_default=True)
@click.option("--attacks", default=DEFAULT_ATTACKS, show_default=True)
@click.option("--rounds", type=click.IntRange(1, 200), default=10, show_default=True)
@click.option(
    "--seeds", type=click.IntRange(1, 20), default=1, show_default=True, help="Runs averaged."
)
@json_options
def bench_byzantine(
    strategies: str,
    attacks: str,
    rounds: int,
    seeds: int,
    json_target: str | None,
    output_path: Path | None,
) -> None:
    """Accuracy of a 5-member digits:iid group, clean and with 1 poisoning member."""
    from mycelium_p2p.learning.byzantine import ATTACKS
    from mycelium_p2p.learning.flower import STRATEGIES
    from mycelium_p2p.learning.train import limit_threads

    chosen = _names(strategies, STRATEGIES, "strategy")
    chosen_attacks = _names(attacks, ATTACKS, "attack")
    limit_threads()
    # Fallback and rejection warnings are expected here; the table says what matters.
    logging.getLogger("mycelium_p2p.learning.flower").setLevel(logging.ERROR)
    results_to = Results.chosen(json_target, output_path)
    with steps("byzantine", len(chosen) * (1 + len(chosen_attacks))) as step:
        rows = run_bench(chosen, chosen_attacks, rounds, list(range(seeds)), step)
    table = Table(title=f"1 poisoning member of 5, digits:iid, {rounds} rounds, {seeds} seed(s)")
    for column in ("strategy", "attack", "clean acc", "attacked acc", "drop", "rejected"):
        table.add_column(column, justify="left" if column in ("strategy", "attack") else "right")
    for row in rows:
        table.add_row(
            row["strategy"],
            row["attack"],
            f"{row['clean_accuracy']:.3f}",
            f"{row['attacked_accuracy']:.3f}",
            f"{row['drop']:+.3f}",
            str(row["rejected"]),
        )
    results_to.show(table)
    results_to.emit({"rounds": rounds, "seeds": seeds, "members": 5, "attackers": 1, "rows": rows})
