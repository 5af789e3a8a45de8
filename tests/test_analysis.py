"""Tests of robust_prune.analysis: statistics against closed forms and
published values, curves and distortion intervals on hand-made records, and
findings that claim only what their intervals carry."""

import dataclasses
import itertools
import math

import numpy as np
import pytest
from scipy import stats as scipy_stats

from robust_prune.analysis import curves
from robust_prune.analysis import distortion
from robust_prune.analysis import findings
from robust_prune.analysis import stats

Z95 = 1.959963984540054


# ------------------------------------------------------------------ stats
def _wilson_by_root_finding(s, n, z=Z95):
  """The score interval as the roots of (s/n - p)^2 = z^2 p (1 - p) / n."""
  phat = s / n
  a = 1 + z * z / n
  b = -(2 * phat + z * z / n)
  c = phat * phat
  disc = math.sqrt(max(0.0, b * b - 4 * a * c))
  return (-b - disc) / (2 * a), (-b + disc) / (2 * a)


def test_wilson_textbook_value_and_closed_form():
  p = stats.wilson_interval(81, 263)
  assert p.estimate == pytest.approx(81 / 263)
  # Newcombe (1998a), example 81/263: 0.2553 to 0.3662
  assert (round(p.low, 4), round(p.high, 4)) == (0.2553, 0.3662)
  low, high = _wilson_by_root_finding(81, 263)
  assert p.low == pytest.approx(low, abs=1e-12)
  assert p.high == pytest.approx(high, abs=1e-12)


@pytest.mark.parametrize("n", [1, 7, 50, 1000])
def test_wilson_at_zero_and_all_successes(n):
  none = stats.wilson_interval(0, n)
  assert none.low == 0.0 and none.estimate == 0.0
  # the closed form's upper root at s = 0: z^2 / (n + z^2)
  assert none.high == pytest.approx(Z95 ** 2 / (n + Z95 ** 2), rel=1e-12)
  every = stats.wilson_interval(n, n)
  assert every.high == 1.0 and every.estimate == 1.0
  assert every.low == pytest.approx(n / (n + Z95 ** 2), rel=1e-12)


def test_wilson_without_data_and_bad_input():
  empty = stats.wilson_interval(0, 0)
  assert math.isnan(empty.estimate) and (empty.low, empty.high) == (0.0, 1.0)
  with pytest.raises(ValueError):
    stats.wilson_interval(5, 4)
  with pytest.raises(ValueError):
    stats.wilson_interval(1, 4, confidence=1.5)


def test_mcnemar_exact_on_hand_tables():
  # b=10, c=2: two-sided = 2 * P(Bin(12, 1/2) <= 2)
  tail = sum(math.comb(12, k) for k in range(3)) / 2 ** 12
  assert stats.mcnemar_exact(10, 2).p_value == pytest.approx(2 * tail)
  assert stats.mcnemar_exact(10, 2).p_value == pytest.approx(0.0386, abs=1e-4)
  assert stats.mcnemar_exact(2, 10).p_value == stats.mcnemar_exact(
      10, 2).p_value
  # Fagerland et al. (2017) ch. 8, Cavo et al. 2012: exact P = 0.052479
  assert stats.mcnemar_exact(6, 16).p_value == pytest.approx(0.052479,
                                                             abs=1e-6)
  assert stats.mcnemar_exact(0, 0).p_value == 1.0
  assert stats.mcnemar_exact(3, 3).p_value == 1.0


def _signed_rank_p_by_enumeration(d):
  """Two-sided p of min(W+, W-) over all 2^n sign patterns (midranks)."""
  ranks = scipy_stats.rankdata(np.abs(d))
  observed_plus = ranks[np.asarray(d) > 0].sum()
  total = ranks.sum()
  observed = min(observed_plus, total - observed_plus)
  signs = np.array(list(itertools.product([0, 1], repeat=len(d))))
  plus = signs @ ranks
  stat = np.minimum(plus, total - plus)
  return observed, float(np.mean(stat <= observed + 1e-9))


