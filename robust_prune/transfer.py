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


# ------------------------------------------------------- more examples
# The extension runs the verification cascade's first two steps only: the
# CROWN bound (proves some pairs robust) and targeted PGD (its witnesses
# re-checked by a float64 forward pass inside the L-inf ball and [0, 1], as
# every verify record's). No branch and bound (bab_time_limit 0) and an image
# budget far below the MILP's minimum, so a pair PGD does not break is a
# `timeout`: not searched further, never counted either way.
EXTENSION_IMAGE_SECONDS = 1e-3
EXTENSION_CHUNK = 10


def count_examples(records: Iterable[Mapping], below: int | None = None
                   ) -> int:
  """Verified adversarial examples among `records` (of images < below)."""
  return sum(r["status"] == "adversarial" and r.get("x_adv") is not None
             and (below is None or r["image_index"] < below)
             for r in records)


def extension_config(delta: float, *, solver: str, bounds: str):
  from robust_prune.verify.config import VerifyConfig  # pylint: disable=g-import-not-at-top
  return VerifyConfig(delta=float(delta), mode="certify", solver=solver,
                      bounds=bounds, bab_time_limit=0.0,
                      image_time_limit=EXTENSION_IMAGE_SECONDS)


def extend_examples(network: Network, images: np.ndarray, labels: np.ndarray,
                    out_path: str, *, have: int, wanted: int, first: int,
                    max_images: int, config, chunk: int = EXTENSION_CHUNK
                    ) -> dict:
  """Targeted-PGD examples of `network` on test images first, first+1, ...
  (canonical order), `chunk` images at a time, appended to `out_path`
  (resumable, fsynced per image), until `have` + those reach `wanted` or
  `max_images` images were used. The images used are always a prefix
  [first, stop), decided chunk by chunk from the file, so an interrupted
  run stops where an uninterrupted one would. Returns {first, stop,
  images, examples}."""
  from robust_prune.verify import records as records_lib  # pylint: disable=g-import-not-at-top
  from robust_prune.verify import runner  # pylint: disable=g-import-not-at-top
  end = min(first + max_images, len(labels))
  stop = first
  while stop < end:
    found = count_examples(records_lib.read_results(out_path), below=stop)
    if have + found >= wanted:
      break
    idx = list(range(stop, min(stop + chunk, end)))
    runner.verify_images(network, images[idx], labels[idx], idx,
                         config.delta, out_path=out_path, workers=1,
                         config=config, log_every=60.0)
    stop = idx[-1] + 1
  found = count_examples(records_lib.read_results(out_path), below=stop)
  return {"first": first, "stop": stop, "images": stop - first,
          "examples": found}
