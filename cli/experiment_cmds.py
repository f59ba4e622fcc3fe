"""``mycelium experiment`` (the real system on partitioned data, scored) and ``mycelium bench
policy`` (the in-process simulation of group choice). Both parse, call the library
(``mycelium_p2p.experiment``) and print."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from cli.common import alpha_option, blend_weight_option
from cli.main import main
from cli.node_cmds import configure_logging
from cli.output import Results, json_options, progress_bar

SCENARIO_NAMES = ["iid", "label-shift", "rotation", "dirichlet", "drift"]


def _seeds(ctx: click.Context, param: click.Parameter, value: str | None) -> list[int] | None:
    if value is None:
        return None
    try:
        seeds = [int(part) for part in value.split(",") if part.strip()]
    except ValueError:
        raise click.BadParameter(f"expected integers separated by commas, got {value!r}") from None
    if not seeds or len(set(seeds)) != len(seeds):
        raise click.BadParameter(f"expected distinct integers separated by commas, got {value!r}")
    return seeds


@main.command()
@click.option("--scenario", type=click.Choice(SCENARIO_NAMES), default="label-shift")
@click.option("--nodes", type=click.IntRange(min=1), default=16, show_default=True)
@click.option("--concepts", type=click.IntRange(min=1), default=4, show_default=True)
@alpha_option
@click.option("--policy", type=click.Choice(["probe", "reported"]), default="probe")
@click.option("--capacity", type=click.IntRange(min=1), default=5, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option(
    "--seeds",
    callback=_seeds,
    metavar="S1,S2,...",
    help="Run once per seed; report median, min and max of every figure.",
)
@click.option("--duration", type=click.FloatRange(min=1), help="Stop after this many seconds.")
@click.option("--rounds", type=click.IntRange(min=1), help="Stop when every group reached R.")
@click.option(
    "--shards", type=click.Path(file_okay=False), help="Folder of .npz shards, one per node."
)
@click.option(
    "--drift-at",
    type=click.FloatRange(min=0),
    help="Seconds into the run when drifting nodes switch data (default: half the duration).",
)
@click.option(
    "--drift-shards",
    type=click.Path(file_okay=False),
    help="Folder of .npz shards: each node whose shard name is there switches to it.",
)
@click.option("--arrivals", type=click.IntRange(min=0), default=0, help="Late nodes (the last N).")
@click.option("--arrival-interval", type=click.FloatRange(min=0.1), default=5.0, show_default=True)
@click.option("--leaves", type=click.IntRange(min=0), default=0, help="Members that leave.")
@click.option("--crashes", type=click.IntRange(min=0), default=0, help="Leaders that crash.")
@click.option(
    "--depart-at",
    type=click.FloatRange(min=0),
    help="Seconds into the run of the first departure (default: half the duration).",
)
@click.option("--depart-interval", type=click.FloatRange(min=0.1), default=5.0, show_default=True)
@click.option("--ifca-k", type=click.IntRange(min=1), help="IFCA's k (default: true concepts).")
@blend_weight_option
@json_options
@click.option(
    "--plot",
    "plot_path",
    type=click.Path(dir_okay=False),
    help="Plot accuracy over time with the events marked (PNG; needs matplotlib).",
)
@click.option("--no-baselines", is_flag=True, help="Skip the baselines.")
@click.option("--log-level", default="WARNING", type=click.Choice(["DEBUG", "INFO", "WARNING"]))
def experiment(
    json_target: str | None,
    output_path: Path | None,
    plot_path: str | None,
    no_baselines: bool,
    log_level: str,
    **opts: Any,
) -> None:
    """Run registry, gossip and Flower for real on partitioned data; score the grouping."""
    from bootstrap.server import cluster_registry
    from mycelium_p2p.experiment.report import summarise
    from mycelium_p2p.experiment.run import run_experiment
    from mycelium_p2p.learning.data import DataSpecError

    if opts["duration"] is not None and opts["rounds"] is not None:
        raise click.UsageError("give --duration or --rounds, not both")
    if opts["duration"] is None and opts["rounds"] is None:
        opts["duration"] = 120.0
    configure_logging(log_level)
    results_to = Results.chosen(json_target, output_path)
    console = results_to.console  # stderr while stdout carries the JSON
    seeds = opts.pop("seeds") or [opts["seed"]]
    runs = []
    for seed in seeds:
        try:
            plan = _plan({**opts, "seed": seed}, baselines=not no_baselines)
        except (DataSpecError, ValueError) as exc:
            raise click.UsageError(str(exc)) from exc
        if len(seeds) > 1:
            console.print(f"[bold]seed {seed}[/bold]")
        with _progress() as show:
            runs.append(run_experiment(plan, cluster_registry, show))
        print_results(runs[-1], console)
    out: dict[str, Any] = runs[0]
    if len(seeds) > 1:
        out = {"seeds": seeds, "runs": runs, "summary": summarise(runs)}
        print_summary(out["summary"], console)
    results_to.emit(out)
    if plot_path:
        _plot({opts["scenario"] if not opts["shards"] else "shards": runs}, plot_path, console)


@main.command("experiment-plot")
@click.argument("files", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False))
@click.option("--out", "plot_path", required=True, type=click.Path(dir_okay=False))
@click.option("--title", "titles", multiple=True, help="Panel titles, one per file, in order.")
def experiment_plot(files: tuple[str, ...], plot_path: str, titles: tuple[str, ...]) -> None:
    """Plot results of ``mycelium experiment --json``, one panel per file (PNG)."""
    from mycelium_p2p.experiment.plot import runs_of

    if titles and len(titles) != len(files):
        raise click.UsageError(f"{len(titles)} titles for {len(files)} files")
    panels: dict[str, list[dict[str, Any]]] = {}
    for k, name in enumerate(files):
        try:
            runs = runs_of(json.loads(Path(name).read_text()))
            if not all(isinstance(r, dict) and "timeline" in r for r in runs):
                raise ValueError("no timeline")
        except (ValueError, KeyError, TypeError) as exc:
            raise click.UsageError(f"{name}: not results of mycelium experiment ({exc})") from exc
        panels[titles[k] if titles else Path(name).stem] = runs
    _plot(panels, plot_path, Console())


def _plot(panels: dict[str, list[dict[str, Any]]], path: str, console: Console) -> None:
    try:
        from mycelium_p2p.experiment.plot import plot_timelines

        Path(path).parent.mkdir(parents=True, exist_ok=True)
        plot_timelines(panels, path)
    except ImportError as exc:
        raise click.ClickException(f"plotting needs matplotlib (the test extra): {exc}") from exc
    console.print(f"plot written to {path}")


def _plan(opts: dict[str, Any], *, baselines: bool) -> Any:
    """The library's plan of one run from the command's options (ValueError: a bad mix)."""
    from mycelium_p2p.experiment.run import Churn, Plan
    from mycelium_p2p.experiment.scenarios import (
        drift_data,
        load_drift_shards,
        load_scenario,
        load_shards,
    )

    seed, scenario = opts["seed"], opts["scenario"]
    if opts["shards"]:
        if scenario == "drift":
            raise ValueError("--scenario drift deals the bundled digits; with --shards, drift "
                             "with --drift-shards DIR")  # fmt: skip
        exp = load_shards(opts["shards"], seed)
    else:
        exp = load_scenario(scenario, opts["nodes"], opts["concepts"], seed, alpha=opts["alpha"])
    drift: dict[int, Any] = {}
    if opts["drift_shards"]:
        if not opts["shards"]:
            raise ValueError("--drift-shards needs --shards (the shards it replaces)")
        drift = load_drift_shards(exp, opts["drift_shards"], seed)
    elif scenario == "drift":
        drift = drift_data(exp, opts["concepts"], seed)
    elif opts["drift_at"] is not None:
        raise ValueError("--drift-at needs --scenario drift or --drift-shards DIR")
    drift_at = opts["drift_at"]
    if drift and drift_at is None:
        if opts["duration"] is None:
            raise ValueError("give --drift-at when the run is bounded by --rounds")
        drift_at = opts["duration"] / 2
    churn = Churn(
        arrivals=opts["arrivals"],
        arrival_interval=opts["arrival_interval"],
        leaves=opts["leaves"],
        crashes=opts["crashes"],
        depart_at=opts["depart_at"],
        depart_interval=opts["depart_interval"],
    )
    label = "shards" if opts["shards"] else scenario
    return Plan(
        exp=exp,
        scenario=label,
        concepts=exp.concept_count if opts["shards"] else opts["concepts"],
        policy=opts["policy"],
        capacity=opts["capacity"],
        seed=seed,
        duration=opts["duration"],
        rounds=opts["rounds"],
        baselines=baselines,
        drift=drift,
        drift_at=drift_at if drift else None,
        churn=churn,
        ifca_k=opts["ifca_k"],
        blend_weight=opts["blend_weight"],
    )


class _progress:
    """A progress bar on stderr while a person watches (nothing in pipes and CI), fed by the
    run's status."""

    def __init__(self) -> None:
        bar = progress_bar("experiment")
        self.bar: Progress | None = None if bar.disable else bar
        self.task: Any = None

    def __enter__(self) -> Any:
        if self.bar is None:
            return None
        self.bar.start()
        self.task = self.bar.add_task("starting", total=None)
        return self.show

    def show(self, status: Any) -> None:
        assert self.bar is not None
        if status.phase == "baselines":
            text = f"baselines: round {status.baseline_round}/{status.baseline_rounds}"
        else:
            text = (
                f"round {status.round}, {status.groups} groups, {status.live} nodes, "
                f"{status.elapsed:.0f}s"
            )
        self.bar.update(self.task, description=text)

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.stop()