def test_wilcoxon_against_enumeration_on_a_known_example():
  # Fisher's (1935) differences, the classic signed-rank example:
  # W = 24, exact two-sided p = 0.04126
  d = [6, 8, 14, 16, 23, 24, 28, 29, 41, -48, 49, 56, 60, -67, 75]
  result = stats.wilcoxon_signed_rank(d)
  observed, p = _signed_rank_p_by_enumeration(d)
  assert result.statistic == observed == 24
  assert result.p_value == pytest.approx(p) and round(p, 5) == 0.04126
  assert (result.n, result.n_nonzero, result.method) == (15, 15, "exact")
  # paired form and dropped zeros give the same test
  x = np.arange(17.0)
  paired = stats.wilcoxon_signed_rank(x, x - np.array(d + [0, 0]))
  assert paired.p_value == pytest.approx(p)
  assert (paired.n, paired.n_nonzero) == (17, 15)


def test_wilcoxon_ties_small_n_and_all_zero():
  d = [1.0, 1.0, 2.0, -1.0, 3.0, 0.0]
  result = stats.wilcoxon_signed_rank(d)
  observed, p = _signed_rank_p_by_enumeration(d[:5])
  assert result.method == "permutation" and result.statistic == observed
  assert result.p_value == pytest.approx(p)
  zero = stats.wilcoxon_signed_rank([0.5, 0.5], [0.5, 0.5])
  assert (zero.p_value, zero.n_nonzero, zero.method) == (1.0, 0, "none")
  one = stats.wilcoxon_signed_rank([0.3])
  assert one.p_value == 1.0 and one.n_nonzero == 1
  with pytest.raises(ValueError):
    stats.wilcoxon_signed_rank([1, 2], [1])


def test_median_interval_order_statistics():
  result = stats.median_interval(np.arange(20.0)[::-1])
  assert (result.low_rank, result.high_rank) == (6, 15)  # textbook, n = 20
  assert (result.low, result.high, result.median) == (5.0, 14.0, 9.5)
  tail = sum(math.comb(20, k) for k in range(6)) / 2 ** 20
  assert result.coverage == pytest.approx(1 - 2 * tail)
  for n in range(6, 60):
    r = stats.median_interval(np.arange(float(n)))
    cdf = lambda k: sum(math.comb(n, i) for i in range(k + 1)) / 2 ** n
    j = r.low_rank
    assert cdf(j - 1) <= 0.025 < cdf(j)      # the largest admissible rank
    assert r.high_rank == n + 1 - j and r.coverage >= 0.95
  small = stats.median_interval([1.0, 2.0, 3.0, 4.0, 5.0])
  assert small.median == 3.0 and (small.low, small.high) == (-math.inf,
                                                              math.inf)
  assert math.isnan(stats.median_interval([]).median)


def test_median_interval_coverage_by_simulation():
  rng = np.random.default_rng(0)
  n, trials = 25, 4000
  samples = rng.exponential(size=(trials, n))  # median ln 2
  hits = 0
  for sample in samples:
    r = stats.median_interval(sample)
    hits += r.low <= math.log(2) <= r.high
  coverage = stats.median_interval(samples[0]).coverage
  se = math.sqrt(coverage * (1 - coverage) / trials)
  assert abs(hits / trials - coverage) < 4 * se
  assert hits / trials > 0.95 - 4 * se


