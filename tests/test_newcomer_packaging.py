"""Packaging as a newcomer meets it: every imported package declared, and the wheel works alone.

The slow test builds the wheel, installs it into a fresh virtual environment (pip's own
configuration says where packages come from, as for ``scripts/setup.sh``) and runs the installed
``mycelium`` from an empty folder: ``--version``, ``bootstrap --help``, a registry whose ``/docs``
loads Swagger UI from the wheel, and a short ``demo``. Django must not come along.
"""

from __future__ import annotations

import ast
import os
import re
import shutil
import subprocess
import sys
import tomllib
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from importlib.metadata import packages_distributions
from pathlib import Path

import pytest

from tests.helpers import ROOT, wait_for
from tests.reliability_support import read_text

OWN = ("mycelium_p2p", "bootstrap", "cli", "viz")


def normal(name: str) -> str:
    """A distribution name as pip compares them (PEP 503)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def requirement_names(requirements: list[str]) -> set[str]:
    """The distribution names of requirement strings (``torch==2.13.0`` -> ``torch``)."""
    return {normal(re.split(r"[\s<>=!~;\[]", r, maxsplit=1)[0]) for r in requirements}


def imported_modules() -> dict[str, str]:
    """Every top-level module the shipped packages import, with one file that imports it."""
    found: dict[str, str] = {}
    for package in OWN:
        for path in sorted((ROOT / package).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if isinstance(node, ast.Import):
                    names = [alias.name for alias in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names = [node.module]
                else:
                    continue
                for name in names:
                    found.setdefault(name.split(".")[0], str(path.relative_to(ROOT)))
    return found


def test_every_imported_package_is_declared() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    declared = requirement_names(project["dependencies"])
    plot = requirement_names(project.get("optional-dependencies", {}).get("plot", []))
    providers = packages_distributions()
    undeclared = []
    for module, where in imported_modules().items():
        if module in sys.stdlib_module_names or module in OWN or module == "__future__":
            continue
        dists = {normal(d) for d in providers.get(module, [])}
        assert dists, f"{module} (imported by {where}) is not installed"
        if not dists & (declared | plot):
            undeclared.append(f"{module} ({where}) from {sorted(dists)}")
    print(f"declared: {sorted(declared)}")
    assert not undeclared, undeclared
    assert "matplotlib" in plot and "matplotlib" not in declared  # only bench policy --plot
    assert not {"django", "drf-spectacular-sidecar"} & declared
    assert (ROOT / "LICENSE").is_file() and project["license-files"] == ["LICENSE"]
    assert [r for r in project["dependencies"] if normal(r).startswith("torch")] == [
        "torch==2.13.0"
    ]


@dataclass(frozen=True)
class Installed:
    venv: Path
    empty: Path  # a folder with nothing in it, where the commands run

    def run(
        self, *args: str, cwd: Path | None = None, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(self.venv / "bin" / "mycelium"), *args],
            cwd=cwd or self.empty,
            env=isolated_env(),
            capture_output=True,
            text=True,
            timeout=timeout,
        )


def isolated_env() -> dict[str, str]:
    """No PYTHONPATH (the checkout must not be importable), no MYCELIUM_* setting, offline."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("PYTHONPATH", "VIRTUAL_ENV") and not k.startswith("MYCELIUM_")
    }
    return {**env, "FLWR_TELEMETRY_ENABLED": "0", "FLWR_DISABLE_UPDATE_CHECK": "1"}


