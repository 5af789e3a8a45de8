"""The paper's tables and figures, generated from result files (absl binary).

    python -m robust_prune.report --out_dir=OUT

reads what the pipeline wrote into OUT (`original/`, `pruned/`,
`verify_original.jsonl`, `verify_pruned.jsonl`, `transfer.json`,
`pipeline.json`) and writes `report.md`, CSV tables and PNG figures there.
Nothing in the report is typed by hand: every number comes from those files.
"""

from __future__ import annotations

import csv
import json
import os
from typing import Mapping, Sequence

from absl import flags
import numpy as np

from robust_prune import cli
from robust_prune import evaluate as evaluate_lib
from robust_prune import network as network_lib

NETWORKS = ("original", "pruned")
NUM_CLASSES = 10
SEARCHED = ("adversarial", "robust", "timeout")  # statuses of a real search

# The paper's published figures (Bai et al. 2020, Figures 1 and 4, Section 4).
PAPER = {
    "clean_accuracy": {"original": 0.9705, "pruned": 0.9711},
    "adversarial_examples": {"original": 148, "pruned": 139},
    "reverse_accuracy": {"original": 0.143885, "pruned": 0.222973},
    "searches": 1800,
    "found_time_mean": 6.3261, "not_found_time_mean": 5.01184,
    "found_time_max": 60.0291, "not_found_time_max": 337.692,
}


# ------------------------------------------------------------------ tables
def decided_by_counts(records: Sequence[Mapping]) -> dict[str, int]:
  counts = {}
  for r in records:
    if r["status"] in SEARCHED:
      step = r.get("decided_by", "milp")
      counts[step] = counts.get(step, 0) + 1
  return counts


def status_counts(records: Sequence[Mapping]) -> dict[str, int]:
  counts = {s: 0 for s in ("adversarial", "robust", "timeout", "misclassified",
                           "error")}
  for r in records:
    counts[r["status"]] = counts.get(r["status"], 0) + 1
  counts["searched"] = sum(counts[s] for s in SEARCHED)
  counts["total"] = len(records)
  return counts


def verified_robust_accuracy(records: Sequence[Mapping]) -> dict:
  """Per image: verified robust iff classified correctly and every target's
  search proved robustness; `upper` also counts undecided (time-out) images,
  so the true verified accuracy lies in [value, upper]."""
  by_image: dict[int, list[str]] = {}
  for r in records:
    by_image.setdefault(r["image_index"], []).append(r["status"])
  robust = sum(all(s == "robust" for s in st) for st in by_image.values())
  undecided = sum(("timeout" in st or "error" in st) and "adversarial" not in st
                  and "misclassified" not in st for st in by_image.values())
  n = len(by_image)
  return {"images": n, "verified_robust": robust,
          "value": robust / n if n else None,
          "upper": (robust + undecided) / n if n else None}


def per_class_table(records_by_net: Mapping[str, Sequence[Mapping]],
                    key: str) -> list[dict]:
  """The paper's Figure 3 (key='label': by original class; key='target': by
  target class). `count` is the number of searches (both networks), so
  success_rate = total adversarial / count."""
  rows = []
  for c in range(NUM_CLASSES):
    row = {key: c, "count": 0}
    for net, records in records_by_net.items():
      mine = [r for r in records if r[key] == c and r["status"] in SEARCHED]
      row["count"] += len(mine)
      row[f"{net}_adversarial"] = sum(r["status"] == "adversarial" for r in mine)
    row["total_adversarial"] = sum(row[f"{n}_adversarial"] for n in records_by_net)
    row["success_rate"] = (row["total_adversarial"] / row["count"]
                           if row["count"] else None)
    rows.append(row)
  return rows


def generation_seconds(record: Mapping) -> float:
  return float(record.get("build_seconds") or 0.0) + float(
      record.get("bounds_seconds") or 0.0) + float(
          record.get("solve_seconds") or 0.0)


