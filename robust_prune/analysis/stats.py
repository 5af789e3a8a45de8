"""Interval estimates and paired tests for the report (numpy + scipy only).

Every function is pure and returns a small frozen dataclass. Conventions:
  * confidence is two-sided (0.95: 2.5% in each tail);
  * an estimate with no data is NaN, and its interval the whole range it
    could take (a proportion: [0, 1]; a difference of proportions: [-1, 1];
    a median: (-inf, inf)), so nothing downstream reads "no data" as "0";
  * p-values are two-sided; a test with no informative data has p = 1.

Methods: Wilson (1927) score interval; McNemar (1947) test, in its exact
conditional form (binomial on the discordant pairs); Wilcoxon (1945)
signed-rank test; distribution-free order-statistic interval for a median
(e.g. Conover, Practical Nonparametric Statistics, 3.2); Newcombe (1998)
square-and-add intervals for differences of proportions, paired (1998b,
method 10) and independent (1998a, method 10); Fisher's exact test; the
Jaccard index with a hypergeometric test of overlap against chance.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Sequence

import numpy as np
from scipy import stats as scipy_stats

# The exact null distribution of the signed-rank statistic (scipy) assumes no
# ties; with ties it is enumerated by permutation up to this many nonzero
# differences (2**16 sign patterns), above it the normal approximation.
_EXACT_WILCOXON_MAX_N = 50
_PERMUTATION_WILCOXON_MAX_N = 16


def _z(confidence: float) -> float:
  if not 0.0 < confidence < 1.0:
    raise ValueError(f"confidence {confidence} is not in (0, 1)")
  return float(scipy_stats.norm.ppf(0.5 + confidence / 2.0))


def _count(name: str, value) -> int:
  if isinstance(value, bool) or int(value) != value or value < 0:
    raise ValueError(f"{name} {value!r} is not a non-negative integer")
  return int(value)


# ---------------------------------------------------------------- Wilson
@dataclasses.dataclass(frozen=True)
class Proportion:
  """successes / n with its Wilson score interval [low, high]."""
  successes: int
  n: int
  estimate: float   # NaN when n == 0
  low: float
  high: float
  confidence: float


def wilson_interval(successes: int, n: int,
                    confidence: float = 0.95) -> Proportion:
  """Wilson (1927) score interval for a binomial proportion.

  The interval is the set of p whose score test does not reject:
  center (s + z^2/2) / (n + z^2), half-width
  z sqrt(s (n - s) / n + z^2 / 4) / (n + z^2). At s = 0 the lower end is
  exactly 0 and at s = n the upper end exactly 1 (the formula's values,
  written without round-off). n = 0 carries no information: the estimate
  is NaN and the interval [0, 1].
  """
  successes, n = _count("successes", successes), _count("n", n)
  if successes > n:
    raise ValueError(f"successes {successes} exceed n {n}")
  z = _z(confidence)
  if n == 0:
    return Proportion(0, 0, math.nan, 0.0, 1.0, confidence)
  z2 = z * z
  center = (successes + z2 / 2.0) / (n + z2)
  half = z * math.sqrt(successes * (n - successes) / n + z2 / 4.0) / (n + z2)
  low = 0.0 if successes == 0 else max(0.0, center - half)
  high = 1.0 if successes == n else min(1.0, center + half)
  return Proportion(successes, n, successes / n, low, high, confidence)


# ---------------------------------------------------------------- McNemar
@dataclasses.dataclass(frozen=True)
class McNemar:
  """Exact McNemar test on the discordant pairs of a paired 2x2 table."""
  b: int            # pairs where only the first is a success
  c: int            # pairs where only the second is a success
  n_discordant: int
  p_value: float    # two-sided; 1.0 when there is no discordant pair


def mcnemar_exact(b: int, c: int) -> McNemar:
  """McNemar (1947) test, exact conditional form: under H0 the b of the
  b + c discordant pairs are Binomial(b + c, 1/2); two-sided p-value of
  scipy.stats.binomtest (for p = 1/2 the doubled smaller tail, capped at 1).
  """
  b, c = _count("b", b), _count("c", c)
  if b + c == 0:
    return McNemar(0, 0, 0, 1.0)
  p = scipy_stats.binomtest(b, b + c, 0.5, alternative="two-sided").pvalue
  return McNemar(b, c, b + c, float(min(1.0, p)))


# --------------------------------------------------------------- Wilcoxon
@dataclasses.dataclass(frozen=True)
class Wilcoxon:
  """Paired Wilcoxon signed-rank test (zero differences dropped)."""
  statistic: float   # min(W+, W-), scipy's two-sided statistic
  p_value: float     # two-sided; 1.0 when every difference is zero
  n: int             # pairs given
  n_nonzero: int     # pairs ranked (|difference| > zero_tolerance)
  median_difference: float  # of all n differences (NaN when n == 0)
  method: str        # exact | permutation | normal | none


def wilcoxon_signed_rank(x: Sequence[float], y: Sequence[float] | None = None,
                         *, zero_tolerance: float = 0.0) -> Wilcoxon:
  """Wilcoxon (1945) signed-rank test of d = x - y (or d = x).

  Differences with |d| <= zero_tolerance are dropped (Wilcoxon's own
  convention, scipy zero_method="wilcox"). The p-value is exact (scipy's
  null distribution) for up to 50 untied nonzero differences, enumerated
  over all sign patterns when |d| has ties and n_nonzero <= 16, and from
  the tie-corrected normal approximation otherwise. With no nonzero
  difference there is nothing to test: statistic 0, p = 1, method "none".
  """
  d = np.asarray(x, dtype=np.float64).reshape(-1)
  if y is not None:
    other = np.asarray(y, dtype=np.float64).reshape(-1)
    if other.shape != d.shape:
      raise ValueError(f"paired samples differ in length: {d.size} and "
                       f"{other.size}")
    d = d - other
  if not np.all(np.isfinite(d)):
    raise ValueError("a paired difference is not finite")
  median = float(np.median(d)) if d.size else math.nan
  nonzero = d[np.abs(d) > zero_tolerance]
  m = int(nonzero.size)
  if m == 0:
    return Wilcoxon(0.0, 1.0, int(d.size), 0, median, "none")
  tied = np.unique(np.abs(nonzero)).size < m
  if not tied and m <= _EXACT_WILCOXON_MAX_N:
    method, scipy_method = "exact", "exact"
  elif tied and m <= _PERMUTATION_WILCOXON_MAX_N:
    method = "permutation"
    scipy_method = scipy_stats.PermutationMethod(n_resamples=2 ** m)
  else:
    method, scipy_method = "normal", "asymptotic"
  result = scipy_stats.wilcoxon(nonzero, zero_method="wilcox",
                                alternative="two-sided", method=scipy_method)
  return Wilcoxon(float(result.statistic), float(min(1.0, result.pvalue)),
                  int(d.size), m, median, method)


# ----------------------------------------------------------------- median
@dataclasses.dataclass(frozen=True)
class MedianCI:
  """Sample median with a distribution-free interval [x_(low_rank),
  x_(high_rank)] (1-based order statistics of the sorted sample)."""
  median: float       # NaN when n == 0
  low: float          # -inf when no pair of order statistics reaches
  high: float         # the confidence (n <= 5 at 95%), then ranks are None
  low_rank: int | None
  high_rank: int | None
  coverage: float     # the exact coverage P(j <= B < k), B ~ Bin(n, 1/2)
  n: int
  confidence: float


def median_interval(values: Sequence[float],
                    confidence: float = 0.95) -> MedianCI:
  """Median with its order-statistic confidence interval.

  For a continuous distribution with median m, the number B of
  observations below m is Binomial(n, 1/2), so P(x_(j) <= m < x_(k)) =
  P(j <= B <= k - 1). We take the symmetric pair k = n + 1 - j with the
  largest j such that P(B <= j - 1) <= (1 - confidence) / 2; the coverage
  is then 1 - 2 P(B <= j - 1) >= confidence (e.g. n = 20: x_(6), x_(15),
  coverage 0.9586). Infinite values (an unbounded distortion) are ordered
  like numbers; NaN is refused.
  """
  x = np.sort(np.asarray(values, dtype=np.float64).reshape(-1))
  if np.any(np.isnan(x)):
    raise ValueError("a value is NaN")
  _z(confidence)  # validates it
  n = int(x.size)
  if n == 0:
    return MedianCI(math.nan, -math.inf, math.inf, None, None, 1.0, 0,
                    confidence)
  median = float(np.median(x)) if not np.isinf(x).any() else _median_inf(x)
  tail = scipy_stats.binom.cdf(np.arange(n + 1), n, 0.5)
  allowed = np.nonzero(tail <= (1.0 - confidence) / 2.0 + 1e-12)[0]
  if allowed.size == 0:
    return MedianCI(median, -math.inf, math.inf, None, None, 1.0, n,
                    confidence)
  j = int(allowed[-1]) + 1      # P(B <= j - 1) within the tail
  k = n + 1 - j
  coverage = float(1.0 - 2.0 * tail[j - 1])
  return MedianCI(median, float(x[j - 1]), float(x[k - 1]), j, k, coverage,
                  n, confidence)


def _median_inf(x: np.ndarray) -> float:
  """Median of a sorted sample holding infinities (np.median would give
  NaN for inf - inf when the two middle values are -inf and inf)."""
  n = x.size
  lo, hi = x[(n - 1) // 2], x[n // 2]
  return float(lo) if lo == hi else float((lo + hi) / 2.0)


# ------------------------------------------------ differences of proportions
@dataclasses.dataclass(frozen=True)
class Difference:
  """p1 - p2 with a confidence interval [low, high]."""
  estimate: float   # NaN when there is no data
  low: float
  high: float
  confidence: float
  method: str


def paired_difference(both: int, only_first: int, only_second: int,
                      neither: int, confidence: float = 0.95) -> Difference:
  """p1 - p2 for paired binary outcomes, Newcombe (1998b) method 10.

  Table: `both` pairs succeed on both, `only_first` only on the first, ...
  p1 = (both + only_first) / n, p2 = (both + only_second) / n. The interval
  combines the two Wilson intervals ("square and add") with the correlation
  phi of the table (its numerator continuity-corrected as Newcombe does:
  A = both*neither - only_first*only_second; phi = (A - n/2)/sqrt(...) when
  A > n/2, 0 when 0 <= A <= n/2, A/sqrt(...) when A < 0; 0 when a margin
  is empty). Chosen over the Wald interval because it stays inside [-1, 1],
  is not degenerate at 0 or n discordant pairs, and keeps coverage near
  nominal for the small counts a verification run gives (Newcombe 1998b;
  Fagerland, Lydersen & Laake 2017, ch. 8).
  """
  a, b = _count("both", both), _count("only_first", only_first)
  c, d = _count("only_second", only_second), _count("neither", neither)
  n = a + b + c + d
  if n == 0:
    return Difference(math.nan, -1.0, 1.0, confidence, "newcombe-paired")
  first = wilson_interval(a + b, n, confidence)
  second = wilson_interval(a + c, n, confidence)
  margins = (a + b) * (c + d) * (a + c) * (b + d)
  phi = 0.0
  if margins > 0:
    cross = a * d - b * c
    if cross > n / 2.0:
      phi = (cross - n / 2.0) / math.sqrt(margins)
    elif cross < 0:
      phi = cross / math.sqrt(margins)
  return _square_and_add(first, second, phi, confidence, "newcombe-paired")


def independent_difference(successes1: int, n1: int, successes2: int,
                           n2: int, confidence: float = 0.95) -> Difference:
  """p1 - p2 for two independent samples, Newcombe (1998a) method 10
  (hybrid score: the two Wilson intervals squared and added). With either
  sample empty the difference is unknown: NaN in [-1, 1]."""
  if n1 == 0 or n2 == 0:
    return Difference(math.nan, -1.0, 1.0, confidence, "newcombe-independent")
  first = wilson_interval(successes1, n1, confidence)
  second = wilson_interval(successes2, n2, confidence)
  return _square_and_add(first, second, 0.0, confidence,
                         "newcombe-independent")


def _square_and_add(first: Proportion, second: Proportion, phi: float,
                    confidence: float, method: str) -> Difference:
  p1, p2 = first.estimate, second.estimate
  down1, up1 = p1 - first.low, first.high - p1
  down2, up2 = p2 - second.low, second.high - p2
  delta = math.sqrt(max(0.0, down1 ** 2 - 2 * phi * down1 * up2 + up2 ** 2))
  epsilon = math.sqrt(max(0.0, up1 ** 2 - 2 * phi * up1 * down2 + down2 ** 2))
  estimate = p1 - p2
  return Difference(estimate, max(-1.0, estimate - delta),
                    min(1.0, estimate + epsilon), confidence, method)


def fisher_exact(successes1: int, n1: int, successes2: int,
                 n2: int) -> float:
  """Two-sided p-value of Fisher's exact test for two independent
  proportions (1.0 when either sample is empty)."""
  if n1 == 0 or n2 == 0:
    return 1.0
  table = [[successes1, n1 - successes1], [successes2, n2 - successes2]]
  return float(min(1.0, scipy_stats.fisher_exact(table).pvalue))


def jaccard(first, second) -> float:
  """|A & B| / |A | B| of two sets (NaN when both are empty)."""
  first, second = set(first), set(second)
  union = first | second
  return len(first & second) / len(union) if union else math.nan


@dataclasses.dataclass(frozen=True)
class Overlap:
  """Overlap of two subsets of one population against chance."""
  jaccard: float
  intersection: int
  expected_intersection: float  # two random subsets of the same sizes
  p_value: float   # one-sided: P(intersection >= observed) by chance


def overlap_test(first, second, population: int) -> Overlap:
  """Jaccard index of two sets of items (e.g. critical neurons of one layer)
  and the hypergeometric test of their intersection: were `second` drawn at
  random from the `population` items, its overlap with `first` would be
  Hypergeometric(population, |first|, |second|) (Fisher's exact test,
  one-sided). NaN p-value when either set is empty."""
  first, second = set(first), set(second)
  if population < len(first | second):
    raise ValueError(f"population {population} is smaller than the "
                     f"{len(first | second)} items named")
  k = len(first & second)
  expected = len(first) * len(second) / population if population else math.nan
  if not first or not second:
    return Overlap(jaccard(first, second), k, expected, math.nan)
  p = scipy_stats.hypergeom.sf(k - 1, population, len(first), len(second))
  return Overlap(jaccard(first, second), k, expected, float(min(1.0, p)))
