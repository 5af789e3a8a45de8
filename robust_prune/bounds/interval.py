"""Interval arithmetic, layer by layer (exact for layer 0, since the input
set is a box)."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from robust_prune.bounds import layers
from robust_prune.bounds import safety
from robust_prune.network import Network


def interval_layer(w, b, lower, upper):
  """Bounds of h @ w + b over the box lower <= h <= upper."""
  center, radius = (upper + lower) / 2, (upper - lower) / 2
  mid = center @ w + b
  rad = radius @ jnp.abs(w)
  return mid - rad, mid + rad


@jax.jit
def _interval_jax(weights, biases, lower, upper, slacks):
  lowers, uppers = [], []
  for i, (w, b) in enumerate(zip(weights, biases)):
    l, u = safety.widen(*interval_layer(w, b, lower, upper), slacks[i])
    lowers.append(l)
    uppers.append(u)
    lower, upper = jnp.maximum(l, 0), jnp.maximum(u, 0)
  return lowers, uppers


def interval_bounds(network: Network, lower, upper):
  """Interval bounds over the box [lower, upper]; (784,) -> LayerBounds,
  (B, 784) -> list of B LayerBounds."""
  lower, upper = layers.as_box(lower, upper)
  with jax.enable_x64(True):
    ls, us = _interval_jax(*layers.float64_params(network), lower, upper,
                           safety.roundoff_slack(network, lower, upper))
    return layers.to_layer_bounds(ls, us, lower.ndim == 2)
