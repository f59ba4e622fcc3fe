"""``mycelium bench policy``: the group-choice rules simulated in one process (no network).

Loaded only when invoked (see ``cli.main``): it imports torch.
"""

from __future__ import annotations

import importlib.util
import io
from pathlib import Path

import click
from rich.console import Console

from cli.common import alpha_option, blend_weight_option, fail
from cli.output import Results, json_options, progress_bar
from mycelium_p2p.policy import MODES


@click.command("policy")
@click.option(
    "--scenario",
    type=click.Choice(["iid", "label-shift", "rotation", "dirichlet"]),
    default="label-shift",
)
@click.option("--nodes", type=click.IntRange(1, 500), default=16, show_default=True)
@click.option("--concepts", type=click.IntRange(1, 64), default=4, show_default=True)
@alpha_option
@click.option("--capacity", type=click.IntRange(1), default=5, show_default=True)
@click.option("--policy", "modes", type=click.Choice(list(MODES)), multiple=True)
@click.option("--rounds", type=click.IntRange(1), default=40, show_default=True)
@click.option("--eval-every", type=click.IntRange(1), default=1, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@blend_weight_option
@json_options
@click.option(
    "--plot",
    "plot_path",
    type=click.Path(dir_okay=False),
    default=None,
    help="PNG of mean accuracy per round (needs matplotlib: the plot extra).",
)
def command(
    scenario: str,
    nodes: int,
    concepts: int,
    alpha: float,
    capacity: int,
    modes: tuple[str, ...],
    rounds: int,
    eval_every: int,
    seed: int,
    blend_weight: float,
    json_target: str | None,
    output_path: Path | None,
    plot_path: str | None,
) -> None:
    """Simulate group choice in one process and compare it with the baselines."""
    from mycelium_p2p.experiment.report import compare

    if plot_path is not None and importlib.util.find_spec("matplotlib") is None:
        fail("--plot needs matplotlib: pip install 'mycelium-p2p[plot]'")
    results_to = Results.chosen(json_target, output_path)
    chosen = list(modes) or list(MODES)
    with progress_bar("policy") as bar:  # the baselines first, then every round of every mode
        task = bar.add_task("", total=rounds * len(chosen))

        def tell(what: str) -> None:
            bar.update(task, advance=0 if what == "baselines" else 1, description=what)

        out = compare(
            scenario,
            nodes,
            concepts,
            capacity,
            chosen,
            rounds,
            seed,
            eval_every,
            alpha=alpha,
            blend_weight=blend_weight,
            plot_path=plot_path,
            console=Console(file=io.StringIO()) if results_to.to_stdout else None,
            progress=tell,
        )
    results_to.emit(out)