def describe(values: Sequence[float]) -> dict:
  """pandas-style describe(): count/mean/std/min/quartiles/max."""
  v = np.asarray([x for x in values if x is not None], np.float64)
  if v.size == 0:
    return {"count": 0, **{k: None for k in ("mean", "std", "min", "25%", "50%",
                                             "75%", "max")}}
  q = np.percentile(v, [25, 50, 75])
  return {"count": int(v.size), "mean": float(v.mean()),
          "std": float(v.std(ddof=1)) if v.size > 1 else 0.0,
          "min": float(v.min()), "25%": float(q[0]), "50%": float(q[1]),
          "75%": float(q[2]), "max": float(v.max())}


def search_statistics(records: Sequence[Mapping]) -> dict[str, dict]:
  """The paper's Figure 4: objective value and generation time of the
  successful (adversarial) and unsuccessful (proven robust) searches."""
  groups = {"successful": [r for r in records if r["status"] == "adversarial"],
            "unsuccessful": [r for r in records if r["status"] == "robust"]}
  return {name: {"objective": describe([r.get("objective") for r in group]),
                 "seconds": describe([generation_seconds(r) for r in group])}
          for name, group in groups.items()}


def confusion_counts(records: Sequence[Mapping]) -> np.ndarray:
  """counts[target, label] of adversarial examples (the paper's Figure 2b)."""
  counts = np.zeros((NUM_CLASSES, NUM_CLASSES), np.int64)
  for r in records:
    if r["status"] == "adversarial":
      counts[r["target"], r["label"]] += 1
  return counts


# ------------------------------------------------------------------ figures
def _pyplot():
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  return plt


def plot_counts_and_transfer(summary: Mapping, path: str):
  plt = _pyplot()
  fig, axes = plt.subplots(1, 2, figsize=(9, 3.5))
  nets = list(summary["networks"])
  axes[0].bar(nets, [summary["networks"][n]["counts"]["adversarial"]
                     for n in nets], color=["tab:blue", "tab:orange"])
  # Found by PGD, the branch and bound or the MILP, whichever decided.
  axes[0].set_title("adversarial examples found (verified)")
  reverse = [summary["networks"][n]["reverse_accuracy"] for n in nets]
  names = [f"{n} on\n{'pruned' if n == 'original' else 'original'}'s"
           for n in nets]
  axes[1].bar(names, [100 * (a or 0.0) for a in reverse],
              color=["tab:blue", "tab:orange"])
  for i, a in enumerate(reverse):
    if a is None:  # no examples to test on: no bar, not a 0% bar
      axes[1].text(i, 1, "n/a\n(no examples)", ha="center", va="bottom")
  axes[1].set_title("reverse-testing accuracy (%)")
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)


def plot_heatmaps(confusions: Mapping[str, np.ndarray], path: str):
  plt = _pyplot()
  fig, axes = plt.subplots(1, len(confusions), figsize=(5 * len(confusions), 4.3))
  axes = np.atleast_1d(axes)
  for ax, (net, counts) in zip(axes, confusions.items()):
    im = ax.imshow(counts, cmap="viridis")
    for t in range(NUM_CLASSES):
      for y in range(NUM_CLASSES):
        if counts[t, y]:
          ax.text(y, t, str(counts[t, y]), ha="center", va="center",
                  color="w", fontsize=7)
    ax.set_xlabel("image label")
    ax.set_ylabel("target label")
    ax.set_xticks(range(NUM_CLASSES))
    ax.set_yticks(range(NUM_CLASSES))
    ax.set_title(f"{net}: adversarial examples")
    fig.colorbar(im, ax=ax, fraction=0.046)
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)


