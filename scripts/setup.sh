#!/usr/bin/env bash
# Create .venv at the repository root and install Mycelium into it (idempotent).
# torch 2.13.0 (the tested version) goes first, from wherever pip is configured to find it: the
# CPU wheel where pip points at a CPU index or wheel folder. Elsewhere on Linux, pip would fetch the
# multi-GB CUDA build; install the CPU wheel first from PyTorch's CPU index (see the README).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
if [[ ! -x .venv/bin/python ]]; then
  python3 -m venv .venv
fi
stamp=".venv/.mycelium-installed"
if [[ ! -f "$stamp" || pyproject.toml -nt "$stamp" ]]; then
  .venv/bin/python -m pip install --quiet --upgrade pip
  .venv/bin/python -m pip install --quiet "torch==2.13.0"
  .venv/bin/python -m pip install --quiet -e ".[test]"
  touch "$stamp"
fi
