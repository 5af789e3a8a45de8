"""MILP neuron-importance pruning and retraining (absl binary).

    python -m robust_prune.prune --network=runs/pgd_300_100/network.npz \
        --workdir=runs/pruned_300_100 [--threshold=0.001] [--images_per_class=1]
        [--solver=HIGHS] [--time_limit=60] [--margin=3] [--lambda=0]
        [--retrain=scratch|finetune|rewind] [--rounds=1]
        [--baseline=milp|robust_milp|lp|magnitude|random]
        [--prune_widths=138,70] [--max_accuracy_drop=0.01]
        [--critical] [--mnist_manual_dir=DIR] [training flags]

writes DIR/network.npz (pruned, retrained), DIR/scores.json, DIR/pruning.json
and DIR/rounds.jsonl (see robust_prune/pruning/loop.py for the layout);
rerunning with the same DIR resumes; a second run on DIR is refused while the
first lives. Retraining uses the recipe in config.json next to --network when
present; training flags given on the command line override it (the hidden
widths come from the pruning).
"""

from __future__ import annotations

import json
from typing import Any, Sequence

from absl import flags

from robust_prune import cli
from robust_prune import configs
from robust_prune import data as data_lib
from robust_prune import io
from robust_prune.configs import bridge
from robust_prune.milp import solvers
from robust_prune.pruning import loop

# The library entry point (the paper-reproduction pipeline calls these).
PruneOptions = loop.PruneOptions
run_pruning = loop.run_pruning

# PruneOptions (pruning/options.py) carries no flag metadata: its flags'
# names (where they differ from the fields) and help texts.
FLAG_NAMES = {"lam": "lambda", "seed": "prune_seed", "widths": "prune_widths"}
FLAG_HELP = {
    "threshold": "Remove neurons scored below this (in [0, 1]).",
    "images_per_class": "Correctly classified training images per class in "
                        "the MILP's batch.",
    "solver": f"MILP solver: one of {', '.join(solvers.SOLVERS)}.",
    "time_limit": "Seconds for each importance MILP (an unproven incumbent "
                  "is used and labelled as such).",
    "mip_gap": "Relative and absolute optimality gap at which SCIP/HiGHS "
               "stop (GLPK_MI always runs with gap 0).",
    "descent_start": "Start the importance MILP from an LP-based "
                     "activation-pattern descent (better incumbents, smaller "
                     "networks; see BUILD_NOTES).",
    "margin": "Required logit margin of each batch image (hard constraint "
              "when --lambda=0, hinge target otherwise).",
    "lam": "Weight of the hinge penalty; 0 = hard margin constraint instead.",
    "retrain": "Retrain the pruned net from scratch, fine-tune its weights, "
               "or rewind them to their initial values.",
    "rounds": "Prune-retrain rounds (stops early when nothing falls below "
              "the threshold).",
    "baseline": "How neurons are ranked: milp = MILP score on the clean "
                "batch; robust_milp = on it plus its PGD versions; lp = the "
                "MILP's LP relaxation; magnitude, random (without "
                "--prune_widths these remove as many neurons per layer as "
                "the MILP's threshold).",
    "widths": "Neurons to keep per hidden layer, e.g. 138,70: the "
              "top-ranked by the method (empty: --threshold decides).",
    "max_accuracy_drop": "Stop iterating when clean test accuracy falls "
                         "more than this fraction below the input network's.",
    "seed": "Seed of the random baseline.",
    "critical": "Also compare critical neurons (clean vs PGD batch; original "
                "vs pruned): critical.json.",
}
PRUNE_FLAGS = bridge.flag_specs(
    PruneOptions, rename=FLAG_NAMES, help=FLAG_HELP,
    choices={"retrain": loop.RETRAIN_MODES, "baseline": loop.METHODS})


def pipeline_prune_options(config: configs.PipelineConfig) -> PruneOptions:
  """The pruning options of a PipelineConfig (ValueError if bad: the
  pipeline checks them before it trains anything). The pipeline prunes with
  its verification solver and its training seed; --prune_method is the
  options' `baseline` (the ranking method)."""
  p = config.prune
  # Checked against the widths the train stage will give the network.
  loop.check_widths(p.widths, config.train.hidden)
  return PruneOptions(
      threshold=p.threshold, images_per_class=p.images_per_class,
      solver=config.verify.solver, time_limit=p.time_limit,
      retrain=p.retrain, seed=config.train.seed, margin=p.margin, lam=p.lam,
      baseline=p.method, widths=p.widths)


def run_pruning_stage(network_path: str, workdir: str, options: PruneOptions,
                      *, splits: tuple[data_lib.Split, data_lib.Split]
                      ) -> dict[str, Any]:
  """The pipeline's `prune` stage: network_path -> workdir; the summary's
  widths, parameter counts and solver statuses."""
  train, test = splits
  summary = run_pruning(network_path, workdir, options, train=train,
                        test=test)
  return {key: summary[key] for key in
          ("widths_before", "widths_after", "params_before", "params_after",
           "param_reduction", "solver_status")}


def define_prune_flags(flag_values: flags.FlagValues = flags.FLAGS):
  flags.DEFINE_string("network", None, "network.npz to prune.",
                      flag_values=flag_values)
  flags.DEFINE_string("workdir", None, "Output folder; resumed if it exists.",
                      flag_values=flag_values)
  bridge.define_flags(PRUNE_FLAGS, flag_values)


def train_overrides_from_flags(f: flags.FlagValues = flags.FLAGS
                               ) -> dict[str, Any]:
  """Training flags given explicitly on the command line (the hidden
  widths come from the pruning)."""
  overrides = bridge.present_values(configs.TRAIN_FLAGS, f)
  overrides.pop("hidden", None)
  return overrides


def options_from_flags(f: flags.FlagValues = flags.FLAGS) -> PruneOptions:
  values = {s.name: bridge.flag_value(s, f) for s in PRUNE_FLAGS}
  values["solver"] = values["solver"].upper()
  return bridge.build(PruneOptions, PRUNE_FLAGS, values)


def main(argv: Sequence[str]):
  del argv
  f = flags.FLAGS
  options = options_from_flags(f)
  overrides = train_overrides_from_flags(f)
  with io.locked_workdir(f.workdir, "prune run"):
    summary = run_pruning(f.network, f.workdir, options,
                          train_overrides=overrides,
                          manual_dir=f.mnist_manual_dir)
  print(json.dumps({key: summary[key] for key in
                    ("widths_before", "widths_after", "params_before",
                     "params_after", "param_reduction", "stop_reason",
                     "solver_status", "original", "final")}))


if __name__ == "__main__":
  define_prune_flags()
  bridge.define_flags(configs.TRAIN_FLAGS)
  configs.define_data_flags()
  flags.mark_flags_as_required(["network", "workdir"])
  cli.run(main, cli.USER_ERRORS + (TypeError,))
