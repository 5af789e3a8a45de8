"""The report's proven-results sections on a hand-made curve whose answers
are known: robustness bands per radius, Wilson CIs from the counts, the
consistency check, minimum-distortion intervals, the paired RQ3 comparison,
reverse testing and the generated findings."""

import csv
import io
import json
import math

import numpy as np
import pytest

from robust_prune import network as network_lib
from robust_prune import report as report_lib
from robust_prune.analysis import stats

PAPER_DELTA, SMALL = 0.1, 0.05
IMAGES = np.full((4, 784), 0.5)


def _record(image, target, status, delta, *, witness=None, label=0):
  r = {"image_index": image, "label": label, "target": target,
       "status": status, "delta": delta, "mode": "certify",
       "build_seconds": 0.0, "bounds_seconds": 0.0, "solve_seconds": 0.1,
       "decided_by": "crown" if status == "robust" else "pgd"}
  if status == "misclassified":
    r.pop("decided_by")
  if witness is not None:  # a witness at this L-inf distortion, pixel 0
    x_adv = IMAGES[image].copy()
    x_adv[0] += witness
    r.update(x_adv=x_adv.tolist(), objective=-0.5)
  return r


def _image(image, delta, verdict, *, target=3, witness=None):
  """Nine records of one image: `verdict` robust, adversarial (target
  `target` has a witness), undecided (target `target` times out) or
  misclassified."""
  records = []
  for t in range(1, 10):
    status = {"robust": "robust", "misclassified": "misclassified",
              "adversarial": "adversarial" if t == target else "robust",
              "undecided": "timeout" if t == target else "robust"}[verdict]
    found = status == "adversarial"
    records.append(_record(image, t, status, delta,
                           witness=witness if found else None))
  return records


# verdicts per (network, delta) of images 0..3, and witness distortions
PLAN = {
    ("original", SMALL): ["robust", "robust", ("adversarial", 0.04),
                          "misclassified"],
    ("original", PAPER_DELTA): ["robust", ("adversarial", 0.08),
                                ("adversarial", 0.04), "misclassified"],
    ("pruned", SMALL): ["robust", "robust", "undecided", "robust"],
    ("pruned", PAPER_DELTA): ["robust", "robust", ("adversarial", 0.07),
                              "undecided"],
}
TRANSFER = {"original": {"examples": 3, "correct": 1, "to_target": 1,
                         "accuracy": 1 / 3},
            "pruned": {"examples": 2, "correct": 2, "to_target": 0,
                       "accuracy": 1.0}}


def _write(path, records):
  path.write_text("".join(json.dumps(r) + "\n" for r in records))


@pytest.fixture
def folder(tmp_path):
  rng = np.random.default_rng(0)
  for net in report_lib.NETWORKS:
    network_lib.save_network(network_lib.Network(
        (rng.normal(size=(784, 4)).astype(np.float32),
         rng.normal(size=(4, 10)).astype(np.float32)),
        (np.zeros(4, np.float32), np.zeros(10, np.float32))),
        str(tmp_path / net / "network.npz"))
  for (net, delta), verdicts in PLAN.items():
    records = []
    for image, v in enumerate(verdicts):
      verdict, witness = v if isinstance(v, tuple) else (v, None)
      records += _image(image, delta, verdict, witness=witness)
    _write(tmp_path / report_lib.results_name(net, delta, PAPER_DELTA),
           records)
  (tmp_path / "transfer.json").write_text(json.dumps(TRANSFER))
  (tmp_path / "pipeline.json").write_text(json.dumps({
      "config": {"delta": PAPER_DELTA, "radii": [SMALL, PAPER_DELTA],
                 "num_images": 4, "first_image": 0}, "stages": {}}))
  return tmp_path


def _report(folder):
  report_lib.write_report(str(folder), images=IMAGES)
  summary = json.loads((folder / "summary.json").read_text())
  return summary, (folder / "report.md").read_text()


EXPECTED_BANDS = {  # robust, adversarial, undecided, misclassified
    ("original", SMALL): (2, 1, 0, 1), ("original", PAPER_DELTA): (1, 2, 0, 1),
    ("pruned", SMALL): (3, 0, 1, 0), ("pruned", PAPER_DELTA): (2, 1, 1, 0)}


def test_bands_per_network_and_radius_with_wilson_intervals(folder):
  summary, report = _report(folder)
  assert summary["curve"]["radii"] == [SMALL, PAPER_DELTA]
  for (net, delta), counts in EXPECTED_BANDS.items():
    row, = [r for r in summary["curve"]["bands"][net] if r["delta"] == delta]
    assert (row["robust"], row["adversarial"], row["undecided"],
            row["misclassified"]) == counts
    assert row["images"] == 4 == sum(counts)
    robust, undecided = counts[0], counts[2]
    low = stats.wilson_interval(robust, 4)
    high = stats.wilson_interval(robust + undecided, 4)
    assert row["lower_bound"] == robust / 4
    assert row["upper_bound"] == (robust + undecided) / 4
    assert row["lower_bound_ci"] == pytest.approx([low.low, low.high])
    assert row["robust_accuracy_ci"] == pytest.approx([low.low, high.high])
    assert f"| {net} | {delta:g} | 4 | {robust} ({100 * robust / 4:.2f}%" in (
        report)
  rows = list(csv.DictReader(io.StringIO(
      (folder / "curve_bands.csv").read_text())))
  assert len(rows) == 4 and {r["network"] for r in rows} == {"original",
                                                             "pruned"}
  assert (folder / "fig5_curve.png").read_bytes().startswith(b"\x89PNG")
  assert summary["curve"]["violations"] == {"original": [], "pruned": []}
  assert "original 0 violations; pruned 0 violations" in report


