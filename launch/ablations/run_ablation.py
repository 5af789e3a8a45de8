"""Ablations (research questions 3-4): one pipeline run per variant.

    python launch/ablations/run_ablation.py --sweep=delta --out_dir=runs/abl_delta
    python launch/ablations/run_ablation.py --sweep=widths --quick ...

Sweeps: delta, widths (width/depth), threshold, training (standard vs PGD),
retrain (scratch / finetune / rewind). Each variant is a full
`robust_prune.pipeline` run in OUT/<variant>/ (resumable like the main job);
variants that share the original network's training (and pruning) reuse it
through a symlink instead of retraining. Afterwards OUT/aggregate.{csv,md} and
plots of adversarial-example rate and verified robust accuracy vs number of
hidden neurons, and clean accuracy vs robustness, are written.
Rerunning resumes: finished variants are skipped.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from typing import Sequence

from absl import app
from absl import flags

from robust_prune import pipeline as pipeline_lib
from robust_prune import report as report_lib

SWEEPS = {
    "delta": [dict(delta=d) for d in (0.02, 0.05, 0.08, 0.1)],
    "widths": [dict(hidden=h) for h in ((100,), (100, 100), (300, 100),
                                        (300, 100, 100))],
    "threshold": [dict(threshold=t) for t in (0.001, 0.01, 0.1, 0.5)],
    "training": [dict(train_epsilon=e) for e in (0.0, 0.1)],
    "retrain": [dict(retrain=r) for r in ("scratch", "finetune", "rewind")],
}
QUICK_SWEEPS = {
    "delta": [dict(delta=d) for d in (0.02, 0.05, 0.1)],
    "widths": [dict(hidden=h) for h in ((16,), (24, 12), (32, 16, 8))],
}
# Fields that decide the original network / the pruned network.
TRAIN_FIELDS = ("hidden", "train_epsilon", "epochs", "max_train_examples", "seed")
PRUNE_FIELDS = TRAIN_FIELDS + ("threshold", "images_per_class", "retrain",
                               "prune_margin", "prune_lambda",
                               "solver", "prune_time_limit")

flags.DEFINE_enum("sweep", None, sorted(SWEEPS), "Which ablation.")
pipeline_lib.define_flags()  # the base configuration; --out_dir is the sweep's
flags.mark_flags_as_required(["sweep", "out_dir"])
FLAGS = flags.FLAGS


def variant_name(overrides: dict) -> str:
  (key, value), = overrides.items()
  if isinstance(value, tuple):
    value = "-".join(map(str, value))
  return f"{key}_{value}"


def _shared_dir(out_dir: str, config, fields: Sequence[str], kind: str) -> str:
  key = "_".join(f"{f}={getattr(config, f)}" for f in fields)
  key = key.replace(" ", "").replace("(", "").replace(")", "").replace(",", "-")
  if len(key) > 150:
    key = hashlib.sha256(key.encode()).hexdigest()[:16]
  return os.path.join(out_dir, "shared", kind, key)


def _link(target: str, link: str):
  os.makedirs(target, exist_ok=True)
  if not os.path.lexists(link):
    os.makedirs(os.path.dirname(link), exist_ok=True)
    os.symlink(os.path.abspath(target), link)


def run_variant(base, overrides, out_dir, manual_dir):
  config = dataclasses.replace(base, **overrides)
  run_dir = os.path.join(out_dir, variant_name(overrides))
  # Identical training (and pruning) is done once and shared.
  _link(_shared_dir(out_dir, config, TRAIN_FIELDS, "original"),
        os.path.join(run_dir, "original"))
  _link(_shared_dir(out_dir, config, PRUNE_FIELDS, "pruned"),
        os.path.join(run_dir, "pruned"))
  print(f"=== variant {variant_name(overrides)} -> {run_dir}", flush=True)
  pipeline_lib.Pipeline(config, run_dir, manual_dir=manual_dir).run()
  return config, run_dir


def aggregate_rows(variants) -> list[dict]:
  rows = []
  for overrides, config, run_dir in variants:
    with open(os.path.join(run_dir, "summary.json")) as f:
      summary = json.load(f)
    (key, value), = overrides.items()
    for net, s in summary["networks"].items():
      counts = s["counts"]
      rows.append({
          "variant": variant_name(overrides), "swept": key,
          "value": "-".join(map(str, value)) if isinstance(value, tuple) else value,
          "network": net, "hidden_widths": "-".join(map(str, s["hidden_widths"])),
          "hidden_neurons": sum(s["hidden_widths"]),
          "parameters": s["parameters"], "delta": config.delta,
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
  with open(os.path.join(out_dir, "aggregate.md"), "w") as f:
    f.write("\n".join(lines) + "\n")
  plt = report_lib._pyplot()  # pylint: disable=protected-access
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
  fig.tight_layout()
  fig.savefig(os.path.join(out_dir, "aggregate.png"), dpi=120)
  plt.close(fig)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  base = pipeline_lib.config_from_flags(FLAGS)
  sweep = (QUICK_SWEEPS if FLAGS.quick else {}).get(FLAGS.sweep,
                                                   SWEEPS[FLAGS.sweep])
  os.makedirs(FLAGS.out_dir, exist_ok=True)
  variants = []
  for overrides in sweep:
    config, run_dir = run_variant(base, overrides, FLAGS.out_dir,
                                  FLAGS.mnist_manual_dir)
    variants.append((overrides, config, run_dir))
  rows = aggregate_rows(variants)
  write_aggregate(rows, FLAGS.out_dir)
  print(f"aggregate: {os.path.join(FLAGS.out_dir, 'aggregate.md')}")


if __name__ == "__main__":
  app.run(main)
