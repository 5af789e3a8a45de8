"""How far every bound is widened so that float round-off never cuts off a
true activation.

JAX computes the bounds in float64 (`jax.enable_x64` around each call; the
rest of the project stays float32). Every bound is widened outward by
`SAFETY_ABS + SAFETY_REL * |bound|` plus a round-off allowance proportional
to the magnitude of the terms summed (`roundoff_slack`), so that the float64
MILP and the branch and bound's float64 proofs built on them never cut off a
true activation. (In float32, with a margin proportional to the result only,
a review built networks whose cancelling terms beat the margin: a neuron
with true maximum 6e-6 was bounded above by -5e-6.)
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from robust_prune.network import Network

SAFETY_ABS = 1e-5
SAFETY_REL = 1e-5


def roundoff_allowance(network: Network, magnitude, extra_terms: int = 0):
  """An upper bound of the float64 round-off in any sum computed along a
  back-substitution through `network` (bounds here, the branch and bound's
  proofs), given the sum of the magnitudes of its terms: N terms err by at
  most N * 2^-53 * magnitude, and N stays below (depth + 2) * (total fan-in
  + depth + 2); four times that is allowed (~1e-13 * magnitude here).
  `extra_terms`: terms a sum may hold beyond the network's (e.g. cuts)."""
  depth = network.num_layers
  terms = (depth + 2) * (sum(w.shape[0] for w in network.weights) + depth + 2
                         + extra_terms)
  return terms * 2.0**-51 * magnitude


def roundoff_slack(network: Network, lower, upper):
  """Per layer (..., n_k): `roundoff_allowance` for any bound computed here
  for that layer. Such a bound sums products of weights, ReLU slopes in
  [0, 1], relaxation shifts (at most the neuron's bound magnitude) and input
  values, whose magnitudes add up to at most M_k = |W_k|^T M_{k-1} + |b_k|
  (M_{-1} = max(|lower|, |upper|)) per layer summed over."""
  m = np.maximum(np.abs(np.asarray(lower, np.float64)),
                 np.abs(np.asarray(upper, np.float64)))
  slacks = []
  for w, b in zip(network.weights, network.biases):
    m = m @ np.abs(w.astype(np.float64)) + np.abs(b.astype(np.float64))
    slacks.append(jnp.asarray(roundoff_allowance(network, m), jnp.float64))
  return tuple(slacks)


def widen(lower, upper, slack):
  """Outward safety margin (see the module docstring)."""
  return (lower - SAFETY_ABS - SAFETY_REL * jnp.abs(lower) - slack,
          upper + SAFETY_ABS + SAFETY_REL * jnp.abs(upper) + slack)


def widen_margin(bound, slack_logits):
  """A margin lower bound less its safety margin; the round-off allowance
  of a logit difference is twice the largest logit's."""
  return (bound - SAFETY_ABS - SAFETY_REL * jnp.abs(bound)
          - 2.0 * jnp.max(slack_logits, axis=-1, keepdims=True))