def plot_example_grid(records: Sequence[Mapping], images: np.ndarray, path: str,
                      max_rows: int = 8):
  """Original | adversarial | difference, with true and target labels."""
  plt = _pyplot()
  found = [r for r in records if r["status"] == "adversarial"][:max_rows]
  rows = max(len(found), 1)
  fig, axes = plt.subplots(rows, 3, figsize=(5.4, 1.9 * rows), squeeze=False)
  for ax in axes.ravel():
    ax.axis("off")
  for row, r in zip(axes, found):
    x = images[r["image_index"]].reshape(28, 28)
    x_adv = np.asarray(r["x_adv"]).reshape(28, 28)
    row[0].imshow(x, cmap="gray", vmin=0, vmax=1)
    row[0].set_title(f"{r.get('network', '')} #{r['image_index']} label "
                     f"{r['label']}", fontsize=8)
    row[1].imshow(x_adv, cmap="gray", vmin=0, vmax=1)
    row[1].set_title(f"adversarial -> {r['target']}", fontsize=8)
    diff = x_adv - x
    bound = max(float(np.abs(diff).max()), 1e-6)
    row[2].imshow(diff, cmap="seismic", vmin=-bound, vmax=bound)
    row[2].set_title(f"difference (max {bound:.3f})", fontsize=8)
  if not found:
    axes[0, 1].text(0.5, 0.5, "no adversarial examples", ha="center")
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)


# ------------------------------------------------------------------ files
def write_csv(rows: Sequence[Mapping], path: str):
  if not rows:
    open(path, "w").close()
    return
  with open(path, "w", newline="") as f:
    writer = csv.DictWriter(f, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)


def _load_json(path: str, default=None):
  if not os.path.exists(path):
    return default
  with open(path) as f:
    return json.load(f)


def _fmt(value, spec=".4f"):
  if value is None:
    return "n/a"
  return format(value, spec) if isinstance(value, float) else str(value)


def _pct(value):
  return "n/a" if value is None else f"{100 * value:.2f}%"


def build_summary(out_dir: str) -> dict:
  """Everything the report shows, as one dict (also saved as summary.json)."""
  records_by_net = {}
  for net in NETWORKS:
    path = os.path.join(out_dir, f"verify_{net}.jsonl")
    if not os.path.exists(path):
      raise FileNotFoundError(f"missing verification results {path}; run the "
                              f"pipeline's verify stage first")
    records_by_net[net] = evaluate_lib.read_results(path)
  transfer = _load_json(os.path.join(out_dir, "transfer.json"), {})
  pipeline = _load_json(os.path.join(out_dir, "pipeline.json"), {})
  pruning = _load_json(os.path.join(out_dir, "pruned", "pruning.json"), {})
  summary = {"networks": {}, "pipeline": pipeline, "pruning": pruning}
  for net in NETWORKS:
    network = network_lib.load_network(os.path.join(out_dir, net, "network.npz"))
    records = records_by_net[net]
    evaluation = pipeline.get("evaluation", {}).get(net, {})
    summary["networks"][net] = {
        "hidden_widths": list(network.hidden_widths),
        "parameters": network.num_parameters,
        "clean_accuracy": evaluation.get("clean_accuracy"),
        "pgd_accuracy": evaluation.get("pgd_accuracy"),
        "counts": status_counts(records),
        # which step settled each searched pair (crown, pgd, bab, milp)
        "decided_by": decided_by_counts(records),
        "verified_robust_accuracy": verified_robust_accuracy(records),
        "num_binaries": describe([r.get("num_binaries") for r in records
                                  if r["status"] in SEARCHED]),
        # Reverse testing: this network on the *other* network's examples.
        "reverse_accuracy": transfer.get(net, {}).get("accuracy"),
        "reverse_examples": transfer.get(net, {}).get("examples"),
        "reverse_correct": transfer.get(net, {}).get("correct"),
    }
  all_records = [r for net in NETWORKS for r in records_by_net[net]]
  summary["by_label"] = per_class_table(records_by_net, "label")
  summary["by_target"] = per_class_table(records_by_net, "target")
  summary["statistics"] = search_statistics(all_records)
  summary["confusion"] = {net: confusion_counts(records_by_net[net]).tolist()
                          for net in NETWORKS}
  summary["records_by_net"] = records_by_net
  return summary


