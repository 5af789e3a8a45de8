"""Pre-activation bounds of a ReLU MLP over an L-inf input box.

Three methods, each sound and each at least as tight as the one before:

* `interval_bounds`: interval arithmetic, layer by layer (exact for layer 0,
  since the input set is a box).
* `crown_bounds`: linear back-substitution (CROWN / DeepPoly): every layer's
  pre-activations are bounded by a linear function of the input, propagated
  back through the ReLU relaxations of all earlier layers. JAX, jit-compiled,
  batched over a leading image axis.
* `lp_tighten`: one LP per still-unstable neuron (min and max of its
  pre-activation over the triangle relaxation of all earlier layers), layer by
  layer, each layer using the tightened bounds of the ones before (HiGHS).

All functions take an arbitrary input box `(lower, upper)`; `input_box` makes
the verification box `[max(0, x - delta), min(1, x + delta)]`.
Bounds are lists with one array per layer, hidden layers first and the logits
last: `lowers[i]`, `uppers[i]` bound `h_{i-1} @ W_i + b_i`.

JAX computes these bounds in float64 (`jax.enable_x64` around each call;
the rest of the project stays float32). Every bound is widened outward by
`SAFETY_ABS + SAFETY_REL * |bound|` plus a round-off allowance proportional
to the magnitude of the terms summed (`_roundoff_slack`), so that the float64
MILP and the branch and bound's float64 proofs built on them never cut off a
true activation. (In float32, with a margin proportional to the result only,
a review built networks whose cancelling terms beat the margin: a neuron
with true maximum 6e-6 was bounded above by -5e-6.)
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from robust_prune.network import Network

BOUND_METHODS = ("interval", "crown", "lp")
SAFETY_ABS = 1e-5
SAFETY_REL = 1e-5


@dataclasses.dataclass(frozen=True)
class LayerBounds:
  """Pre-activation bounds of every layer (hidden layers, then the logits)
  for ONE input box; numpy float64."""

  lowers: tuple[np.ndarray, ...]
  uppers: tuple[np.ndarray, ...]

  @property
  def hidden(self):
    return list(zip(self.lowers[:-1], self.uppers[:-1]))

  def unstable_counts(self) -> tuple[int, ...]:
    return tuple(int(np.sum((l < 0) & (u > 0))) for l, u in self.hidden)

  @property
  def num_unstable(self) -> int:
    return int(sum(self.unstable_counts()))


def input_box(x, delta: float):
  """The verification box [max(0, x - delta), min(1, x + delta)]."""
  x = np.asarray(x, np.float64)
  return np.clip(x - delta, 0.0, 1.0), np.clip(x + delta, 0.0, 1.0)


def _params(network: Network):
  """float64 weights and biases; call under `jax.enable_x64(True)`."""
  return (tuple(jnp.asarray(w, jnp.float64) for w in network.weights),
          tuple(jnp.asarray(b, jnp.float64) for b in network.biases))


def roundoff_allowance(network: Network, magnitude):
  """An upper bound of the float64 round-off in any sum computed along a
  back-substitution through `network` (bounds here, the branch and bound's
  proofs), given the sum of the magnitudes of its terms: N terms err by at
  most N * 2^-53 * magnitude, and N stays below (depth + 2) * (total fan-in
  + depth + 2); four times that is allowed (~1e-13 * magnitude here)."""
  depth = network.num_layers
  terms = (depth + 2) * (sum(w.shape[0] for w in network.weights) + depth + 2)
  return terms * 2.0**-51 * magnitude


def _roundoff_slack(network: Network, lower, upper):
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


def _widen(lower, upper, slack):
  """Outward safety margin (see module docstring)."""
  return (lower - SAFETY_ABS - SAFETY_REL * jnp.abs(lower) - slack,
          upper + SAFETY_ABS + SAFETY_REL * jnp.abs(upper) + slack)


# --------------------------------------------------------------- interval
def _interval_layer(w, b, lower, upper):
  center, radius = (upper + lower) / 2, (upper - lower) / 2
  mid = center @ w + b
  rad = radius @ jnp.abs(w)
  return mid - rad, mid + rad


@jax.jit
def _interval_jax(weights, biases, lower, upper, slacks):
  lowers, uppers = [], []
  for i, (w, b) in enumerate(zip(weights, biases)):
    l, u = _widen(*_interval_layer(w, b, lower, upper), slacks[i])
    lowers.append(l)
    uppers.append(u)
    lower, upper = jnp.maximum(l, 0), jnp.maximum(u, 0)
  return lowers, uppers


# --------------------------------------------------------------- CROWN
def relu_relaxation(lower, upper):
  """Linear ReLU relaxation per neuron: `alpha*y <= relu(y) <= slope*y + shift`
  on [lower, upper]. Stable neurons are exact; for unstable ones the upper line
  is the chord and the lower slope is CROWN's adaptive choice (1 if u > -l)."""
  active = lower >= 0
  unstable = (lower < 0) & (upper > 0)
  denom = jnp.where(unstable, upper - lower, 1.0)
  slope = jnp.where(active, 1.0, jnp.where(unstable, upper / denom, 0.0))
  shift = jnp.where(unstable, -lower * upper / denom, 0.0)
  alpha = jnp.where(active, 1.0, jnp.where(unstable & (upper > -lower), 1.0, 0.0))
  return alpha, slope, shift


