"""Reverse (transfer) testing: one network's accuracy on another's adversarial
examples (the paper's Figure 1: 14.39% original-on-pruned = 20/139 and 22.30%
pruned-on-original = 33/148)."""

from __future__ import annotations

from typing import Iterable, Mapping

import numpy as np

from robust_prune.network import Network, forward


def adversarial_examples(records: Iterable[Mapping]):
  """(x_adv (K, 784), labels (K,), targets (K,)) of the verified witnesses."""
  found = [r for r in records
           if r.get("status") == "adversarial" and r.get("x_adv") is not None]
  if not found:
    return np.zeros((0, 0)), np.zeros(0, np.int64), np.zeros(0, np.int64)
  return (np.asarray([r["x_adv"] for r in found], np.float64),
          np.asarray([r["label"] for r in found], np.int64),
          np.asarray([r["target"] for r in found], np.int64))


def transfer_accuracy(network: Network, records: Iterable[Mapping]) -> dict:
  """How `network` classifies another network's adversarial examples.

  accuracy: fraction classified as the true label; fooled_to_target: fraction
  classified as the attack's target (None when there are no examples).
  """
  x, labels, targets = adversarial_examples(records)
  if len(labels) == 0:
    return {"examples": 0, "correct": 0, "to_target": 0, "accuracy": None,
            "fooled_to_target": None}
  predicted = np.argmax(forward(network, x), axis=-1)
  correct = int(np.sum(predicted == labels))
  to_target = int(np.sum(predicted == targets))
  return {"examples": int(len(labels)), "correct": correct,
          "to_target": to_target, "accuracy": correct / len(labels),
          "fooled_to_target": to_target / len(labels)}
