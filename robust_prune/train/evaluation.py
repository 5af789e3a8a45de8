"""Clean and PGD robust accuracy of a model or an exported network.

(Named `accuracy` / `network_accuracy`: `evaluate` elsewhere in the project
means verification.)
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from robust_prune import attacks
from robust_prune import data as data_lib
from robust_prune import models
from robust_prune import network as network_lib


@jax.jit(static_argnames=("apply_fn", "pgd_steps"))
def _correct_counts(apply_fn, params, images, labels, key, epsilon,
                    pgd_steps: int, pgd_step_size):
  clean = jnp.argmax(apply_fn(params, images), -1) == labels
  if pgd_steps == 0:
    return jnp.sum(clean), jnp.sum(clean)
  adv = attacks.pgd(apply_fn, params, images, labels, epsilon=epsilon,
                    steps=pgd_steps, step_size=pgd_step_size, key=key)
  robust = clean & (jnp.argmax(apply_fn(params, adv), -1) == labels)
  return jnp.sum(clean), jnp.sum(robust)


def accuracy(apply_fn, params, images: np.ndarray, labels: np.ndarray, *,
             epsilon: float, pgd_steps: int, pgd_step_size: float,
             seed: int = 0, batch_size: int = 1000) -> tuple[float, float]:
  """(clean accuracy, PGD robust accuracy); an example counts as robust only
  if it is classified correctly both clean and under attack."""
  key = jax.random.key(seed)
  clean = robust = 0
  for start in range(0, len(labels), batch_size):
    # Pad the last batch so every call has one shape (one compilation).
    xb = images[start:start + batch_size]
    yb = labels[start:start + batch_size]
    n = len(yb)
    if n < batch_size:
      xb = np.concatenate([xb, np.repeat(xb[:1], batch_size - n, 0)])
      yb = np.concatenate([yb, np.full(batch_size - n, -1, yb.dtype)])
    c, r = _correct_counts(apply_fn, params, jnp.asarray(xb), jnp.asarray(yb),
                           jax.random.fold_in(key, start), epsilon, pgd_steps,
                           pgd_step_size)
    clean += int(c)
    robust += int(r)
  return clean / len(labels), robust / len(labels)


def network_accuracy(network: network_lib.Network, split: data_lib.Split, *,
                     epsilon: float, pgd_steps: int = 40,
                     pgd_step_size: float = 0.01, seed: int = 0):
  """Clean and PGD accuracy of an exported network on a split."""
  return accuracy(models.apply_fn(network), models.flax_params(network),
                  split.images, split.labels, epsilon=epsilon,
                  pgd_steps=pgd_steps, pgd_step_size=pgd_step_size, seed=seed)