def write_report(out_dir: str, images: np.ndarray | None = None) -> str:
  """Writes report.md, CSVs and PNGs into out_dir; returns the report path."""
  summary = build_summary(out_dir)
  records_by_net = summary.pop("records_by_net")
  with open(os.path.join(out_dir, "summary.json"), "w") as f:
    json.dump(summary, f, indent=2)
  write_csv(summary["by_label"], os.path.join(out_dir, "fig3_by_label.csv"))
  write_csv(summary["by_target"], os.path.join(out_dir, "fig3_by_target.csv"))
  stats_rows = []
  for group, quantities in summary["statistics"].items():
    for quantity, stats in quantities.items():
      stats_rows.append({"searches": group, "quantity": quantity, **stats})
  write_csv(stats_rows, os.path.join(out_dir, "fig4_statistics.csv"))
  nets = summary["networks"]
  write_csv([{"network": n, **{k: v for k, v in s.items()
                               if k not in ("counts", "num_binaries",
                           "verified_robust_accuracy")},
              "verified_robust_accuracy": s["verified_robust_accuracy"]["value"],
              **{f"count_{k}": v for k, v in s["counts"].items()}}
             for n, s in nets.items()],
            os.path.join(out_dir, "fig1_networks.csv"))
  plot_counts_and_transfer(summary, os.path.join(out_dir, "fig1_counts.png"))
  plot_heatmaps({n: np.asarray(c) for n, c in summary["confusion"].items()},
                os.path.join(out_dir, "fig2_heatmap.png"))
  if images is None:
    from robust_prune import data as data_lib  # pylint: disable=g-import-not-at-top
    images = data_lib.load_split("test").images
  plot_example_grid([{**r, "network": net} for net in NETWORKS
                     for r in records_by_net[net]],
                    images, os.path.join(out_dir, "fig2_examples.png"))
  path = os.path.join(out_dir, "report.md")
  with open(path, "w") as f:
    f.write(render_markdown(summary))
  return path


