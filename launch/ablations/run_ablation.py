"""Ablations (research questions 3-4): one pipeline run per variant.

    python launch/ablations/run_ablation.py --sweep=delta --out_dir=runs/abl_delta
    python launch/ablations/run_ablation.py --sweep=pruning --quick --engine=ray ...

Sweeps (`robust_prune.configs.SWEEPS`, {flag name: value} changes of the
base configuration the pipeline flags describe): delta, widths
(width/depth), threshold, training (standard vs PGD), retrain (scratch /
finetune / rewind), RQ4's architectures, recipes (standard, PGD, PGD with
Xiao et al.'s ReLU-stability regulariser) and rq4 (every architecture under
every recipe), and pruning (milp, robust_milp, lp, magnitude, random at the
widths the milp variant pruned to: equal per-layer widths, one shared
trained network). Each variant is a full `robust_prune.pipeline` run in
OUT/<variant>/ (resumable like the main job); variants that share the
original network's training (and pruning) reuse it through a symlink
(`robust_prune.sweep`). Afterwards each variant's results are written to
OUT/<variant>/variant_result.json (`robust_prune.sweep_results`) and the
aggregate to OUT/aggregate.{csv,md} and OUT/aggregate_*.png
(`robust_prune.sweep_report`, findings by `robust_prune.sweep_findings`).
Rerunning resumes: finished stages and variants are skipped.

`--engine=ray` runs the variants as Ray tasks (`--variant_cpus`,
`--variant_gpus` each; `--ray_address` or $RAY_ADDRESS joins a cluster,
unset starts a local Ray): first one variant per distinct training, then one
per distinct pruning, then the rest, so shared work is done once.
"""

from __future__ import annotations

import os

from absl import flags

from robust_prune import cli
from robust_prune import configs
from robust_prune import data as data_lib
from robust_prune import io
from robust_prune import pipeline as pipeline_lib
from robust_prune import sweep as sweep_lib
from robust_prune import sweep_findings
from robust_prune import sweep_report
from robust_prune import sweep_results

SWEEPS = configs.SWEEPS
QUICK_SWEEPS = configs.QUICK_SWEEPS

flags.DEFINE_enum("sweep", None, sorted(SWEEPS), "Which ablation.")
flags.DEFINE_float("variant_cpus", 2.0, "engine ray: CPUs each variant asks for")
flags.DEFINE_bool("full_pipeline", False, "Also run the RQ1-3 stages "
                  "(critical, transfer, ablation) and each variant's report; "
                  "the sweep's aggregate reads only train, prune, accuracy "
                  "and verify.")
flags.DEFINE_float("variant_gpus", 0.0, "engine ray: GPUs each variant asks "
                   "for (training runs on it when JAX sees one)")
# The base configuration; --out_dir is the sweep's. The pipeline's --engine
# and --ray_address say where the variants run here (local: one after
# another; ray: as Ray tasks), each variant verifying on its own machine.
pipeline_lib.define_flags()
FLAGS = flags.FLAGS

# The library's names, as tests and older scripts know them.
variant_name = sweep_lib.variant_name
shared_options = sweep_lib.shared_options
_shared_dir = sweep_lib.shared_dir
_phases = sweep_lib.phases


def sweep_variants(name: str, quick: bool) -> list[dict]:
  return list((QUICK_SWEEPS if quick else {}).get(name, SWEEPS[name]))


def aggregate(done, out_dir: str, test_images) -> list[dict]:
  """Every variant's results, then the aggregate files; the rows."""
  results = [sweep_results.variant_result(v.name, v.overrides, config,
                                          run_dir, test_images)
             for v, config, run_dir in done]
  rows = sweep_report.aggregate_rows(results)
  sweep_report.write_aggregate(rows, sweep_findings.findings_text(rows),
                               out_dir)
  return rows


def main(argv):
  del argv
  base = pipeline_lib.config_from_flags(FLAGS)
  engine = sweep_lib.Engine(FLAGS.engine, FLAGS.ray_address,
                            FLAGS.variant_cpus, FLAGS.variant_gpus,
                            FLAGS.full_pipeline)
  with io.locked_workdir(FLAGS.out_dir, "ablation sweep"):
    done = sweep_lib.run_sweep(base, FLAGS.sweep,
                               sweep_variants(FLAGS.sweep, FLAGS.quick),
                               FLAGS.out_dir, FLAGS.mnist_manual_dir, engine)
    test_images = data_lib.load_split("test", FLAGS.mnist_manual_dir).images
    aggregate(done, FLAGS.out_dir, test_images)
  print(f"aggregate: {os.path.join(FLAGS.out_dir, 'aggregate.md')}")


if __name__ == "__main__":
  flags.mark_flags_as_required(["sweep", "out_dir"])
  cli.run(main, cli.USER_ERRORS + (RuntimeError,))
