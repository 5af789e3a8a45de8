"""Short, honest sentences from the numbers (the report's "Findings").

Each function returns a Finding: its `verdict` says what the numbers carry
  supported      a difference whose 95% interval excludes 0 and whose test
                 gives p < alpha;
  not supported  data that do not show a difference (the interval is named);
  not decided    no data to decide on (no images, or every image undecided);
  reported       a plain figure, no comparison.
and its `text` gives the figure with its interval, and the paper's claim
beside it when one is passed. No sentence claims more than its interval:
a verified difference with undecided images is said to be a difference in
what was proven unless it survives the worst case for the undecided ones.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Sequence

from robust_prune.analysis import curves
from robust_prune.analysis import distortion
from robust_prune.analysis import stats

SUPPORTED, NOT_SUPPORTED = "supported", "not supported"
NOT_DECIDED, REPORTED = "not decided", "reported"


@dataclasses.dataclass(frozen=True)
class Finding:
  verdict: str
  text: str

  def __str__(self) -> str:
    return self.text


def percent(value: float) -> str:
  return "n/a" if math.isnan(value) else f"{100 * value:.1f}%"


def points(value: float) -> str:
  """A difference of proportions in percentage points, signed."""
  return "n/a" if math.isnan(value) else f"{100 * value:+.1f} points"


def describe_proportion(p: stats.Proportion) -> str:
  """'66.7% (2/3; 95% CI [20.8%, 93.9%])'."""
  if p.n == 0:
    return "no cases (0/0)"
  return (f"{percent(p.estimate)} ({p.successes}/{p.n}; "
          f"{_level(p.confidence)} CI [{percent(p.low)}, {percent(p.high)}])")


def _level(confidence: float) -> str:
  return f"{100 * confidence:g}%"


def _with_paper(text: str, paper_claim: str | None) -> str:
  """The sentence with the paper's claim beside it, before the full stop."""
  if not paper_claim:
    return text
  body = text[:-1] if text.endswith(".") else text
  return f"{body} (the paper: {paper_claim})."


def describe_band(name: str, band: curves.Band,
                  confidence: float = 0.95) -> Finding:
  """A network's robustness at one radius: proven robust, proven
  adversarial, undecided, and the robust-accuracy band they give."""
  head = f"{name} at delta {band.delta:g}"
  if band.images == 0:
    return Finding(NOT_DECIDED, f"{head}: no images.")
  if band.undecided == band.images:
    return Finding(NOT_DECIDED, f"{head}: not decided: {band.undecided} of "
                   f"{band.images} images undecided.")
  low, high = band.robust_accuracy_interval(confidence)
  return Finding(REPORTED, (
      f"{head}: verified robust {band.robust}/{band.images}, proven "
      f"adversarial {band.adversarial}, misclassified {band.misclassified}, "
      f"undecided {band.undecided}: robust accuracy {_band(band)} on these "
      f"images ({_level(confidence)} CI for all images "
      f"[{percent(low)}, {percent(high)}])."))


def _band(band: curves.Band) -> str:
  if band.undecided == 0:
    return percent(band.lower_bound)
  return (f"between {percent(band.lower_bound)} and "
          f"{percent(band.upper_bound)}")


def compare_robust_accuracy(table: curves.PairedVerdicts, *,
                            names: Sequence[str] = ("original", "pruned"),
                            delta: float | None = None,
                            paper_claim: str | None = None,
                            confidence: float = 0.95,
                            alpha: float = 0.05) -> Finding:
  """Verified robust accuracy of two networks on the same images: exact
  McNemar (1947) test on the discordant images and Newcombe's (1998)
  paired interval of the difference (first - second)."""
  first, second = names
  at = "" if delta is None else f" at delta {delta:g}"
  n = table.images
  undecided = (table.count(first=curves.UNDECIDED),
               table.count(second=curves.UNDECIDED))
  if n == 0 or max(undecided) == n:
    which = first if undecided[0] == n else second
    text = (f"Robust accuracy{at}: not decided: no images." if n == 0 else
            f"Robust accuracy{at}: not decided: {n} of {n} images undecided "
            f"for the {which} network.")
    return Finding(NOT_DECIDED, _with_paper(text, paper_claim))
  both, only_first, only_second, neither = table.binary()
  test = stats.mcnemar_exact(only_first, only_second)
  diff = stats.paired_difference(both, only_first, only_second, neither,
                                 confidence)
  figures = (f"verified robust accuracy{at}, {first} minus {second}, "
             f"{points(diff.estimate)} ({_level(confidence)} CI "
             f"[{points(diff.low)}, {points(diff.high)}]; exact McNemar "
             f"p = {test.p_value:.3g} on {only_first} vs {only_second} "
             f"discordant of {n} images)")
  if not _excludes_zero(diff) or test.p_value >= alpha:
    return Finding(NOT_SUPPORTED, _with_paper(
        f"{figures[0].upper()}{figures[1:]}: a difference is not supported: "
        f"{_reason(diff, alpha)}.", paper_claim))
  more = first if diff.estimate > 0 else second
  text = f"The {more} network has the higher {figures}"
  if sum(undecided):
    text += _worst_case_note(table, diff.estimate > 0, undecided, confidence)
  return Finding(SUPPORTED, _with_paper(text + ".", paper_claim))


