"""Ablations (research questions 3-4): one pipeline run per variant.

    python launch/ablations/run_ablation.py --sweep=delta --out_dir=runs/abl_delta
    python launch/ablations/run_ablation.py --sweep=widths --quick ...

Sweeps: delta, widths (width/depth), threshold, training (standard vs PGD),
retrain (scratch / finetune / rewind), and RQ4's architectures, recipes
(standard, PGD, PGD with Xiao et al.'s ReLU-stability regulariser) and rq4
(every architecture under every recipe). Each variant is a full
`robust_prune.pipeline` run in OUT/<variant>/ (resumable like the main job);
variants that share the original network's training (and pruning) reuse it
through a symlink instead of retraining (every training option decides the
shared training, every pruning option and the solver the shared pruning).
The sweeps are `robust_prune.configs.SWEEPS` ({flag name: value} changes of
the base configuration the pipeline flags describe). Afterwards OUT/aggregate.{csv,md} and
plots of adversarial-example rate and verified robust accuracy vs number of
hidden neurons, and clean accuracy vs robustness, are written.
Rerunning resumes: finished variants are skipped.

`--engine=ray` runs the variants as Ray tasks (`--variant_cpus`,
`--variant_gpus` each; `--ray_address` or $RAY_ADDRESS joins a cluster,
unset starts a local Ray): first one variant per distinct training, then one
per distinct pruning, then the rest, so shared work is done once.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from typing import Any, Mapping

from absl import flags

from robust_prune import cli
from robust_prune import configs
from robust_prune import io
from robust_prune import pipeline as pipeline_lib
from robust_prune import report as report_lib
from robust_prune.report import figures as figures_lib

SWEEPS = configs.SWEEPS
QUICK_SWEEPS = configs.QUICK_SWEEPS

flags.DEFINE_enum("sweep", None, sorted(SWEEPS), "Which ablation.")
flags.DEFINE_float("variant_cpus", 2.0, "engine ray: CPUs each variant asks for")
flags.DEFINE_float("variant_gpus", 0.0, "engine ray: GPUs each variant asks "
                   "for (training runs on it when JAX sees one)")
# The base configuration; --out_dir is the sweep's. The pipeline's --engine
# and --ray_address say where the variants run here (local: one after
# another; ray: as Ray tasks), each variant verifying on its own machine.
pipeline_lib.define_flags()
flags.mark_flags_as_required(["sweep", "out_dir"])
FLAGS = flags.FLAGS


def _text(value) -> str:
  return "-".join(map(str, value)) if isinstance(value, tuple) else str(value)


def variant_name(overrides: dict) -> str:
  """`key_value` per changed option, joined by `__` (hidden_300-100)."""
  return "__".join(f"{k}_{_text(v)}" for k, v in overrides.items())


def shared_options(config: configs.PipelineConfig, kind: str
                   ) -> dict[str, Any]:
  """What decides the original network (every training option) or the
  pruned one (those, the pruning options and the solver the pipeline
  prunes with): variants that agree on them share that stage's work."""
  options = {"train": config.train.to_json()}
  if kind == "pruned":
    options["prune"] = dataclasses.asdict(config.prune)
    options["solver"] = config.verify.solver
  return options


def _shared_dir(out_dir: str, options: Mapping[str, Any], kind: str) -> str:
  key = json.dumps(options, sort_keys=True)
  return os.path.join(out_dir, "shared", kind,
                      hashlib.sha256(key.encode()).hexdigest()[:16])


def _link(target: str, link: str):
  os.makedirs(target, exist_ok=True)
  if not os.path.lexists(link):
    os.makedirs(os.path.dirname(link), exist_ok=True)
    os.symlink(os.path.abspath(target), link)


def run_variant(base: configs.PipelineConfig, overrides, out_dir, manual_dir):
  config = base.replace(**overrides)
  run_dir = os.path.join(out_dir, variant_name(overrides))
  # Identical training (and pruning) is done once and shared.
  for kind in ("original", "pruned"):
    _link(_shared_dir(out_dir, shared_options(config, kind), kind),
          os.path.join(run_dir, kind))
  print(f"=== variant {variant_name(overrides)} -> {run_dir}", flush=True)
  pipeline_lib.Pipeline(config, run_dir, manual_dir=manual_dir).run()
  return config, run_dir


def _variant_task(base, overrides, out_dir, manual_dir):
  """A Ray task: one variant's pipeline. A shared training or pruning folder
  held by another variant's run is waited for, then resumed (finished)."""
  import time  # pylint: disable=g-import-not-at-top
  while True:
    try:
      return run_variant(base, overrides, out_dir, manual_dir)
    except io.LockedError:
      time.sleep(5.0)


def _phases(base: configs.PipelineConfig, sweep, out_dir: str) -> list[list]:
  """Variants in three waves: one per distinct training, then one per
  distinct pruning, then the rest, so shared work is done once, first."""
  waves, seen = [[], [], []], {"original": set(), "pruned": set()}
  for overrides in sweep:
    config = base.replace(**overrides)
    keys = {kind: _shared_dir(out_dir, shared_options(config, kind), kind)
            for kind in ("original", "pruned")}
    wave = (0 if keys["original"] not in seen["original"] else
            1 if keys["pruned"] not in seen["pruned"] else 2)
    for kind, key in keys.items():
      seen[kind].add(key)
    waves[wave].append(overrides)
  return [w for w in waves if w]