def backsubstitute_lower(spec, spec_bias, weights, biases, relaxations,
                         in_lower, in_upper):
  """Lower bound of `spec @ y_k + spec_bias` over the input box, where y_k is
  the pre-activation of layer k = len(weights) - 1 and `relaxations[j]` is the
  ReLU relaxation of layer j < k. spec: (..., m, n_k); returns (..., m)."""
  lam, const = spec, spec_bias
  for j in range(len(weights) - 1, -1, -1):
    # y_j = h_{j-1} @ W_j + b_j  ->  coefficients on h_{j-1}.
    const = const + lam @ biases[j]
    lam = lam @ weights[j].T
    if j == 0:
      break
    alpha, slope, shift = relaxations[j - 1]
    pos, neg = jnp.maximum(lam, 0), jnp.minimum(lam, 0)
    # positive coefficient: lower relaxation; negative: upper relaxation.
    # Per-neuron arrays (..., n) broadcast over the spec rows; alpha may also
    # be per spec row (..., m, n) (alpha-CROWN).
    alpha, slope, shift = (a if a.ndim == lam.ndim else a[..., None, :]
                           for a in (alpha, slope, shift))
    const = const + jnp.sum(neg * shift, axis=-1)
    lam = pos * alpha + neg * slope
  pos, neg = jnp.maximum(lam, 0), jnp.minimum(lam, 0)
  return (const + jnp.sum(pos * in_lower[..., None, :], axis=-1)
          + jnp.sum(neg * in_upper[..., None, :], axis=-1))


@jax.jit
def _crown_jax(weights, biases, lower, upper, slacks):
  batch = lower.shape[:-1]
  lowers, uppers, relaxations = [], [], []
  for k in range(len(weights)):
    il, iu = _interval_layer(
        weights[k], biases[k],
        *((lower, upper) if k == 0 else
          (jnp.maximum(lowers[-1], 0), jnp.maximum(uppers[-1], 0))))
    if k == 0:
      l, u = il, iu  # interval arithmetic is exact on a box
    else:
      n = weights[k].shape[1]
      eye = jnp.eye(n, dtype=lower.dtype)
      spec = jnp.broadcast_to(jnp.concatenate([eye, -eye]), batch + (2 * n, n))
      both = backsubstitute_lower(spec, jnp.zeros(batch + (2 * n,)),
                                  weights[:k + 1], biases[:k + 1],
                                  relaxations, lower, upper)
      l = jnp.maximum(both[..., :n], il)
      u = jnp.minimum(-both[..., n:], iu)
    l, u = _widen(l, u, slacks[k])
    lowers.append(l)
    uppers.append(u)
    relaxations.append(relu_relaxation(l, u))
  return lowers, uppers