def _excludes_zero(diff: stats.Difference) -> bool:
  return diff.low > 0 or diff.high < 0


def _reason(diff: stats.Difference, alpha: float) -> str:
  if not _excludes_zero(diff):
    return (f"the {_level(diff.confidence)} interval of the difference "
            f"[{points(diff.low)}, {points(diff.high)}] includes 0")
  return f"p >= {alpha:g}"


def _worst_case_note(table, first_higher, undecided, confidence) -> str:
  """Whether the verified difference survives reading every undecided image
  against it (non-robust for the higher network, robust for the other)."""
  worst = table.binary(undecided_first_robust=not first_higher,
                       undecided_second_robust=first_higher)
  diff = stats.paired_difference(*worst, confidence)
  holds = diff.low > 0 if first_higher else diff.high < 0
  head = (f"; with {undecided[0]} and {undecided[1]} images undecided, ")
  if holds:
    return (head + f"it holds whatever they are (worst case "
            f"{points(diff.estimate)}, CI [{points(diff.low)}, "
            f"{points(diff.high)}])")
  # Read against it, the undecided images may even reverse the order.
  outcome = ("includes 0" if diff.low <= 0 <= diff.high else
             "the other way round")
  return (head + f"it is a difference in what was proven, not necessarily "
          f"in robustness (worst case {points(diff.estimate)}, CI "
          f"[{points(diff.low)}, {points(diff.high)}]: {outcome})")


def compare_proportions(what: str, first: stats.Proportion,
                        second: stats.Proportion, *,
                        names: Sequence[str] = ("original", "pruned"),
                        paper_claim: str | None = None,
                        alpha: float = 0.05) -> Finding:
  """Two rates on different samples (e.g. transfer: the share of one
  network's adversarial examples that fool the other): Newcombe's (1998)
  hybrid score interval of the difference and Fisher's exact test."""
  a, b = names
  if first.n == 0 or second.n == 0:
    empty = a if first.n == 0 else b
    return Finding(NOT_DECIDED, _with_paper(
        f"{what}: not decided: no cases for the {empty} network.",
        paper_claim))
  diff = stats.independent_difference(first.successes, first.n,
                                      second.successes, second.n,
                                      first.confidence)
  p = stats.fisher_exact(first.successes, first.n, second.successes,
                         second.n)
  figures = (f"{what}: {a} {describe_proportion(first)}, {b} "
             f"{describe_proportion(second)}; difference "
             f"{points(diff.estimate)} ({_level(diff.confidence)} CI "
             f"[{points(diff.low)}, {points(diff.high)}], Fisher p = {p:.3g})")
  return _difference_finding(figures, diff, p, alpha, (a, b), paper_claim)


def _difference_finding(figures: str, diff: stats.Difference, p: float,
                        alpha: float, names: Sequence[str],
                        paper_claim: str | None) -> Finding:
  """Supported only when the interval excludes 0 and p < alpha."""
  if _excludes_zero(diff) and p < alpha:
    higher = names[0] if diff.estimate > 0 else names[1]
    return Finding(SUPPORTED, _with_paper(
        f"{figures}: higher for the {higher} network.", paper_claim))
  return Finding(NOT_SUPPORTED, _with_paper(
      f"{figures}: a difference is not supported: {_reason(diff, alpha)}.",
      paper_claim))


def _radius(value: float) -> str:
  if math.isinf(value):
    return "inf" if value > 0 else "-inf"
  return f"{value:.4g}"


def describe_distortion(name: str, summary: distortion.DistortionSummary
                        ) -> Finding:
  """A network's median minimum distortion as the interval the proofs give."""
  if summary.images == 0:
    return Finding(NOT_DECIDED, f"{name}: minimum distortion not decided: "
                   f"no correctly classified image with a consistent "
                   f"interval.")
  low, high = summary.median_bounds
  ci_low, ci_high = summary.median_interval
  level = _level(summary.lower.confidence)
  ci = (f"{level} CI of the median [{_radius(ci_low)}, {_radius(ci_high)}]"
        if summary.lower.low_rank is not None else
        f"too few images for a {level} CI of the median")
  median = (_radius(low) if low == high or
            high - low <= curves.RADIUS_TOLERANCE
            else f"between {_radius(low)} and {_radius(high)}")
  return Finding(REPORTED, (
      f"{name}: median minimum L-inf distortion {median} over "
      f"{summary.images} images ({summary.exact} exact, {summary.unbounded} "
      f"without a witness; {ci})."))


