#!/usr/bin/env bash
# Creates (or reuses) the project's virtual environment and installs the pinned
# requirements (every transitive package pinned by constraints.txt) plus the
# package itself (editable). Idempotent: a venv whose requirements.txt,
# constraints.txt and pyproject.toml have not changed since the last install
# is reused as is.
# Usage: source launch/setup_env.sh   (or call it; it prints the venv's python)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${ROBUST_PRUNE_VENV:-$ROOT/.venv}"
PYTHON="${PYTHON:-python3}"
# A venv cut short (e.g. interrupted while it installed pip) is made anew.
if [ ! -x "$VENV/bin/python" ] || ! "$VENV/bin/python" -m pip --version >/dev/null 2>&1; then
  echo "[setup] creating virtual environment $VENV" >&2
  "$PYTHON" -m venv --clear "$VENV"
fi
stamp="$VENV/.requirements.sha256"
want="$(cat "$ROOT/requirements.txt" "$ROOT/constraints.txt" "$ROOT/pyproject.toml" | sha256sum | cut -d' ' -f1)"
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "[setup] installing requirements.txt into $VENV (first run takes a few minutes)" >&2
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -r "$ROOT/requirements.txt" -c "$ROOT/constraints.txt" >&2
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --no-deps -e "$ROOT" >&2
  echo "$want" > "$stamp"
fi
echo "$VENV/bin/python"