def _margin_slack(slack_logits):
  """Round-off allowance of a logit difference: twice the largest logit's."""
  return 2.0 * jnp.max(slack_logits, axis=-1, keepdims=True)


@jax.jit
def _crown_margin_jax(weights, biases, lower, upper, lowers, uppers, spec,
                      slack_logits):
  relaxations = [relu_relaxation(l, u) for l, u in zip(lowers[:-1], uppers[:-1])]
  bound = backsubstitute_lower(spec, jnp.zeros(spec.shape[:-1]), weights,
                               biases, relaxations, lower, upper)
  return (bound - SAFETY_ABS - SAFETY_REL * jnp.abs(bound)
          - _margin_slack(slack_logits))


def _alpha_margin_bound(alphas, weights, biases, lower, upper, relaxations,
                        spec):
  relaxations = [(a, s, t) for a, (_, s, t) in zip(alphas, relaxations)]
  return backsubstitute_lower(spec, jnp.zeros(spec.shape[:-1]), weights,
                              biases, relaxations, lower, upper)


@functools.partial(jax.jit, static_argnums=(7,))
def _alpha_crown_margin_jax(weights, biases, lower, upper, lowers, uppers,
                            spec, steps, learning_rate, slack_logits):
  """alpha-CROWN (Xu et al. 2021) on the final spec only: projected gradient
  ascent over the lower ReLU slopes alpha in [0, 1], one set per spec row;
  intermediate bounds stay the CROWN ones. Any alpha in [0, 1] gives a sound
  bound, so the best bound seen is returned."""
  relaxations = [relu_relaxation(l, u) for l, u in zip(lowers[:-1], uppers[:-1])]
  rows = spec.shape[-2]
  alphas = [jnp.broadcast_to(a[..., None, :], a.shape[:-1] + (rows, a.shape[-1]))
            for a, _, _ in relaxations]

  def objective(a):
    return _alpha_margin_bound(a, weights, biases, lower, upper, relaxations,
                               spec)

  def step(carry, _):
    a, best = carry
    value, grad = jax.value_and_grad(lambda a: jnp.sum(objective(a)))(a)
    del value
    a = [jnp.clip(ai + learning_rate * jnp.sign(gi), 0.0, 1.0)
         for ai, gi in zip(a, grad)]
    return (a, jnp.maximum(best, objective(a))), None

  start = objective(alphas)
  (_, best), _ = jax.lax.scan(step, (alphas, start), None, length=steps)
  return (best - SAFETY_ABS - SAFETY_REL * jnp.abs(best)
          - _margin_slack(slack_logits))


# --------------------------------------------------------------- public API
def _to_layer_bounds(lowers, uppers, batched: bool):
  lowers = [np.asarray(l, np.float64) for l in lowers]
  uppers = [np.asarray(u, np.float64) for u in uppers]
  if not batched:
    return LayerBounds(tuple(lowers), tuple(uppers))
  return [LayerBounds(tuple(l[i] for l in lowers), tuple(u[i] for u in uppers))
          for i in range(lowers[0].shape[0])]


def interval_bounds(network: Network, lower, upper):
  """Interval bounds over the box [lower, upper]; (784,) -> LayerBounds,
  (B, 784) -> list of B LayerBounds."""
  lower, upper = np.asarray(lower, np.float64), np.asarray(upper, np.float64)
  with jax.enable_x64(True):
    ls, us = _interval_jax(*_params(network), lower, upper,
                           _roundoff_slack(network, lower, upper))
    return _to_layer_bounds(ls, us, lower.ndim == 2)


