"""Critical neurons (the paper's research questions 1-2).

* Accuracy- vs robustness-critical: importance scores on a clean batch and
  on PGD adversarial versions of the same images; the critical set of a
  layer is its neurons scored >= threshold; overlap is Jaccard per layer.
* Consistency before/after pruning: the retrained pruned network's critical
  neurons, mapped back to original indices, against the original's.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from robust_prune.network import Network, forward
from robust_prune.pruning.importance import margins


def critical_sets(scores: Sequence[np.ndarray], threshold: float,
                  kept: Sequence[np.ndarray] | None = None
                  ) -> tuple[frozenset, ...]:
  """Per layer, the (original) indices of neurons scored >= threshold.
  `kept[l]` maps a pruned network's neuron i to original index kept[l][i]."""
  sets = []
  for l, s in enumerate(scores):
    idx = np.flatnonzero(np.asarray(s) >= threshold)
    if kept is not None:
      idx = np.asarray(kept[l])[idx]
    sets.append(frozenset(int(i) for i in idx))
  return tuple(sets)


def jaccard(a: frozenset, b: frozenset) -> float:
  """|a & b| / |a | b|; 1.0 for two empty sets."""
  union = len(a | b)
  return 1.0 if union == 0 else len(a & b) / union


def compare_sets(a: Sequence[frozenset], b: Sequence[frozenset],
                 names=("a", "b")) -> list[dict[str, Any]]:
  """Per layer: sizes, intersection, Jaccard and the indices only in one."""
  out = []
  for l, (x, y) in enumerate(zip(a, b)):
    out.append({
        "layer": l, f"num_{names[0]}": len(x), f"num_{names[1]}": len(y),
        "num_both": len(x & y), "jaccard": jaccard(x, y),
        f"only_{names[0]}": sorted(x - y), f"only_{names[1]}": sorted(y - x)})
  return out


def adversarial_images(network: Network, images: np.ndarray,
                       labels: np.ndarray, *, epsilon: float, steps: int = 40,
                       step_size: float = 0.01, seed: int = 0) -> np.ndarray:
  """PGD (untargeted, random start) adversarial versions of `images`."""
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  from robust_prune import attacks, models  # pylint: disable=g-import-not-at-top
  from robust_prune.network import params_from_network  # pylint: disable=g-import-not-at-top
  model = models.MLP(hidden=network.hidden_widths,
                     num_classes=network.num_classes)
  params = jax.tree.map(jnp.asarray, params_from_network(network))
  adv = attacks.pgd(model.apply, params, jnp.asarray(images, jnp.float32),
                    jnp.asarray(labels, jnp.int32), epsilon=epsilon,
                    steps=steps, step_size=step_size,
                    key=jax.random.key(seed))
  return np.asarray(adv, np.float32)


def select_robust_batch(network: Network, images: np.ndarray,
                        labels: np.ndarray, *, epsilon: float,
                        images_per_class: int = 1, min_margin: float = 0.0,
                        candidates: int = 2000, seed: int = 0, **pgd_kwargs):
  """The first images per class (canonical order) that the network
  classifies correctly both clean and after PGD, so both batches are valid
  inputs of the score MILP. Returns (clean, adversarial, labels, indices)."""
  num_classes = network.num_classes
  chosen = {c: [] for c in range(num_classes)}
  for begin in range(0, len(labels), candidates):
    idx = np.arange(begin, min(begin + candidates, len(labels)))
    adv = adversarial_images(network, images[idx], labels[idx],
                             epsilon=epsilon, seed=seed + begin, **pgd_kwargs)
    ok = ((margins(forward(network, images[idx]), labels[idx]) > min_margin)
          & (margins(forward(network, adv), labels[idx]) > min_margin))
    for j, i in enumerate(idx):
      c = int(labels[i])
      if ok[j] and len(chosen[c]) < images_per_class:
        chosen[c].append((int(i), adv[j]))
    if all(len(v) == images_per_class for v in chosen.values()):
      break
  short = [c for c, v in chosen.items() if len(v) < images_per_class]
  if short:
    raise ValueError(f"classes {short} have too few images that stay "
                     f"correctly classified under PGD (eps {epsilon})")
  order = [item for c in range(num_classes) for item in chosen[c]]
  indices = np.array([i for i, _ in order])
  adv = np.stack([a for _, a in order])
  return images[indices], adv, labels[indices].astype(np.int32), indices
