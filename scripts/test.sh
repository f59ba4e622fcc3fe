#!/usr/bin/env bash
# Set up .venv (if needed), check lint and format, and run the whole test suite.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
bash scripts/setup.sh
export SDL_VIDEODRIVER=dummy SDL_AUDIODRIVER=dummy FLWR_TELEMETRY_ENABLED=0 FLWR_DISABLE_UPDATE_CHECK=1
.venv/bin/ruff check .
.venv/bin/ruff format --check .
# Four workers on two cores: the slow tests mostly wait on processes, sockets and rounds (two
# workers kept the cores ~70 % busy; on one quiet machine 2, 3 and 4 workers took 9:39, 6:55 and
# 6:11). A file's tests stay on one worker.
.venv/bin/python -m pytest -q -n 4 --dist loadfile --durations=15 "$@"  # the slowest, to keep an eye on
