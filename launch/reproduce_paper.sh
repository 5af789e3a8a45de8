#!/usr/bin/env bash
# The main job: the paper end to end (train -> MILP prune -> retrain ->
# critical neurons of both networks on one batch (RQ1/RQ2) -> certify-mode
# verification of both networks (CROWN, PGD, branch and bound, MILP) ->
# reverse testing on >= 100 examples per side -> causal ablation -> report).
#
#   bash launch/reproduce_paper.sh [OUT_DIR] [extra pipeline flags...]
#
# Environment overrides: DELTA, NUM_IMAGES, HIDDEN (e.g. 300,100), SOLVER,
# TIME_LIMIT, ABLATION_FRACTION (e.g. 0.1), TRANSFER_EXAMPLES (e.g. 100),
# QUICK=1 (small network, 5 images), MNIST_MANUAL_DIR.
# Rerun with the same OUT_DIR to resume; finished stages are skipped.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="$(bash "$ROOT/launch/setup_env.sh")"
OUT="${1:-$ROOT/runs/paper}"
shift || true
source "$ROOT/launch/mnist_dir.sh"
args=(--out_dir="$OUT")
[ -n "${DELTA:-}" ] && args+=(--delta="$DELTA")
[ -n "${NUM_IMAGES:-}" ] && args+=(--num_images="$NUM_IMAGES")
[ -n "${HIDDEN:-}" ] && args+=(--hidden="$HIDDEN")
[ -n "${SOLVER:-}" ] && args+=(--solver="$SOLVER")
[ -n "${TIME_LIMIT:-}" ] && args+=(--time_limit="$TIME_LIMIT")
[ -n "${ABLATION_FRACTION:-}" ] && args+=(--ablation_fraction="$ABLATION_FRACTION")
[ -n "${TRANSFER_EXAMPLES:-}" ] && args+=(--transfer_examples="$TRANSFER_EXAMPLES")
[ "${QUICK:-0}" = "1" ] && args+=(--quick)
cd "$ROOT"
exec "$PY" -m robust_prune.pipeline "${args[@]}" "$@"
