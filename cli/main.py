"""Entry point of the ``mycelium`` command: one click group, commands registered from modules."""

from __future__ import annotations

import click


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="mycelium-p2p")
def main() -> None:
    """Mycelium: a peer-to-peer network of federated-learning groups."""


@main.group()
def bench() -> None:
    """Benchmarks that print a table and write JSON."""


# Commands live beside this module, one module per area; each registers itself here.
# (imports at the bottom so that the modules can import ``main`` and ``bench``.)
from cli import (  # noqa: E402, F401
    bench_rounds,
    byzantine_cmds,
    demo_cmds,
    experiment_cmds,
    gossip_cmds,
    node_cmds,
    registry_cmds,
    viz_cmds,
)

if __name__ == "__main__":
    # Under ``python -m cli.main`` this module is ``__main__``; the command modules registered
    # themselves on the imported ``cli.main``, so run that group, not this module's empty copy.
    from cli.main import main as registered_main

    registered_main()
