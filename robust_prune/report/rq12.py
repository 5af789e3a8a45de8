"""RQ1/RQ2 and the extended reverse testing, from critical.json,
ablation.json and transfer.json (pure: dicts in, JSON-able dicts out; every
interval recomputed from the counts these files hold)."""

from __future__ import annotations

from typing import Any, Mapping

from robust_prune.analysis import curves
from robust_prune.analysis import findings
from robust_prune.analysis import stats

RQ1 = ("RQ1: which neurons are critical for accuracy and which for "
       "robustness?")
RQ2 = "RQ2: do the critical neurons stay the same after pruning?"
NETWORKS = ("original", "pruned")
KINDS = ("clean", "adversarial")


def _overlap(row: Mapping, names) -> dict:
  a, b = names
  return {f"num_{a}": row[f"num_{a}"], f"num_{b}": row[f"num_{b}"],
          "num_both": row["num_both"], "jaccard": row["jaccard"],
          "population": row.get("population"),
          "expected_both": row.get("expected_both"),
          "overlap_p": row.get("overlap_p")}


def critical_rows(critical: Mapping) -> list[dict]:
  """Per layer: each network's clean vs adversarial critical sets, and the
  original's vs the pruned network's (original indices) per batch kind."""
  rows = []
  for l, width in enumerate(critical["original_widths"]):
    row = {"layer": l, "width_original": width,
           "width_pruned": critical["pruned"]["hidden_widths"][l]}
    for net in NETWORKS:
      row[net] = _overlap(critical[net]["clean_vs_adversarial"][l],
                          ("clean", "adversarial"))
    for kind in KINDS:
      row[f"consistency_{kind}"] = _overlap(
          critical[f"consistency_{kind}"][l], ("original", "pruned"))
    rows.append(row)
  return rows


def _solves(critical: Mapping) -> dict:
  return {f"{net}/{kind}": {k: critical[net][kind].get(k) for k in
                            ("status", "proven", "objective", "bound",
                             "solve_seconds")}
          for net in NETWORKS for kind in KINDS}


def _proportion(correct: int, n: int) -> dict:
  p = stats.wilson_interval(correct, n)
  return {"correct": correct, "n": n,
          "value": None if n == 0 else correct / n, "ci": [p.low, p.high]}


def _paired_difference(table: Mapping) -> dict:
  t = (table["both"], table["only_first"], table["only_second"],
       table["neither"])
  diff = stats.paired_difference(*t)
  return {**table, "difference": None if sum(t) == 0 else diff.estimate,
          "difference_ci": [diff.low, diff.high],
          "mcnemar_p": stats.mcnemar_exact(t[1], t[2]).p_value}


def _verified_table(first: Mapping[str, str], second: Mapping[str, str]):
  return curves.paired_verdicts({int(i): v for i, v in first.items()},
                                {int(i): v for i, v in second.items()})


def ablation_rows(ablation: Mapping) -> list[dict]:
  """One row per network: removed neurons, clean and PGD accuracy with
  Wilson CIs, the verified band, and the paired change from the original."""
  nets = ablation["networks"]
  rows = []
  for name, net in nets.items():
    counts = {v: list(net["verified"].values()).count(v)
              for v in (curves.ROBUST, curves.ADVERSARIAL, curves.UNDECIDED,
                        curves.MISCLASSIFIED)}
    images = len(net["verified"])
    band = curves.Band(ablation["delta"], images, counts[curves.ROBUST],
                       counts[curves.ADVERSARIAL], counts[curves.UNDECIDED],
                       counts[curves.MISCLASSIFIED])
    row = {"network": name, "hidden_widths": net["hidden_widths"],
           "removed": [len(r) for r in net["removed"]] if net["removed"]
           else [0] * len(net["hidden_widths"]),
           "clean": _proportion(**net["clean"]),
           "pgd": _proportion(**net["pgd"]),
           "verified": {**counts, "images": images,
                        "lower_bound_ci": list(_ci(band.robust, images)),
                        "upper_bound_ci": list(_ci(band.robust
                                                   + band.undecided, images)),
                        "robust_accuracy_ci": list(
                            band.robust_accuracy_interval())}}
    if name != "original":
      paired = ablation["paired"][f"{name}_vs_original"]
      table = _verified_table(net["verified"],
                              nets["original"]["verified"]).binary()
      row["change"] = {
          "clean": _paired_difference(paired["clean"]),
          "pgd": _paired_difference(paired["pgd"]),
          "verified": _paired_difference(dict(zip(
              ("both", "only_first", "only_second", "neither"), table)))}
    rows.append(row)
  return rows


def _ci(successes, n):
  p = stats.wilson_interval(successes, n)
  return p.low, p.high


