"""LP tightening of the CROWN bounds (one LP per still-unstable neuron over
the triangle relaxation of all earlier layers, HiGHS), and the bound of an
LP that is proven whatever the solver's tolerances (`safe_lp_lower_bound`,
also the branch and bound's leaf proof)."""

from __future__ import annotations

import numpy as np

from robust_prune.bounds import safety
from robust_prune.bounds.layers import LayerBounds
from robust_prune.bounds import relaxation
from robust_prune.network import Network


def _highs_model(lp, time_limit: float):
  """A silent HiGHS instance holding the LP's rows and columns."""
  import highspy  # pylint: disable=g-import-not-at-top
  h = highspy.Highs()
  h.setOptionValue("output_flag", False)
  h.setOptionValue("time_limit", float(time_limit))
  h.addVars(lp["num_cols"], lp["col_lower"], lp["col_upper"])
  a = lp["a"]
  h.addRows(a.shape[0], lp["row_lower"], lp["row_upper"], a.nnz,
            a.indptr, a.indices, a.data)
  return h


def _proven_minimum(h, lp, cost) -> float:
  """The proven minimum of cost.x over the LP (-inf when HiGHS did not
  solve it): the Lagrangian bound of HiGHS's row duals, not its objective
  value (optimal only up to its tolerances)."""
  import highspy  # pylint: disable=g-import-not-at-top
  num_cols = lp["num_cols"]
  h.changeColsCost(num_cols, np.arange(num_cols, dtype=np.int32), cost)
  h.run()
  if h.getModelStatus() != highspy.HighsModelStatus.kOptimal:
    return -np.inf
  return safe_lp_lower_bound(
      lp["a"], cost, lp["row_lower"], lp["row_upper"], lp["col_lower"],
      lp["col_upper"], np.asarray(h.getSolution().row_dual))


def lp_tighten(network: Network, lower, upper, bounds: LayerBounds,
               time_limit_per_lp: float = 5.0) -> LayerBounds:
  """Tightens the still-unstable hidden neurons of layers >= 1 with one LP
  each for min and max (triangle relaxation of earlier layers; HiGHS dual
  simplex, warm-started across objectives). Sound: a neuron keeps its old
  bound whenever its LP is not solved to optimality."""
  lowers = [np.array(l, np.float64) for l in bounds.lowers]
  uppers = [np.array(u, np.float64) for u in bounds.uppers]
  weights = [np.asarray(w, np.float64) for w in network.weights]
  biases = [np.asarray(b, np.float64) for b in network.biases]
  for k in range(1, network.num_layers - 1):
    unstable = np.flatnonzero((lowers[k] < 0) & (uppers[k] > 0))
    if unstable.size == 0:
      continue
    lp = triangle_relaxation_lp(weights[:k], biases[:k], lower, upper,
                                lowers[:k], uppers[:k])
    h = _highs_model(lp, time_limit_per_lp)
    for neuron in unstable:
      # y_k = W_k^T h_{k-1} + b_k, h_{k-1} are the last columns.
      for sense in (1.0, -1.0):
        cost = np.zeros(lp["num_cols"])
        cost[lp["h_cols"]] = sense * weights[k][:, neuron]
        proven = _proven_minimum(h, lp, cost)
        if not np.isfinite(proven):
          continue
        value = sense * proven + biases[k][neuron]
        value -= sense * (safety.SAFETY_ABS + safety.SAFETY_REL * abs(value))
        if sense > 0:
          lowers[k][neuron] = max(lowers[k][neuron], value)
        else:
          uppers[k][neuron] = min(uppers[k][neuron], value)
  return LayerBounds(tuple(lowers), tuple(uppers))


