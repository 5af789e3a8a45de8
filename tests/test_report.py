"""Report tables from synthetic records: counts, rates, statistics."""

import csv
import io
import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest

from robust_prune import network as network_lib
from robust_prune import report as report_lib
from robust_prune import transfer as transfer_lib
from robust_prune.analysis import stats


def _record(image, label, target, status, objective=None, seconds=1.0):
  return {"image_index": image, "label": label, "target": target,
          "status": status, "objective": objective, "build_seconds": 0.5,
          "bounds_seconds": 0.0, "solve_seconds": seconds}


RECORDS = {
    "original": [
        _record(0, 7, 1, "adversarial", -2.0, 3.0),
        _record(0, 7, 2, "robust", 4.0, 1.0),
        _record(1, 2, 7, "adversarial", -1.0, 2.0),
        _record(1, 2, 0, "timeout", None, 9.0),
        _record(2, 1, 0, "misclassified"),
    ],
    "pruned": [
        _record(0, 7, 1, "robust", 1.0, 1.0),
        _record(0, 7, 2, "robust", 2.0, 1.0),
        _record(1, 2, 7, "adversarial", -3.0, 5.0),
        _record(1, 2, 0, "robust", 6.0, 1.0),
    ],
}


def test_per_class_tables_add_up():
  by_label = {r["label"]: r for r in report_lib.per_class_table(RECORDS, "label")}
  assert by_label[7]["count"] == 4 and by_label[7]["original_adversarial"] == 1
  assert by_label[7]["pruned_adversarial"] == 0
  assert by_label[2]["count"] == 4 and by_label[2]["total_adversarial"] == 2
  assert by_label[2]["success_rate"] == pytest.approx(0.5)
  assert by_label[1]["count"] == 0 and by_label[1]["success_rate"] is None
  by_target = report_lib.per_class_table(RECORDS, "target")
  total = sum(r["total_adversarial"] for r in by_target)
  assert total == sum(r["status"] == "adversarial"
                      for rs in RECORDS.values() for r in rs) == 3


def test_statistics_split_found_and_proven():
  stats = report_lib.search_statistics(RECORDS["original"] + RECORDS["pruned"])
  found = stats["successful"]
  assert found["objective"]["count"] == 3
  assert found["objective"]["mean"] == pytest.approx(-2.0)
  assert found["objective"]["max"] == pytest.approx(-1.0)
  assert found["seconds"]["min"] == pytest.approx(2.5)  # build + solve
  assert stats["unsuccessful"]["objective"]["count"] == 4  # proven robust only


def test_verified_robust_accuracy_counts_images():
  acc = report_lib.verified_robust_accuracy(RECORDS["pruned"])
  assert acc["images"] == 2 and acc["verified_robust"] == 1
  original = report_lib.verified_robust_accuracy(RECORDS["original"])
  # Image 0: adversarial; image 1: adversarial (and a time-out); 2: misclassified.
  assert original["verified_robust"] == 0 and original["upper"] == 0


def test_transfer_accuracy_counts_true_labels():
  # A 1-layer "network" that predicts class 0 iff pixel 0 > 0.5, else class 1.
  w = np.zeros((784, 2), np.float32)
  w[0, 0], w[0, 1] = 1.0, 0.0
  b = np.array([0.0, 0.5], np.float32)
  net = network_lib.Network((w,), (b,))
  x_to_0 = np.zeros(784)
  x_to_0[0] = 1.0
  records = [
      {"status": "adversarial", "label": 0, "target": 1, "x_adv": x_to_0.tolist()},
      {"status": "adversarial", "label": 0, "target": 1, "x_adv": [0.0] * 784},
      {"status": "robust", "label": 0, "target": 1},
  ]
  result = transfer_lib.transfer_accuracy(net, records)
  assert result == {"examples": 2, "correct": 1, "to_target": 1,
                    "accuracy": 0.5, "fooled_to_target": 0.5}
  assert transfer_lib.transfer_accuracy(net, records[2:])["accuracy"] is None


# ------------------------------------------------------------------ files
def _pipeline_folder(tmp_path):
  """A pipeline output folder with two tiny networks and valid records."""
  rng = np.random.default_rng(0)
  for net in report_lib.NETWORKS:
    (tmp_path / net).mkdir()
    network_lib.save_network(network_lib.Network(
        (rng.normal(size=(784, 4)).astype(np.float32),
         rng.normal(size=(4, 10)).astype(np.float32)),
        (np.zeros(4, np.float32), np.zeros(10, np.float32))),
        str(tmp_path / net / "network.npz"))
    lines = [dict(_record(0, 7, 1, "adversarial", -2.0, 3.0), x_adv=[0.5] * 784),
             _record(0, 7, 2, "robust", 4.0, 1.0)]
    (tmp_path / f"verify_{net}.jsonl").write_text(
        "".join(json.dumps(r) + "\n" for r in lines))
  (tmp_path / "transfer.json").write_text(json.dumps(
      {"original": {"examples": 1, "correct": 0, "accuracy": 0.0}}))
  return tmp_path