# ------------------------------------------------------------- findings
def _scores_note(critical: Mapping) -> findings.Finding:
  solves = _solves(critical)
  batch = critical["batch_indices"]
  unproven = [k for k, s in solves.items() if not s["proven"]]
  head = (f"Importance scores on one batch of {len(batch)} training images "
          f"(indices {batch}) shared by both networks, clean and under each "
          f"network's PGD attack (eps {critical['epsilon']:g}); critical = "
          f"score >= {critical['threshold']:g}")
  if unproven:
    return findings.Finding(findings.REPORTED, (
        f"{head}. Not proven optimal: {', '.join(unproven)} (the solver's "
        f"best point within {critical.get('time_limit', 'its')} s): those "
        f"critical sets may change with a longer solve."))
  return findings.Finding(findings.REPORTED,
                          f"{head}; all four MILPs proven optimal.")


def rq1_findings(critical: Mapping | None, ablation: Mapping | None
                 ) -> list[findings.Finding]:
  """Clean vs adversarial critical sets of the original, then the causal
  test: each ablation against the random one and against each other."""
  found = []
  if critical:
    found.append(_scores_note(critical))
    for row in critical_rows(critical):
      o = row["original"]
      found.append(findings.describe_overlap(
          f"Original layer {row['layer']}, accuracy- vs robustness-critical",
          (o["num_clean"], o["num_adversarial"]), o["num_both"],
          row["width_original"], o["overlap_p"]))
  if not ablation:
    return found
  k = ablation["removed_per_layer"]
  for first, second in (("accuracy", "random"), ("robustness", "random"),
                        ("accuracy", "robustness")):
    paired = ablation["paired"][f"{first}_vs_{second}"]
    for measure, label in (("clean", "clean accuracy"),
                           ("pgd", "PGD-40 accuracy")):
      t = paired[measure]
      found.append(findings.compare_paired_counts(
          f"Without the {k} most {first}-critical vs "
          + (f"{k} random" if second == "random" else
             f"the {k} most {second}-critical")
          + f" neurons per layer, {label} on the test set", t["both"],
          t["only_first"], t["only_second"], t["neither"],
          names=(f"{first}-ablated", f"{second}-ablated")))
  nets = ablation["networks"]
  table = _verified_table(nets["robustness"]["verified"],
                          nets["random"]["verified"])
  found.append(findings.compare_robust_accuracy(
      table, names=("robustness-ablated", "random-ablated"),
      delta=ablation["delta"]))
  return found


def rq2_findings(critical: Mapping | None) -> list[findings.Finding]:
  found = []
  if not critical:
    return found
  for row in critical_rows(critical):
    for kind in KINDS:
      c = row[f"consistency_{kind}"]
      found.append(findings.describe_overlap(
          f"Layer {row['layer']} ({row['width_pruned']} of "
          f"{row['width_original']} neurons kept), {kind} batch, original "
          f"vs pruned critical sets", (c["num_original"], c["num_pruned"]),
          c["num_both"], row["width_original"], c["overlap_p"],
          names=("original", "pruned")))
  return found


def transfer_sources(transfer: Mapping) -> dict[str, Any]:
  """{origin network: where its examples came from} (empty for a file from
  before the extension)."""
  out = {}
  for tested in NETWORKS:
    entry = transfer.get(tested) or {}
    if "sources" in entry:
      out[entry.get("examples_of")] = entry["sources"]
  return out


def rq12_summary(critical: Mapping | None, ablation: Mapping | None,
                 transfer: Mapping) -> dict[str, Any]:
  """The report's RQ1/RQ2 part; a stage that recorded an error (no batch)
  is shown as not decided with its message."""
  errors = {name: value["error"] for name, value in
            (("critical", critical), ("ablation", ablation))
            if isinstance(value, dict) and "error" in value}
  critical = None if "critical" in errors else critical
  ablation = None if "ablation" in errors else ablation
  rows = critical_rows(critical) if critical else []
  rq1 = rq1_findings(critical, ablation)
  rq2 = rq2_findings(critical)
  not_decided = [findings.Finding(findings.NOT_DECIDED,
                                  f"The {name} stage: not decided: {e}.")
                 for name, e in errors.items()]
  rq1 = not_decided + rq1
  rq2 = [f for f in not_decided if "critical stage" in f.text] + rq2
  return {
      "errors": errors,
      "critical": None if not critical else {
          "batch_indices": critical["batch_indices"],
          "batch_labels": critical.get("batch_labels"),
          "epsilon": critical["epsilon"],
          "threshold": critical["threshold"], "solves": _solves(critical),
          "layers": rows, "margin": critical.get("margin")},
      "ablation": None if not ablation else {
          k: ablation[k] for k in ("fraction", "removed_per_layer", "seed",
                                   "tie_break", "delta", "images",
                                   "image_time_limit", "pgd_epsilon")}
      | {"rows": ablation_rows(ablation)},
      "transfer_sources": transfer_sources(transfer),
      "findings": {"rq1": [f.__dict__ for f in rq1],
                   "rq2": [f.__dict__ for f in rq2]},
      "paragraphs": {"rq1": findings.paragraph(RQ1, rq1),
                     "rq2": findings.paragraph(RQ2, rq2)}}
