"""CROWN / DeepPoly layer bounds and margin bounds: every layer's
pre-activations are bounded by a linear function of the input, propagated
back through the ReLU relaxations of all earlier layers (bounds.backsub).
JAX, jit-compiled, float64, batched over a leading image axis."""

from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from robust_prune.bounds import layers
from robust_prune.bounds import safety
from robust_prune.bounds.backsub import backsubstitute
from robust_prune.bounds.interval import interval_layer
from robust_prune.bounds import relaxation
from robust_prune.network import Network


def _crown_layer(weights, biases, k, lower, upper, relaxations, interval):
  """CROWN bounds of layer k >= 1 (both signs of the identity spec as one
  back-substitution), never looser than the interval ones."""
  n = weights[k].shape[1]
  eye = jnp.eye(n, dtype=lower.dtype)
  spec = jnp.broadcast_to(jnp.concatenate([eye, -eye]),
                          lower.shape[:-1] + (2 * n, n))
  both = backsubstitute(spec, weights[:k + 1], biases[:k + 1], relaxations,
                        lower, upper).bound
  return (jnp.maximum(both[..., :n], interval[0]),
          jnp.minimum(-both[..., n:], interval[1]))


@jax.jit
def crown_jax(weights, biases, lower, upper, slacks):
  """Widened CROWN bounds of every layer (lists of (..., n_k) arrays)."""
  lowers, uppers, relaxations = [], [], []
  for k in range(len(weights)):
    interval = interval_layer(
        weights[k], biases[k],
        *((lower, upper) if k == 0 else
          (jnp.maximum(lowers[-1], 0), jnp.maximum(uppers[-1], 0))))
    if k == 0:
      l, u = interval  # interval arithmetic is exact on a box
    else:
      l, u = _crown_layer(weights, biases, k, lower, upper, relaxations,
                          interval)
    l, u = safety.widen(l, u, slacks[k])
    lowers.append(l)
    uppers.append(u)
    relaxations.append(relaxation.relu_relaxation(l, u))
  return lowers, uppers


def crown_bounds(network: Network, lower, upper):
  """CROWN back-substitution bounds over [lower, upper] (never looser than
  interval bounds); (784,) -> LayerBounds, (B, 784) -> list of LayerBounds."""
  lower, upper = layers.as_box(lower, upper)
  with jax.enable_x64(True):
    ls, us = crown_jax(*layers.float64_params(network), lower, upper,
                       safety.roundoff_slack(network, lower, upper))
    return layers.to_layer_bounds(ls, us, lower.ndim == 2)


def margin_spec(label: int, targets: Sequence[int], num_classes: int):
  """Rows e_label - e_target: the verification objective per target."""
  spec = np.zeros((len(targets), num_classes), np.float64)
  spec[:, label] = 1.0
  spec[np.arange(len(targets)), list(targets)] -= 1.0
  return spec


@jax.jit
def _crown_margin_jax(weights, biases, lower, upper, lowers, uppers, spec,
                      slack_logits):
  relaxations = [relaxation.relu_relaxation(l, u)
                 for l, u in zip(lowers[:-1], uppers[:-1])]
  bound = backsubstitute(spec, weights, biases, relaxations, lower, upper).bound
  return safety.widen_margin(bound, slack_logits)


def margin_setup(network: Network, lower, upper, labels):
  """Batched boxes, labels, the margin spec (every class; the label's own
  row is zero) and the CROWN layer bounds the margin bounds start from; call
  under `jax.enable_x64(True)`."""
  lower = np.atleast_2d(np.asarray(lower, np.float64))
  upper = np.atleast_2d(np.asarray(upper, np.float64))
  labels = np.atleast_1d(np.asarray(labels))
  k = network.num_classes
  spec = np.stack([margin_spec(int(y), range(k), k) for y in labels])
  weights, biases = layers.float64_params(network)
  slacks = safety.roundoff_slack(network, lower, upper)
  ls, us = crown_jax(weights, biases, lower, upper, slacks)
  return lower, upper, labels, spec, weights, biases, ls, us, slacks[-1]


def crown_margin_lower_bounds(network: Network, lower, upper, labels,
                              targets_per_image=None):
  """Certified lower bounds of logit[label] - logit[target] over the box,
  for every target != label: (B, 784) boxes -> (B, num_classes) array with
  +inf at the label's own column. A positive entry proves that target
  unreachable without any MILP."""
  del targets_per_image  # every target is bounded (one batched pass)
  with jax.enable_x64(True):
    lower, upper, labels, spec, weights, biases, ls, us, slack = margin_setup(
        network, lower, upper, labels)
    bound = np.array(_crown_margin_jax(weights, biases, lower, upper, ls, us,
                                       jnp.asarray(spec), slack), np.float64)
  bound[np.arange(len(labels)), labels] = np.inf
  return bound
