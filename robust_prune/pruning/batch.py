"""The pruning batch: the first correctly classified images of each class,
and the checks every batch of the importance MILP passes."""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

from robust_prune.network import Network, forward

# accept(indices) -> (bool per index, one payload per index or None)
Acceptor = Callable[[np.ndarray], tuple[np.ndarray, Any]]


def margins(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
  """Per image: true logit minus the largest other logit."""
  logits = np.asarray(logits, np.float64)
  labels = np.asarray(labels)
  rows = np.arange(len(labels))
  others = logits.copy()
  others[rows, labels] = -np.inf
  return logits[rows, labels] - others.max(axis=1)


def first_per_class(labels: np.ndarray, num_classes: int,
                    images_per_class: int, accept: Acceptor, *,
                    offset: int = 0, chunk: int = 2000,
                    shortfall: Callable[[list[int]], str]):
  """The first `images_per_class` accepted images of each class, in
  canonical order from `offset`, tested `chunk` images at a time (and no
  further chunk once every class is full). Returns (indices sorted by class,
  their payloads in the same order); a class left short is a ValueError
  with `shortfall(short classes)`."""
  if images_per_class < 1:
    raise ValueError(f"images_per_class must be >= 1, got {images_per_class}")
  labels = np.asarray(labels)
  chosen = {c: [] for c in range(num_classes)}
  for begin in range(offset, len(labels), chunk):
    idx = np.arange(begin, min(begin + chunk, len(labels)))
    ok, payload = accept(idx)
    for j, i in enumerate(idx):
      c = int(labels[i])
      if ok[j] and 0 <= c < num_classes and len(chosen[c]) < images_per_class:
        chosen[c].append((int(i), None if payload is None else payload[j]))
    if all(len(v) == images_per_class for v in chosen.values()):
      break
  short = [c for c, v in chosen.items() if len(v) < images_per_class]
  if short:
    raise ValueError(shortfall(short))
  order = [item for c in range(num_classes) for item in chosen[c]]
  return np.array([i for i, _ in order]), [p for _, p in order]


def select_batch(network: Network, images: np.ndarray, labels: np.ndarray, *,
                 images_per_class: int = 1, min_margin: float = 0.0,
                 offset: int = 0, chunk: int = 2000):
  """The first `images_per_class` images of each class (canonical order,
  starting at `offset`) that the network classifies correctly with a logit
  margin > `min_margin`. Returns (images, labels, indices) sorted by class.

  Raises ValueError if a class cannot be filled.
  """
  labels = np.asarray(labels)

  def correct(idx):
    m = margins(forward(network, images[idx]), labels[idx])
    return (m > 0.0) & (m > min_margin), None

  indices, _ = first_per_class(
      labels, network.num_classes, images_per_class, correct, offset=offset,
      chunk=chunk, shortfall=lambda short: (
          f"classes {short} have fewer than {images_per_class} correctly "
          f"classified images (margin > {min_margin})"))
  return images[indices], labels[indices].astype(np.int32), indices


def check_batch(network: Network, images: np.ndarray, labels: np.ndarray, *,
                margin: float, require_margin: bool, all_classes: bool = True):
  """The batch must be non-empty, cover every class (the reference's one
  image per class) and be classified correctly (with the margin if hard).
  Returns (images as float64 rows, labels as int64)."""
  images = np.asarray(images, np.float64).reshape(-1, network.input_dim)
  labels = np.asarray(labels, np.int64).reshape(-1)
  if len(labels) == 0 or len(labels) != len(images):
    raise ValueError(f"need as many labels as images (>= 1), got "
                     f"{len(images)} images and {len(labels)} labels")
  if labels.min() < 0 or labels.max() >= network.num_classes:
    raise ValueError(f"labels must lie in [0, {network.num_classes}), got "
                     f"{sorted(set(labels.tolist()))}")
  if all_classes:
    missing = sorted(set(range(network.num_classes)) - set(labels.tolist()))
    if missing:
      raise ValueError(f"the pruning batch misses classes {missing}")
  m = margins(forward(network, images), labels)
  need = margin if require_margin else 0.0
  bad = np.flatnonzero(~(m > 0.0) | (m < need))
  if len(bad):
    raise ValueError(
        f"batch images {bad.tolist()} are not classified correctly with "
        f"margin {need} (their margins: {np.round(m[bad], 4).tolist()})")
  return images, labels
