"""Report tables from synthetic records: counts, rates, statistics."""

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