def render_markdown(summary: Mapping) -> str:
  nets = summary["networks"]
  pipe = summary.get("pipeline", {})
  cfg = pipe.get("config", {})
  o, p = nets["original"], nets["pruned"]
  lines = ["# Reproduction report", "",
           "Generated by `python -m robust_prune.report` from the result files "
           "in this folder.", ""]
  lines += ["## Setup", "",
            f"- delta (L-inf radius): {cfg.get('delta', 'n/a')}; images: "
            f"{cfg.get('num_images', 'n/a')} first MNIST test images x 9 targets",
            f"- verification mode: {cfg.get('mode', 'targeted')}"
            + (" (pairs certified by CROWN or the branch and bound carry a "
               "bound and PGD-found ones the PGD margin, not an optimum; "
               "Figure 4's objective statistics cover only pairs with a value)"
               if cfg.get("mode") == "certify" else ""),
            "- pairs settled by (CROWN bound / PGD witness / branch and bound "
            "/ MILP): " + "; ".join(
                f"{net} " + " / ".join(
                    str(nets[net].get("decided_by", {}).get(k, 0))
                    for k in ("crown", "pgd", "bab", "milp"))
                for net in ("original", "pruned")),
            f"- solver: {cfg.get('solver', 'n/a')}, bounds: "
            f"{cfg.get('bounds', 'n/a')}, time limit {cfg.get('time_limit', 'n/a')} s",
            f"- machine: {pipe.get('machine', 'n/a')}; total wall time "
            f"{_fmt(pipe.get('total_seconds'), '.0f')} s", ""]
  lines += ["## Networks", "",
            "| | original | pruned | paper original | paper pruned |",
            "|---|---|---|---|---|",
            f"| hidden widths | {o['hidden_widths']} | {p['hidden_widths']} | n/a | n/a |",
            f"| parameters | {o['parameters']} | {p['parameters']} | n/a | n/a |",
            f"| clean test accuracy | {_pct(o['clean_accuracy'])} | "
            f"{_pct(p['clean_accuracy'])} | 97.05% | 97.11% |",
            f"| PGD-40 accuracy | {_pct(o['pgd_accuracy'])} | "
            f"{_pct(p['pgd_accuracy'])} | n/a | n/a |",
            f"| verified robust accuracy (first "
            f"{o['verified_robust_accuracy']['images']} images) | "
            f"{_pct(o['verified_robust_accuracy']['value'])} | "
            f"{_pct(p['verified_robust_accuracy']['value'])} | n/a | n/a |", ""]
  lines += ["## Figure 1: adversarial examples and reverse testing", "",
            "| | original | pruned | paper original | paper pruned |",
            "|---|---|---|---|---|",
            f"| adversarial examples | {o['counts']['adversarial']} | "
            f"{p['counts']['adversarial']} | 148 | 139 |",
            f"| searches (proven robust / time-out / misclassified skipped) | "
            f"{o['counts']['searched']} ({o['counts']['robust']} / "
            f"{o['counts']['timeout']} / {o['counts']['misclassified']}) | "
            f"{p['counts']['searched']} ({p['counts']['robust']} / "
            f"{p['counts']['timeout']} / {p['counts']['misclassified']}) | 900 | 900 |",
            f"| reverse-testing accuracy (this network on the other's "
            f"examples) | {_pct(o['reverse_accuracy'])} ({o['reverse_correct']}/"
            f"{o['reverse_examples']}) | {_pct(p['reverse_accuracy'])} "
            f"({p['reverse_correct']}/{p['reverse_examples']}) | 14.39% | 22.30% |",
            "", "![counts](fig1_counts.png)", ""]
  lines += ["## Figure 2: examples and (target, label) counts", "",
            "![examples](fig2_examples.png)", "", "![heatmap](fig2_heatmap.png)", ""]
  for key, title in (("by_label", "original class"), ("by_target", "target class")):
    col = "label" if key == "by_label" else "target"
    lines += [f"## Figure 3: per {title}", "",
              f"| {col} | searches | original | pruned | total | success rate |",
              "|---|---|---|---|---|---|"]
    for row in summary[key]:
      lines.append(f"| {row[col]} | {row['count']} | {row['original_adversarial']} "
                   f"| {row['pruned_adversarial']} | {row['total_adversarial']} | "
                   f"{_fmt(row['success_rate'])} |")
    lines.append("")
  lines += ["## Figure 4: MILP statistics (both networks)", "",
            "| | successful: objective | successful: seconds | unsuccessful: "
            "objective | unsuccessful: seconds |", "|---|---|---|---|---|"]
  stats = summary["statistics"]
  for stat in ("count", "mean", "std", "min", "25%", "50%", "75%", "max"):
    cells = [_fmt(stats[g][q].get(stat), ".4g") for g in ("successful", "unsuccessful")
             for q in ("objective", "seconds")]
    lines.append(f"| {stat} | " + " | ".join(cells) + " |")
  lines += ["", f"Paper: {PAPER['searches']} searches; mean seconds "
            f"{PAPER['found_time_mean']} (found) / {PAPER['not_found_time_mean']}"
            f" (not found); max {PAPER['found_time_max']} / "
            f"{PAPER['not_found_time_max']}.", ""]
  pruning = summary.get("pruning") or {}
  if pruning:
    lines += ["## Pruning", "", "```json",
              json.dumps({k: v for k, v in pruning.items()
                          if not isinstance(v, (list, dict)) or k in
                          ("widths_before", "widths_after")}, indent=2),
              "```", ""]
    for s in pruning.get("solver_status", []):
      proof = ("proven optimal" if s.get("proven")
               else "NOT proven optimal (time limit: best point found)"
               if s.get("status") == "time_limit" else "no usable solution")
      lines.append(
          f"- importance MILP, round {s['round']} ({s['solver']}): "
          f"{s['status']}, {proof}; objective {_fmt(s.get('objective'), '.4f')},"
          f" bound {_fmt(s.get('bound'), '.4f')}, "
          f"{_fmt(s.get('solve_seconds'), '.1f')} s")
    if pruning.get("solver_status"):
      lines.append("")
  return "\n".join(lines)


if __name__ == "__main__":
  flags.DEFINE_string("out_dir", None, "The pipeline's output folder.")
  flags.mark_flag_as_required("out_dir")


def main(argv):
  del argv
  print(write_report(flags.FLAGS.out_dir))


if __name__ == "__main__":
  cli.run(main)
