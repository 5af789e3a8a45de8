"""The pruning batch: correctly classified training images, k per class."""

from __future__ import annotations

import numpy as np

from robust_prune.network import Network, forward
from robust_prune.pruning.importance import margins


def select_batch(network: Network, images: np.ndarray, labels: np.ndarray, *,
                 images_per_class: int = 1, min_margin: float = 0.0,
                 offset: int = 0, chunk: int = 2000):
  """The first `images_per_class` images of each class (canonical order,
  starting at `offset`) that the network classifies correctly with a logit
  margin > `min_margin`. Returns (images, labels, indices) sorted by class.

  Raises ValueError if a class cannot be filled.
  """
  if images_per_class < 1:
    raise ValueError(f"images_per_class must be >= 1, got {images_per_class}")
  labels = np.asarray(labels)
  num_classes = network.num_classes
  chosen = {c: [] for c in range(num_classes)}
  for begin in range(offset, len(labels), chunk):
    idx = np.arange(begin, min(begin + chunk, len(labels)))
    m = margins(forward(network, images[idx]), labels[idx])
    for i, ok in zip(idx, (m > 0.0) & (m > min_margin)):
      c = int(labels[i])
      if ok and 0 <= c < num_classes and len(chosen[c]) < images_per_class:
        chosen[c].append(int(i))
    if all(len(v) == images_per_class for v in chosen.values()):
      break
  short = [c for c, v in chosen.items() if len(v) < images_per_class]
  if short:
    raise ValueError(f"classes {short} have fewer than {images_per_class} "
                     f"correctly classified images (margin > {min_margin})")
  indices = np.array([i for c in range(num_classes) for i in chosen[c]])
  return images[indices], labels[indices].astype(np.int32), indices