def test_paired_and_independent_differences_published_values():
  # Fagerland et al. (2017) ch. 8, Cavo et al. 2012 (59, 6; 16, 80):
  # Newcombe square-and-add -0.0621 (-0.1186 to -0.0046)
  paired = stats.paired_difference(59, 6, 16, 80)
  assert paired.estimate == pytest.approx(-10 / 161)
  assert (round(paired.low, 4), round(paired.high, 4)) == (-0.1186, -0.0046)
  # ch. 4, Perondi et al. 2004, 7/34 vs 1/34: 0.1765 (0.0189 to 0.3404)
  indep = stats.independent_difference(7, 34, 1, 34)
  assert (round(indep.low, 4), round(indep.high, 4)) == (0.0189, 0.3404)
  empty = stats.paired_difference(0, 0, 0, 0)
  assert math.isnan(empty.estimate) and (empty.low, empty.high) == (-1, 1)
  none_differ = stats.paired_difference(50, 0, 0, 50)
  assert none_differ.low < 0 < none_differ.high
  extreme = stats.paired_difference(0, 40, 0, 0)
  assert extreme.estimate == 1.0 and extreme.high == 1.0
  # an empty margin makes phi 0: the two Wilson half-widths z^2/(n + z^2)
  assert extreme.low == pytest.approx(1 - math.sqrt(2) * Z95 ** 2 /
                                      (40 + Z95 ** 2))


def test_jaccard_and_fisher():
  assert stats.jaccard({1, 2, 3}, {2, 3, 4}) == 0.5
  assert math.isnan(stats.jaccard([], []))
  assert stats.fisher_exact(3, 3, 0, 3) == pytest.approx(0.1)
  assert stats.fisher_exact(1, 2, 0, 0) == 1.0


# ------------------------------------------------------------------ curves
PIXELS = {i: np.full(4, 0.5) for i in range(10)}


def _records(image, delta, statuses, label=0, x_adv=None, **extra):
  """One record per target 1..9 of `image` at `delta`; statuses: one
  status for all, or {target: status} with 'robust' for the rest."""
  if isinstance(statuses, str):
    statuses = {t: statuses for t in range(1, 10)}
  out = []
  for t in range(10):
    if t == label:
      continue
    r = dict(image_index=image, label=label, target=t, delta=delta,
             status=statuses.get(t, "robust"), **extra)
    if r["status"] == "adversarial":
      r["x_adv"] = list(x_adv if x_adv is not None
                        else PIXELS[image] + delta)
    out.append(r)
  return out


def _curve():
  """Six images over three radii, consistent."""
  recs = []
  for delta in (0.02, 0.05, 0.1):
    recs += _records(0, delta, "robust")
    recs += _records(1, delta, "misclassified")
    recs += _records(2, delta, {3: "adversarial"} if delta >= 0.05 else {})
    recs += _records(3, delta, {4: "timeout"} if delta == 0.1 else {})
    recs += _records(4, delta, {5: "adversarial"} if delta == 0.1 else
                     {5: "timeout"} if delta == 0.05 else {})
    if delta < 0.1:   # image 5 not yet verified at 0.1
      recs += _records(5, delta, "robust")
  return recs


def test_bands_add_up_to_the_images():
  bands = curves.robustness_bands(_curve())
  assert [b.delta for b in bands] == [0.02, 0.05, 0.1]
  got = [(b.robust, b.adversarial, b.undecided, b.misclassified)
         for b in bands]
  assert got == [(5, 0, 0, 1), (3, 1, 1, 1), (1, 2, 2, 1)]
  for b in bands:
    assert b.images == 6
    assert b.robust + b.adversarial + b.undecided + b.misclassified == 6
    assert b.lower_bound <= b.upper_bound
  assert bands[2].lower_bound == pytest.approx(1 / 6)
  assert bands[2].upper_bound == pytest.approx(3 / 6)
  low, high = bands[2].robust_accuracy_interval()
  assert low == stats.wilson_interval(1, 6).low
  assert high == stats.wilson_interval(3, 6).high
  wider = curves.robustness_bands(_curve(), image_indices=range(8))
  assert all(b.images == 8 and b.undecided >= 2 for b in wider)