def _outputs(folder):
  return {p.name: p.read_bytes() for p in folder.iterdir()
          if p.is_file() and not p.name.startswith("verify_")
          and p.suffix in (".md", ".csv", ".png", ".json")
          and p.name != "transfer.json"}


def test_report_writes_every_file(tmp_path):
  folder = _pipeline_folder(tmp_path)
  path = report_lib.write_report(str(folder), images=np.zeros((5, 784)))
  written = _outputs(folder)
  assert set(written) == {
      "report.md", "summary.json", "fig1_networks.csv", "fig3_by_label.csv",
      "fig3_by_target.csv", "fig4_statistics.csv", "fig1_counts.png",
      "fig2_heatmap.png", "fig2_examples.png", "curve_bands.csv",
      "fig5_curve.png", "distortion.csv", "fig6_distortion_cdf.png"}
  assert path == str(folder / "report.md")
  summary = json.loads(written["summary.json"])
  assert summary["networks"]["pruned"]["counts"]["adversarial"] == 1
  assert written["fig2_examples.png"].startswith(b"\x89PNG")
  rows = list(csv.DictReader(io.StringIO(written["fig3_by_label.csv"].decode())))
  assert rows[7]["count"] == "4" and rows[7]["total_adversarial"] == "2"


@pytest.mark.parametrize("bogus,error", [
    # a witness of the wrong length: a reshape error after summary.json and
    # the CSVs were replaced, before
    (dict(_record(1, 3, 4, "adversarial", -1.0), x_adv=[0.5] * 100),
     "verify_pruned.jsonl:3: not a result record"),
    ({"image_index": 2, "target": 3, "status": "adversarial"},
     "verify_pruned.jsonl:3: not a result record"),
    (dict(_record(0, 7, 42, "robust", 1.0)),
     "verify_pruned.jsonl:3: not a result record"),
    # valid, but its image is not among the test images: found while plotting
    (dict(_record(9, 3, 4, "adversarial", -1.0), x_adv=[0.5] * 784),
     "not one of the 5 test images"),
])
def test_report_writes_all_files_or_none(tmp_path, bogus, error):
  folder = _pipeline_folder(tmp_path)
  report_lib.write_report(str(folder), images=np.zeros((5, 784)))
  before = _outputs(folder)
  with open(folder / "verify_pruned.jsonl", "a") as f:
    f.write(json.dumps(bogus) + "\n")
  with pytest.raises(ValueError, match=re.escape(error)):
    report_lib.write_report(str(folder), images=np.zeros((5, 784)))
  assert _outputs(folder) == before
  assert not [p for p in os.listdir(folder) if p.endswith(".tmp")]


def test_report_binary_names_a_bogus_record_in_one_line(tmp_path):
  folder = _pipeline_folder(tmp_path)
  with open(folder / "verify_original.jsonl", "a") as f:
    f.write('{"image_index": 2, "target": 3, "status": "adversarial"}\n')
  proc = subprocess.run(
      [sys.executable, "-m", "robust_prune.report", f"--out_dir={folder}"],
      capture_output=True, text=True, timeout=240,
      cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
      env=dict(os.environ, JAX_PLATFORMS="cpu"))
  assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
  assert f"{folder / 'verify_original.jsonl'}:3: not a result record" in \
      proc.stderr
  assert _outputs(folder) == {}


# ------------------------------------------------------ RQ1/RQ2 (issue 15)
def _hand_critical():
  """critical.json of hand-made sets: layer of 4 neurons, pruned keeps
  0, 1, 3."""
  from robust_prune.pruning import critical as critical_lib
  sets = {("original", "clean"): [frozenset({0, 1})],
          ("original", "adversarial"): [frozenset({1, 2})],
          ("pruned", "clean"): [frozenset({0, 1})],
          ("pruned", "adversarial"): [frozenset({1, 3})]}
  out = {"epsilon": 0.1, "threshold": 0.001, "batch_indices": [4, 9],
         "batch_labels": [0, 1], "original_widths": [4], "margin": 3.0,
         "time_limit": 5.0}
  for net, width in (("original", 4), ("pruned", 3)):
    out[net] = {"batch_indices": [4, 9], "hidden_widths": [width],
                "clean_vs_adversarial": critical_lib.compare_sets(
                    sets[(net, "clean")], sets[(net, "adversarial")],
                    ("clean", "adversarial"), [width])}
    for kind in ("clean", "adversarial"):
      out[net][kind] = {"status": "optimal", "proven": True,
                        "objective": -1.0, "bound": -1.0,
                        "solve_seconds": 0.5,
                        "critical": [sorted(sets[(net, kind)][0])]}
  for kind in ("clean", "adversarial"):
    out[f"consistency_{kind}"] = critical_lib.compare_sets(
        sets[("original", kind)], sets[("pruned", kind)],
        ("original", "pruned"), [4])
  return out


