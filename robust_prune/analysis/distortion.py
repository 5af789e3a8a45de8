"""Minimum adversarial distortion per image, as proven intervals.

The minimum adversarial distortion of an image (Carlini & Wagner 2017) is
the smallest L-inf radius holding an input the network labels differently.
From a robustness curve (records at several radii, see curves.py):
  lower = min over targets of the largest radius at which that target is
          proven robust (0 if some target never is): no input closer than
          this changes the label to any target;
  upper = the smallest distortion of a verified witness (x_adv - image,
          measured from the pixels when given, else the record's
          witness_radius, else its delta); inf when there is none.
The interval is `exact` when upper - lower <= tolerance. Records of the
min_distortion mode contribute their robust proofs and witnesses; their
best_bound is not used, as it bounds the radius for margin <= -1e-4, not
for every margin below 0.

Misclassified images have distortion 0 and are left out of the summaries
(counted apart). Since lower_i <= d_i <= upper_i for every image, the
sample median of the true distortions lies between the medians of the
lower and of the upper ends, and so does every order statistic: the interval
[low of the lowers' median CI, high of the uppers' median CI] covers the
population median at least as often as each one-sample interval does.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from robust_prune.analysis import curves
from robust_prune.analysis import stats


@dataclasses.dataclass(frozen=True)
class DistortionInterval:
  image_index: int
  lower: float
  upper: float          # inf when no witness is known
  misclassified: bool = False
  tolerance: float = curves.RADIUS_TOLERANCE

  @property
  def exact(self) -> bool:
    return self.upper - self.lower <= self.tolerance

  @property
  def consistent(self) -> bool:
    """False when a robustness proof lies beyond a witness (see
    curves.check_consistency for which records)."""
    return self.lower <= self.upper + self.tolerance


def distortion_intervals(records: Iterable[Any], *,
                         images: Mapping[int, Any] | None = None,
                         image_indices: Iterable[int] | None = None,
                         num_classes: int | None = 10,
                         tolerance: float = curves.RADIUS_TOLERANCE
                         ) -> dict[int, DistortionInterval]:
  """image_index -> DistortionInterval from a curve of one network.
  `images` (image_index -> pixels) measures witnesses; with num_classes
  every other class is a target the lower end must cover (None: the
  targets present)."""
  curve = curves.by_radius(records)
  per_image: dict[int, list[dict]] = {}
  for per_radius in curve.values():
    for image, targets in per_radius.items():
      per_image.setdefault(image, []).extend(targets.values())
  wanted = (sorted(per_image) if image_indices is None
            else sorted({int(i) for i in image_indices}))
  return {i: _interval(i, per_image.get(i, []),
                       None if images is None else images.get(i),
                       num_classes, tolerance)
          for i in wanted}


def _interval(image, records, pixels, num_classes, tolerance):
  if any(r["status"] == curves.MISCLASSIFIED for r in records):
    return DistortionInterval(image, 0.0, 0.0, True, tolerance)
  if not records:
    return DistortionInterval(image, 0.0, math.inf, False, tolerance)
  label = int(records[0]["label"])
  targets = ({int(r["target"]) for r in records} if num_classes is None
             else set(range(num_classes)) - {label})
  proven = {t: 0.0 for t in targets}
  upper = math.inf
  for r in records:
    t, delta = int(r["target"]), float(r["delta"])
    if r["status"] == curves.ROBUST and t in proven:
      proven[t] = max(proven[t], delta)
    elif r["status"] == curves.ADVERSARIAL:
      upper = min(upper, curves.witness_distortion(r, pixels))
  lower = min(proven.values()) if proven else 0.0
  return DistortionInterval(image, lower, upper, False, tolerance)


# ---------------------------------------------------------------- summary
@dataclasses.dataclass(frozen=True)
class DistortionSummary:
  images: int          # correctly classified, consistent intervals
  misclassified: int   # left out
  inconsistent: int    # left out (lower > upper: see check_consistency)
  exact: int
  unbounded: int       # no witness: upper = inf
  lower: stats.MedianCI  # median of the lower ends, with its CI
  upper: stats.MedianCI  # median of the upper ends, with its CI

  @property
  def median_bounds(self) -> tuple[float, float]:
    """The sample median of the true distortions lies in here."""
    return self.lower.median, self.upper.median

  @property
  def median_interval(self) -> tuple[float, float]:
    """A conservative CI of the population median (module docstring)."""
    return self.lower.low, self.upper.high


def usable(intervals: Iterable[DistortionInterval]
           ) -> list[DistortionInterval]:
  """Correctly classified images with consistent intervals."""
  return [iv for iv in intervals if not iv.misclassified and iv.consistent]


def summarize(intervals: Iterable[DistortionInterval],
              confidence: float = 0.95) -> DistortionSummary:
  """Medians of the lower and upper ends with order-statistic CIs."""
  intervals = list(intervals)
  kept = usable(intervals)
  lowers = [iv.lower for iv in kept]
  uppers = [iv.upper for iv in kept]
  return DistortionSummary(
      images=len(kept),
      misclassified=sum(iv.misclassified for iv in intervals),
      inconsistent=sum(not iv.misclassified and not iv.consistent
                       for iv in intervals),
      exact=sum(iv.exact for iv in kept),
      unbounded=sum(math.isinf(iv.upper) for iv in kept),
      lower=stats.median_interval(lowers, confidence),
      upper=stats.median_interval(uppers, confidence))


# -------------------------------------------------------------------- CDF
def empirical_cdf(values: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
  """(x, F): the sorted values and the right-continuous empirical CDF at
  each, F = (1..n) / n (for a step plot, where='post')."""
  x = np.sort(np.asarray(values, np.float64).reshape(-1))
  return x, np.arange(1, x.size + 1, dtype=np.float64) / max(x.size, 1)


@dataclasses.dataclass(frozen=True)
class CdfBand:
  """Bounds on the empirical CDF of the true distortions on `grid`:
  proven[k] = fraction of images with upper <= grid[k] (certainly at most
  that distortion) <= F(grid[k]) <= possible[k] = fraction with
  lower <= grid[k]."""
  grid: np.ndarray
  proven: np.ndarray
  possible: np.ndarray
  images: int


def cdf_band(intervals: Iterable[DistortionInterval],
             grid: Sequence[float] | None = None) -> CdfBand:
  """The CDF band of the usable intervals; the default grid holds 0 and
  every finite end point."""
  kept = usable(intervals)
  lowers = np.array([iv.lower for iv in kept], np.float64)
  uppers = np.array([iv.upper for iv in kept], np.float64)
  if grid is None:
    ends = np.concatenate([[0.0], lowers, uppers[np.isfinite(uppers)]])
    grid = np.unique(ends)
  grid = np.asarray(grid, np.float64)
  n = max(len(kept), 1)
  proven = (uppers[None, :] <= grid[:, None]).sum(axis=1) / n
  possible = (lowers[None, :] <= grid[:, None]).sum(axis=1) / n
  return CdfBand(grid, proven, possible, len(kept))


# ------------------------------------------------------ paired comparison
@dataclasses.dataclass(frozen=True)
class PairedDistortion:
  """Two networks' intervals on the same images (first - second)."""
  images: int           # usable on both networks
  first_larger: int     # first's lower > second's upper (proven order)
  second_larger: int
  overlapping: int      # order not proven
  sign_test: stats.McNemar   # exact sign test on the proven orders
  exact_pairs: int      # both intervals exact
  wilcoxon: stats.Wilcoxon   # on the exact pairs' differences
  difference: stats.MedianCI  # median exact difference with its CI


def compare_paired(first: Mapping[int, DistortionInterval],
                   second: Mapping[int, DistortionInterval],
                   confidence: float = 0.95) -> PairedDistortion:
  """Paired comparison on the images both networks have usable intervals
  for: proven orders with an exact sign test (binomial, as McNemar 1947),
  and the Wilcoxon (1945) signed-rank test with an order-statistic CI of
  the median difference on the images whose distortion is exact on both."""
  common = sorted(i for i in set(first) & set(second)
                  if usable([first[i], second[i]]) == [first[i], second[i]])
  up = sum(first[i].lower > second[i].upper + first[i].tolerance
           for i in common)
  down = sum(second[i].lower > first[i].upper + second[i].tolerance
             for i in common)
  exact = [i for i in common if first[i].exact and second[i].exact]
  diffs = [first[i].upper - second[i].upper for i in exact]
  return PairedDistortion(
      len(common), up, down, len(common) - up - down,
      stats.mcnemar_exact(up, down), len(exact),
      stats.wilcoxon_signed_rank(diffs,
                                 zero_tolerance=curves.RADIUS_TOLERANCE),
      stats.median_interval(diffs, confidence))
