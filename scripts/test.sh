#!/usr/bin/env bash
# Set up .venv (if needed), check lint and format, and run the whole test suite.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
bash scripts/setup.sh
export SDL_VIDEODRIVER=dummy SDL_AUDIODRIVER=dummy FLWR_TELEMETRY_ENABLED=0 FLWR_DISABLE_UPDATE_CHECK=1
.venv/bin/ruff check .
.venv/bin/ruff format --check .
# Three workers on two cores: the slow tests mostly wait on processes, sockets and rounds (two
# workers kept the cores ~70 % busy; three finish the suite ~28 % sooner). A file's tests stay on
# one worker.
.venv/bin/python -m pytest -q -n 3 --dist loadfile --durations=15 "$@"  # the slowest, to keep an eye on
