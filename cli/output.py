"""How results leave a command: ``--json`` on stdout, ``--output FILE``, tables, progress bars.

``--json`` means JSON on stdout, and then nothing else goes there. ``--output FILE`` writes the
same document to a file. On ``bench`` and ``experiment``, ``--json FILE`` (the old spelling of
``--output FILE``) still works and says it is deprecated. Progress bars go to stderr, only when a
person watches it (a terminal, not a CI job).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from cli.common import warn
from cli.logs import interactive

F = TypeVar("F", bound=Callable[..., Any])

STDOUT = "-"


def json_options(f: F) -> F:
    """``--json`` (JSON on stdout; ``--json FILE``: deprecated) and ``--output FILE``."""
    f = click.option(
        "--output",
        "output_path",
        type=click.Path(dir_okay=False, path_type=Path),
        metavar="FILE",
        help="Write the results as JSON to FILE.",
    )(f)
    return click.option(
        "--json",
        "json_target",
        is_flag=False,
        flag_value=STDOUT,
        default=None,
        metavar="",
        help="Print the results as JSON on stdout (nothing else goes there).",
    )(f)


@dataclass(frozen=True)
class Results:
    """Where a command's JSON document goes, and the console for its human output."""

    to_stdout: bool
    path: Path | None

    @classmethod
    def chosen(cls, json_target: str | None, output_path: Path | None) -> Results:
        """From ``--json [FILE]`` and ``--output FILE``."""
        if json_target not in (None, STDOUT):
            warn(f"--json FILE is deprecated; use --output {json_target}")
            if output_path is not None:
                raise click.UsageError("give --output FILE once")
            return cls(False, Path(json_target))
        return cls(json_target == STDOUT, output_path)

    @property
    def console(self) -> Console:
        """Tables and notes: stdout, or stderr while stdout carries JSON."""
        return Console(stderr=self.to_stdout)

    def show(self, *renderables: Any) -> None:
        """Print tables and notes for people, unless stdout carries JSON."""
        if not self.to_stdout:
            console = Console()
            for item in renderables:
                console.print(item)

    def emit(self, document: Any) -> None:
        """Write the JSON document where it was asked for."""
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.path.write_text(json.dumps(document, indent=2) + "\n")
            click.echo(f"wrote {self.path}", err=self.to_stdout)
        if self.to_stdout:
            click.echo(json.dumps(document))


def progress_bar(label: str) -> Progress:
    """A rich progress bar on stderr; silent unless a person watches (terminal, not CI)."""
    console = Console(stderr=True)
    return Progress(
        TextColumn(f"[bold]{label}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.description}"),
        TimeElapsedColumn(),
        console=console,
        transient=True,
        disable=not interactive(console.file),
    )


@contextmanager
def steps(label: str, total: int) -> Iterator[Callable[[str], None]]:
    """A progress bar of ``total`` steps; the callable it gives says which step starts."""
    with progress_bar(label) as bar:
        task = bar.add_task("", total=total)
        started = 0

        def step(what: str) -> None:
            nonlocal started
            bar.update(task, completed=started, description=what)
            started += 1

        yield step
        bar.update(task, completed=total)
