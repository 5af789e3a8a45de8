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
  (weights (n_in, n_1), bias (n_1,)), the hull facet tightest at `point`.
  (Any point of the box; the searches make theirs at box vertices, by
  `vertex_facet_rows`, which the tests check against this.)"""
  n = _neurons(weights, bias, in_lower, in_upper, neurons)
  span = n.up_end - n.low_end
  t = np.where(span != 0, (np.asarray(point, np.float64)[:, None]
                           - n.low_end) / np.where(span != 0, span, 1.0), 0.0)
  order = np.lexsort((-n.d, -t), axis=0)                  # decreasing t
  return _facets(n, order, np.asarray(in_lower, np.float64),
                 np.asarray(in_upper, np.float64), len(bias))


def as_sets(cuts) -> tuple[Cuts, ...]:
  """One Cuts or a tuple of them (bounds.backsub takes either) as a tuple."""
  return (cuts,) if isinstance(cuts, Cuts) else tuple(cuts)


def concatenate(*cuts: Cuts) -> Cuts:
  return Cuts(*(np.concatenate(parts) for parts in zip(*cuts)))


def strongest_rows(cuts: Cuts, gammas, per_neuron: int) -> np.ndarray:
  """The rows of shared cuts (K rows, multipliers `gammas` (K,)) that are
  among the `per_neuron` largest multipliers of their neuron (ties: the
  earlier row), in their original order."""
  owner = np.argmax(cuts.neurons, axis=1)
  order = np.lexsort((np.arange(len(owner)), -np.asarray(gammas), owner))
  place = np.arange(len(order))
  first = np.r_[True, owner[order][1:] != owner[order][:-1]]
  start = np.maximum.accumulate(np.where(first, place, 0))
  return np.sort(order[place - start < per_neuron])


def take(cuts: Cuts, rows) -> Cuts:
  """Shared cuts' `rows`."""
  return Cuts(*(a[rows] for a in cuts))


def padded(cuts: Cuts, size: int) -> Cuts:
  """`cuts` with all-zero rows up to `size` (one compiled shape); shared or
  per-domain cuts alike."""
  if size < cuts.count:
    raise ValueError(f"{cuts.count} cuts do not fit in {size}")
  def pad(a, axis):
    # zeros and a copy, not np.pad: ~10x faster on (1200, 784) rows, and a
    # root makes several such problems
    shape = list(a.shape)
    shape[axis] = size
    out = np.zeros(shape, a.dtype)
    out[(slice(None),) * (axis % a.ndim) + (slice(0, a.shape[axis]),)] = a
    return out
  return Cuts(pad(cuts.neurons, 0), pad(cuts.input_coeffs, -2),
              pad(cuts.constant, -1))


class FacetPlan(NamedTuple):
  """What `vertex_facet_rows` needs for chosen first-layer neurons, per
  neuron (K rows; padding rows all zero), each row in the order of
  decreasing d (by_d; rank: each input's place in it): the weights w,
  which end of the box maximises w_i x_i (w_pos), the box end minimising
  w_i x_i (low_end) and the span to the other (span), d and its running
  sum (cum_d), and the neuron's smallest value (lowest)."""
  neurons: np.ndarray    # (K, n_1) one-hot
  bias: np.ndarray       # (K,)
  w: np.ndarray          # (K, n_in), input order
  rank: np.ndarray       # (K, n_in) int: input i's place by d
  by_d: np.ndarray       # (K, n_in) int: the input at each place
  w_by_d: np.ndarray     # (K, n_in), the rest by d
  w_pos: np.ndarray      # (K, n_in) bool
  low_end: np.ndarray    # (K, n_in)
  span: np.ndarray       # (K, n_in)
  d: np.ndarray          # (K, n_in)
  cum_d: np.ndarray      # (K, n_in)
  lowest: np.ndarray     # (K,)


def facet_plan(weights, bias, in_lower, in_upper, neurons,
               slots: int) -> FacetPlan:
  """The plan for `neurons` of the first layer, padded to `slots` rows."""
  n = _neurons(weights, bias, in_lower, in_upper, neurons)
  w, low_end, up_end, d = (a.T for a in (n.w, n.low_end, n.up_end, n.d))
  by_d = np.argsort(-d, axis=1, kind="stable")
  take = lambda a: np.take_along_axis(a, by_d, 1)
  onehot = np.zeros((len(n.index), len(bias)))
  onehot[np.arange(len(n.index)), n.index] = 1.0
  d_by_d = take(d)
  plan = FacetPlan(onehot, np.asarray(bias, np.float64)[n.index], w,
                   np.argsort(by_d, axis=1), by_d, take(w), take(w) >= 0,
                   take(low_end), take(up_end - low_end), d_by_d,
                   np.cumsum(d_by_d, 1), n.lowest)
  extra = slots - len(n.index)
  if extra < 0:
    raise ValueError(f"{len(n.index)} neurons do not fit in {slots}")
  return FacetPlan(*(np.concatenate([a, np.zeros((extra,) + a.shape[1:],
                                                 a.dtype)]) for a in plan))


