"""Child processes of the demo and the tests: start `mycelium` commands, stop them all."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path


def mycelium_command(*args: str) -> list[str]:
    """The command line that runs ``mycelium ARGS`` of this installation (no PATH lookup).

    The console script beside this interpreter: started from a folder that holds a ``cli``
    package of its own, the child still runs this project's command (a script puts its own
    folder on ``sys.path``, not the working one). Without the script (a source checkout never
    installed), the interpreter with ``-P``, which keeps the working folder off ``sys.path``.
    """
    script = Path(sys.executable).with_name("mycelium")
    if script.is_file():
        return [str(script), *args]
    return [sys.executable, "-P", "-m", "cli", *args]


class ProcessGroup:
    """Processes started together and stopped together: SIGTERM, a grace period, then SIGKILL.

    Each child gets its own session so that a Ctrl+C in the terminal reaches only the parent,
    which then stops the children in order (graceful leave first).
    """

    def __init__(self, log_dir: Path | None = None) -> None:
        self.log_dir = log_dir
        self.processes: list[subprocess.Popen[bytes]] = []
        self.names: list[str] = []
        self._logs: list[object] = []

    def start(
        self, name: str, command: Sequence[str], env: dict[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        """Start ``command``; its output goes to ``log_dir/name.log`` (or is discarded)."""
        if self.log_dir is not None:
            self.log_dir.mkdir(parents=True, exist_ok=True)
            out = open(self.log_dir / f"{name}.log", "wb")  # noqa: SIM115 (closed in stop())
            self._logs.append(out)
        else:
            out = subprocess.DEVNULL  # type: ignore[assignment]
        process = subprocess.Popen(
            list(command),
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
            start_new_session=True,
        )
        self.processes.append(process)
        self.names.append(name)
        return process

    def log_tail(self, index: int, lines: int = 15) -> str:
        """The last lines that process ``index`` wrote (empty without a log folder)."""
        if self.log_dir is None or index >= len(self.names):
            return ""
        path = self.log_dir / f"{self.names[index]}.log"
        text = path.read_text(errors="replace") if path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def alive(self) -> list[subprocess.Popen[bytes]]:
        return [p for p in self.processes if p.poll() is None]

    def stop(self, grace: float = 10.0) -> None:
        """SIGTERM everything, wait up to ``grace`` seconds, SIGKILL what is left, reap all."""
        for process in self.alive():
            process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + grace
        for process in self.processes:
            remaining = max(0.0, deadline - time.monotonic())
            try:
                process.wait(timeout=remaining)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        for out in self._logs:
            out.close()  # type: ignore[attr-defined]
        self._logs.clear()
