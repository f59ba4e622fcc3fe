"""Test helpers: waiting for a condition with a deadline (never sleep-and-hope)."""

from __future__ import annotations

import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

ROOT = Path(__file__).resolve().parents[1]

T = TypeVar("T")


def wait_until(pred: Callable[[], bool], timeout: float = 10.0, interval: float = 0.02) -> bool:
    """Poll ``pred`` until it holds or ``timeout`` seconds pass; the caller asserts the result."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(interval)
    return bool(pred())


def race(calls: list[Callable[[], Any]], timeout: float = 60.0) -> list[Any]:
    """Run the calls at once on threads (released together); each result or exception."""
    results: list[Any] = [None] * len(calls)
    gate = threading.Barrier(len(calls))

    def run(i: int) -> None:
        gate.wait()
        try:
            results[i] = calls[i]()
        except Exception as exc:
            results[i] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout)
    return results


def wait_for(
    probe: Callable[[], T], timeout: float, interval: float = 0.1, what: str = "condition"
) -> T:
    """Return the first truthy ``probe()`` within ``timeout`` seconds, else fail the test."""
    deadline = time.monotonic() + timeout
    value = probe()
    while not value:
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)
        value = probe()
    return value


class RegistryProcess:
    """A `mycelium bootstrap --port 0` process; learns its URL from its first output line."""

    def __init__(
        self, db: Path, port: int = 0, token: str | None = None, extra: tuple[str, ...] = ()
    ) -> None:
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        env.pop("MYCELIUM_TOKEN", None)
        if token:
            env["MYCELIUM_TOKEN"] = token
        cmd = [sys.executable, "-c", "from cli.main import main; main()", "bootstrap"]
        cmd += ["--host", "127.0.0.1", "--port", str(port), "--db", str(db), *extra]
        self.proc = subprocess.Popen(
            cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        self.lines: queue.Queue[str] = queue.Queue()
        self.output: list[str] = []
        threading.Thread(target=self._pump, daemon=True).start()
        self.url = self.wait_for(r"listening on (http://\S+)")

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line)

    def wait_for(self, pattern: str, timeout: float = 30.0) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=0.2)
            except queue.Empty:
                if self.proc.poll() is not None:
                    break
                continue
            self.output.append(line)
            match = re.search(pattern, line)
            if match:
                return match.group(1)
        self.proc.kill()
        raise AssertionError(f"registry did not print {pattern!r}: {''.join(self.output)}")

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def finish_all(
    running: dict[str, subprocess.Popen[str]], deadline: Callable[[str], float]
) -> dict[str, subprocess.CompletedProcess[str]]:
    """Wait for each command within ``deadline(name)`` seconds; one that hangs is killed and
    says so in its stderr."""
    done: dict[str, subprocess.CompletedProcess[str]] = {}
    for name, process in running.items():
        try:
            out, err = process.communicate(timeout=deadline(name))
        except subprocess.TimeoutExpired:
            process.kill()
            out, err = process.communicate()
            err += "\n(test: killed after its deadline: the command hung)"
        done[name] = subprocess.CompletedProcess(process.args, process.returncode, out, err)
    return done
