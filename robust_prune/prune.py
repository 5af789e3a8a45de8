"""MILP neuron-importance pruning and retraining (absl binary).

    python -m robust_prune.prune --network=runs/pgd_300_100/network.npz \
        --workdir=runs/pruned_300_100 [--threshold=0.001] [--images_per_class=1]
        [--solver=HIGHS] [--time_limit=60] [--margin=3] [--lambda=0]
        [--retrain=scratch|finetune|rewind] [--rounds=1]
        [--baseline=milp|random|magnitude] [--max_accuracy_drop=0.01]
        [--critical] [--mnist_manual_dir=DIR] [training flags]

writes DIR/network.npz (pruned, retrained), DIR/scores.json, DIR/pruning.json
and DIR/rounds.jsonl (see robust_prune/pruning/loop.py for the layout);
rerunning with the same DIR resumes. Retraining uses the recipe in
config.json next to --network when present; training flags given on the
command line override it (the hidden widths come from the pruning).
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any, Sequence

from absl import flags

from robust_prune import cli
from robust_prune import train as train_lib
from robust_prune.milp import solvers
from robust_prune.pruning import loop

# The library entry point (the paper-reproduction pipeline calls these).
PruneOptions = loop.PruneOptions
run_pruning = loop.run_pruning


def pipeline_prune_options(c) -> PruneOptions:
  """The pruning options of a PipelineConfig (ValueError if bad: the
  pipeline checks them before it trains anything)."""
  return PruneOptions(
      threshold=c.threshold, images_per_class=c.images_per_class,
      solver=c.solver, time_limit=c.prune_time_limit, retrain=c.retrain,
      seed=c.seed, margin=c.prune_margin, lam=c.prune_lambda)


def run_pruning_stage(pipeline) -> dict[str, Any]:
  """The pipeline's `prune` stage: OUT/original/network.npz -> OUT/pruned/."""
  options = pipeline_prune_options(pipeline.config)
  train, test = pipeline.splits
  summary = run_pruning(pipeline.path("original", "network.npz"),
                        pipeline.path("pruned"), options, train=train,
                        test=test)
  return {key: summary[key] for key in
          ("widths_before", "widths_after", "params_before", "params_after",
           "param_reduction", "solver_status")}


def define_prune_flags():
  d = PruneOptions()
  flags.DEFINE_string("network", None, "network.npz to prune.")
  flags.DEFINE_string("workdir", None, "Output folder; resumed if it exists.")
  flags.DEFINE_float("threshold", d.threshold,
                     "Remove neurons scored below this (in [0, 1]).")
  flags.DEFINE_integer("images_per_class", d.images_per_class,
                       "Correctly classified training images per class in "
                       "the MILP's batch.")
  flags.DEFINE_string("solver", d.solver,
                      f"MILP solver: one of {', '.join(solvers.SOLVERS)}.")
  flags.DEFINE_float("time_limit", d.time_limit,
                     "Seconds for each importance MILP (an unproven "
                     "incumbent is used and labelled as such).")
  flags.DEFINE_bool("descent_start", d.descent_start, "Start the importance "
                    "MILP from an LP-based activation-pattern descent (better "
                    "incumbents, smaller networks; see BUILD_NOTES).")
  flags.DEFINE_float("mip_gap", d.mip_gap, "Relative and absolute optimality gap "
                     "at which SCIP/HiGHS stop (GLPK_MI always runs with gap "
                     "0).")
  flags.DEFINE_float("margin", d.margin, "Required logit margin of each batch "
                     "image (hard constraint when --lambda=0, hinge target "
                     "otherwise).")
  flags.DEFINE_float("lambda", d.lam, "Weight of the hinge penalty; 0 = hard "
                     "margin constraint instead.")
  flags.DEFINE_enum("retrain", d.retrain, list(loop.RETRAIN_MODES),
                    "Retrain the pruned net from scratch, fine-tune its "
                    "weights, or rewind them to their initial values.")
  flags.DEFINE_integer("rounds", d.rounds, "Prune-retrain rounds (stops "
                       "early when nothing falls below the threshold).")
  flags.DEFINE_enum("baseline", d.baseline, list(loop.BASELINES),
                    "milp = prune by MILP score; random/magnitude remove the "
                    "same number of neurons per layer by another rule.")
  flags.DEFINE_float("max_accuracy_drop", d.max_accuracy_drop,
                     "Stop iterating when clean test accuracy falls more "
                     "than this fraction below the input network's.")
  flags.DEFINE_bool("critical", d.critical, "Also compare critical neurons "
                    "(clean vs PGD batch; original vs pruned): critical.json.")
  flags.DEFINE_integer("prune_seed", d.seed,
                       "Seed of the random baseline.")


if __name__ == "__main__":
  define_prune_flags()
  train_lib.define_train_flags()
  train_lib.define_data_flags()
  flags.mark_flags_as_required(["network", "workdir"])


def train_overrides_from_flags(f=flags.FLAGS) -> dict[str, Any]:
  """Training flags given explicitly on the command line."""
  fields = {x.name for x in dataclasses.fields(train_lib.TrainConfig)}
  overrides = {}
  for name in sorted(fields - {"hidden"}):
    if name in f and f[name].present:
      overrides[name] = f[name].value
  return overrides


def options_from_flags(f=flags.FLAGS) -> PruneOptions:
  return PruneOptions(
      threshold=f.threshold, images_per_class=f.images_per_class,
      solver=f.solver.upper(), time_limit=f.time_limit, mip_gap=f.mip_gap,
      descent_start=f.descent_start,
      margin=f.margin, lam=f["lambda"].value, retrain=f.retrain,
      rounds=f.rounds, baseline=f.baseline,
      max_accuracy_drop=f.max_accuracy_drop, seed=f.prune_seed,
      critical=f.critical)


def main(argv: Sequence[str]):
  del argv
  f = flags.FLAGS
  options = options_from_flags(f)
  summary = run_pruning(f.network, f.workdir, options,
                        train_overrides=train_overrides_from_flags(f),
                        manual_dir=f.mnist_manual_dir)
  print(json.dumps({key: summary[key] for key in
                    ("widths_before", "widths_after", "params_before",
                     "params_after", "param_reduction", "stop_reason",
                     "solver_status", "original", "final")}))


if __name__ == "__main__":
  cli.run(main, cli.USER_ERRORS + (TypeError,))