_DOMAINS_AT_ONCE = 8


def valid_constants(coeffs, w, bias, in_lower, in_upper):
  """The smallest c (float64, plus a round-off slack) with relu(w.x + b)
  <= v.x + c on the whole box, per row v of `coeffs` (..., K, n_in): the
  larger of the maxima of (w - v).x + b and -v.x over the box. Any v gives
  a valid cut this way, so a facet computed in float32 is proven with its
  constant recomputed here. (A batch's rows are ~15M entries: a few
  domains at a time, its temporaries stay in cache.)"""
  if np.ndim(coeffs) == 3 and len(coeffs) > _DOMAINS_AT_ONCE:
    return np.concatenate([
        valid_constants(coeffs[i:i + _DOMAINS_AT_ONCE], w, bias, in_lower,
                        in_upper)
        for i in range(0, len(coeffs), _DOMAINS_AT_ONCE)])
  coeffs = np.asarray(coeffs, np.float64)
  mid, rad = (in_upper + in_lower) / 2, (in_upper - in_lower) / 2
  reach = np.maximum(np.abs(in_lower), np.abs(in_upper))
  v_mid = coeffs @ mid
  off = np.abs(w - coeffs)                                 # |w - v|
  on = np.abs(coeffs, out=np.empty_like(coeffs))           # |v|
  constant = np.maximum(w @ mid - v_mid + off @ rad + bias,
                        -v_mid + on @ rad)
  magnitude = off @ reach + on @ reach + np.abs(bias)
  return constant + CUT_SLACK_REL * (magnitude + np.abs(constant) + 1.0)


def _running_sum(x, xp, block: int = 28):
  """Cumulative sum along the last axis. Under jax on the CPU a plain
  cumsum of (512, 32, 784) took ~64 ms; as sums within blocks and of the
  blocks (two triangular matrix products) it is cheaper."""
  if xp is np:
    return np.cumsum(x, axis=-1)
  shape, n = x.shape, x.shape[-1]
  blocks = -(-n // block)
  x = xp.pad(x, [(0, 0)] * (x.ndim - 1) + [(0, blocks * block - n)])
  within = (x.reshape(-1, block)
            @ xp.triu(xp.ones((block, block), x.dtype))).reshape(-1, blocks,
                                                                 block)
  before = within[..., -1] @ xp.triu(xp.ones((blocks, blocks), x.dtype), 1)
  out = (within + before[..., None]).reshape(-1, blocks * block)[:, :n]
  return out.reshape(shape)


def vertex_facet_rows(plan: FacetPlan, at_upper, xp=np):
  """`first_layer_facets` for the plan's neurons at many box vertices at
  once, given by which end each input is at (at_upper (D, n_in) bool), in
  array code that runs under jax.jit too: input rows (D, K, n_in) and
  constants (D, K) (exact up to round-off; `valid_constants` makes them
  valid). At a vertex every t_i is 0 or 1, so the inputs' order by d
  (the plan's, shared by all vertices) gives each vertex's order.

  Along each neuron's order by d, the order of the facet is the t = 1
  inputs, then the t = 0 ones: the running sum l + S reaches 0 at h within
  the t = 1 inputs if l + (their total) >= 0, else within the t = 0 ones;
  an input of that group comes after h where the sum before it is >= 0
  (it only grows within the group), and is h where the sum crosses 0 at
  it. So no per-vertex sort, and one running sum."""
  first = (xp.take(at_upper, plan.by_d, axis=1) == plan.w_pos[None])
  first = first & (plan.span != 0)[None]                   # t_i = 1
  d, lowest = plan.d[None], plan.lowest[None, :, None]
  part1 = _running_sum(first * d, xp)
  in_first = lowest + part1[..., -1:] >= 0                 # h among t = 1
  running = xp.where(in_first, lowest + part1,
                     lowest + part1[..., -1:] + plan.cum_d[None] - part1)
  group = xp.where(in_first, first, ~first)
  after = group & (running - d >= 0)
  is_h = group & (running >= 0) & (running - d < 0)
  member = xp.where(in_first, ~first | after, after)
  span = xp.where(plan.span != 0, plan.span, 1.0)[None]
  coeffs = xp.where(is_h, running / span, plan.w_by_d[None] * member)
  constant = -xp.sum(coeffs * plan.low_end[None], axis=-1)
  rank = xp.broadcast_to(plan.rank[None], coeffs.shape)
  return xp.take_along_axis(coeffs, rank, axis=2), constant
