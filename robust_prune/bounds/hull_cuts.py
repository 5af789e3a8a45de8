"""Cutting planes from the convex hull of one first-layer ReLU over the box.

The triangle relaxation bounds relu(y) with y = w.x + b by a line in y
alone. Over a box the hull of {(x, relu(w.x + b))} is much tighter
(Anderson et al. 2020, "Strong mixed-integer programming formulations for
trained neural networks"): at a box vertex it is exact, while the chord is
loose wherever l < y < u. For a first-layer neuron the box is the exact
input set, so every facet is a valid cut

    relu(w.x + b) <= v.x + c   for all x in [in_lower, in_upper].

In coordinates t_i in [0, 1] running from the box end that minimises w_i x_i
(L_i) to the one that maximises it (U_i), with d_i = |w_i| (U_i - L_i) and
l = min y, the facets are, for an index h and a set I not holding h with
l(I) >= 0 > l(I + h), where l(S) = l + sum_{i not in S} d_i:

    relu(y) <= sum_{i in I} d_i t_i + l(I) t_h.

The one tightest at a point t* (its value there is the concave envelope)
takes the coordinates in decreasing t*, h being where l plus their running
sum of d_i first reaches 0, and I the coordinates after h
(Tjandraatmadja et al. 2020, "The convex barrier, revisited").

The search (robust_prune.bab) adds them to each domain's bound with
multipliers gamma >= 0, as GCP-CROWN does with its cuts (Zhang et al. 2022).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

# added to every cut's constant, relative to its terms' magnitude, so that
# round-off in computing the facet never makes it cut off a true point
CUT_SLACK_REL = 1e-9


class Cuts(NamedTuple):
  """Rows k: h_0[neuron_k] <= input_coeffs[k] . x + constant[k] on the box
  (h_0: the first hidden layer's post-activations). `neurons` is one-hot
  (K, n_1), so that the search applies the cuts with matrix products; all-zero
  rows (padding) are the trivial cut 0 <= 0. Per-domain cuts (one set per
  domain, on the same neurons) have input rows (D, K, n_in) and constants
  (D, K)."""
  neurons: np.ndarray        # (K, n_1)
  input_coeffs: np.ndarray   # (K, n_in) or (D, K, n_in)
  constant: np.ndarray       # (K,) or (D, K)

  @property
  def count(self) -> int:
    """Cuts (per domain, when each domain has its own: constant (D, K))."""
    return self.constant.shape[-1]


class _Neurons(NamedTuple):
  """The chosen first-layer neurons in the facets' coordinates (n_in, N):
  the box end minimising w_i x_i (low_end) and the other, d_i =
  |w_i| (U_i - L_i), and the neuron's smallest value (lowest, (N,))."""
  index: np.ndarray
  w: np.ndarray
  low_end: np.ndarray
  up_end: np.ndarray
  d: np.ndarray
  lowest: np.ndarray


def _neurons(weights, bias, in_lower, in_upper, neurons) -> _Neurons:
  w = np.asarray(weights, np.float64)
  lo = np.asarray(in_lower, np.float64)[:, None]
  up = np.asarray(in_upper, np.float64)[:, None]
  low_end, up_end = np.where(w >= 0, lo, up), np.where(w >= 0, up, lo)
  d = w * (up_end - low_end)                              # >= 0
  lowest = np.asarray(bias, np.float64) + (w * low_end).sum(0)
  if neurons is None:
    neurons = np.flatnonzero((lowest < 0) & (lowest + d.sum(0) > 0))
  neurons = np.asarray(neurons, int)
  return _Neurons(neurons, *(a[:, neurons] for a in (w, low_end, up_end, d)),
                  lowest[neurons])


def _facets(n: _Neurons, order, in_lower, in_upper, width: int) -> Cuts:
  """The facets for the coordinates taken in `order` ((..., n_in, N), per
  neuron): h where l plus the running sum of d first reaches 0, I the
  coordinates after it (input rows (..., N, n_in), constants (..., N))."""
  running = n.lowest + np.cumsum(np.take_along_axis(
      np.broadcast_to(n.d, order.shape), order, -2), -2)
  k = np.argmax(running >= 0, axis=-2)[..., None, :]     # (..., 1, N)
  h = np.take_along_axis(order, k, -2)
  rank = np.empty_like(order)
  np.put_along_axis(rank, order, np.broadcast_to(
      np.arange(order.shape[-2])[:, None], order.shape), -2)
  coeffs = np.where(rank > k, n.w, 0.0)                   # I
  span = (np.take_along_axis(np.broadcast_to(n.up_end, order.shape), h, -2)
          - np.take_along_axis(np.broadcast_to(n.low_end, order.shape), h,
                               -2))
  np.put_along_axis(coeffs, h, np.take_along_axis(running, k, -2) / span,
                    -2)
  constant = -(coeffs * n.low_end).sum(-2)
  reach = np.maximum(np.abs(in_lower), np.abs(in_upper))[:, None]
  magnitude = (np.abs(coeffs) * reach).sum(-2)
  constant += CUT_SLACK_REL * (magnitude + np.abs(constant) + 1.0)
  onehot = np.zeros((len(n.index), width))
  onehot[np.arange(len(n.index)), n.index] = 1.0
  return Cuts(onehot, np.swapaxes(coeffs, -1, -2), constant)


def first_layer_facets(weights, bias, in_lower, in_upper, point,
                       neurons=None) -> Cuts:
  """For each neuron (default: every unstable one) of the first layer
  (weights (n_in, n_1), bias (n_1,)), the hull facet tightest at `point`."""
  n = _neurons(weights, bias, in_lower, in_upper, neurons)
  span = n.up_end - n.low_end
  t = np.where(span != 0, (np.asarray(point, np.float64)[:, None]
                           - n.low_end) / np.where(span != 0, span, 1.0), 0.0)
  order = np.lexsort((-n.d, -t), axis=0)                  # decreasing t
  return _facets(n, order, np.asarray(in_lower, np.float64),
                 np.asarray(in_upper, np.float64), len(bias))


def vertex_facets(weights, bias, in_lower, in_upper, vertices,
                  neurons=None) -> Cuts:
  """`first_layer_facets` at many box vertices (S, n_in) at once: one set
  of cuts per vertex (input rows (S, N, n_in), constants (S, N)). At a
  vertex every t_i is 0 or 1 (rounded here: any order gives a valid facet),
  so the order is the t = 1 coordinates, then the others, each by
  decreasing d: all is computed in one order by d, shared by the vertices."""
  in_lower = np.asarray(in_lower, np.float64)
  in_upper = np.asarray(in_upper, np.float64)
  n = _neurons(weights, bias, in_lower, in_upper, neurons)
  # (N, n_in) layout: the sums run along the contiguous axis; only the
  # running sums need the order by d, the facets are built in place
  w, low_end, up_end, d = (a.T for a in (n.w, n.low_end, n.up_end, n.d))
  by_d = np.argsort(-d, axis=1, kind="stable")
  rank = np.argsort(by_d, axis=1)                         # position by d
  span = up_end - low_end
  vertices = np.asarray(vertices, np.float64)
  at_upper = (np.abs(vertices - in_upper) < np.abs(vertices - in_lower))
  first = (span != 0) & (at_upper[:, None, :] == (w >= 0))  # t_i = 1
  first_by_d = np.take_along_axis(first, by_d[None], 2)
  d_by_d = np.take_along_axis(d, by_d, 1)
  lowest = n.lowest[:, None]
  part1 = np.cumsum(first_by_d * d_by_d, 2)
  in_first = (lowest + part1[..., -1:]) >= 0              # h among t = 1
  running = lowest + np.where(first_by_d, part1, part1[..., -1:] + np.cumsum(
      ~first_by_d * d_by_d, 2))
  h = np.argmax((running >= 0) & (first_by_d == in_first), axis=2)[..., None]
  after = rank > h
  coeffs = w * np.where(in_first, ~first | after, ~first & after)
  h_index = np.take_along_axis(np.broadcast_to(by_d, running.shape), h, 2)
  np.put_along_axis(coeffs, h_index, np.take_along_axis(running, h, 2) / (
      np.take_along_axis(np.broadcast_to(span, coeffs.shape), h_index, 2)), 2)
  reach = np.maximum(np.abs(in_lower), np.abs(in_upper))
  constant = -(coeffs * low_end).sum(2)
  magnitude = np.abs(coeffs) @ reach
  constant += CUT_SLACK_REL * (magnitude + np.abs(constant) + 1.0)
  onehot = np.zeros((len(n.index), len(bias)))
  onehot[np.arange(len(n.index)), n.index] = 1.0
  return Cuts(onehot, coeffs, constant)


def concatenate(*cuts: Cuts) -> Cuts:
  return Cuts(*(np.concatenate(parts) for parts in zip(*cuts)))


def padded(cuts: Cuts, size: int) -> Cuts:
  """`cuts` with all-zero rows up to `size` (one compiled shape); shared or
  per-domain cuts alike."""
  extra = size - cuts.count
  if extra < 0:
    raise ValueError(f"{cuts.count} cuts do not fit in {size}")
  def pad(a, axis):
    widths = [(0, 0)] * a.ndim
    widths[axis] = (0, extra)
    return np.pad(a, widths)
  return Cuts(pad(cuts.neurons, 0), pad(cuts.input_coeffs, -2),
              pad(cuts.constant, -1))