def crown_bounds(network: Network, lower, upper):
  """CROWN back-substitution bounds over [lower, upper] (never looser than
  interval bounds); (784,) -> LayerBounds, (B, 784) -> list of LayerBounds."""
  lower, upper = np.asarray(lower, np.float64), np.asarray(upper, np.float64)
  with jax.enable_x64(True):
    ls, us = _crown_jax(*_params(network), lower, upper,
                        _roundoff_slack(network, lower, upper))
    return _to_layer_bounds(ls, us, lower.ndim == 2)


def margin_spec(label: int, targets: Sequence[int], num_classes: int):
  """Rows e_label - e_target: the verification objective per target."""
  spec = np.zeros((len(targets), num_classes), np.float64)
  spec[:, label] = 1.0
  spec[np.arange(len(targets)), list(targets)] -= 1.0
  return spec


def _margin_setup(network: Network, lower, upper, labels):
  """Batched boxes, labels, the margin spec and the CROWN layer bounds that
  both margin-bound functions start from."""
  lower = np.atleast_2d(np.asarray(lower, np.float64))
  upper = np.atleast_2d(np.asarray(upper, np.float64))
  labels = np.atleast_1d(np.asarray(labels))
  k = network.num_classes
  spec = np.stack([margin_spec(int(y), range(k), k) for y in labels])
  weights, biases = _params(network)
  slacks = _roundoff_slack(network, lower, upper)
  ls, us = _crown_jax(weights, biases, lower, upper, slacks)
  return lower, upper, labels, spec, weights, biases, ls, us, slacks[-1]


def crown_margin_lower_bounds(network: Network, lower, upper, labels,
                              targets_per_image=None):
  """Certified lower bounds of logit[label] - logit[target] over the box,
  for every target != label: (B, 784) boxes -> (B, num_classes) array with
  +inf at the label's own column. A positive entry proves that target
  unreachable without any MILP."""
  with jax.enable_x64(True):
    lower, upper, labels, spec, weights, biases, ls, us, slack = _margin_setup(
        network, lower, upper, labels)
    bound = np.array(_crown_margin_jax(weights, biases, lower, upper, ls, us,
                                       jnp.asarray(spec), slack), np.float64)
  bound[np.arange(len(labels)), labels] = np.inf
  return bound


def alpha_crown_margin_lower_bounds(network: Network, lower, upper, labels,
                                    steps: int = 30, learning_rate: float = 0.1):
  """Like `crown_margin_lower_bounds`, tightened by optimizing the lower ReLU
  slopes per target (never looser than CROWN: the CROWN slopes are the
  starting point and the best bound seen is kept)."""
  with jax.enable_x64(True):
    lower, upper, labels, spec, weights, biases, ls, us, slack = _margin_setup(
        network, lower, upper, labels)
    bound = np.array(_alpha_crown_margin_jax(
        weights, biases, lower, upper, ls, us, jnp.asarray(spec), int(steps),
        jnp.float64(learning_rate), slack), np.float64)
  bound[np.arange(len(labels)), labels] = np.inf
  return bound


