"""The report's proven-results science, from the records at every radius
(robust_prune.analysis): the robustness curve with its consistency check,
minimum adversarial distortion, and RQ3 as a paired comparison with
generated findings. Pure: records in, JSON-able dicts out (infinities, which
JSON lacks, become None and are named where they matter)."""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Mapping, Sequence

from robust_prune.analysis import curves
from robust_prune.analysis import distortion
from robust_prune.analysis import findings
from robust_prune.analysis import stats
from robust_prune.report.tables import NETWORKS

# The paper's RQ3 claims (Bai et al. 2020, Figure 1), beside our findings.
PAPER_ROBUSTNESS_CLAIM = ("the pruned network is more robust: 139 adversarial "
                          "examples vs the original's 148 of 900 searches")
PAPER_TRANSFER_CLAIM = ("reverse-testing accuracy pruned 22.30% (33/148) vs "
                        "original 14.39% (20/139)")
RQ3 = ("RQ3: is the pruned network more or less robust than the original, "
       "and do adversarial examples transfer between them?")


def finite(value: float | None) -> float | None:
  """A float for JSON: None for an infinity or NaN."""
  if value is None or not math.isfinite(value):
    return None
  return float(value)


# --------------------------------------------------------------- the curve
def band_row(band: curves.Band) -> dict:
  """One network at one radius: the counts (they add up to `images`), the
  robust-accuracy band and Wilson intervals recomputable from the counts."""
  robust = stats.wilson_interval(band.robust, band.images)
  possible = stats.wilson_interval(band.robust + band.undecided, band.images)
  low, high = band.robust_accuracy_interval()
  return {"delta": band.delta, "images": band.images, "robust": band.robust,
          "adversarial": band.adversarial, "undecided": band.undecided,
          "misclassified": band.misclassified,
          "lower_bound": finite(band.lower_bound),
          "upper_bound": finite(band.upper_bound),
          "undecided_fraction": finite(band.undecided_fraction),
          "lower_bound_ci": [robust.low, robust.high],
          "upper_bound_ci": [possible.low, possible.high],
          "robust_accuracy_ci": [low, high]}


def curve_summary(curve: Mapping[str, Sequence[Mapping]],
                  image_indices: Sequence[int] | None,
                  pixels: Mapping[int, Any] | None) -> dict:
  """{"bands": {net: [row per radius]}, "violations": {net: [...]}}:
  `curve` holds each network's records at every radius."""
  bands, violations = {}, {}
  for net in NETWORKS:
    bands[net] = [band_row(b) for b in curves.robustness_bands(
        curve[net], image_indices=image_indices)]
    violations[net] = [dataclasses.asdict(v) for v in curves.check_consistency(
        curve[net], images=pixels)]
  return {"radii": sorted({row["delta"] for rows in bands.values()
                           for row in rows}),
          "bands": bands, "violations": violations}


# -------------------------------------------------------------- distortion
def distortion_summary(intervals: Mapping[int, distortion.DistortionInterval]
                       ) -> dict:
  """Medians of the proven lower and upper ends with their 95% CIs, and
  the interval covering the population median (analysis.distortion)."""
  s = distortion.summarize(intervals.values())
  return {"images": s.images, "misclassified": s.misclassified,
          "inconsistent": s.inconsistent, "exact": s.exact,
          "unbounded": s.unbounded,
          "median_bounds": [finite(v) for v in s.median_bounds],
          # None: too few images for the confidence (n <= 5 at 95%)
          "median_ci": (None if s.lower.low_rank is None else
                        [finite(v) for v in s.median_interval]),
          "lower": _median_json(s.lower), "upper": _median_json(s.upper)}


def _median_json(m: stats.MedianCI) -> dict:
  return {"median": finite(m.median), "low": finite(m.low),
          "high": finite(m.high), "coverage": m.coverage, "n": m.n}


