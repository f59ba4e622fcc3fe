"""The docs a newcomer reads are true to the code and stand alone.

Links resolve inside the repository, nothing names a path outside it or an issue number, the
quick start stays two commands, and the defaults the docs quote are the code's.
"""

from __future__ import annotations

import re

import click

from cli.main import main
from mycelium_p2p.node_config import NodeConfig
from tests.helpers import ROOT

DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
SOURCES = [p for d in ("mycelium_p2p", "bootstrap", "cli", "viz") for p in (ROOT / d).rglob("*.py")]
LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")


def test_every_relative_link_resolves_inside_the_repository() -> None:
    broken = []
    for doc in DOCS:
        for target in LINK.findall(doc.read_text()):
            if re.match(r"[a-z]+:", target):
                continue  # a web address
            path = (doc.parent / target).resolve()
            if not path.is_relative_to(ROOT) or not path.exists():
                broken.append(f"{doc.relative_to(ROOT)}: {target}")
    assert not broken, broken


def test_nothing_points_outside_the_repository_or_to_an_issue() -> None:
    outside = re.compile(r"\.\./shared|/work/|/home/|\bissues? #?\d+", re.IGNORECASE)
    found = [
        f"{path.relative_to(ROOT)}: {match.group(0)}"
        for path in [*DOCS, *SOURCES, ROOT / "pyproject.toml", *(ROOT / "scripts").glob("*")]
        for match in outside.finditer(path.read_text())
    ]
    assert not found, found


def test_every_file_the_docs_name_exists() -> None:
    named = re.compile(r"`((?:mycelium_p2p|bootstrap|cli|viz|tests|scripts|docs)/[\w/.-]*\w)")
    missing = [
        f"{doc.relative_to(ROOT)}: {match.group(1)}"
        for doc in DOCS
        for match in named.finditer(doc.read_text())
        if not (ROOT / match.group(1)).exists()
    ]
    assert not missing, missing


def test_the_quick_start_is_two_commands() -> None:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```bash\n(.*?)```", section, re.DOTALL)
    assert block is not None
    commands = [line for line in block.group(1).splitlines() if line.strip()]
    assert len(commands) == 2, commands


def option_default(command: str, flag: str) -> object:
    cmd = main.get_command(click.Context(main), command)
    assert cmd is not None
    return next(p.default for p in cmd.params if flag in getattr(p, "opts", ()))


def test_the_defaults_the_docs_quote_are_the_codes() -> None:
    registry = (ROOT / "docs" / "registry.md").read_text()
    for flag in ("--suspect-after", "--dead-after", "--retention"):
        quoted = re.search(rf"\[{flag} (\d+)\]", registry)
        assert quoted is not None, flag
        assert float(quoted.group(1)) == option_default("bootstrap", flag), flag
    learning = (ROOT / "docs" / "learning.md").read_text()
    # The node's default (also GroupServer's; importing Flower here would cost seconds).
    assert f'strategy="{NodeConfig().group.strategy}"' in learning
    readme = (ROOT / "README.md").read_text()
    assert "never a 500" not in readme  # docs/registry.md documents the JSON 500