def _num(value: Any, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def print_results(results: dict[str, Any], console: Console) -> None:
    """Per-node rows, then the run against its baselines, then drift and churn."""
    table = Table(title=f"nodes ({results['policy']} policy)")
    for column in ("name", "shard", "concept", "group", "accuracy"):
        table.add_column(column)
    for row in results["nodes"]:
        table.add_row(*(str(row[c]) for c in ("name", "shard", "concept", "group", "accuracy")))
    console.print(table)
    summary = Table(title="run")
    columns = ("mean accuracy", "purity", "groups", "migrations", "rounds", "seconds", "to target")
    for column in columns:
        summary.add_column(column, justify="right")
    summary.add_row(
        f"{results['mean_accuracy']:.3f}",
        _num(results["purity"]),
        str(results["groups"]),
        str(results["migrations"]),
        str(results["rounds"]),
        f"{results['wall_seconds']:.0f}",
        _num(results.get("seconds_to_target"), 0),
    )
    console.print(summary)
    base = results["baselines"]
    console.print(
        "baselines (mean accuracy): "
        + ", ".join(f"{k} {_num(v)}" for k, v in base.items())
        + f" ({results.get('baseline_seconds', 0):.0f} s)"
    )
    drift = results.get("drift")
    if drift:
        recovered = ", ".join(
            f"{name} {_num(s, 0)}" for name, s in drift["recovered_seconds"].items()
        )
        console.print(f"drift at {drift['at']:.0f} s, recovered after (s): {recovered}")
    for row in results.get("arrivals", []):
        console.print(
            f"arrival {row['name']} at {row['at']:.0f} s (concept {row['concept']}): "
            f"with its kin after {_num(row['placed_seconds'], 0)} s, in {row['group']}"
        )
    for row in results.get("departures", []):
        console.print(
            f"{row['how']} of {row['name']} at {row['at']:.0f} s (leader: {row['was_leader']}): "
            f"its group went on from round {row['round_before']} to {row['round_after']}"
        )


def print_summary(summary: dict[str, dict[str, Any]], console: Console) -> None:
    """Median, min and max of every figure over the seeds."""
    table = Table(title="over seeds")
    for column in ("figure", "median", "min", "max", "missing"):
        table.add_column(column, justify="left" if column == "figure" else "right")
    for name, v in summary.items():
        table.add_row(name, _num(v["median"]), _num(v["min"]), _num(v["max"]), str(v["missing"]))
    console.print(table)