def copy_sources(target: Path) -> Path:
    """The checkout without its build outputs, so building writes nothing into it."""
    skip = shutil.ignore_patterns(
        ".git", ".venv", "build", "output", "*.egg-info", "__pycache__", ".*_cache"
    )
    return Path(shutil.copytree(ROOT, target, ignore=skip))


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Installed]:
    work = tmp_path_factory.mktemp("wheel")
    source = copy_sources(work / "source")
    wheels = work / "wheels"
    pip = [sys.executable, "-m", "pip"]
    built = subprocess.run(
        [*pip, "wheel", "--no-deps", "-q", "-w", str(wheels), str(source)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert built.returncode == 0, built.stderr[-3000:]
    (wheel,) = wheels.glob("mycelium_p2p-*.whl")
    venv = work / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    # torch first, by its pinned version (the CPU wheel where pip is configured for it), as
    # scripts/setup.sh does; then the wheel and what it declares. No bytecode: it only costs time.
    into = [*pip, "--python", str(venv / "bin" / "python"), "install", "-q", "--no-compile"]
    for what in (["torch==2.13.0"], [str(wheel)]):
        done = subprocess.run([*into, *what], capture_output=True, text=True, timeout=900)
        assert done.returncode == 0, done.stderr[-3000:]
    empty = work / "empty"
    empty.mkdir()
    yield Installed(venv, empty)


def installed_names(venv: Path) -> set[str]:
    listing = subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"), "list"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return {normal(line.split()[0]) for line in listing.splitlines()[2:] if line.strip()}


@pytest.mark.slow
@pytest.mark.timeout(1200)  # the first test run pays for the build and the install
def test_the_wheel_installs_alone_and_runs_from_an_empty_folder(installed: Installed) -> None:
    names = installed_names(installed.venv)
    print(f"{len(names)} distributions installed")
    assert "mycelium-p2p" in names and "torch" in names
    assert "django" not in names and "drf-spectacular-sidecar" not in names
    version = installed.run("--version")
    print(version.stdout.strip())
    assert version.returncode == 0 and "0.1.0" in version.stdout, version.stderr
    usage = installed.run("bootstrap", "--help")
    assert usage.returncode == 0 and "--token-file" in usage.stdout, usage.stderr
    assert "Traceback" not in version.stderr + usage.stderr
    assert list(installed.empty.iterdir()) == []  # nothing written where they ran


@pytest.mark.slow
@pytest.mark.timeout(1200)  # the first test run pays for the build and the install
def test_the_installed_registry_serves_its_api_docs_offline(installed: Installed) -> None:
    log = installed.empty.parent / "registry.log"
    with log.open("w") as out:
        registry = subprocess.Popen(
            [str(installed.venv / "bin" / "mycelium"), "bootstrap", "--port", "0"],
            cwd=installed.empty,
            env=isolated_env(),
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:

        def url() -> str | None:
            assert registry.poll() is None, read_text(log)
            match = re.search(r"registry listening on (http://\S+)", read_text(log))
            return match.group(1) if match else None

        base = wait_for(url, 60, what="the installed registry's URL")
        with urllib.request.urlopen(f"{base}/docs", timeout=10) as page:
            html = page.read().decode()
        assets = re.findall(r"(?:src|href)=\"(/docs/assets/[^\"]+)\"", html)
        print(assets)
        assert len(assets) == 3 and "://" not in "".join(assets)  # nothing from the internet
        for asset in assets:
            with urllib.request.urlopen(f"{base}{asset}", timeout=10) as answer:
                assert answer.status == 200 and len(answer.read()) > 1000
    finally:
        registry.terminate()
        registry.wait(timeout=30)
    assert registry.returncode == 0, read_text(log)[-3000:]


@pytest.mark.slow
@pytest.mark.timeout(1200)  # the first test run pays for the build and the install
def test_the_installed_demo_runs_from_any_folder(installed: Installed) -> None:
    folder = installed.empty.parent / "any-folder"
    folder.mkdir()
    args = ("demo", "--nodes", "1", "--duration", "5", "--no-viz", "--port", "0")
    done = installed.run(*args, cwd=folder, timeout=300)
    output = done.stdout + done.stderr
    print(output[-400:])
    assert done.returncode == 0 and "Traceback" not in output, output[-3000:]
    assert "1 node started" in output and "all processes stopped" in output
    assert (folder / "output" / "demo-logs" / "node-0.log").is_file()
