"""report.md's sections on proven results: the robustness curve, minimum
distortion, RQ3's paired comparison and the generated findings (numbers
from summary.json, built by report.science)."""

from __future__ import annotations

from typing import Mapping


def _pct(value):
  return "n/a" if value is None else f"{100 * value:.2f}%"


def _radius(value):
  return "inf" if value is None else f"{value:.4g}"


def _ci(pair) -> str:
  return f"[{_pct(pair[0])}, {_pct(pair[1])}]"


def curve(curve: Mapping) -> list[str]:
  """Per network and radius, as MIPVerify reports: proven robust (the lower
  bound of robust accuracy), proven adversarial, undecided."""
  lines = ["## Robustness curve (proven results)", "",
           "Per image: robust = every target proven robust; adversarial = a "
           "verified witness; undecided = neither (a time-out). Robust "
           "accuracy lies between the proven-robust fraction and 1 - the "
           "proven non-robust fraction; the 95% CIs are Wilson intervals of "
           "those counts, the last column covering every reading of the "
           "undecided images.", "",
           "| network | delta | images | proven robust (lower bound; 95% CI) "
           "| proven adversarial | misclassified | undecided | upper bound "
           "(95% CI) | robust accuracy 95% CI |",
           "|---|---|---|---|---|---|---|---|---|"]
  for net, rows in curve["bands"].items():
    for r in rows:
      lines.append(
          f"| {net} | {r['delta']:g} | {r['images']} | {r['robust']} "
          f"({_pct(r['lower_bound'])}; {_ci(r['lower_bound_ci'])}) | "
          f"{r['adversarial']} | {r['misclassified']} | {r['undecided']} "
          f"({_pct(r['undecided_fraction'])}) | {_pct(r['upper_bound'])} "
          f"({_ci(r['upper_bound_ci'])}) | {_ci(r['robust_accuracy_ci'])} |")
  lines += ["", "![robustness curve](fig5_curve.png)", "",
            "Consistency (a pair robust at delta is robust at every smaller "
            "delta, a witness's distortion lies within its radius and below "
            "every radius proven robust): " + "; ".join(
                f"{net} {len(v)} violations" for net, v in
                curve["violations"].items()) + "."]
  lines += [f"- {v['message']}" for vs in curve["violations"].values()
            for v in vs]
  return lines + [""]


def distortion(summary: Mapping) -> list[str]:
  lines = ["## Minimum adversarial distortion (proven intervals)", "",
           "Per correctly classified image, from the curve: the smallest "
           "L-inf distortion that changes the label lies between the "
           "largest radius at which every target is proven robust and the "
           "distortion of the closest verified witness (inf without one); "
           "per-image intervals in distortion.csv. The sample median lies "
           "between the medians of the two ends; its 95% CI combines their "
           "order-statistic intervals.", "",
           "| network | images | exact | no witness | median lies in | 95% CI "
           "of the median | misclassified (left out) | inconsistent (left "
           "out) |", "|---|---|---|---|---|---|---|---|"]
  for net, d in summary["distortion"].items():
    low, high = d["median_bounds"]
    ci = ("n/a (too few images)" if d["median_ci"] is None else
          f"[{_radius(d['median_ci'][0])}, {_radius(d['median_ci'][1])}]")
    lines.append(
        f"| {net} | {d['images']} | {d['exact']} | {d['unbounded']} | "
        f"[{_radius(low)}, {_radius(high)}] | {ci} | {d['misclassified']} | "
        f"{d['inconsistent']} |")
  return lines + ["", "![distortion CDF](fig6_distortion_cdf.png)", ""]


def rq3(rq: Mapping) -> list[str]:
  lines = ["## RQ3: the two networks on the same images", "",
           "Verified robustness per image (undecided counts as not verified), "
           "paired: exact McNemar test on the discordant images and "
           "Newcombe's paired 95% interval of the difference.", "",
           "| delta | images | robust on both | only original | only pruned "
           "| neither | original - pruned (95% CI) | exact McNemar p |",
           "|---|---|---|---|---|---|---|---|"]
  for r in rq["paired"]:
    low, high = r["difference_ci"]
    diff = ("n/a" if r["difference"] is None else
            f"{100 * r['difference']:+.1f} points [{100 * low:+.1f}, "
            f"{100 * high:+.1f}]")
    lines.append(f"| {r['delta']:g} | {r['images']} | {r['both']} | "
                 f"{r['only_original']} | {r['only_pruned']} | {r['neither']} "
                 f"| {diff} | {r['mcnemar_p']:.3g} |")
  d = rq["distortion_paired"]
  lines += ["", f"Minimum distortion on the same {d['images']} images: "
            f"proven larger for the original on {d['original_larger']}, for "
            f"the pruned network on {d['pruned_larger']}, order not proven on "
            f"{d['overlapping']} (exact sign test p = {d['sign_test_p']:.3g});"
            f" exact on both networks: {d['exact_pairs']} (Wilcoxon "
            f"signed-rank p = {d['wilcoxon_p']:.3g}).", ""]
  return lines


def findings(rq: Mapping) -> list[str]:
  """The generated paragraph (each claim's verdict is in summary.json)."""
  lines = ["## Findings", "",
           "Generated from the numbers above (robust_prune.analysis."
           "findings): a difference is claimed only when its 95% interval "
           "excludes 0 and its test gives p < 0.05; the paper's claim is "
           "given beside ours.", "", rq["paragraph"], ""]
  verdicts = [f["verdict"] for f in rq["findings"]]
  return lines + ["Verdicts: " + ", ".join(
      f"{verdicts.count(v)} {v}" for v in sorted(set(verdicts))) + ".", ""]