def test_image_verdicts_need_every_target_and_the_last_record_wins():
  partial = [r for r in _records(0, 0.1, "robust") if r["target"] != 9]
  assert curves.image_verdicts(partial)[0.1][0] == "undecided"
  assert curves.image_verdicts(partial, num_classes=None)[0.1][0] == "robust"
  rerun = _records(0, 0.1, "error") + _records(0, 0.1, "robust")
  assert curves.image_verdicts(rerun)[0.1][0] == "robust"
  with pytest.raises(ValueError, match="2 networks"):
    curves.by_radius(_records(0, 0.1, "robust", network_sha256="a") +
                     _records(1, 0.1, "robust", network_sha256="b"))
  with pytest.raises(ValueError, match="no delta"):
    curves.by_radius([dict(image_index=0, label=0, target=1,
                           status="robust")])


@dataclasses.dataclass(frozen=True)
class _Record:
  fields: dict

  def to_json(self):
    return dict(self.fields)


def test_records_as_objects_with_to_json():
  objects = [_Record(r) for r in _curve()]
  assert curves.robustness_bands(objects) == curves.robustness_bands(_curve())
  with pytest.raises(TypeError):
    curves.as_dict(3)


def test_consistency_clean_curve_has_no_violations():
  assert curves.check_consistency(_curve(), images=PIXELS) == []


def test_consistency_catches_planted_contradictions():
  planted = (_records(7, 0.05, {2: "adversarial"}) +
             _records(7, 0.1, "robust"))
  found = curves.check_consistency(planted)
  assert [(v.kind, v.image_index, v.target, v.delta, v.other_delta)
          for v in found] == [("adversarial_below_robust", 7, 2, 0.05, 0.1)]
  # a witness found at 0.1 lies at distortion 0.03, inside the 0.05 box
  close = PIXELS[8] + 0.03
  inside = (_records(8, 0.05, "robust") +
            _records(8, 0.1, {6: "adversarial"}, x_adv=close))
  found = curves.check_consistency(inside, images=PIXELS)
  assert [(v.kind, v.target, v.delta, v.other_delta) for v in found] == [
      ("witness_inside_robust", 6, 0.1, 0.05)]
  assert curves.check_consistency(inside) == []  # unmeasured: its delta
  far = _records(8, 0.1, {6: "adversarial"}, x_adv=PIXELS[8] + 0.2)
  assert [v.kind for v in curves.check_consistency(far, images=PIXELS)] == [
      "witness_outside_box"]
  flipped = _records(9, 0.05, "misclassified") + _records(9, 0.1, "robust")
  assert [v.kind for v in curves.check_consistency(flipped)] == [
      "misclassified_changed"]


def test_paired_verdicts_binary_tables():
  first = {0: "robust", 1: "robust", 2: "adversarial", 3: "undecided",
           4: "robust"}
  second = {0: "robust", 1: "adversarial", 2: "robust", 3: "robust",
            5: "robust"}
  table = curves.paired_verdicts(first, second)
  assert table.images == 4 and table.unmatched == 2
  assert table.binary() == (1, 1, 2, 0)
  assert table.binary(undecided_first_robust=True) == (2, 1, 1, 0)


# -------------------------------------------------------------- distortion
def _distortion_curve():
  recs = []
  for delta in (0.02, 0.04, 0.06):
    # image 0: robust to 0.04, a witness at 0.06 of distortion 0.05
    recs += _records(0, delta, {2: "adversarial"} if delta == 0.06 else {},
                     x_adv=PIXELS[0] + 0.05)
    recs += _records(1, delta, "robust")                 # [0.06, inf)
    recs += _records(2, delta, {4: "timeout"} if delta > 0.02 else {})
    recs += _records(3, delta, "misclassified")
  # image 4: robust at 0.04; min_distortion witness of radius 0.04 at 0.06
  recs += _records(4, 0.04, "robust")
  recs += _records(4, 0.06, {1: "adversarial"}, mode="min_distortion",
                   witness_radius=0.04, x_adv=PIXELS[4] + 0.04)
  return recs


