"""L-inf FGSM and PGD as pure, jittable functions.

Every attack keeps its iterate inside the delta ball around x intersected with
the pixel box [0, 1]; the PGD loop runs inside `lax.fori_loop`, so a jitted
caller never returns to the host between steps.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import optax

ApplyFn = Callable[..., jax.Array]


def project(x_adv: jax.Array, x: jax.Array, epsilon) -> jax.Array:
  """Projection onto {x' : |x' - x|_inf <= epsilon} ∩ [0, 1]^n."""
  return jnp.clip(jnp.clip(x_adv, x - epsilon, x + epsilon), 0.0, 1.0)


def attack_objective(logits: jax.Array, labels: jax.Array,
                     target: jax.Array | None) -> jax.Array:
  """Per-example quantity the attacker maximises.

  Untargeted: cross-entropy of the true label. Targeted: the target logit minus
  the true logit, i.e. minus the verification MILP's objective
  (e_y - e_target)^T logits, so PGD and the MILP optimise the same margin.
  """
  if target is None:
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels)
  pick = lambda idx: jnp.take_along_axis(logits, idx[:, None], axis=1)[:, 0]
  return pick(target) - pick(labels)


def input_gradient(apply_fn, params, x_adv, labels, target):
  def total(xa):
    return jnp.sum(attack_objective(apply_fn(params, xa), labels, target))
  return jax.grad(total)(x_adv)


def fgsm(apply_fn: ApplyFn, params, x: jax.Array, labels: jax.Array, *,
         epsilon, target: jax.Array | None = None) -> jax.Array:
  """One signed-gradient step of size epsilon (Goodfellow et al. 2015)."""
  grad = input_gradient(apply_fn, params, x, labels, target)
  return project(x + epsilon * jnp.sign(grad), x, epsilon)


def pgd(apply_fn: ApplyFn, params, x: jax.Array, labels: jax.Array, *,
        epsilon, steps: int, step_size, key: jax.Array | None = None,
        target: jax.Array | None = None, random_start: bool = True) -> jax.Array:
  """Madry et al.'s L-inf PGD: signed-gradient ascent with projection.

  `steps` must be static under jit (it is a Python int here); epsilon and
  step_size may be traced. With `target`, maximises target minus true logit.
  """
  x = jnp.asarray(x)
  if random_start:
    if key is None:
      raise ValueError("pgd with random_start needs a PRNG key")
    x_adv = project(
        x + jax.random.uniform(key, x.shape, x.dtype, -epsilon, epsilon),
        x, epsilon)
  else:
    x_adv = x

  def step(_, xa):
    grad = input_gradient(apply_fn, params, xa, labels, target)
    return project(xa + step_size * jnp.sign(grad), x, epsilon)

  return jax.lax.fori_loop(0, steps, step, x_adv)
