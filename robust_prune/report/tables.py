"""The report's numbers from verification records: counts, rates, the
paper's per-class tables (Figure 3) and search statistics (Figure 4)."""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

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


def decided_by_counts(records: Sequence[Mapping]) -> dict[str, int]:
  """Decided pairs per step that settled them (a time-out has none;
  records from before `decided_by` existed were settled by the MILP)."""
  counts = {}
  for r in records:
    if r["status"] in ("adversarial", "robust"):
      step = r.get("decided_by") or "milp"
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


def statistics_coverage(records_by_net: Mapping[str, Sequence[Mapping]]
                        ) -> dict[str, dict[str, int]]:
  """Which pairs Figure 4 covers, per network: the successful (adversarial)
  and unsuccessful (proven robust) searches, how many of each carry an
  objective value, and the pairs it leaves out."""
  coverage = {}
  for net, records in records_by_net.items():
    counts = status_counts(records)
    valued = {s: sum(r["status"] == s and r.get("objective") is not None
                     for r in records) for s in ("adversarial", "robust")}
    coverage[net] = {"successful": counts["adversarial"],
                     "successful_with_objective": valued["adversarial"],
                     "unsuccessful": counts["robust"],
                     "unsuccessful_with_objective": valued["robust"],
                     "timeout": counts["timeout"],
                     "misclassified": counts["misclassified"],
                     "error": counts["error"]}
  return coverage


def confusion_counts(records: Sequence[Mapping]) -> np.ndarray:
  """counts[target, label] of adversarial examples (the paper's Figure 2b)."""
  counts = np.zeros((NUM_CLASSES, NUM_CLASSES), np.int64)
  for r in records:
    if r["status"] == "adversarial":
      counts[r["target"], r["label"]] += 1
  return counts


def network_row(name: str, stats: Mapping) -> dict:
  """One network's row of fig1_networks.csv."""
  nested = ("counts", "num_binaries", "verified_robust_accuracy")
  return {"network": name, **{k: v for k, v in stats.items() if k not in nested},
          "verified_robust_accuracy": stats["verified_robust_accuracy"]["value"],
          **{f"count_{k}": v for k, v in stats["counts"].items()}}


def statistics_rows(statistics: Mapping) -> list[dict]:
  """fig4_statistics.csv: one row per (searches, quantity)."""
  return [{"searches": group, "quantity": quantity, **stats}
          for group, quantities in statistics.items()
          for quantity, stats in quantities.items()]


def flat_row(row: Mapping) -> dict:
  """A row for CSV: each [low, high] pair as two columns."""
  flat = {}
  for key, value in row.items():
    if isinstance(value, (list, tuple)) and len(value) == 2:
      flat[f"{key}_low"], flat[f"{key}_high"] = value
    else:
      flat[key] = value
  return flat