def test_min_distortion_intervals_from_a_hand_made_curve():
  intervals = distortion.distortion_intervals(_distortion_curve(),
                                              images=PIXELS)
  got = {i: (iv.lower, iv.upper, iv.exact, iv.misclassified)
         for i, iv in intervals.items()}
  assert got[0][:3] == (0.04, pytest.approx(0.05), False)
  assert got[1] == (0.06, math.inf, False, False)
  assert got[2] == (0.02, math.inf, False, False)  # one target only to 0.02
  assert got[3] == (0.0, 0.0, True, True)
  assert got[4][0] == 0.04 and got[4][1] == pytest.approx(0.04)
  assert got[4][2]
  # without pixels the record's witness_radius, else its delta, bounds it
  unmeasured = distortion.distortion_intervals(_distortion_curve())
  assert unmeasured[0].upper == 0.06 and unmeasured[4].upper == 0.04


def test_distortion_summary_and_cdf_band():
  intervals = distortion.distortion_intervals(_distortion_curve(),
                                              images=PIXELS)
  summary = distortion.summarize(intervals.values())
  assert (summary.images, summary.misclassified, summary.inconsistent,
          summary.exact, summary.unbounded) == (4, 1, 0, 1, 2)
  assert summary.median_bounds == (pytest.approx(0.04), math.inf)
  band = distortion.cdf_band(intervals.values(), grid=[0.0, 0.03, 0.045,
                                                       0.1])
  assert band.proven.tolist() == [0.0, 0.0, 0.25, 0.5]
  assert band.possible.tolist() == [0.0, 0.25, 0.75, 1.0]
  assert np.all(band.proven <= band.possible)
  x, f = distortion.empirical_cdf([0.3, 0.1, 0.2])
  assert x.tolist() == [0.1, 0.2, 0.3] and f[-1] == 1.0


def test_paired_distortion_orders():
  make = distortion.DistortionInterval
  first = {i: make(i, 0.05, 0.06) for i in range(6)}
  second = {i: make(i, 0.01, 0.02) for i in range(5)}
  second[5] = make(5, 0.055, 0.07)   # overlaps
  paired = distortion.compare_paired(first, second)
  assert (paired.images, paired.first_larger, paired.second_larger,
          paired.overlapping, paired.exact_pairs) == (6, 5, 0, 1, 0)
  assert paired.sign_test.p_value == pytest.approx(2 / 2 ** 5)


# ---------------------------------------------------------------- findings
def _table(both, only_first, only_second, neither, undecided=(0, 0)):
  first = (["robust"] * (both + only_first) +
           ["adversarial"] * (only_second + neither))
  second = (["robust"] * both + ["adversarial"] * only_first +
            ["robust"] * only_second + ["adversarial"] * neither)
  first += ["undecided"] * undecided[0] + ["robust"] * undecided[1]
  second += ["adversarial"] * undecided[0] + ["undecided"] * undecided[1]
  return curves.paired_verdicts(dict(enumerate(first)),
                                dict(enumerate(second)))


def test_findings_refuse_a_difference_whose_interval_includes_zero():
  table = _table(80, 3, 1, 16)
  diff = stats.paired_difference(*table.binary())
  assert diff.low < 0 < diff.high
  finding = findings.compare_robust_accuracy(
      table, delta=0.05, paper_claim="pruned is more robust")
  assert finding.verdict == findings.NOT_SUPPORTED
  assert "includes 0" in finding.text
  assert f"[{findings.points(diff.low)}, {findings.points(diff.high)}]" in (
      finding.text)
  assert "the paper: pruned is more robust" in finding.text


