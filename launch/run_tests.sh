#!/usr/bin/env bash
# The README's test command: sets up the venv if needed, then runs pytest on the
# CPU.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="$(bash "$ROOT/launch/setup_env.sh")"
export JAX_PLATFORMS="${JAX_PLATFORMS:-cpu}"
# MNIST from ../shared/data/mnist when that folder exists and
# MNIST_MANUAL_DIR is unset; otherwise (or with MNIST_MANUAL_DIR="") tfds
# downloads the archives.
if [ -z "${MNIST_MANUAL_DIR+set}" ] && [ -d "$ROOT/../shared/data/mnist" ]; then
  export MNIST_MANUAL_DIR="$ROOT/../shared/data/mnist"
fi
cd "$ROOT"
exec "$PY" -m pytest -q "$@"
