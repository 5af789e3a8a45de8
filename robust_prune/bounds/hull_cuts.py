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
  rows (padding) are the trivial cut 0 <= 0."""
  neurons: np.ndarray        # (K, n_1)
  input_coeffs: np.ndarray   # (K, n_in)
  constant: np.ndarray       # (K,)

  @property
  def count(self) -> int:
    return len(self.constant)


def first_layer_facets(weights, bias, in_lower, in_upper, point,
                       neurons=None) -> Cuts:
  """For each neuron (default: every unstable one) of the first layer
  (weights (n_in, n_1), bias (n_1,)), the hull facet tightest at `point`."""
  w = np.asarray(weights, np.float64)
  lo = np.asarray(in_lower, np.float64)[:, None]
  up = np.asarray(in_upper, np.float64)[:, None]
  low_end, up_end = np.where(w >= 0, lo, up), np.where(w >= 0, up, lo)
  d = w * (up_end - low_end)                              # >= 0
  lowest = np.asarray(bias, np.float64) + (w * low_end).sum(0)
  if neurons is None:
    neurons = np.flatnonzero((lowest < 0) & (lowest + d.sum(0) > 0))
  neurons = np.asarray(neurons, int)
  w, d, low_end, up_end = (a[:, neurons] for a in (w, d, low_end, up_end))
  width = up_end - low_end
  t = np.where(width != 0, (np.asarray(point, np.float64)[:, None] - low_end)
               / np.where(width != 0, width, 1.0), 0.0)
  order = np.lexsort((-d, -t), axis=0)                    # decreasing t
  running = lowest[neurons] + np.cumsum(np.take_along_axis(d, order, 0), 0)
  k = np.argmax(running >= 0, axis=0)
  cols = np.arange(len(neurons))
  h = order[k, cols]
  in_set = np.ones_like(w, bool)                          # I
  rank = np.empty_like(order)
  np.put_along_axis(rank, order, np.arange(len(order))[:, None], 0)
  in_set &= rank > k
  coeffs = np.where(in_set, w, 0.0)
  coeffs[h, cols] = running[k, cols] / (up_end[h, cols] - low_end[h, cols])
  constant = -(coeffs * low_end).sum(0)
  magnitude = (np.abs(coeffs) * np.maximum(np.abs(lo), np.abs(up))).sum(0)
  constant += CUT_SLACK_REL * (magnitude + np.abs(constant) + 1.0)
  onehot = np.zeros((len(neurons), len(bias)))
  onehot[cols, neurons] = 1.0
  return Cuts(onehot, coeffs.T, constant)


def concatenate(*cuts: Cuts) -> Cuts:
  return Cuts(*(np.concatenate(parts) for parts in zip(*cuts)))


def padded(cuts: Cuts, size: int) -> Cuts:
  """`cuts` with all-zero rows up to `size` (one compiled shape)."""
  extra = size - cuts.count
  if extra < 0:
    raise ValueError(f"{cuts.count} cuts do not fit in {size}")
  return Cuts(*(np.concatenate([a, np.zeros((extra,) + a.shape[1:])])
                for a in cuts))
