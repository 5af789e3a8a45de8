#!/usr/bin/env bash
# The README's test command: sets up the venv if needed, then runs pytest on the
# CPU with MNIST taken from ../shared/data/mnist (override MNIST_MANUAL_DIR).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="$(bash "$ROOT/launch/setup_env.sh")"
export JAX_PLATFORMS="${JAX_PLATFORMS:-cpu}"
export MNIST_MANUAL_DIR="${MNIST_MANUAL_DIR:-$ROOT/../shared/data/mnist}"
cd "$ROOT"
exec "$PY" -m pytest -q "$@"
