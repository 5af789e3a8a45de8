"""The scored network of ElAraby, Wolf & Carvalho (2020), its MILP rows
(the paper's eq. 10) and the importance objective.

Each hidden neuron j of layer l gets one continuous score s_lj in [0, 1],
shared by all batch images. For image n the scored network computes

    h_l = ReLU(a_l - (1 - s_l) * U_l),      a_l = h_{l-1} @ W_l + b_l,

which eq. 10 (`scored_relu_rows`) encodes with the ReLU's other
Fischetti-Jo rows. U_l (per image, per neuron; `score_bounds`) is
max(0, an upper bound of a_l valid for EVERY score vector), so s = 1 is the
original neuron and s = 0 switches it off whatever the earlier scores: a
neuron scored 0 really contributes nothing.

The objective (`importance_objective`, `objective_costs`) is the paper's
per-layer importance I_l = sum_j (s_lj - 2), normalised per layer to its
mean (a 300-wide and a 100-wide layer weigh the same, as in the reference
implementation), summed over layers, minimised; the paper's log-sum-exp
loss becomes a hard margin constraint (lam == 0) or a multi-class hinge
penalty lam * mean_n max(0, margin - min_c (z_y - z_c)) (lam > 0).
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple, Sequence

import numpy as np

from robust_prune.milp import standard_form
from robust_prune.network import Network

BOUND_SAFETY = 1e-9  # float64 round-off allowance on sums of float32 products


@dataclasses.dataclass(frozen=True)
class ScoreBounds:
  """Per image (rows) and neuron (columns) of every hidden layer: bounds of
  the pre-activation a_l (the big-M constants) and the eq. 10 constant U_l."""

  lowers: tuple[np.ndarray, ...]
  uppers: tuple[np.ndarray, ...]
  offsets: tuple[np.ndarray, ...]


def _budgeted_sum(values: np.ndarray, budget: float | None) -> np.ndarray:
  """max over s in [0,1]^n with sum(s) <= budget of sum_j values[..., j] s_j
  (fractional knapsack of unit weights: the largest positive values)."""
  pos = np.maximum(values, 0.0)
  if budget is None or budget >= values.shape[-1]:
    return pos.sum(-1)
  whole = int(np.floor(budget))
  part = budget - whole
  top = -np.sort(-pos, axis=-1)
  total = top[..., :whole].sum(-1)
  if whole < values.shape[-1]:
    total = total + part * top[..., whole]
  return total


def score_bounds(network: Network, images: np.ndarray,
                 budgets: Sequence[float] | None = None) -> ScoreBounds:
  """Bounds of each hidden pre-activation over all score vectors, and U.

  Layer 0 does not depend on scores: its bounds are its exact values. For
  every score vector the scored output satisfies 0 <= h_j <= s_j U_j (as
  a_j <= U_j), so layer l's pre-activation a = b + sum_j w_j h_j lies in
  b + [sum of negative w_j U_j, sum of positive w_j U_j] (exact for layer 1).
  U_l = max(0, that upper bound): s = 0 switches a neuron off for every
  score vector. `budgets[l]` (optional) restricts to sum_j s_lj <= budget,
  which tightens the bounds but not U (U defines the scored network).
  """
  x = np.asarray(images, np.float64).reshape(-1, network.input_dim)
  a0 = x @ network.weights[0].astype(np.float64) + network.biases[0]
  lowers, uppers, offsets = [a0], [a0], [np.maximum(a0, 0.0)]
  for l, (w, b) in enumerate(zip(network.weights[1:-1],
                                 network.biases[1:-1])):
    w = w.astype(np.float64)
    contrib = offsets[-1][:, :, None] * w[None]  # (images, inputs, outputs)
    slack = BOUND_SAFETY * (1.0 + np.abs(contrib).sum(1))
    upper_all = contrib.clip(min=0).sum(1) + b + slack
    offsets.append(np.maximum(upper_all, 0.0))
    budget = None if budgets is None else budgets[l]
    c = np.swapaxes(contrib, 1, 2)  # (images, outputs, inputs)
    uppers.append(np.minimum(_budgeted_sum(c, budget) + b + slack, upper_all))
    lowers.append(-_budgeted_sum(-c, budget) + b - slack)
  return ScoreBounds(tuple(lowers), tuple(uppers), tuple(offsets))


def scored_values(network: Network, x: np.ndarray, scores, offsets):
  """The scored network in closed form: pre-activations a_l and outputs
  h_l = ReLU(a_l - (1 - s_l) U_l) of the hidden layers, and the logits."""
  h = x
  pre, post = [], []
  for l, (w, b) in enumerate(zip(network.weights, network.biases)):
    a = h @ w.astype(np.float64) + b
    if l == network.num_layers - 1:
      return pre, post, a
    h = np.maximum(a - (1.0 - np.asarray(scores[l], np.float64)) * offsets[l],
                   0.0)
    pre.append(a)
    post.append(h)


def scored_forward(network: Network, images: np.ndarray,
                   scores: Sequence[np.ndarray], *, return_hidden=False):
  """Logits of the scored network that the MILP models (float64)."""
  if len(scores) != network.num_layers - 1:
    raise ValueError(f"need {network.num_layers - 1} score vectors, got "
                     f"{len(scores)}")
  x = np.asarray(images, np.float64).reshape(-1, network.input_dim)
  _, hidden, logits = scored_values(network, x, scores,
                                    score_bounds(network, x).offsets)
  return (logits, hidden) if return_hidden else logits


class LinearOutputs(NamedTuple):
  """A hidden layer's outputs as linear expressions: neuron `neurons[i]`
  outputs coef[i] * x[cols[i]]; neurons not listed output 0."""

  cols: np.ndarray
  coef: np.ndarray
  neurons: np.ndarray


def first_layer_outputs(score_cols: np.ndarray,
                        relu_a0: np.ndarray) -> LinearOutputs:
  """Eq. 10 on layer 0 of a fixed input: a_0 is a constant and U_0 =
  ReLU(a_0), so h_0 = ReLU(a_0 - (1 - s) U_0) = s * ReLU(a_0), linear in s:
  no rows and no binaries (a neuron with a_0 <= 0 outputs 0)."""
  alive = np.flatnonzero(relu_a0 > 0.0)
  return LinearOutputs(score_cols[alive], relu_a0[alive], alive)


def scored_relu_rows(model: standard_form.MilpModel, h: int, a: int, s: int,
                     on: int | None, *, u: float, t_lower: float,
                     t_upper: float, lower_half_only: bool = False):
  """The rows of one scored ReLU h = max(0, t), t = a - (1 - s) u, where t
  lies in [t_lower, t_upper] for every score vector (ElAraby et al. 2020,
  eq. 10, with the Fischetti-Jo rows of a ReLU; `on` is its binary):

      h >= a - (1 - s) u                          eq. 10: the ReLU's lower
                                                   row, shifted off by 1 - s
      h <= t_upper * on                           off: h = 0
      h <= a - (1 - s) u - t_lower * (1 - on)     on:  h = t
      (and h >= 0 as the column's lower bound)

  Two cases need fewer rows: `lower_half_only` (the neuron can only lower
  the margins it feeds, so only its convex lower half matters: the first
  row alone) and t_lower >= 0 (always on: h = t as one row, `on` None).
  """
  cols = [h, a, s]
  model.add_row(cols, [1.0, -1.0, -u], -u, np.inf)  # h >= a - u + u s
  if lower_half_only:
    return
  if t_lower >= 0.0:
    model.add_row(cols, [1.0, -1.0, -u], -u, -u)  # h = t
    return
  if on is None:
    raise ValueError("a ReLU that can be off (t_lower < 0) needs a binary")
  model.add_row([h, on], [1.0, -t_upper], -np.inf, 0.0)
  model.add_row(cols + [on], [1.0, -1.0, -u, -t_lower], -np.inf,
                -u - t_lower)


def concave_envelope(a_lower: float, a_upper: float, u: float):
  """The facets of the concave envelope of f(a, s) = max(0, a - (1 - s) u)
  over [a_lower, a_upper] x [0, 1]: a list of (coef_a, coef_s, const) with
  f <= coef_a * a + coef_s * s + const on the whole box (cuts that tighten
  eq. 10's relaxation; for a_lower < 0: h <= s u and the a-triangle).

  f is convex, so its concave envelope over the box is the upper hull of its
  four vertex values: one of the box's two triangulations.
  """
  f = lambda a, s: max(0.0, a - (1.0 - s) * u)
  corners = [(a_lower, 0.0), (a_upper, 0.0), (a_upper, 1.0), (a_lower, 1.0)]
  values = [f(*c) for c in corners]
  if a_upper - a_lower <= 1e-12:
    return []

  def plane(i, j, k):
    pts = np.array([[corners[t][0], corners[t][1], 1.0] for t in (i, j, k)])
    return np.linalg.solve(pts, np.array([values[i], values[j], values[k]]))

  for tri_a, tri_b, rest in (((0, 1, 2), (0, 2, 3), (3, 1)),
                             ((0, 1, 3), (1, 2, 3), (2, 0))):
    pa, pb = plane(*tri_a), plane(*tri_b)
    ok_a = pa @ [*corners[rest[0]], 1.0] >= values[rest[0]] - 1e-9
    ok_b = pb @ [*corners[rest[1]], 1.0] >= values[rest[1]] - 1e-9
    if ok_a and ok_b:
      return [tuple(pa), tuple(pb)]
  raise AssertionError("a convex function always has a concave hull")


class ObjectiveCosts(NamedTuple):
  """`importance_objective` as MILP costs: per score of layer l, per hinge
  slack, and the constant."""

  score_costs: tuple[float, ...]
  hinge_cost: float
  offset: float


def objective_costs(widths: Sequence[int], num_images: int,
                    lam: float) -> ObjectiveCosts:
  """The importance MILP's objective (`importance_objective`) as costs:
  1 / width_l per score of layer l, the constant -2 per layer, lam / N per
  image's hinge slack (max(0, margin - its margin))."""
  return ObjectiveCosts(tuple(1.0 / w for w in widths), lam / num_images,
                        -2.0 * len(widths))


def importance_objective(scores: Sequence[np.ndarray],
                         batch_margins: np.ndarray | None = None, *,
                         margin: float = 0.0, lam: float = 0.0) -> float:
  """The importance MILP's objective, minimised (ElAraby et al. 2020's
  I_l = sum_j (s_lj - 2) as a per-layer mean, with the linear loss):

      sum_l mean_j (s_lj - 2)  +  lam * mean_n max(0, margin - m_n)

  where m_n is image n's margin in the scored network (`batch_margins`,
  needed only when lam > 0; with lam == 0 the margin is a hard row)."""
  value = sum(float(np.mean(s)) - 2.0 for s in scores)
  if lam > 0.0:
    value += lam * float(np.mean(np.maximum(0.0, margin - batch_margins)))
  return value
