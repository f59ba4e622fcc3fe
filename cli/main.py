"""Entry point of the ``mycelium`` command: one click group, commands registered from modules."""

from __future__ import annotations

import importlib
from typing import Any

import click


class Mycelium(click.Group):
    """The root group: an unexpected error is one line, its traceback only with ``--debug``."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.ClickException, click.exceptions.Exit, click.Abort, SystemExit):
            raise
        except Exception as exc:
            from cli.common import debugging

            if debugging(ctx):
                raise
            what = " ".join(str(exc).split()) or type(exc).__name__
            raise click.ClickException(
                f"{what} ({type(exc).__name__}; run with --debug for the traceback)"
            ) from exc


@click.group(
    cls=Mycelium,
    context_settings={"help_option_names": ["-h", "--help"]},
    epilog='Shell completion: see the README (eval "$(_MYCELIUM_COMPLETE=bash_source mycelium)").',
)
@click.version_option(package_name="mycelium-p2p")
@click.option(
    "--debug",
    is_flag=True,
    envvar="MYCELIUM_DEBUG",
    show_envvar=True,
    help="Show the traceback of an unexpected error.",
)
@click.pass_context
def main(ctx: click.Context, debug: bool) -> None:
    """Mycelium: a peer-to-peer network of federated-learning groups."""
    if debug:
        ctx.meta["mycelium.debug"] = True


class LazyGroup(click.Group):
    """A group whose listed ``lazy`` commands are imported only when invoked (fast --help)."""

    def __init__(self, *args: Any, lazy: dict[str, str] | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.lazy = lazy or {}

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted([*super().list_commands(ctx), *self.lazy])

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name in self.lazy:
            module, attr = self.lazy[name].split(":")
            command: click.Command = getattr(importlib.import_module(module), attr)
            return command
        return super().get_command(ctx, name)


@main.group(
    cls=LazyGroup,
    # The in-process simulation of group-choice rules (no network), for quick comparisons.
    lazy={"policy": "cli.bench_policy:command"},
)
def bench() -> None:
    """Benchmarks: a table, or JSON (--json: on stdout, --output FILE: a file)."""


# Commands live beside this module, one module per area; each registers itself here.
# (imports at the bottom so that the modules can import ``main`` and ``bench``.)
from cli import (  # noqa: E402, F401
    bench_drift,
    bench_identity,
    bench_network,
    bench_rounds,
    byzantine_cmds,
    demo_cmds,
    experiment_cmds,
    gossip_cmds,
    node_cmds,
    registry_cmds,
    status_cmds,
    task_cmds,
    viz_cmds,
)

if __name__ == "__main__":
    # Under ``python -m cli.main`` this module is ``__main__``; the command modules registered
    # themselves on the imported ``cli.main``, so run that group, not this module's empty copy.
    from cli.main import main as registered_main

    registered_main()