def test_a_planted_inconsistency_is_listed(folder):
  """The pruned network adversarial at 0.05 on a pair it is proven robust
  on at 0.1: impossible, and the report says so."""
  path = folder / report_lib.results_name("pruned", SMALL, PAPER_DELTA)
  with open(path, "a") as f:
    f.write(json.dumps(_record(1, 4, "adversarial", SMALL, witness=0.03))
            + "\n")
  summary, report = _report(folder)
  violations = summary["curve"]["violations"]["pruned"]
  assert [v["kind"] for v in violations] == ["adversarial_below_robust"]
  assert (violations[0]["image_index"], violations[0]["target"]) == (1, 4)
  assert "pruned 1 violations" in report
  assert f"- {violations[0]['message']}" in report


def test_minimum_distortion_intervals(folder):
  summary, report = _report(folder)
  rows = {(r["network"], int(r["image_index"])): r for r in csv.DictReader(
      io.StringIO((folder / "distortion.csv").read_text()))}
  expected = {("original", 0): (0.1, "inf"), ("original", 1): (0.05, 0.08),
              ("original", 2): (0.0, 0.04), ("pruned", 0): (0.1, "inf"),
              ("pruned", 1): (0.1, "inf"), ("pruned", 2): (0.0, 0.07),
              ("pruned", 3): (0.05, "inf")}
  for key, (lower, upper) in expected.items():
    assert float(rows[key]["lower"]) == pytest.approx(lower), key
    if upper == "inf":
      assert rows[key]["upper"] == "inf", key
    else:
      assert float(rows[key]["upper"]) == pytest.approx(upper), key
  assert rows[("original", 3)]["misclassified"] == "True"
  original = summary["distortion"]["original"]
  assert (original["images"], original["misclassified"],
          original["unbounded"]) == (3, 1, 1)
  # medians of the lower ends (0, 0.05, 0.1) and upper ends (0.04, 0.08, inf)
  assert original["median_bounds"] == pytest.approx([0.05, 0.08])
  assert summary["distortion"]["pruned"]["images"] == 4
  assert (folder / "fig6_distortion_cdf.png").read_bytes().startswith(
      b"\x89PNG")
  assert "| original | 3 | 0 | 1 | [0.05, 0.08] | n/a (too few images) |" in (
      report)


def test_paired_comparison_and_findings_claim_nothing_undecided(folder):
  summary, report = _report(folder)
  paired = {r["delta"]: r for r in summary["rq3"]["paired"]}
  # delta 0.05: robust on both {0, 1}, only pruned {3}, neither {2}
  assert (paired[SMALL]["both"], paired[SMALL]["only_original"],
          paired[SMALL]["only_pruned"], paired[SMALL]["neither"]) == (
              2, 0, 1, 1)
  assert paired[SMALL]["mcnemar_p"] == 1.0
  # delta 0.1: both {0}, only pruned {1}, neither {2, 3}
  assert (paired[PAPER_DELTA]["both"], paired[PAPER_DELTA]["only_pruned"],
          paired[PAPER_DELTA]["neither"]) == (1, 1, 2)
  low, high = paired[PAPER_DELTA]["difference_ci"]
  assert low < 0 < high
  verdicts = [f["verdict"] for f in summary["rq3"]["findings"]]
  assert "supported" not in verdicts  # 4 images decide nothing
  assert verdicts.count("not supported") >= 2
  texts = " ".join(f["text"] for f in summary["rq3"]["findings"])
  assert "139 adversarial examples vs the original's 148" in texts
  assert "22.30% (33/148)" in texts
  assert summary["rq3"]["paragraph"] in report
  assert "## Findings" in report


def test_reverse_testing_with_wilson_interval_and_target_label(folder):
  summary, report = _report(folder)
  for net, t in TRANSFER.items():
    s = summary["networks"][net]
    wilson = stats.wilson_interval(t["correct"], t["examples"])
    assert s["reverse_ci"] == pytest.approx([wilson.low, wilson.high])
    assert s["reverse_to_target"] == t["to_target"]
  assert "network | 1/3 | 0/2 |" in report
  assert not math.isnan(summary["networks"]["original"]["reverse_ci"][0])


def test_settled_by_counts_decided_pairs_only():
  # a time-out on which the MILP ran last was settled by no step; a decided
  # record from before `decided_by` existed was the MILP's
  records = [_record(0, 1, "robust", SMALL), _record(0, 2, "adversarial", SMALL),
             _record(0, 3, "timeout", SMALL), _record(0, 4, "robust", SMALL),
             _record(0, 5, "misclassified", SMALL)]
  records[2]["decided_by"] = "milp"
  records[3].pop("decided_by")
  assert report_lib.decided_by_counts(records) == {"crown": 1, "pgd": 1,
                                                   "milp": 1}