def test_findings_claim_a_difference_whose_interval_excludes_zero():
  table = _table(60, 25, 2, 13)
  diff = stats.paired_difference(*table.binary())
  assert diff.low > 0
  finding = findings.compare_robust_accuracy(table)
  assert finding.verdict == findings.SUPPORTED
  assert finding.text.startswith("The original network has the higher")
  assert findings.points(diff.low) in finding.text
  # with undecided images the claim says whether it survives the worst case
  # 10 images robust on the original, undecided on the pruned network: the
  # verified 15 vs 2 discordant fall to 5 vs 2 if they are robust there
  shaky = findings.compare_robust_accuracy(_table(60, 5, 2, 13, (0, 10)))
  assert shaky.verdict == findings.SUPPORTED
  assert "in what was proven" in shaky.text and "includes 0" in shaky.text
  # 60 undecided on the pruned network: read as robust there, the order is
  # reversed, and the text says so rather than "includes 0"
  first = (["robust"] * 45 + ["adversarial"] * 15 + ["undecided"] * 60)
  second = (["robust"] * 20 + ["adversarial"] * 25 + ["robust"] * 2 +
            ["adversarial"] * 13 + ["undecided"] * 60)
  reversed_ = findings.compare_robust_accuracy(curves.paired_verdicts(
      dict(enumerate(first)), dict(enumerate(second))))
  assert reversed_.verdict == findings.SUPPORTED
  assert "the other way round" in reversed_.text
  assert "includes 0" not in reversed_.text
  for undecided in ((0, 1), (10, 0)):
    sure = findings.compare_robust_accuracy(_table(60, 25, 2, 13, undecided))
    assert sure.verdict == findings.SUPPORTED
    assert "whatever they are" in sure.text


def test_findings_not_decided_without_data():
  empty = findings.compare_robust_accuracy(curves.paired_verdicts({}, {}))
  assert empty.verdict == findings.NOT_DECIDED
  undecided = curves.paired_verdicts({i: "undecided" for i in range(5)},
                                     {i: "robust" for i in range(5)})
  finding = findings.compare_robust_accuracy(undecided)
  assert finding.verdict == findings.NOT_DECIDED
  assert "5 of 5 images undecided" in finding.text
  band = curves.Band(0.1, 4, 0, 0, 4, 0)
  assert findings.describe_band("pruned", band).verdict == findings.NOT_DECIDED
  reported = findings.describe_band("pruned", curves.Band(0.1, 4, 2, 1, 1, 0))
  assert reported.verdict == findings.REPORTED and "50.0% and 75.0%" in (
      reported.text)


def test_findings_transfer_rates():
  few = findings.compare_proportions(
      "transfer", stats.wilson_interval(2, 3), stats.wilson_interval(1, 3))
  assert few.verdict == findings.NOT_SUPPORTED and "includes 0" in few.text
  assert findings.describe_proportion(stats.wilson_interval(2, 3)) in few.text
  many = findings.compare_proportions(
      "transfer", stats.wilson_interval(90, 100),
      stats.wilson_interval(10, 100), paper_claim="14% vs 22%")
  assert many.verdict == findings.SUPPORTED
  assert "higher for the original" in many.text and "14% vs 22%" in many.text
  none = findings.compare_proportions(
      "transfer", stats.wilson_interval(0, 0), stats.wilson_interval(1, 3))
  assert none.verdict == findings.NOT_DECIDED


