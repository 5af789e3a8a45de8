r"""Naive vs default verification MILP, side by side on the same problems.

  python launch/bench/bench_verify.py --network=runs/pgd_100_100/network.npz \
      --delta=0.05 --num_images=3 --out=out/bench_verify_100_100.json

Naive (Kolter & Madry tutorial): interval bounds, a binary for every hidden
neuron, affine expressions inlined, a fresh cvxpy problem (bounds, build,
compile) per target. Default: `robust_prune.verify.cascade` in targeted mode
(CROWN bounds, PGD, then the optimum by alpha/beta-CROWN branch and bound to
5e-5, and only if that does not settle it in --bab_time_limit the MILP with
binaries only for unstable neurons, one compiled problem per image reused for
its targets, the best point found as MIP start). --bab_time_limit=0 gives the
MILP-only default of earlier versions. Same solver and time limit for
both. Per-problem seconds count everything spent on the problem (bounds,
build and compile shared by an image's targets are split evenly among them).

The two protocol timings use the evaluate binary and `--summarize`:

  python -m robust_prune.verify --network=runs/pgd_300_100/network.npz \
      --out=out/certify_300_100.jsonl --delta=0.05 --num_images=100 --mode=certify
  python -m robust_prune.verify --network=runs/pgd_100_100/network.npz \
      --out=out/paper_100_100.jsonl --delta=0.05 --num_images=100 --mode=targeted
  python launch/bench/bench_verify.py --summarize=out/paper_100_100.jsonl
"""

from __future__ import annotations

import json
import os
import sys
import time

from absl import app
from absl import flags
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__)))))

from robust_prune import bounds as bounds_lib  # pylint: disable=g-import-not-at-top,wrong-import-position
from robust_prune import data as data_lib  # pylint: disable=wrong-import-position
from robust_prune.milp import model as model_lib  # pylint: disable=wrong-import-position
from robust_prune.milp import objective as objective_lib  # pylint: disable=wrong-import-position
from robust_prune.milp import solvers as solvers_lib  # pylint: disable=wrong-import-position
from robust_prune.milp import standard_form  # pylint: disable=wrong-import-position
from robust_prune.verify import cascade as verify_lib  # pylint: disable=wrong-import-position
from robust_prune.network import load_network, forward  # pylint: disable=wrong-import-position

FLAGS = flags.FLAGS
flags.DEFINE_string("network", None, "network.npz")
flags.DEFINE_float("delta", 0.05, "L-inf radius")
flags.DEFINE_integer("num_images", 2, "first N correctly classified test images")
flags.DEFINE_integer("first_image", 0, "first test index considered")
flags.DEFINE_integer("max_targets", 9, "targets per image (first ones)")
flags.DEFINE_string("solver", "HIGHS", "solver for both formulations")
flags.DEFINE_float("time_limit", 300.0, "seconds per MILP (both)")
flags.DEFINE_string("out", None, "optional JSON with every measurement")
flags.DEFINE_float("bab_time_limit", 20.0, "default formulation: seconds of "
                   "branch and bound per target before the MILP (0: MILP only)")
flags.DEFINE_string("summarize", None, "summarize an evaluate results JSONL "
                    "instead of benchmarking")
flags.DEFINE_string("mnist_manual_dir", None, "MNIST manual dir")


def naive_solve(network, image, label, target, delta, solver, time_limit):
  """Everything from scratch for one target."""
  t0 = time.perf_counter()
  lower, upper = bounds_lib.input_box(image, delta)
  lb = bounds_lib.interval_bounds(network, lower, upper)
  model = model_lib.build_model(network, lower, upper, lb, all_binary=True,
                                materialize=False)
  model.c.value = objective_lib.margin_vector(label, target, network.num_classes)
  milp = standard_form.compile_model(model.problem)
  setup = time.perf_counter() - t0
  outcome = solvers_lib.solve(milp, solver, time_limit=time_limit)
  return {"seconds": time.perf_counter() - t0, "setup_seconds": setup,
          "solve_seconds": outcome.seconds, "objective": outcome.objective,
          "optimal": outcome.proven_optimal, "num_binaries": model.num_binaries,
          "status": _verdict(outcome)}


def _verdict(outcome):
  if not outcome.proven_optimal:
    return "timeout"
  return "adversarial" if outcome.objective < 0 else "robust"


def percentile_summary(values):
  values = np.asarray(values, np.float64)
  if values.size == 0:
    return {}
  return {"n": int(values.size), "median": float(np.median(values)),
          "mean": float(np.mean(values)), "p90": float(np.percentile(values, 90)),
          "max": float(np.max(values)), "min": float(np.min(values))}


