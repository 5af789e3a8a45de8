"""Adversarial points: the float64 re-check every witness passes, and the
batched targeted PGD that proposes them."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from robust_prune import attacks, models
from robust_prune import bounds as bounds_lib
from robust_prune.milp import objective as objective_lib
from robust_prune.network import Network, forward
from robust_prune.verify.config import BOX_TOLERANCE


def check_witness(network: Network, x_adv, image, delta: float, label: int,
                  target: int):
  """(passed, margin, clipped x_adv): the float re-check of a witness."""
  lower, upper = bounds_lib.input_box(image, delta)
  x_adv = np.asarray(x_adv, np.float64)
  if x_adv.shape != lower.shape or not np.all(np.isfinite(x_adv)):
    return False, None, None
  if np.any(x_adv < lower - BOX_TOLERANCE) or np.any(x_adv > upper + BOX_TOLERANCE):
    return False, None, None
  x_adv = np.clip(x_adv, lower, upper)
  logits = forward(network, x_adv)
  margin = objective_lib.margin(logits, label, target)
  return bool(margin < 0), margin, x_adv


def pgd_candidates(network: Network, image, label: int, targets, delta: float,
                   *, steps: int, restarts: int, seed: int) -> dict:
  """Best targeted-PGD point per target: {target: (margin, x)}; one batched
  jitted call (targets x restarts)."""
  if steps <= 0 or not targets:
    return {}
  targets = list(targets)
  reps = len(targets) * restarts
  x = jnp.broadcast_to(jnp.asarray(image, jnp.float32), (reps, len(image)))
  tgt = jnp.asarray(np.repeat(targets, restarts), jnp.int32)
  labels = jnp.full((reps,), label, jnp.int32)
  x_adv = _jitted_pgd(network)(
      models.flax_params(network), x, labels, tgt, jnp.float32(delta),
      jax.random.PRNGKey(seed), steps)
  x_adv = np.asarray(x_adv, np.float64)
  lower, upper = bounds_lib.input_box(image, delta)
  x_adv = np.clip(x_adv, lower, upper)
  logits = forward(network, x_adv)
  best = {}
  for i, t in enumerate(np.repeat(targets, restarts)):
    m = float(logits[i, label] - logits[i, t])
    if int(t) not in best or m < best[int(t)][0]:
      best[int(t)] = (m, x_adv[i])
  return best


@functools.lru_cache(maxsize=None)
def _pgd_for_shape(hidden: tuple, num_classes: int):
  """One jitted targeted PGD per network shape (the apply function is closed
  over, so the shape is the whole cache key)."""
  apply_fn = models.mlp(hidden, num_classes).apply

  def run(params, x, labels, target, delta, key, steps):
    return attacks.pgd(apply_fn, params, x, labels, epsilon=delta, steps=steps,
                       step_size=delta / 4, key=key, target=target,
                       random_start=True)
  return jax.jit(run, static_argnums=(6,))


def _jitted_pgd(network: Network):
  return _pgd_for_shape(tuple(network.hidden_widths), network.num_classes)
