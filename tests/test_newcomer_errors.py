"""A newcomer's mistakes, each run as the real ``mycelium`` command in a child process.

Every case must end in exactly one ``Error:`` line on stderr that names what to fix, exit status
2 for a usage mistake and 1 for the rest, no traceback, and no hang (a deadline per case). The
cases run at once: most of them wait on imports, not on the CPU.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from mycelium_p2p.testing.processes import mycelium_command
from tests.helpers import ROOT, RegistryProcess, finish_all
from tests.reliability_support import CHILD_ENV

pytestmark = pytest.mark.slow

TOKEN = "right-secret"


@dataclass(frozen=True)
class Case:
    """One command line, where it runs, and what its one error line must say."""

    args: tuple[str, ...]
    status: int
    phrase: str
    env: dict[str, str] = field(default_factory=dict)
    deadline: float = 90.0


@dataclass(frozen=True)
class Setting:
    """What the cases need: a folder, a busy port, the URL of a registry that wants a token."""

    folder: Path
    busy_port: int
    url: str


@pytest.fixture(scope="module")
def setting(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setting]:
    folder = tmp_path_factory.mktemp("newcomer")
    (folder / "bad.toml").write_text('[gossip]\nprobe_interval = "fast"\n')
    (folder / "good.toml").write_text("heartbeat_interval = 5\n")
    (folder / "empty-token").write_text("\n")
    registry = RegistryProcess(folder / "registry.db", token=TOKEN)
    with socket.socket() as busy:
        busy.bind(("0.0.0.0", 0))
        busy.listen()
        try:
            yield Setting(folder, busy.getsockname()[1], registry.url)
        finally:
            registry.stop()


def cases(s: Setting) -> dict[str, Case]:
    url, port = s.url, s.busy_port
    return {
        "join: a gossip port in use": Case(
            ("join", "--bootstrap", url, "--gossip-port", str(port)),
            1,
            f"--gossip-port {port}: cannot listen on 127.0.0.1:{port} (Address already in use)",
        ),
        "join: a Flower port in use, found before anything starts": Case(
            ("join", "--bootstrap", url, "--flower-port", str(port)),
            1,
            f"--flower-port {port}: cannot listen on 127.0.0.1:{port} (Address already in use)",
        ),
        "join: the same port twice": Case(
            ("join", "--bootstrap", url, "--gossip-port", "7000", "--flower-port", "7000"),
            2,
            "--gossip-port and --flower-port are both 7000",
        ),
        "join: a wrong token is final": Case(
            ("join", "--bootstrap", url, "--token", "wrong", "--data", "digits"),
            1,
            "the registry refused this node (invalid bearer credential): a wrong token",
            deadline=120,
        ),
        "join: a token file that holds nothing": Case(
            ("join", "--bootstrap", url, "--token-file", str(s.folder / "empty-token")),
            2,
            "empty-token holds no secret",
        ),
        "join: --token and --token-file both": Case(
            ("join", "--bootstrap", url, "--token", "a", "--token-file", str(s.folder / "x")),
            2,
            "give the secret once",
        ),
        "join: a word where the TOML file needs a number": Case(
            ("join", "--bootstrap", url, "--config", str(s.folder / "bad.toml")),
            2,
            "setting gossip.probe_interval (config file",
        ),
        "join: a negative interval in the environment": Case(
            ("join", "--bootstrap", url),
            2,
            "setting heartbeat_interval (environment MYCELIUM_HEARTBEAT_INTERVAL): "
            "expected a number > 0.0, got '-5'",
            env={"MYCELIUM_HEARTBEAT_INTERVAL": "-5"},
        ),
        "join: the environment wins over the TOML file (read first, so its mistake shows)": Case(
            ("join", "--bootstrap", url, "--config", str(s.folder / "good.toml")),
            2,
            "setting heartbeat_interval (environment MYCELIUM_HEARTBEAT_INTERVAL): ",
            env={"MYCELIUM_HEARTBEAT_INTERVAL": "-5"},
        ),
        "join: a group capacity of 0 in the environment": Case(
            ("join", "--bootstrap", url),
            2,
            "setting group_capacity (environment MYCELIUM_GROUP_CAPACITY): "
            "expected a whole number >= 1, got '0'",
            env={"MYCELIUM_GROUP_CAPACITY": "0"},
        ),
        "join: a registry URL of another scheme": Case(
            ("join", "--bootstrap", "ftp://127.0.0.1:8000"),
            2,
            "setting registry_url (command line): registry URL 'ftp://127.0.0.1:8000': "
            "use http:// or https://",
        ),
        "status: a registry URL of another scheme": Case(
            ("status", "--bootstrap", "ftp://127.0.0.1:8000"), 2, "use http:// or https://"
        ),
        "status: a registry nobody answers at": Case(
            ("status", "--bootstrap", "127.0.0.1:1"), 1, "cannot read http://127.0.0.1:1"
        ),
        "bootstrap: a port in use": Case(
            ("bootstrap", "--port", str(port), "--db", str(s.folder / "a.db")),
            1,
            f"cannot listen on 127.0.0.1:{port}",
        ),
        "bootstrap: an address of another machine": Case(
            (
                "bootstrap",
                "--host",
                "10.255.255.1",
                "--insecure",
                "--port",
                "0",
                "--db",
                str(s.folder / "b.db"),
            ),
            1,
            "cannot listen on 10.255.255.1",
        ),
        "bootstrap: a database in a missing folder": Case(
            ("bootstrap", "--port", "0", "--db", str(s.folder / "nodir" / "x.db")),
            1,
            "nodir/x.db",
        ),
        "bootstrap: a second registry on the same database": Case(
            ("bootstrap", "--port", "0", "--db", str(s.folder / "registry.db")),
            1,
            "in use by another registry",
        ),
        "bench policy --plot without matplotlib": Case(
            ("bench", "policy", "--plot", str(s.folder / "p.png"), "--rounds", "1"),
            1,
            "--plot needs matplotlib: pip install 'mycelium-p2p[plot]'",
            env={"PYTHONPATH": os.pathsep.join([str(s.folder / "no-matplotlib"), str(ROOT)])},
        ),
    }


def _hide_matplotlib(folder: Path) -> None:
    """A ``sitecustomize`` that makes ``matplotlib`` unimportable, as where it is not installed."""
    hidden = folder / "no-matplotlib"
    hidden.mkdir(exist_ok=True)
    (hidden / "sitecustomize.py").write_text("import sys\nsys.modules['matplotlib'] = None\n")


@pytest.fixture(scope="module")
def outcomes(setting: Setting) -> dict[str, subprocess.CompletedProcess[str]]:
    """Every case at once, each with its deadline."""
    _hide_matplotlib(setting.folder)
    base = {**os.environ, **CHILD_ENV}
    for name in [k for k in base if k.startswith("MYCELIUM_")]:
        base.pop(name)
    table = cases(setting)
    running = {
        name: subprocess.Popen(
            mycelium_command(*case.args),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**base, **case.env},
            cwd=setting.folder,
            start_new_session=True,
        )
        for name, case in table.items()
    }
    return finish_all(running, lambda name: table[name].deadline)


@pytest.mark.parametrize("name", list(cases(Setting(Path("."), 0, "http://x"))))
def test_each_mistake_is_one_line_naming_the_fix(
    name: str, setting: Setting, outcomes: dict[str, subprocess.CompletedProcess[str]]
) -> None:
    case, done = cases(setting)[name], outcomes[name]
    errors = [line for line in done.stderr.splitlines() if line.startswith("Error:")]
    print(f"{name}: exit {done.returncode}: {errors[-1] if errors else done.stderr[-300:]}")
    assert "Traceback" not in done.stderr + done.stdout, done.stderr[-3000:]
    assert "hung" not in done.stderr
    assert len(errors) == 1, done.stderr[-3000:]
    assert case.phrase in errors[0], errors[0]
    assert done.returncode == case.status, done.stderr[-3000:]


def test_a_node_whose_token_is_refused_stops_at_once_and_says_so_once(
    outcomes: dict[str, subprocess.CompletedProcess[str]],
) -> None:
    """A wrong token stays wrong: the node leaves after the first 401, it does not retry."""
    log = outcomes["join: a wrong token is final"].stderr
    refusals = log.count("the registry refused this node (")
    print(f"lines naming the refusal: {refusals}; log lines: {len(log.splitlines())}")
    assert refusals == 2  # the log line when it happens, and the final Error line
    assert "join refused" not in log


def test_a_settings_error_is_the_only_line_the_user_must_read(
    outcomes: dict[str, subprocess.CompletedProcess[str]],
) -> None:
    """No usage text around an error that is not about the command line."""
    done = outcomes["join: a negative interval in the environment"]
    lines = [x for x in done.stderr.splitlines() if "mycelium.config" not in x]
    assert lines == [x for x in lines if x.startswith("Error:")], done.stderr


def test_logs_as_json_are_one_object_per_line(setting: Setting) -> None:
    env = {**os.environ, **CHILD_ENV}
    env.pop("MYCELIUM_TOKEN", None)
    port = str(setting.busy_port)
    args = ("join", "--bootstrap", "127.0.0.1:1", "--log-format", "json", "--gossip-port", port)
    done = subprocess.run(
        mycelium_command(*args), capture_output=True, text=True, env=env, timeout=60
    )
    lines = done.stderr.splitlines()
    records = [json.loads(line) for line in lines if line.startswith("{")]
    print(records)
    assert records and {"time", "level", "logger", "message"} <= set(records[0])
    assert records[0]["logger"] == "mycelium.config" and "local preset" in records[0]["message"]
    assert all(line.startswith(("{", "Error:")) for line in lines), done.stderr
