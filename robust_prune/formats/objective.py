"""General linear objectives `coeffs @ y + consts` over the outputs y, folded
into the network's last layer so that the margin machinery (CROWN bounds,
alpha/beta-CROWN branch and bound) bounds them unchanged.

`objective_network` builds an in-memory float64 `Network` with outputs
`[0, -o_1 + s_1, ..., -o_k + s_k]`: its margin `out[0] - out[i]` (label 0,
target i) is `o_i - s_i`. The fold `W_L @ coeffs.T` rounds in float64; `s_i`
is twice a bound of that round-off over the box (given a bound of the last
hidden layer's outputs), so the folded margin never exceeds the true
objective and a proof that it is > 0 proves `o_i > 0`. A point where it is
< 0 is only a candidate: callers re-check it with the original network.
"""

from __future__ import annotations

import numpy as np

from robust_prune import bab as bab_lib
from robust_prune import bounds as bounds_lib
from robust_prune.network import Network, forward

_UNIT = 2.0**-53


def last_hidden_magnitude(network: Network, lower, upper,
                          layer_bounds: bounds_lib.LayerBounds | None = None):
  """A bound of |h| for the input h of the last layer over the box."""
  if network.num_layers == 1:
    return np.maximum(np.abs(np.asarray(lower, np.float64)),
                      np.abs(np.asarray(upper, np.float64)))
  if layer_bounds is None:
    layer_bounds = bounds_lib.crown_bounds(network, lower, upper)
  return np.maximum(layer_bounds.uppers[-2], 0.0)


def objective_network(network: Network, coeffs, consts,
                      h_magnitude) -> Network:
  """The folded network described in the module docstring (float64)."""
  coeffs = np.atleast_2d(np.asarray(coeffs, np.float64))
  consts = np.asarray(consts, np.float64).reshape(-1)
  w = np.asarray(network.weights[-1], np.float64)
  b = np.asarray(network.biases[-1], np.float64)
  w_fold = w @ coeffs.T
  b_fold = b @ coeffs.T + consts
  # |computed - exact| <= gamma * (sum of |terms|), gamma = n u / (1 - n u)
  terms = w.shape[1] + 2
  gamma = 2 * terms * _UNIT
  error = gamma * (np.asarray(h_magnitude, np.float64) @ (np.abs(w) @
                                                          np.abs(coeffs.T))
                   + np.abs(b) @ np.abs(coeffs.T) + np.abs(consts))
  allowance = 2 * error + 1e-300
  weights = (*(np.asarray(v, np.float64) for v in network.weights[:-1]),
             np.concatenate([np.zeros((w.shape[0], 1)), -w_fold], axis=1))
  biases = (*(np.asarray(v, np.float64) for v in network.biases[:-1]),
            np.concatenate([[0.0], -b_fold + allowance]))
  return Network(weights, biases)


def objective_lower_bounds(network: Network, lower, upper, coeffs, consts,
                           layer_bounds=None) -> np.ndarray:
  """Proven (CROWN) lower bounds of each row's objective over the box."""
  h_mag = last_hidden_magnitude(network, lower, upper, layer_bounds)
  folded = objective_network(network, coeffs, consts, h_mag)
  bound = bounds_lib.crown_margin_lower_bounds(
      folded, np.asarray(lower)[None], np.asarray(upper)[None], [0])[0]
  return bound[1:]


def linear_minimum(network: Network, lower, upper, coeffs, consts: float = 0.0,
                   config: bab_lib.BabConfig = bab_lib.BabConfig(),
                   tolerance: float = bab_lib.OPTIMUM_TOLERANCE):
  """min over the box of coeffs @ f(x) + consts by branch and bound:
  (proven lower bound, value at the best point found (original network,
  float64), that point, whether the bracket closed to `tolerance`)."""
  coeffs = np.asarray(coeffs, np.float64).reshape(1, -1)
  h_mag = last_hidden_magnitude(network, lower, upper)
  folded = objective_network(network, coeffs, [consts], h_mag)
  result = bab_lib.bab_minimum(folded, lower, upper, 0, 1, config,
                               tolerance=tolerance)
  value = None
  if result.x_best is not None:
    value = float(coeffs[0] @ forward(network, result.x_best) + consts)
  return result.lower_bound, value, result.x_best, result.optimal