def run_variants(base: configs.PipelineConfig, sweep, out_dir: str,
                 manual_dir) -> list[tuple]:
  """(overrides, config, run_dir) of every variant, run on FLAGS.engine."""
  if FLAGS.engine == "local":
    return [(o, *run_variant(base, o, out_dir, manual_dir)) for o in sweep]
  from robust_prune.verify import engines  # pylint: disable=g-import-not-at-top
  done = []
  with engines.ray_session(FLAGS.ray_address) as ray:
    task = ray.remote(num_cpus=FLAGS.variant_cpus,
                      num_gpus=FLAGS.variant_gpus or None,
                      max_retries=1)(_variant_task)
    for wave in _phases(base, sweep, out_dir):
      refs = [task.remote(base, o, out_dir, manual_dir) for o in wave]
      done += [(o, *ray.get(ref)) for o, ref in zip(wave, refs)]
  return done


def aggregate_rows(variants) -> list[dict]:
  rows = []
  for overrides, config, run_dir in variants:
    with open(os.path.join(run_dir, "summary.json")) as f:
      summary = json.load(f)
    key = ",".join(overrides)
    value = ",".join(_text(v) for v in overrides.values())
    for net, s in summary["networks"].items():
      counts = s["counts"]
      rows.append({
          "variant": variant_name(overrides), "swept": key,
          "value": value,
          "network": net, "hidden_widths": "-".join(map(str, s["hidden_widths"])),
          "hidden_neurons": sum(s["hidden_widths"]),
          "parameters": s["parameters"], "delta": config.verify.delta,
          "clean_accuracy": s["clean_accuracy"], "pgd_accuracy": s["pgd_accuracy"],
          "adversarial": counts["adversarial"], "searched": counts["searched"],
          "timeouts": counts["timeout"],
          "adversarial_rate": (counts["adversarial"] / counts["searched"]
                               if counts["searched"] else None),
          "verified_robust_accuracy": s["verified_robust_accuracy"]["value"],
          "reverse_accuracy": s["reverse_accuracy"],
      })
  return rows


def write_aggregate(rows: list[dict], out_dir: str):
  report_lib.write_csv(rows, os.path.join(out_dir, "aggregate.csv"))
  cols = ["variant", "network", "hidden_widths", "parameters", "clean_accuracy",
          "pgd_accuracy", "adversarial", "searched", "timeouts",
          "adversarial_rate", "verified_robust_accuracy", "reverse_accuracy"]
  fmt = lambda v: f"{v:.4f}" if isinstance(v, float) else ("n/a" if v is None else str(v))
  lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
  lines += ["| " + " | ".join(fmt(r[c]) for c in cols) + " |" for r in rows]
  io.atomic_write(os.path.join(out_dir, "aggregate.md"),
                  "\n".join(lines) + "\n")
  plt = figures_lib._pyplot()  # pylint: disable=protected-access
  fig, axes = plt.subplots(1, 3, figsize=(14, 4))
  for net, marker in (("original", "o"), ("pruned", "s")):
    mine = [r for r in rows if r["network"] == net]
    xs = [r["hidden_neurons"] for r in mine]
    axes[0].scatter(xs, [r["adversarial_rate"] or 0 for r in mine],
                    marker=marker, label=net)
    axes[1].scatter(xs, [r["verified_robust_accuracy"] or 0 for r in mine],
                    marker=marker, label=net)
    axes[2].scatter([r["verified_robust_accuracy"] or 0 for r in mine],
                    [r["clean_accuracy"] or 0 for r in mine], marker=marker,
                    label=net)
    for r in mine:
      axes[2].annotate(r["variant"], (r["verified_robust_accuracy"] or 0,
                                      r["clean_accuracy"] or 0), fontsize=6)
  axes[0].set(xlabel="hidden neurons", ylabel="adversarial-example rate")
  axes[1].set(xlabel="hidden neurons", ylabel="verified robust accuracy")
  axes[2].set(xlabel="verified robust accuracy", ylabel="clean accuracy")
  for ax in axes:
    ax.legend()
  io.atomic_write(os.path.join(out_dir, "aggregate.png"),
                  figures_lib._png(plt, fig))  # pylint: disable=protected-access


def main(argv):
  del argv
  base = pipeline_lib.config_from_flags(FLAGS)
  sweep = (QUICK_SWEEPS if FLAGS.quick else {}).get(FLAGS.sweep,
                                                   SWEEPS[FLAGS.sweep])
  with io.locked_workdir(FLAGS.out_dir, "ablation sweep"):
    variants = run_variants(base, sweep, FLAGS.out_dir, FLAGS.mnist_manual_dir)
    write_aggregate(aggregate_rows(variants), FLAGS.out_dir)
  print(f"aggregate: {os.path.join(FLAGS.out_dir, 'aggregate.md')}")


if __name__ == "__main__":
  cli.run(main, cli.USER_ERRORS + (RuntimeError,))