def _hand_ablation():
  verified = {"original": ["robust", "robust", "undecided"],
              "accuracy": ["adversarial", "robust", "undecided"],
              "robustness": ["adversarial", "adversarial", "misclassified"],
              "random": ["robust", "undecided", "undecided"]}
  table = lambda a, b, c, d: {"both": a, "only_first": b, "only_second": c,
                              "neither": d}
  networks = {name: {"removed": None if name == "original" else [[1]],
                     "hidden_widths": [4 if name == "original" else 3],
                     "parameters": 10, "clean": {"correct": 90, "n": 100},
                     "pgd": {"correct": 60, "n": 100},
                     "verified": {str(i): v for i, v in enumerate(vs)}}
              for name, vs in verified.items()}
  networks["accuracy"]["clean"] = {"correct": 70, "n": 100}
  paired = {f"{a}_vs_{b}": {"first": a, "second": b,
                            "clean": table(60, 10, 30, 0),
                            "pgd": table(55, 5, 5, 35)}
            for a, b in (("accuracy", "original"), ("robustness", "original"),
                         ("random", "original"), ("accuracy", "random"),
                         ("robustness", "random"),
                         ("accuracy", "robustness"))}
  return {"fraction": 0.25, "seed": 0, "removed_per_layer": [1],
          "tie_break": "t", "delta": 0.1, "images": [0, 3],
          "image_time_limit": 3.0, "pgd_epsilon": 0.1,
          "networks": networks, "paired": paired}


def test_report_rq12_tables_and_findings_from_the_files(tmp_path):
  folder = _pipeline_folder(tmp_path)
  (folder / "critical.json").write_text(json.dumps(_hand_critical()))
  (folder / "ablation.json").write_text(json.dumps(_hand_ablation()))
  report_lib.write_report(str(folder), images=np.zeros((5, 784)))
  written = _outputs(folder)
  assert {"critical.csv", "ablation.csv"} <= set(written)
  rq = json.loads(written["summary.json"])["rq12"]
  layer, = rq["critical"]["layers"]
  assert (layer["original"]["num_clean"], layer["original"]["num_both"],
          layer["original"]["jaccard"]) == (2, 1, pytest.approx(1 / 3))
  assert layer["consistency_adversarial"]["num_both"] == 1
  rows = {r["network"]: r for r in rq["ablation"]["rows"]}
  acc = rows["accuracy"]
  wilson = stats.wilson_interval(70, 100)
  assert acc["clean"]["ci"] == pytest.approx([wilson.low, wilson.high])
  diff = stats.paired_difference(60, 10, 30, 0)
  assert acc["change"]["clean"]["difference"] == pytest.approx(-0.2)
  assert acc["change"]["clean"]["difference_ci"] == pytest.approx(
      [diff.low, diff.high])
  assert acc["change"]["clean"]["mcnemar_p"] == pytest.approx(
      stats.mcnemar_exact(10, 30).p_value)
  v = rows["robustness"]["verified"]
  assert (v["robust"], v["adversarial"], v["misclassified"], v["images"]) == (
      0, 2, 1, 3)
  # robustness vs original, verified: both 0, only robustness-ablated 0,
  # only original 2, neither 1
  assert [rows["robustness"]["change"]["verified"][k] for k in
          ("both", "only_first", "only_second", "neither")] == [0, 0, 2, 1]
  texts = {f["text"]: f["verdict"] for f in rq["findings"]["rq1"]}
  # PGD: 5 vs 5 discordant of 100: no claim
  pgd = [t for t in texts if "PGD-40 accuracy" in t]
  assert pgd and all(texts[t] == "not supported" and "includes 0" in t
                     for t in pgd)
  clean = [t for t in texts if "clean accuracy" in t]
  assert all(texts[t] == "supported" for t in clean)  # 10 vs 30 of 100
  report = written["report.md"].decode()
  assert "## RQ1/RQ2: critical neurons" in report
  assert "## RQ1: causal test" in report and "**RQ2:" in report
  with io.StringIO(written["ablation.csv"].decode()) as f:
    assert [r["network"] for r in csv.DictReader(f)] == [
        "original", "accuracy", "robustness", "random"]


def test_report_says_not_decided_when_the_critical_stage_found_no_batch(
    tmp_path):
  folder = _pipeline_folder(tmp_path)
  (folder / "critical.json").write_text(json.dumps(
      {"error": "classes [9] have too few images", "margin": 3.0}))
  (folder / "ablation.json").write_text(json.dumps(
      {"error": "no critical-neuron scores to rank by"}))
  report_lib.write_report(str(folder), images=np.zeros((5, 784)))
  written = _outputs(folder)
  assert "critical.csv" not in written and "ablation.csv" not in written
  rq = json.loads(written["summary.json"])["rq12"]
  verdicts = [f["verdict"] for q in ("rq1", "rq2") for f in rq["findings"][q]]
  assert verdicts and set(verdicts) == {"not decided"}
  assert "Not decided: classes [9] have too few images." in (
      written["report.md"].decode())
