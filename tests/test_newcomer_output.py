"""What a newcomer reads: ``--help`` naming every variable, ``--json`` on stdout everywhere,
``--output FILE``, progress bars only on a terminal, logs for people or machines, the demo.
"""

from __future__ import annotations

import json
import logging
import os
import pty
import re
import subprocess
import sys
import threading
from pathlib import Path

import click
import pytest
from click.testing import CliRunner
from rich.logging import RichHandler

from cli.logs import configure_logging
from cli.main import main
from mycelium_p2p.node_config import SECTION_OF, env_name
from mycelium_p2p.testing.processes import mycelium_command
from tests.reliability_support import CHILD_ENV


def command(*path: str) -> click.Command:
    ctx = click.Context(main)
    found: click.Command = main
    for name in path:
        assert isinstance(found, click.Group)
        sub = found.get_command(ctx, name)
        assert sub is not None, name
        found = sub
    return found


def help_of(cmd: click.Command, option: click.Option) -> str:
    record = option.get_help_record(click.Context(cmd))
    assert record is not None
    return " ".join(record)


def test_join_help_names_the_variable_of_every_flag() -> None:
    join = command("join")
    options = [p for p in join.params if isinstance(p, click.Option) and p.name != "help"]
    for option in options:
        text = help_of(join, option)
        assert "MYCELIUM_" in text, f"{option.opts}: {text}"
        if option.name in SECTION_OF:  # a node setting: its one name
            assert env_name(option.name) in text, f"{option.opts}: {text}"
    listing = CliRunner().invoke(main, ["join", "--help"]).output
    for name in SECTION_OF:  # the settings without a flag are listed too
        assert env_name(name) in listing


def test_bootstrap_help_names_the_variable_of_every_setting() -> None:
    bootstrap = command("bootstrap")
    output_only = {"help", "log_level", "log_format", "debug"}
    for option in bootstrap.params:
        if isinstance(option, click.Option) and option.name not in output_only:
            text = help_of(bootstrap, option)
            assert "MYCELIUM_" in text, f"{option.opts}: {text}"


@pytest.mark.parametrize("name", ["join", "status", "viz"])
def test_every_command_takes_the_registry_from_one_variable(name: str) -> None:
    cmd = command(name)
    option = next(p for p in cmd.params if "--bootstrap" in getattr(p, "opts", ()))
    assert "MYCELIUM_REGISTRY_URL" in help_of(cmd, option)  # type: ignore[arg-type]


@pytest.mark.parametrize("name", ["bootstrap", "join", "status", "viz"])
def test_every_command_that_takes_a_token_takes_a_token_file(name: str) -> None:
    opts = {o for p in command(name).params for o in getattr(p, "opts", ())}
    assert {"--token", "--token-file"} <= opts


def test_a_token_file_gives_its_first_line_and_a_token_alone_is_kept(tmp_path: Path) -> None:
    from cli.common import read_token

    secret = tmp_path / "secret"
    secret.write_text("s3cret\n")
    ctx = click.Context(command("status"))
    assert read_token(ctx, None, secret) == "s3cret"
    assert read_token(ctx, "typed", None) == "typed"


def test_json_means_json_on_stdout_and_output_writes_a_file(tmp_path: Path) -> None:
    runner = CliRunner()
    args = ["bench", "viz", "--nodes", "5", "--frames", "10"]
    printed = runner.invoke(main, [*args, "--json"])
    assert printed.exit_code == 0, printed.output
    assert json.loads(printed.stdout)["runs"][0]["nodes"] == 5  # nothing else on stdout
    out = tmp_path / "o.json"
    written = runner.invoke(main, [*args, "--output", str(out)])
    assert written.exit_code == 0 and "viewer cost per frame" in written.stdout
    assert json.loads(out.read_text())["runs"][0]["nodes"] == 5
    old = tmp_path / "old.json"
    alias = runner.invoke(main, [*args, "--json", str(old)])
    print(alias.stderr)
    assert alias.exit_code == 0 and json.loads(old.read_text())["runs"]
    assert alias.stderr.splitlines() == [f"Warning: --json FILE is deprecated; use --output {old}"]


