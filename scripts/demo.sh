#!/usr/bin/env bash
# Set up .venv (if needed) and run the demo: a registry, 4 nodes and the live viewer on localhost.
# Extra arguments go to `mycelium demo` (see `mycelium demo --help`).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
bash scripts/setup.sh
export FLWR_TELEMETRY_ENABLED=0 FLWR_DISABLE_UPDATE_CHECK=1
exec .venv/bin/mycelium demo "$@"
