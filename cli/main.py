"""Entry point of the ``mycelium`` command: one click group, commands registered from modules."""

from __future__ import annotations

import importlib
from typing import Any

import click


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="mycelium-p2p")
def main() -> None:
    """Mycelium: a peer-to-peer network of federated-learning groups."""


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
    lazy={"policy": "cli.experiment_cmds:policy_sim"},
)
def bench() -> None:
    """Benchmarks that print a table and write JSON."""


# Commands live beside this module, one module per area; each registers itself here.
# (imports at the bottom so that the modules can import ``main`` and ``bench``.)
from cli import (  # noqa: E402, F401
    bench_identity,
    bench_network,
    bench_rounds,
    byzantine_cmds,
    demo_cmds,
    experiment_cmds,
    gossip_cmds,
    node_cmds,
    registry_cmds,
    task_cmds,
    viz_cmds,
)

if __name__ == "__main__":
    # Under ``python -m cli.main`` this module is ``__main__``; the command modules registered
    # themselves on the imported ``cli.main``, so run that group, not this module's empty copy.
    from cli.main import main as registered_main

    registered_main()