def summarize(path):
  from robust_prune.verify.records import read_results  # pylint: disable=g-import-not-at-top
  records = read_results(path)
  statuses = {}
  for r in records:
    statuses[r["status"]] = statuses.get(r["status"], 0) + 1
  milp = [r for r in records if r.get("decided_by", "milp") == "milp"
          and r["status"] != "misclassified"]
  per_image = {}
  for r in records:
    per_image[r["image_index"]] = r.get("image_seconds", 0.0)
  binaries = {r["image_index"]: r["num_binaries"] for r in milp
              if r.get("num_binaries") is not None}
  unstable = [r["unstable_per_layer"] for r in milp if "unstable_per_layer" in r]
  summary = {
      "records": len(records), "statuses": statuses,
      "decided_by": {k: sum(1 for r in records if r.get("decided_by") == k)
                     for k in ("crown", "pgd", "bab", "milp")},
      "timeouts": statuses.get("timeout", 0),
      "problem_solve_seconds": percentile_summary(
          [r["solve_seconds"] for r in records
           if r["status"] != "misclassified"]),
      "bab_seconds": percentile_summary(
          [r["bab_seconds"] for r in records if "bab_seconds" in r]),
      "bab_domains": percentile_summary(
          [r["bab_domains"] for r in records if "bab_domains" in r]),
      "milp_solve_seconds": percentile_summary([r["solve_seconds"] for r in milp]),
      "image_seconds_sum": float(sum(per_image.values())),
      "num_binaries_per_image": percentile_summary(list(binaries.values())),
      "unstable_per_layer_mean": (np.mean(unstable, axis=0).tolist()
                                  if unstable else None),
      # certify-mode MILPs end infeasible below the cutoff, not optimal
      "milps_without_optimum": sum(1 for r in milp if not r.get("optimal")),
  }
  print(json.dumps(summary, indent=1))
  return summary


def main(argv):
  del argv
  if FLAGS.summarize:
    summarize(FLAGS.summarize)
    return
  network = load_network(FLAGS.network)
  test = data_lib.load_split("test", FLAGS.mnist_manual_dir)
  print(f"load: {os.getloadavg()}", flush=True)
  config = verify_lib.VerifyConfig(delta=FLAGS.delta, mode="targeted",
                                   solver=FLAGS.solver,
                                   time_limit=FLAGS.time_limit,
                                   bab_time_limit=FLAGS.bab_time_limit)
  rows, index = [], FLAGS.first_image
  chosen = 0
  while chosen < FLAGS.num_images:
    image, label = test.images[index].astype(np.float64), int(test.labels[index])
    index += 1
    if int(np.argmax(forward(network, image))) != label:
      continue
    chosen += 1
    targets = [t for t in range(10) if t != label][:FLAGS.max_targets]
    t0 = time.perf_counter()
    records = verify_lib.verify_image(network, image, label, index - 1, targets,
                                      config)
    image_seconds = time.perf_counter() - t0
    shared = image_seconds - sum(r["solve_seconds"] for r in records)
    for r in records:
      naive = naive_solve(network, image, label, r["target"], FLAGS.delta,
                          FLAGS.solver, FLAGS.time_limit)
      row = {"image_index": index - 1, "target": r["target"],
             "default_seconds": r["solve_seconds"] + shared / len(records),
             "default_status": r["status"], "default_objective": r["objective"],
             "default_optimal": r["optimal"],
             "default_binaries": r["num_binaries"],
             "default_decided_by": r.get("decided_by"),
             "naive_seconds": naive["seconds"], "naive_status": naive["status"],
             "naive_objective": naive["objective"],
             "naive_optimal": naive["optimal"],
             "naive_binaries": naive["num_binaries"]}
      rows.append(row)
      print(json.dumps(row), flush=True)
  default_s = [r["default_seconds"] for r in rows]
  naive_s = [r["naive_seconds"] for r in rows]
  both = [r for r in rows if r["default_optimal"] and r["naive_optimal"]]
  verdicts_agree = all(r["default_status"] == r["naive_status"] for r in both)
  objective_gap = max((abs(r["default_objective"] - r["naive_objective"])
                       for r in both), default=0.0)
  result = {
      "network": FLAGS.network, "delta": FLAGS.delta, "solver": FLAGS.solver,
      "time_limit": FLAGS.time_limit, "bab_time_limit": FLAGS.bab_time_limit,
      "problems": len(rows),
      "default_decided_by": {k: sum(1 for r in rows
                                    if r["default_decided_by"] == k)
                             for k in ("bab", "milp")},
      "load_after": os.getloadavg(),
      "default": percentile_summary(default_s),
      "naive": percentile_summary(naive_s),
      "median_ratio": float(np.median(naive_s) / np.median(default_s)),
      "mean_ratio": float(np.mean(naive_s) / np.mean(default_s)),
      "both_optimal": len(both),
      "default_timeouts": sum(1 for r in rows if not r["default_optimal"]),
      "naive_timeouts": sum(1 for r in rows if not r["naive_optimal"]),
      "verdicts_agree": verdicts_agree,
      "max_objective_difference": objective_gap,
      "objectives_agree_1e-4": objective_gap <= 1e-4,
  }
  print(json.dumps(result, indent=1))
  if FLAGS.out:
    os.makedirs(os.path.dirname(os.path.abspath(FLAGS.out)), exist_ok=True)
    with open(FLAGS.out, "w") as f:
      json.dump({"summary": result, "problems": rows}, f, indent=1)


if __name__ == "__main__":
  app.run(main)