def safe_lp_lower_bound(a, cost, row_lower, row_upper, col_lower, col_upper,
                        row_dual) -> float:
  """A lower bound of min cost.x s.t. row_lower <= A x <= row_upper,
  col_lower <= x <= col_upper, valid for ANY multipliers (Neumaier &
  Shcherbina 2004): cost.x = (cost - A^T y).x + y.(A x) >= the box minimum of
  the first term plus y_i * row_lower_i (y_i > 0) or y_i * row_upper_i
  (y_i < 0). A multiplier whose row bound is infinite is dropped. -inf when
  the reduced cost needs an infinite column bound. Less an allowance for
  this function's own float64 round-off (N terms err by at most
  N * 2^-53 * the sum of their magnitudes)."""
  y = np.asarray(row_dual, np.float64).copy()
  y[(y > 0) & ~np.isfinite(row_lower)] = 0.0
  y[(y < 0) & ~np.isfinite(row_upper)] = 0.0
  cost = np.asarray(cost, np.float64)
  reduced = cost - a.T @ y
  reduced_mag = np.abs(cost) + abs(a).T @ np.abs(y)
  low = np.where(reduced > 0, col_lower, col_upper)
  nz = reduced != 0
  if not np.all(np.isfinite(low[nz])):
    return -np.inf
  rows = np.where(y > 0, row_lower, row_upper)
  value = np.sum(reduced[nz] * low[nz]) + np.sum(y[y != 0] * rows[y != 0])
  magnitude = (np.sum(reduced_mag[nz] * np.abs(low[nz]))
               + np.sum(np.abs(y[y != 0] * rows[y != 0])))
  terms = a.shape[0] + a.shape[1] + 2
  return float(value - 2 * terms * 2.0**-52 * magnitude)


def _layer_rows(j, w, b, l, u, offsets, num_cols):
  """Rows of hidden layer j: h_j - y_j >= 0 (== 0 when active) for active
  and unstable neurons, and the upper chord h_j - slope*y_j <= shift for
  unstable ones (bounds.relaxation), where y_j = h_{j-1} W_j + b_j."""
  import scipy.sparse as sp  # pylint: disable=g-import-not-at-top
  n = w.shape[1]
  # -W_j^T h_{j-1} + h_j  (so that row = h_j - y_j + b_j)
  left = sp.hstack([sp.csr_matrix((n, offsets[j])), sp.csr_matrix(-w.T),
                    sp.identity(n, format="csr"),
                    sp.csr_matrix((n, num_cols - offsets[j + 2]))]).tocsr()
  active = l >= 0
  unstable = (l < 0) & (u > 0)
  sel = np.flatnonzero(active | unstable)
  blocks = [(left[sel], b[sel], np.where(active[sel], b[sel], np.inf))]
  uns = np.flatnonzero(unstable)
  if uns.size:
    _, slope, shift = relaxation.relu_relaxation(l[uns], u[uns], xp=np)
    pick = sp.csr_matrix((np.ones(uns.size), (np.arange(uns.size), uns)),
                         shape=(uns.size, n))
    chord = sp.hstack([sp.csr_matrix((uns.size, offsets[j])),
                       sp.csr_matrix(-w[:, uns].T * slope[:, None]), pick,
                       sp.csr_matrix((uns.size, num_cols - offsets[j + 2]))])
    blocks.append((chord.tocsr(), np.full(uns.size, -np.inf),
                   shift + slope * b[uns]))
  return blocks


def triangle_relaxation_lp(weights, biases, lower, upper, lowers, uppers):
  """Rows/columns of the LP relaxation of `len(weights)` ReLU layers over the
  box: columns [x, h_0, ..., h_{k-1}] (post-activations), rows
  h_j >= y_j, h_j <= slope*y_j + shift for unstable neurons, h_j = y_j for
  active ones, h_j = 0 (bounds) for inactive ones, y_j = h_{j-1} W_j + b_j."""
  import scipy.sparse as sp  # pylint: disable=g-import-not-at-top
  sizes = [len(lower)] + [w.shape[1] for w in weights]
  offsets = np.cumsum([0] + sizes)
  num_cols = int(offsets[-1])
  col_lower = np.concatenate([lower] + [np.zeros(s) for s in sizes[1:]])
  col_upper = np.concatenate(
      [upper] + [np.maximum(u, 0) for u in uppers[:len(weights)]])
  blocks = []
  for j, (w, b) in enumerate(zip(weights, biases)):
    blocks += _layer_rows(j, w, b, lowers[j], uppers[j], offsets, num_cols)
  a = (sp.vstack([m for m, _, _ in blocks]).tocsr() if blocks
       else sp.csr_matrix((0, num_cols)))
  return {"num_cols": num_cols, "col_lower": col_lower, "col_upper": col_upper,
          "a": a, "row_lower": np.concatenate([r for _, r, _ in blocks]),
          "row_upper": np.concatenate([r for _, _, r in blocks]),
          "h_cols": np.arange(offsets[-2], offsets[-1])}