# --------------------------------------------------------------- LP tightening
def lp_tighten(network: Network, lower, upper, bounds: LayerBounds,
               time_limit_per_lp: float = 5.0) -> LayerBounds:
  """Tightens the still-unstable hidden neurons of layers >= 1 with one LP
  each for min and max (triangle relaxation of earlier layers; HiGHS dual
  simplex, warm-started across objectives). Sound: a neuron keeps its old
  bound whenever its LP is not solved to optimality."""
  import highspy  # pylint: disable=g-import-not-at-top
  import scipy.sparse as sp  # pylint: disable=g-import-not-at-top

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
    h = highspy.Highs()
    h.setOptionValue("output_flag", False)
    h.setOptionValue("time_limit", float(time_limit_per_lp))
    num_cols = lp["num_cols"]
    h.addVars(num_cols, lp["col_lower"], lp["col_upper"])
    a = sp.csr_matrix(lp["a"])
    h.addRows(a.shape[0], lp["row_lower"], lp["row_upper"], a.nnz,
              a.indptr, a.indices, a.data)
    # y_k = W_k^T h_{k-1} + b_k, h_{k-1} are the last columns.
    h_cols = lp["h_cols"]
    for neuron in unstable:
      coeff = weights[k][:, neuron]
      for sense, store in ((1.0, lowers), (-1.0, uppers)):
        cost = np.zeros(num_cols)
        cost[h_cols] = sense * coeff
        h.changeColsCost(num_cols, np.arange(num_cols, dtype=np.int32), cost)
        h.run()
        if h.getModelStatus() != highspy.HighsModelStatus.kOptimal:
          continue
        # What is proven is the Lagrangian bound of HiGHS's row duals, not
        # its objective value (optimal only up to its tolerances).
        proven = safe_lp_lower_bound(
            a, cost, lp["row_lower"], lp["row_upper"], lp["col_lower"],
            lp["col_upper"], np.asarray(h.getSolution().row_dual))
        if not np.isfinite(proven):
          continue
        value = sense * proven + biases[k][neuron]
        value -= sense * (SAFETY_ABS + SAFETY_REL * abs(value))
        if sense > 0:
          store[k][neuron] = max(store[k][neuron], value)
        else:
          store[k][neuron] = min(store[k][neuron], value)
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
  blocks, row_lower, row_upper = [], [], []
  for j, (w, b) in enumerate(zip(weights, biases)):
    l, u = lowers[j], uppers[j]
    n = w.shape[1]
    # -W_j^T h_{j-1} + h_j  (so that row = h_j - y_j + b_j)
    wt = sp.csr_matrix(-w.T)
    left = sp.hstack([sp.csr_matrix((n, offsets[j])), wt,
                      sp.identity(n, format="csr"),
                      sp.csr_matrix((n, num_cols - offsets[j + 2]))]).tocsr()
    active = l >= 0
    unstable = (l < 0) & (u > 0)
    # h - y >= 0 for active (== 0) and unstable (>= 0).
    sel = np.flatnonzero(active | unstable)
    blocks.append(left[sel])
    row_lower.append(b[sel])
    row_upper.append(np.where(active[sel], b[sel], np.inf))
    # Upper chord for unstable: h - slope*y <= shift.
    uns = np.flatnonzero(unstable)
    if uns.size:
      slope = u[uns] / (u[uns] - l[uns])
      shift = -l[uns] * u[uns] / (u[uns] - l[uns])
      chord = sp.hstack([sp.csr_matrix((uns.size, offsets[j])),
                         sp.csr_matrix(-w[:, uns].T * slope[:, None]),
                         sp.csr_matrix((np.ones(uns.size), (np.arange(uns.size), uns)),
                                       shape=(uns.size, n)),
                         sp.csr_matrix((uns.size, num_cols - offsets[j + 2]))])
      blocks.append(chord.tocsr())
      row_lower.append(np.full(uns.size, -np.inf))
      row_upper.append(shift + slope * b[uns])
  a = sp.vstack(blocks).tocsr() if blocks else sp.csr_matrix((0, num_cols))
  return {"num_cols": num_cols, "col_lower": col_lower, "col_upper": col_upper,
          "a": a, "row_lower": np.concatenate(row_lower),
          "row_upper": np.concatenate(row_upper),
          "h_cols": np.arange(offsets[-2], offsets[-1])}


def layer_bounds(network: Network, lower, upper, method: str = "crown"):
  """Bounds of one box by `method` in BOUND_METHODS."""
  if method == "interval":
    return interval_bounds(network, lower, upper)
  if method == "crown":
    return crown_bounds(network, lower, upper)
  if method == "lp":
    return lp_tighten(network, lower, upper, crown_bounds(network, lower, upper))
  raise ValueError(f"unknown bounds method {method!r}; use one of {BOUND_METHODS}")
