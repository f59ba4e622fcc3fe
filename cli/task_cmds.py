"""``mycelium task check``: build a task once, run one fit and one evaluate, say what it is."""

from __future__ import annotations

import click

from cli.main import main
from cli.node_cmds import task_option_flag


@main.group()
def task() -> None:
    """Your own model and data as a Mycelium task (see docs/tasks.md)."""


@task.command("check")
@click.argument("reference", metavar="MODULE:ATTR")
@task_option_flag("Keyword argument of the factory (repeatable; values are strings).")
def check(reference: str, options: dict[str, str] | None) -> None:
    """Build the task MODULE:ATTR (or path/to/file.py:ATTR), run one fit and one evaluate, check
    everything they return, and print the spec, the parameter count and the time per fit and
    per probe; or one line naming what is wrong (exit status 1)."""
    import logging

    from mycelium_p2p.learning.loader import load_task
    from mycelium_p2p.learning.task import TaskError, check_task

    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    logging.getLogger("mycelium_p2p.learning.task").setLevel(logging.INFO)  # how it is scored
    try:
        report = check_task(load_task(reference, options))
    except TaskError as exc:
        raise click.ClickException(f"task {reference}: {exc}") from None
    spec, sizes, fitted, scored = report.spec, report.sizes, report.fitted, report.scored
    probe = "all" if report.probe_samples is None else str(report.probe_samples)
    data = f"train {sizes.train}, validation {sizes.val} (a probe uses {probe}), test {sizes.test}"
    fit = f"{report.fit_seconds:.3f} s ({fitted.examples} examples, loss {fitted.loss:.4g})"
    scores = f"score {scored.accuracy:.4f}, loss {scored.loss:.4g}"
    lines = [
        ("spec", spec.key),
        ("arrays", f"{len(spec.arrays)}: {spec.listing()}"),
        ("parameters", f"{spec.parameter_count:,} ({spec.nbytes / 1024:,.1f} KiB)"),
        ("data", data),
        ("fit", fit),
        ("probe", f"{report.probe_seconds:.3f} s ({scored.examples} examples, {scores})"),
    ]
    width = max(len(k) for k, _ in lines)
    for key, value in lines:
        click.echo(f"{key:<{width}}  {value}")
    click.echo("ok: this task can join a Mycelium network")
