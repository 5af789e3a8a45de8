"""The causal test of RQ1 (pure parts): which neurons to remove from the
original network, their structural removal, and per-image accuracy.

Ranking. A layer's k most accuracy-critical neurons are those with the
highest importance score on the clean batch, the k most robustness-critical
those with the highest score on its PGD versions (critical.json, the
original network's scores). Scores tie often (many are exactly 0 or 1), so
ties are broken by the L2 norm of the neuron's outgoing weights (larger
first: the neuron that moves the next layer more), then by the lower index.
The other score is never the tie-break: that would mix the two criteria.
Random: `numpy.random.default_rng(seed).choice(width, k, replace=False)`,
one draw per layer in layer order. k per layer is round(fraction * width)
(halves up), at most width - 1 (a layer is never emptied).
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from robust_prune.network import Network
from robust_prune.pruning import structure

VARIANTS = ("accuracy", "robustness", "random")
TIE_BREAK = ("score descending, then outgoing-weight L2 norm descending, "
             "then index ascending")


def removal_counts(widths: Sequence[int], fraction: float) -> tuple[int, ...]:
  """Neurons removed per layer: round(fraction * width), halves up, at most
  width - 1."""
  return tuple(min(int(math.floor(fraction * w + 0.5)), w - 1)
               for w in widths)


def outgoing_norms(network: Network) -> tuple[np.ndarray, ...]:
  """Per hidden layer, the L2 norm of each neuron's outgoing weights."""
  return tuple(np.linalg.norm(np.asarray(network.weights[l + 1], np.float64),
                              axis=1)
               for l in range(network.num_layers - 1))


def most_critical(scores: Sequence[float], norms: Sequence[float],
                  k: int) -> list[int]:
  """The k indices ranked first by (score desc, norm desc, index asc),
  sorted."""
  scores = np.asarray(scores, np.float64)
  norms = np.asarray(norms, np.float64)
  if scores.shape != norms.shape:
    raise ValueError(f"{scores.shape[0]} scores for {norms.shape[0]} neurons")
  order = np.lexsort((np.arange(len(scores)), -norms, -scores))
  return sorted(int(i) for i in order[:k])


def random_neurons(widths: Sequence[int], counts: Sequence[int],
                   seed: int) -> list[list[int]]:
  rng = np.random.default_rng(seed)
  return [sorted(int(i) for i in rng.choice(w, size=k, replace=False))
          for w, k in zip(widths, counts)]


def neurons_to_remove(network: Network, clean_scores, adversarial_scores,
                      fraction: float, seed: int) -> dict[str, list]:
  """{variant: per layer the sorted indices removed}."""
  counts = removal_counts(network.hidden_widths, fraction)
  norms = outgoing_norms(network)
  return {
      "accuracy": [most_critical(s, n, k) for s, n, k in
                   zip(clean_scores, norms, counts)],
      "robustness": [most_critical(s, n, k) for s, n, k in
                     zip(adversarial_scores, norms, counts)],
      "random": random_neurons(network.hidden_widths, counts, seed)}


def remove_neurons(network: Network, removed: Sequence[Sequence[int]]):
  """(the smaller network without the named hidden neurons, the original
  indices kept per layer): their incoming column, bias and outgoing row are
  deleted (pruning.structure.prune_network)."""
  masks = []
  for l, (width, gone) in enumerate(zip(network.hidden_widths, removed)):
    gone = np.asarray(gone, int)
    if gone.size and (gone.min() < 0 or gone.max() >= width
                      or len(set(gone.tolist())) != gone.size):
      raise ValueError(f"layer {l}: cannot remove neurons {gone.tolist()} "
                       f"of {width}")
    mask = np.ones(width, bool)
    mask[gone] = False
    masks.append(mask)
  return structure.prune_network(network, masks)


def per_image_correct(network: Network, images: np.ndarray,
                      labels: np.ndarray, *, epsilon: float, steps: int = 40,
                      step_size: float = 0.01, seed: int = 0,
                      batch_size: int = 1000):
  """(clean correct, PGD robust) per image, as the accuracy stage counts
  them (an image is robust when correct clean and under the untargeted PGD
  attack; one key per batch, folded from the seed)."""
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  from robust_prune import attacks, models  # pylint: disable=g-import-not-at-top
  apply_fn, params = models.apply_fn(network), models.flax_params(network)

  @jax.jit
  def correct(x, y, key):
    clean = jnp.argmax(apply_fn(params, x), -1) == y
    adv = attacks.pgd(apply_fn, params, x, y, epsilon=epsilon, steps=steps,
                      step_size=step_size, key=key)
    return clean, clean & (jnp.argmax(apply_fn(params, adv), -1) == y)

  key = jax.random.key(seed)
  clean, robust = [], []
  for start in range(0, len(labels), batch_size):
    x = np.asarray(images[start:start + batch_size], np.float32)
    y = np.asarray(labels[start:start + batch_size], np.int32)
    n = len(y)
    if n < batch_size:  # one shape, one compilation
      x = np.concatenate([x, np.repeat(x[:1], batch_size - n, 0)])
      y = np.concatenate([y, np.full(batch_size - n, -1, np.int32)])
    c, r = correct(jnp.asarray(x), jnp.asarray(y),
                   jax.random.fold_in(key, start))
    clean.append(np.asarray(c)[:n])
    robust.append(np.asarray(r)[:n])
  return np.concatenate(clean), np.concatenate(robust)


def paired_counts(first: np.ndarray, second: np.ndarray) -> dict[str, int]:
  """The 2x2 table of two per-image outcomes on the same images."""
  first, second = np.asarray(first, bool), np.asarray(second, bool)
  if first.shape != second.shape:
    raise ValueError("paired outcomes need the same images")
  return {"both": int(np.sum(first & second)),
          "only_first": int(np.sum(first & ~second)),
          "only_second": int(np.sum(~first & second)),
          "neither": int(np.sum(~first & ~second))}