def interval_rows(intervals_by_net: Mapping[str, Mapping[int, Any]]
                  ) -> list[dict]:
  """distortion.csv: one row per (network, image); upper 'inf' when no
  witness is known."""
  return [{"network": net, "image_index": i, "lower": iv.lower,
           "upper": "inf" if math.isinf(iv.upper) else iv.upper,
           "exact": iv.exact, "misclassified": iv.misclassified}
          for net, intervals in intervals_by_net.items()
          for i, iv in sorted(intervals.items())]


# ---------------------------------------------------------------- RQ3
def paired_rows(curve: Mapping[str, Sequence[Mapping]],
                image_indices: Sequence[int] | None, paper_delta: float | None
                ) -> tuple[list[dict], list[findings.Finding]]:
  """Per radius, both networks' verdicts on the same images: the 2x2
  table of verified robustness, exact McNemar and Newcombe's interval of
  the difference (original - pruned); and the finding at each radius."""
  verdicts = {net: curves.image_verdicts(curve[net],
                                         image_indices=image_indices)
              for net in NETWORKS}
  rows, found = [], []
  for delta in sorted(set(verdicts["original"]) & set(verdicts["pruned"])):
    table = curves.paired_verdicts(verdicts["original"][delta],
                                   verdicts["pruned"][delta])
    both, only_original, only_pruned, neither = table.binary()
    test = stats.mcnemar_exact(only_original, only_pruned)
    diff = stats.paired_difference(both, only_original, only_pruned, neither)
    rows.append({"delta": delta, "images": table.images, "both": both,
                 "only_original": only_original, "only_pruned": only_pruned,
                 "neither": neither, "mcnemar_p": test.p_value,
                 "difference": finite(diff.estimate),
                 "difference_ci": [diff.low, diff.high],
                 "unmatched": table.unmatched})
    found.append(findings.compare_robust_accuracy(
        table, delta=delta, paper_claim=(PAPER_ROBUSTNESS_CLAIM
                                         if delta == paper_delta else None)))
  return rows, found


def reverse_ci(transfer: Mapping) -> list[float] | None:
  """95% Wilson interval of one network's reverse-testing accuracy (None
  without examples)."""
  if not transfer.get("examples"):
    return None
  p = stats.wilson_interval(transfer["correct"], transfer["examples"])
  return [p.low, p.high]


def transfer_finding(transfer: Mapping[str, Mapping]) -> findings.Finding:
  """Reverse testing: each network's accuracy on the other's examples."""
  def proportion(net):
    t = transfer.get(net, {})
    return stats.wilson_interval(t.get("correct", 0), t.get("examples", 0))
  return findings.compare_proportions(
      "Reverse-testing accuracy (each network on the other's verified "
      "adversarial examples)", proportion("original"), proportion("pruned"),
      paper_claim=PAPER_TRANSFER_CLAIM)


def rq3(curve, intervals_by_net, transfer, image_indices, paper_delta,
        bands) -> dict:
  """The paired comparison and the Findings paragraph."""
  rows, robust_findings = paired_rows(curve, image_indices, paper_delta)
  paired = distortion.compare_paired(intervals_by_net["original"],
                                     intervals_by_net["pruned"])
  band_findings = [findings.describe_band(net, curves.Band(**{
      k: row[k] for k in ("delta", "images", "robust", "adversarial",
                          "undecided", "misclassified")}))
                   for net in NETWORKS for row in bands[net]
                   if row["delta"] == paper_delta]
  distortion_findings = [
      findings.describe_distortion(
          f"The {net} network", distortion.summarize(
              intervals_by_net[net].values()))
      for net in NETWORKS]
  every = (band_findings + robust_findings + distortion_findings
           + [findings.compare_min_distortion(paired),
              transfer_finding(transfer)])
  return {"paired": rows,
          "distortion_paired": {
              "images": paired.images, "original_larger": paired.first_larger,
              "pruned_larger": paired.second_larger,
              "overlapping": paired.overlapping,
              "sign_test_p": paired.sign_test.p_value,
              "exact_pairs": paired.exact_pairs,
              "wilcoxon_p": paired.wilcoxon.p_value},
          "findings": [{"verdict": f.verdict, "text": f.text} for f in every],
          "paragraph": findings.paragraph(RQ3, every)}