def test_findings_min_distortion():
  make = distortion.DistortionInterval
  overlapping = distortion.compare_paired(
      {i: make(i, 0.02, 0.06) for i in range(8)},
      {i: make(i, 0.03, 0.05) for i in range(8)})
  finding = findings.compare_min_distortion(overlapping)
  assert finding.verdict == findings.NOT_DECIDED
  assert "8 of 8 images have overlapping" in finding.text
  ordered = distortion.compare_paired(
      {i: make(i, 0.05, 0.06) for i in range(8)},
      {i: make(i, 0.01, 0.02) for i in range(8)})
  finding = findings.compare_min_distortion(ordered)
  assert finding.verdict == findings.SUPPORTED
  assert "larger for the original" in finding.text
  # exact on both: Wilcoxon route, differences of both signs
  exact = distortion.compare_paired(
      {i: make(i, 0.05 + 0.001 * i, 0.05 + 0.001 * i) for i in range(8)},
      {i: make(i, 0.0505 + 0.0005 * (-1) ** i, 0.0505 + 0.0005 * (-1) ** i)
       for i in range(8)})
  finding = findings.compare_min_distortion(exact)
  assert exact.exact_pairs == 8
  assert finding.verdict == findings.NOT_SUPPORTED
  summary = distortion.summarize(
      distortion.distortion_intervals(_distortion_curve(), images=PIXELS)
      .values())
  assert findings.describe_distortion("original", summary).verdict == (
      findings.REPORTED)


def test_overlap_test_against_hypergeometric_sums():
  first, second = set(range(10)), set(range(6, 16))   # 4 shared of 100
  result = stats.overlap_test(first, second, 100)
  tail = sum(math.comb(10, k) * math.comb(90, 10 - k)
             for k in range(4, 11)) / math.comb(100, 10)
  assert result.intersection == 4 and result.jaccard == 4 / 16
  assert result.expected_intersection == pytest.approx(1.0)
  assert result.p_value == pytest.approx(tail)
  assert stats.overlap_test(first, first, 10).p_value == 1.0
  assert math.isnan(stats.overlap_test(set(), first, 10).p_value)
  with pytest.raises(ValueError):
    stats.overlap_test(first, second, 12)


def test_verify_records_verdicts_are_read_as_records():
  from robust_prune.verify import records  # pylint: disable=g-import-not-at-top
  raw = _curve()
  # Verdict checks a witness's length against MNIST's 784 inputs
  verdicts = [records.Verdict.from_json(
      dict(r, x_adv=[0.5] * 784) if "x_adv" in r else r) for r in raw]
  assert curves.robustness_bands(verdicts) == curves.robustness_bands(raw)
  assert curves.check_consistency(verdicts) == []


# ------------------------------------------------------- RQ1/RQ2 findings
def test_paired_counts_finding_claims_only_an_interval_excluding_zero():
  same = findings.compare_paired_counts("Clean accuracy", 50, 3, 2, 45,
                                        names=("a", "b"))
  assert same.verdict == findings.NOT_SUPPORTED
  assert "includes 0" in same.text and "not supported" in same.text
  diff = stats.paired_difference(50, 3, 2, 45)
  assert diff.low < 0 < diff.high
  clear = findings.compare_paired_counts("Clean accuracy", 800, 150, 10, 40,
                                         names=("a", "b"))
  assert clear.verdict == findings.SUPPORTED
  assert "higher for the a network" in clear.text
  assert "+14.0 points" in clear.text   # (950 - 810) / 1000
  none = findings.compare_paired_counts("x", 0, 0, 0, 0)
  assert none.verdict == findings.NOT_DECIDED


def test_overlap_finding_against_chance():
  identical = findings.describe_overlap("L0", (4, 4), 4, 10, 0.005)
  assert identical.verdict == findings.REPORTED and "identical" in identical.text
  p = stats.overlap_test({0, 1, 2, 3}, {0, 1, 2, 4}, 10).p_value
  beyond = findings.describe_overlap("L0", (4, 4), 3, 10, p)
  assert (beyond.verdict == findings.SUPPORTED) == (p < 0.05)
  chance = findings.describe_overlap("L0", (5, 5), 3, 10,
                                     stats.overlap_test(range(5), range(2, 7),
                                                        10).p_value)
  assert chance.verdict == findings.NOT_SUPPORTED
  assert "Jaccard 0.43" in chance.text and "share 2.5" in chance.text
  empty = findings.describe_overlap("L0", (0, 3), 0, 10, None)
  assert empty.verdict == findings.NOT_DECIDED
