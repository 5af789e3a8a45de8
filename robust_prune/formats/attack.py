"""Counterexample search for VNN-LIB disjuncts: PGD over an arbitrary input
box on a general conjunction of output rows.

A disjunct holds at x when every row `g_r(f(x)) = coeffs_r @ f(x) + consts_r`
is >= 0, so PGD minimises `max_r -g_r(f(x))` (<= 0 means a counterexample)
by signed-gradient steps clipped to the box, a batch of restarts per
disjunct in one jitted float32 call. Candidates are only candidates: the
caller re-checks each with a float64 forward pass.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from robust_prune.network import Network


def _logits(weights, biases, x):
  for i, (w, b) in enumerate(zip(weights, biases)):
    x = x @ w + b
    if i < len(weights) - 1:
      x = jax.nn.relu(x)
  return x


def _violation(weights, biases, x, coeffs, consts, mask):
  """(B,) max over each sample's rows of -g_r: < 0 inside its disjunct."""
  y = _logits(weights, biases, x)
  g = jnp.einsum("brm,bm->br", coeffs, y) + consts
  return jnp.max(jnp.where(mask, -g, -jnp.inf), axis=1)


@functools.partial(jax.jit, static_argnames=("steps",))
def _pgd(weights, biases, lower, upper, coeffs, consts, mask, x0, steps: int):
  """The best point per sample over `steps` signed-gradient steps whose size
  decays from a quarter of the box width to 1/200 of it."""
  width = upper - lower
  grad_fn = jax.grad(lambda x: jnp.sum(
      _violation(weights, biases, x, coeffs, consts, mask)))

  def step(t, carry):
    x, best_x, best_v = carry
    size = 0.25 * width * (0.02 ** (t / steps))
    x = jnp.clip(x - size * jnp.sign(grad_fn(x)), lower, upper)
    v = _violation(weights, biases, x, coeffs, consts, mask)
    better = v < best_v
    return (x, jnp.where(better[:, None], x, best_x),
            jnp.where(better, v, best_v))

  v0 = _violation(weights, biases, x0, coeffs, consts, mask)
  _, best_x, best_v = jax.lax.fori_loop(0, steps, step, (x0, x0, v0))
  return best_x, best_v


def _padded_rows(disjuncts, num_outputs):
  """(D, R, m) coefficients, (D, R) constants and validity mask."""
  rows = max(max(len(d.consts) for d in disjuncts), 1)
  coeffs = np.zeros((len(disjuncts), rows, num_outputs), np.float32)
  consts = np.zeros((len(disjuncts), rows), np.float32)
  mask = np.zeros((len(disjuncts), rows), bool)
  for i, d in enumerate(disjuncts):
    k = len(d.consts)
    coeffs[i, :k], consts[i, :k], mask[i, :k] = d.coeffs, d.consts, True
  return coeffs, consts, mask


def pgd_candidates(network: Network, lower, upper, disjuncts, *,
                   restarts: int = 8, steps: int = 100, seed: int = 0):
  """Candidate inputs (D * restarts, n), float64, in the box, with the
  disjunct index of each row; restart 0 starts at the box's centre."""
  lower = np.asarray(lower, np.float64)
  upper = np.asarray(upper, np.float64)
  coeffs, consts, mask = _padded_rows(disjuncts, network.num_classes)
  rng = np.random.default_rng(seed)
  d = len(disjuncts)
  x0 = rng.uniform(lower, upper, size=(d, restarts, len(lower)))
  x0[:, 0] = (lower + upper) / 2
  which = np.repeat(np.arange(d), restarts)
  f32 = lambda a: jnp.asarray(a, jnp.float32)
  best_x, _ = _pgd(tuple(f32(w) for w in network.weights),
                   tuple(f32(b) for b in network.biases), f32(lower),
                   f32(upper), f32(coeffs[which]), f32(consts[which]),
                   jnp.asarray(mask[which]), f32(x0.reshape(d * restarts, -1)),
                   steps=int(steps))
  x = np.clip(np.asarray(best_x, np.float64), lower, upper)
  return x, which
