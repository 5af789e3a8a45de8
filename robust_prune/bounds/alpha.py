"""alpha-CROWN (Xu et al. 2021): the lower ReLU slopes alpha in [0, 1] are
free parameters of the bound (bounds.relaxation); any value gives a sound
bound, so they are tuned by projected gradient ascent (optax) and the best
bound seen is kept. `projected_ascent` is the one optimiser of the project:
the margin bounds and intermediate layer bounds here and the branch and
bound's alpha/beta all use it."""

from __future__ import annotations

import functools
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax

from robust_prune.bounds import safety
from robust_prune.bounds.backsub import backsubstitute, minimising_vertex
from robust_prune.bounds.crown import crown_jax, margin_setup
from robust_prune.bounds import layers
from robust_prune.bounds import relaxation
from robust_prune.network import Network


def projected_ascent(bound_fn: Callable, params, project: Callable,
                     optimizer: optax.GradientTransformation, steps: int):
  """`steps` optimizer steps ascending sum(bound), each followed by
  `project` (onto the parameters' sound set). bound_fn(params) -> (bound
  (...,), aux (..., k)). Returns the last params and, per bound entry, the
  best bound seen (the start included) with its aux."""
  state = optimizer.init(params)
  first, first_aux = bound_fn(params)

  def loss(p):
    bound, aux = bound_fn(p)
    return -jnp.sum(bound), (bound, aux)

  def step(carry, _):
    p, s, best, best_aux = carry
    (_, (bound, aux)), grad = jax.value_and_grad(loss, has_aux=True)(p)
    better = bound > best
    best = jnp.where(better, bound, best)
    best_aux = jnp.where(better[..., None], aux, best_aux)
    updates, s = optimizer.update(grad, s, p)
    p = project(optax.apply_updates(p, updates))
    return (p, s, best, best_aux), None

  (params, _, best, best_aux), _ = jax.lax.scan(
      step, (params, state, first, first_aux), None, length=steps)
  return params, best, best_aux


def clip_unit(tree):
  """Projection onto [0, 1] (the sound alphas)."""
  return jax.tree.map(lambda a: jnp.clip(a, 0.0, 1.0), tree)


@functools.partial(jax.jit, static_argnums=(7,))
def _alpha_crown_margin_jax(weights, biases, lower, upper, lowers, uppers,
                            spec, steps, learning_rate, slack_logits):
  """Optimises one set of alphas per spec row (final spec only; the
  intermediate bounds stay the CROWN ones)."""
  rows = spec.shape[-2]
  alphas = []
  for l, u in zip(lowers[:-1], uppers[:-1]):
    low, _, _ = relaxation.relu_relaxation(l, u)   # CROWN's slopes to start
    alphas.append(jnp.broadcast_to(low[..., None, :],
                                   low.shape[:-1] + (rows, low.shape[-1])))

  def bound_fn(alphas):
    relaxations = [
        relaxation.relu_relaxation(l[..., None, :], u[..., None, :], alpha=a)
        for l, u, a in zip(lowers[:-1], uppers[:-1], alphas)]
    result = backsubstitute(spec, weights, biases, relaxations, lower, upper)
    return result.bound, minimising_vertex(result.input_coeffs, lower, upper)

  _, best, _ = projected_ascent(bound_fn, alphas, clip_unit,
                                optax.adam(learning_rate), steps)
  return safety.widen_margin(best, slack_logits)


def alpha_crown_margin_lower_bounds(network: Network, lower, upper, labels,
                                    steps: int = 30, learning_rate: float = 0.1):
  """Like `crown_margin_lower_bounds`, tightened by optimizing the lower ReLU
  slopes per target (never looser than CROWN: the CROWN slopes are the
  starting point and the best bound seen is kept)."""
  with jax.enable_x64(True):
    lower, upper, labels, spec, weights, biases, ls, us, slack = margin_setup(
        network, lower, upper, labels)
    bound = np.array(_alpha_crown_margin_jax(
        weights, biases, lower, upper, ls, us, jnp.asarray(spec), int(steps),
        jnp.float64(learning_rate), slack), np.float64)
  bound[np.arange(len(labels)), labels] = np.inf
  return bound


@functools.partial(jax.jit, static_argnums=(6, 7))
def _alpha_layer_jax(weights, biases, lower, upper, lowers, uppers, k, steps,
                     learning_rate):
  """Lower bounds of y_k and -y_k (layer k's pre-activations, all neurons as
  2 n_k spec rows), each row with its own alphas for every earlier layer
  (as alpha-CROWN does for intermediate bounds), optimised from CROWN's
  slopes; returns the best bounds seen (lower, upper), not yet widened."""
  n = weights[k].shape[1]
  eye = jnp.eye(n, dtype=lower.dtype)
  spec = jnp.broadcast_to(jnp.concatenate([eye, -eye]),
                          lower.shape[:-1] + (2 * n, n))
  alphas = []
  for l, u in zip(lowers[:k], uppers[:k]):
    low, _, _ = relaxation.relu_relaxation(l, u)   # CROWN's slopes to start
    alphas.append(jnp.broadcast_to(low[..., None, :],
                                   low.shape[:-1] + (2 * n, low.shape[-1])))

  def bound_fn(alphas):
    relaxations = [
        relaxation.relu_relaxation(l[..., None, :], u[..., None, :], alpha=a)
        for l, u, a in zip(lowers[:k], uppers[:k], alphas)]
    result = backsubstitute(spec, weights[:k + 1], biases[:k + 1],
                            relaxations, lower, upper)
    return result.bound, minimising_vertex(result.input_coeffs, lower, upper)

  _, best, _ = projected_ascent(bound_fn, alphas, clip_unit,
                                optax.adam(learning_rate), steps)
  return best[..., :n], -best[..., n:]


def alpha_crown_bounds(network: Network, lower, upper, steps: int = 20,
                       learning_rate: float = 0.1):
  """CROWN layer bounds with every hidden layer after the first tightened
  by alpha-CROWN (optimised slopes per neuron bound, layer by layer, each
  layer's relaxations built on the tightened bounds before it); never
  looser than CROWN. The logits keep their CROWN bounds. (784,) box ->
  LayerBounds, (B, 784) -> list of LayerBounds."""
  lower, upper = layers.as_box(lower, upper)
  with jax.enable_x64(True):
    weights, biases = layers.float64_params(network)
    slacks = safety.roundoff_slack(network, lower, upper)
    ls, us = crown_jax(weights, biases, lower, upper, slacks)
    ls, us = list(ls), list(us)
    for k in range(1, network.num_layers - 1):
      low, up = _alpha_layer_jax(weights, biases, lower, upper, tuple(ls),
                                 tuple(us), k, int(steps),
                                 jnp.float64(learning_rate))
      low, up = safety.widen(low, up, slacks[k])
      ls[k], us[k] = jnp.maximum(ls[k], low), jnp.minimum(us[k], up)
    return layers.to_layer_bounds(ls, us, lower.ndim == 2)
