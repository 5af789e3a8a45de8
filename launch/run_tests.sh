#!/usr/bin/env bash
# The README's test command: sets up the venv if needed, then runs pytest on the
# CPU.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="$(bash "$ROOT/launch/setup_env.sh")"
export JAX_PLATFORMS="${JAX_PLATFORMS:-cpu}"
source "$ROOT/launch/mnist_dir.sh"
cd "$ROOT"
exec "$PY" -m pytest -q "$@"