def compare_min_distortion(paired: distortion.PairedDistortion, *,
                           names: Sequence[str] = ("original", "pruned"),
                           paper_claim: str | None = None,
                           alpha: float = 0.05) -> Finding:
  """Minimum distortion on the same images. Two routes, each claimed only
  when its test gives p < alpha: the Wilcoxon (1945) signed-rank test on
  images exact on both networks, which also needs the CI of the median
  difference to exclude 0; and the exact sign test on images whose order
  is proven by the intervals (one's lower end above the other's upper)."""
  a, b = names
  if paired.images == 0:
    return Finding(NOT_DECIDED, _with_paper(
        "Minimum distortion: not decided: no image usable on both networks.",
        paper_claim))
  if paired.exact_pairs == 0 and paired.sign_test.n_discordant == 0:
    return Finding(NOT_DECIDED, _with_paper(
        f"Minimum distortion: not decided: {paired.overlapping} of "
        f"{paired.images} images have overlapping intervals and none is "
        f"exact on both networks.", paper_claim))
  parts, directions = [], set()
  w, med = paired.wilcoxon, paired.difference
  if paired.exact_pairs:
    excludes = med.low > 0 or med.high < 0
    parts.append(
        f"on the {paired.exact_pairs} images exact on both, median "
        f"difference {a} minus {b} {_radius(med.median)} (CI "
        f"[{_radius(med.low)}, {_radius(med.high)}]), Wilcoxon p = "
        f"{w.p_value:.3g}")
    if excludes and w.p_value < alpha:
      directions.add(a if med.median > 0 else b)
  s = paired.sign_test
  parts.append(
      f"the order is proven on {s.n_discordant} of {paired.images} images "
      f"({a} larger on {s.b}, {b} on {s.c}; exact sign test p = "
      f"{s.p_value:.3g})")
  if s.n_discordant and s.p_value < alpha:
    directions.add(a if s.b > s.c else b)
  figures = "Minimum distortion: " + "; ".join(parts)
  if len(directions) == 1:
    return Finding(SUPPORTED, _with_paper(
        f"{figures}: larger for the {directions.pop()} network.",
        paper_claim))
  reason = ("the two routes disagree" if directions else
            f"no interval excludes 0 with p < {alpha:g}")
  return Finding(NOT_SUPPORTED, _with_paper(
      f"{figures}: a difference is not supported: {reason}.", paper_claim))


def compare_paired_counts(what: str, both: int, only_first: int,
                          only_second: int, neither: int, *,
                          names: Sequence[str] = ("original", "pruned"),
                          paper_claim: str | None = None,
                          confidence: float = 0.95,
                          alpha: float = 0.05) -> Finding:
  """Two networks' success rates on the same items from their 2x2 table
  (e.g. clean accuracy on the test set): exact McNemar test and Newcombe's
  paired interval of the difference (first - second)."""
  first, second = names
  n = both + only_first + only_second + neither
  if n == 0:
    return Finding(NOT_DECIDED, _with_paper(f"{what}: not decided: no "
                                            f"items.", paper_claim))
  test = stats.mcnemar_exact(only_first, only_second)
  diff = stats.paired_difference(both, only_first, only_second, neither,
                                 confidence)
  rates = (f"{first} {percent((both + only_first) / n)}, {second} "
           f"{percent((both + only_second) / n)} of {n}")
  figures = (f"{what}: {rates}; {first} minus {second} "
             f"{points(diff.estimate)} ({_level(confidence)} CI "
             f"[{points(diff.low)}, {points(diff.high)}]; exact McNemar "
             f"p = {test.p_value:.3g} on {only_first} vs {only_second} "
             f"discordant)")
  return _difference_finding(figures, diff, test.p_value, alpha,
                             (first, second), paper_claim)


def describe_overlap(what: str, sizes: Sequence[int], both: int,
                     population: int, p_value: float | None, *,
                     names: Sequence[str] = ("clean", "adversarial"),
                     alpha: float = 0.05) -> Finding:
  """Two critical sets of one layer: their sizes, Jaccard index, and
  whether they share more neurons than two random sets of those sizes
  would (one-sided hypergeometric test, stats.overlap_test). Overlap beyond
  chance is claimed only with p < alpha; identical sets are reported as
  such (on the one batch they were computed on)."""
  a, b = sizes
  union = a + b - both
  head = (f"{what}: {a} {names[0]}, {b} {names[1]}, {both} in both of "
          f"{population} neurons")
  if a == 0 or b == 0 or p_value is None:
    return Finding(NOT_DECIDED, f"{head}: overlap not decided (an empty "
                   f"set).")
  jaccard = both / union if union else 1.0
  expected = a * b / population
  figures = (f"{head} (Jaccard {jaccard:.2f}; random sets of these sizes "
             f"would share {expected:.1f}; hypergeometric p = "
             f"{p_value:.3g})")
  if a == b == both:
    return Finding(REPORTED, f"{figures}: the two sets are identical.")
  if p_value < alpha:
    return Finding(SUPPORTED, f"{figures}: they overlap more than chance, "
                   f"but are not the same set ({union - both} neurons in "
                   f"one only).")
  return Finding(NOT_SUPPORTED, f"{figures}: an overlap beyond chance is "
                 f"not supported (p >= {alpha:g}).")


def paragraph(question: str, findings: Sequence[Finding]) -> str:
  """One report paragraph: the question, then its findings' sentences."""
  return " ".join([f"**{question}**"] + [f.text for f in findings])
