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
