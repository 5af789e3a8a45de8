"""Times the importance MILP per solver (issue 4's target: proven optimal in
<= 60 s for the default 300-100 PGD network with 10 images, one per class).

    .venv/bin/python launch/bench/bench_prune.py \
        [--network=runs/pgd_300_100/network.npz] [--time_limit=60] \
        [--margin=3] [--solvers=SCIP,HIGHS,GLPK_MI] [--images_per_class=1] \
        [--[no]descent] [--descent_share=0.5]

Prints one JSON line per solver: status (proven or not, in the solver's own
words too), objective, proven bound, seconds, binaries and kept widths, with
the machine's load average (the machine is shared).

With --methods (issue 16) it times the prune stage's ranking per method
instead (batch selection, PGD for robust_milp, MILP/LP/rule, keep masks at
--widths), and with --retrain_epochs=N also N epochs of the recipe's
retraining of the pruned network (the prune stage's other cost):

    .venv/bin/python launch/bench/bench_prune.py --network=NET.npz \
        --methods=milp,robust_milp,lp,magnitude,random --widths=138,70 \
        --retrain_epochs=1
"""

from __future__ import annotations

import json
import os
import time

from absl import app
from absl import flags
import numpy as np

import dataclasses
import tempfile

from robust_prune import data as data_lib
from robust_prune import network as network_lib
from robust_prune import train as train_lib
from robust_prune.pruning import loop
from robust_prune.pruning import methods as methods_lib
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
flags.DEFINE_list("methods", [], "Time these ranking methods (milp, "
                  "robust_milp, lp, magnitude, random) instead of solvers.")
flags.DEFINE_list("widths", [], "Kept widths per layer for --methods.")
flags.DEFINE_integer("retrain_epochs", 0, "--methods: also time this many "
                     "epochs of retraining the pruned network.")


def bench_methods(f, network, train):
  """One JSON line per method: ranking seconds, status, kept widths (and
  retraining seconds per epoch)."""
  config = loop.train_config_for(f.network)
  widths = tuple(int(w) for w in f.widths)
  for method in f.methods:
    options = loop.PruneOptions(
        margin=f.margin, lam=f.lam, time_limit=f.time_limit, baseline=method,
        retrain="finetune", widths=widths, images_per_class=f.images_per_class)
    load_before = os.getloadavg()[0]
    start = time.perf_counter()
    record = methods_lib.compute_scores(network, train, options, config)
    masks = methods_lib.keep_masks(record, network, options, seed=1)
    rank_seconds = time.perf_counter() - start
    line = {"method": method, "rank_seconds": round(rank_seconds, 2),
            "status": record["status"], "objective": record["objective"],
            "solve_seconds": round(record["solve_seconds"], 2),
            "batch_size": record.get("batch_size", len(record["batch_indices"])),
            "kept_widths": [int(m.sum()) for m in masks]}
    if f.retrain_epochs:
      line["retrain_epoch_seconds"] = _retrain_seconds(
          network, masks, config, train, f.retrain_epochs)
    line["load_average"] = [round(load_before, 2),
                            round(os.getloadavg()[0], 2)]
    print(json.dumps(line), flush=True)


def _retrain_seconds(network, masks, config, train, epochs):
  pruned, _ = structure.prune_network(network, masks)
  short = dataclasses.replace(config, hidden=pruned.hidden_widths,
                              epochs=epochs, eval_pgd_examples=100)
  test = data_lib.load_split("test", flags.FLAGS.mnist_manual_dir)
  with tempfile.TemporaryDirectory() as workdir:
    history = train_lib.train_and_evaluate(short, workdir, train=train,
                                           test=test, init_network=pruned)
  return [round(h["epoch_seconds"], 2) for h in history]


def main(argv):
  del argv
  f = flags.FLAGS
  network = network_lib.load_network(f.network)
  train = data_lib.load_split("train", f.mnist_manual_dir)
  if f.methods:
    bench_methods(f, network, train)
    return
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
