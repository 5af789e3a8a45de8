"""The lower bound of c^T f over a domain, and its alpha/beta optimisation.

The bound is one back-substitution (bounds.backsub) in which
  * a split neuron is exact (relu(y) = y or 0 on the domain),
  * an unsplit unstable neuron keeps its root bounds' relaxation (upper
    chord, lower line alpha*y with alpha in [0, 1]: alpha-CROWN),
  * each split constraint s*y >= 0 enters with a multiplier beta >= 0
    (beta-CROWN, Wang et al. 2021): f >= f - beta*s*y on the domain
(bounds.relaxation),
  * each first-layer hull cut h_0[n] <= v.x + c (bounds.hull_cuts, valid on
    the whole box) enters with a multiplier gamma >= 0 (GCP-CROWN). Every alpha in [0, 1], beta >= 0 and gamma >= 0 gives a sound
bound, so they are tuned by projected Adam ascent (bounds.alpha) in float32
(JAX, batched over domains); bab.proofs recomputes the same bound in
float64 before a domain is discarded. Root intermediate bounds (CROWN; the
cascade passes alpha-CROWN's, bounds.alpha_crown_bounds) are kept for every
domain: sound, since each domain is a subset of the box.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import optax

from robust_prune import bounds as bounds_lib
from robust_prune.bounds import relaxation


def domain_bounds(weights, biases, in_lower, in_upper, lowers, uppers, c,
                  splits, alphas, betas, cuts=None, gammas=None, *, xp=jnp,
                  track_magnitude: bool = False) -> bounds_lib.Backsub:
  """Lower bounds of c^T f over each domain, batched over the leading axis
  of the per-hidden-layer splits/alphas/betas (D, n_j) (c: one spec, or
  one per domain, (D, outputs)), with the first-layer cuts (optional,
  bounds.hull_cuts.Cuts) weighted by gammas (D, K); the Backsub also
  holds the input coefficients (the minimising vertex) and per hidden layer
  the coefficients on its post-activations (for branching)."""
  relaxations = [relaxation.relu_relaxation(l, u, s, a, xp=xp)
                 for l, u, s, a in zip(lowers, uppers, splits, alphas)]
  spec = xp.broadcast_to(c, splits[0].shape[:1] + c.shape[-1:])
  return bounds_lib.backsubstitute(
      spec, weights, biases, relaxations, in_lower, in_upper, betas=betas,
      splits=splits, cuts=cuts, gammas=gammas,
      track_magnitude=track_magnitude, xp=xp)


@jax.jit
def bounds_only(weights, biases, in_lower, in_upper, lowers, uppers, c,
                splits, alphas, betas, cuts=None, gammas=None):
  """One-pass bounds (no optimisation), e.g. to rank branching candidates."""
  return domain_bounds(weights, biases, in_lower, in_upper, lowers, uppers,
                       c, splits, alphas, betas, cuts, gammas).bound


def _project(params):
  """Onto the sound set: alpha in [0, 1], beta >= 0, gamma >= 0."""
  return {"alpha": [jnp.clip(a, 0.0, 1.0) for a in params["alpha"]],
          "beta": [jnp.maximum(b, 0.0) for b in params["beta"]],
          "gamma": jnp.maximum(params["gamma"], 0.0)}


def _forward_margin(weights, biases, c, x):
  """float32 c^T f(x): only promising vertices get a float64 pass."""
  h = x
  for w, b in zip(weights[:-1], biases[:-1]):
    h = jnp.maximum(h @ w + b, 0)
  return jnp.sum((h @ weights[-1] + biases[-1]) * c, axis=-1)


@functools.partial(jax.jit, static_argnames=("steps",))
def optimise(weights, biases, in_lower, in_upper, lowers, uppers, c, splits,
             alphas, betas, cuts=None, gammas=None, *, steps, alpha_lr,
             beta_lr):
  """Projected Adam ascent on alpha, beta and (with cuts) gamma; returns
  the last alpha/beta, the best bound seen per domain, its vertex, the
  float32 margin there, the last coefficients per hidden layer and the last
  gamma ((D, 0) without cuts)."""
  if gammas is None:
    gammas = jnp.zeros((splits[0].shape[0], 0), jnp.float32)
  bound_fn = functools.partial(domain_bounds, weights, biases, in_lower,
                               in_upper, lowers, uppers, c, splits)
  # the cut multipliers are dual variables like beta: same rate
  optimizer = optax.multi_transform(
      {"alpha": optax.adam(alpha_lr), "beta": optax.adam(beta_lr)},
      {"alpha": "alpha", "beta": "beta", "gamma": "beta"})

  def bound_and_vertex(p):
    result = bound_fn(p["alpha"], p["beta"], cuts, p["gamma"])
    return result.bound, bounds_lib.minimising_vertex(result.input_coeffs,
                                                      in_lower, in_upper)

  params, best, vertex = bounds_lib.projected_ascent(
      bound_and_vertex, {"alpha": alphas, "beta": betas, "gamma": gammas},
      _project, optimizer, steps)
  last = bound_fn(params["alpha"], params["beta"], cuts, params["gamma"])
  better = last.bound > best
  best = jnp.where(better, last.bound, best)
  vertex = jnp.where(better[:, None], bounds_lib.minimising_vertex(
      last.input_coeffs, in_lower, in_upper), vertex)
  return (params["alpha"], params["beta"], best, vertex,
          _forward_margin(weights, biases, c, vertex), last.hidden_coeffs,
          params["gamma"])
