"""Times the importance MILP per solver (issue 4's target: proven optimal in
<= 60 s for the default 300-100 PGD network with 10 images, one per class).

    .venv/bin/python launch/bench/bench_prune.py \
        [--network=runs/pgd_300_100/network.npz] [--time_limit=60] \
        [--margin=3] [--solvers=SCIP,HIGHS,GLPK_MI] [--images_per_class=1] \
        [--[no]descent] [--descent_share=0.5]

Prints one JSON line per solver: status (proven or not, in the solver's own
words too), objective, proven bound, seconds, binaries and kept widths, with
the machine's load average (the machine is shared).
"""

from __future__ import annotations

import json
import os
import time

from absl import app
from absl import flags
import numpy as np

from robust_prune import data as data_lib
from robust_prune import network as network_lib
from robust_prune.pruning import batch as batch_lib
from robust_prune.pruning import importance
from robust_prune.pruning import structure

flags.DEFINE_string("network", "runs/pgd_300_100/network.npz",
                    "Network to score.")
flags.DEFINE_float("time_limit", 60.0, "Seconds per solver.")
flags.DEFINE_float("margin", 3.0, "Hard logit margin of each batch image.")
flags.DEFINE_float("lam", 0.0, "Hinge weight (0 = hard margin).")
flags.DEFINE_list("solvers", ["SCIP", "HIGHS", "GLPK_MI"], "Solvers to time.")
flags.DEFINE_integer("images_per_class", 1, "Batch images per class.")
flags.DEFINE_float("threshold", structure.DEFAULT_THRESHOLD, "Score cut-off.")
flags.DEFINE_string("mnist_manual_dir", None, "MNIST archives folder.")
flags.DEFINE_bool("descent", True, "Pattern-descent start (see "
                  "descent.pattern_descent).")
flags.DEFINE_float("descent_share", 0.5, "Most of the time limit the "
                   "descent may use.")


def main(argv):
  del argv
  f = flags.FLAGS
  network = network_lib.load_network(f.network)
  train = data_lib.load_split("train", f.mnist_manual_dir)
  images, labels, indices = batch_lib.select_batch(
      network, train.images, train.labels,
      images_per_class=f.images_per_class,
      min_margin=f.margin if f.lam == 0 else 0.0)
  for solver in f.solvers:
    load_before = os.getloadavg()[0]
    start = time.perf_counter()
    r = importance.importance_scores(
        network, images, labels, margin=f.margin, lam=f.lam, solver=solver,
        time_limit=f.time_limit, descent=f.descent,
        descent_share=f.descent_share)
    wall = time.perf_counter() - start
    kept = [int(m.sum()) for m in
            structure.keep_masks_from_scores(r.scores, f.threshold)]
    print(json.dumps({
        "solver": solver, "proven_optimal": r.proven, "status": r.status,
        "raw_status": r.raw_status, "objective": r.objective,
        "bound": r.bound, "solve_seconds": round(r.solve_seconds, 2),
        "build_seconds": round(r.build_seconds, 2),
        "wall_seconds": round(wall, 2), "time_limit": f.time_limit,
        "binaries": r.num_binaries, "kept_widths": kept,
        "widths": list(network.hidden_widths), "margin": f.margin,
        "lambda": f.lam, "batch_indices": indices.tolist(),
        "min_batch_margin": r.min_batch_margin,
        "descent_objective": r.heuristic_objective,
        "descent_seconds": (None if r.heuristic_seconds is None
                            else round(r.heuristic_seconds, 2)),
        "mean_score": [float(np.mean(s)) for s in r.scores],
        "load_average": [round(load_before, 2),
                         round(os.getloadavg()[0], 2)]}), flush=True)


if __name__ == "__main__":
  app.run(main)