def run_on_a_terminal(args: list[str], env: dict[str, str]) -> tuple[int, str]:
    """Run ``mycelium ARGS`` with its stderr on a pseudo-terminal; return what it drew there."""
    leader, follower = pty.openpty()
    process = subprocess.Popen(
        mycelium_command(*args), stdout=subprocess.PIPE, stderr=follower, env=env
    )
    os.close(follower)
    chunks: list[bytes] = []

    def drain() -> None:
        while True:
            try:
                data = os.read(leader, 4096)
            except OSError:  # EIO: the child closed its end
                return
            if not data:
                return
            chunks.append(data)

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    process.communicate(timeout=120)
    reader.join(timeout=10)
    os.close(leader)
    return process.returncode, b"".join(chunks).decode(errors="replace")


@pytest.mark.slow
def test_progress_bars_on_a_terminal_and_silence_in_pipes_and_ci() -> None:
    args = ["bench", "viz", "--nodes", "10,20", "--frames", "150"]
    env = {k: v for k, v in {**os.environ, **CHILD_ENV}.items() if k != "CI"}
    status, drawn = run_on_a_terminal(args, env)
    print(repr(drawn[-200:]))
    assert status == 0 and "viewer" in drawn and "━" in drawn  # the bar
    ci_status, in_ci = run_on_a_terminal(args, {**env, "CI": "true"})
    assert ci_status == 0 and in_ci == ""
    piped = subprocess.run(
        mycelium_command(*args), capture_output=True, text=True, env=env, timeout=120
    )
    assert piped.returncode == 0 and piped.stderr == ""


@pytest.mark.slow
def test_an_experiment_shows_its_progress_on_a_terminal(tmp_path: Path) -> None:
    args = ["experiment", "--nodes", "2", "--concepts", "1", "--duration", "6", "--no-baselines"]
    args += ["--output", str(tmp_path / "e.json")]
    env = {k: v for k, v in {**os.environ, **CHILD_ENV}.items() if k != "CI"}
    status, drawn = run_on_a_terminal(args, env)
    print(repr(drawn[-200:]))
    assert status == 0 and "Traceback" not in drawn, drawn[-3000:]
    assert re.search(r"experiment.*━.*round \d+, \d+ groups, \d+ nodes, \d+s", drawn)
    assert json.loads((tmp_path / "e.json").read_text())


class Terminal:
    """A stream that says it is a terminal."""

    def __init__(self) -> None:
        self.written: list[str] = []

    def isatty(self) -> bool:
        return True

    def write(self, text: str) -> int:
        self.written.append(text)
        return len(text)

    def flush(self) -> None:
        pass


def test_logs_go_through_rich_on_a_terminal_and_plain_elsewhere(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    root = logging.getLogger()
    kept = (list(root.handlers), root.level)
    try:
        monkeypatch.delenv("CI", raising=False)
        monkeypatch.setattr(sys, "stderr", Terminal())
        configure_logging("INFO", "auto")
        assert [type(h) for h in root.handlers] == [RichHandler]
        monkeypatch.setenv("CI", "true")
        configure_logging("INFO", "auto")
        (plain,) = root.handlers
        assert type(plain) is logging.StreamHandler
    finally:
        root.handlers[:] = kept[0]
        root.setLevel(kept[1])


@pytest.mark.slow
def test_the_demo_keeps_its_logs_and_counts_in_english(tmp_path: Path) -> None:
    env = {k: v for k, v in {**os.environ, **CHILD_ENV}.items() if not k.startswith("MYCELIUM_")}
    args = ["demo", "--nodes", "1", "--duration", "20", "--no-viz", "--port", "0"]
    done = subprocess.run(
        mycelium_command(*args), capture_output=True, text=True, env=env, cwd=tmp_path, timeout=240
    )
    output = done.stdout + done.stderr
    print(output[-600:])
    assert done.returncode == 0 and "Traceback" not in output, output[-3000:]
    assert re.search(r"^1 node started on \S+; logs in output/demo-logs/$", output, re.MULTILINE)
    assert re.search(r"^final: 1 group \(1 member\), 1 node alive$", output, re.MULTILINE)
    log = tmp_path / "output" / "demo-logs" / "node-0.log"
    assert log.exists() and "gossip at" in log.read_text()  # still there after the demo
