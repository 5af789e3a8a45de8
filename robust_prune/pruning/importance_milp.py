"""The importance MILP of one batch (ElAraby, Wolf & Carvalho 2020, section
3.2): scores, eq. 10 rows per image and neuron (`eq10`), margin rows.

Formulation details beyond eq. 10:
* the batch inputs are fixed, so layer 0's pre-activations are constants and
  its scored output is exactly s * ReLU(a_0): linear, no binaries at all;
* bounds of a_l over the score box are exact interval sums for layer 1
  (h_0 ranges over [0, ReLU(a_0)] independently per neuron);
* neurons that cannot be active on an image (upper bound <= 0) get no
  variables; neurons of the last hidden layer whose every margin coefficient
  for that image is <= 0 need only ReLU's convex lower half (lowering them to
  their true value can only help the margins), so no binary;
* the big-M rows are joined by the facets of the concave envelope of
  ReLU(a - (1 - s) U) over the (a, s) box (`eq10.concave_envelope`);
* a `cutoff` (an incumbent's objective) becomes a row that bounds
  sum_j s_lj and so tightens every big-M constant; every variable gets a
  start value (the scored network at `start_scores`, default all ones).
"""

from __future__ import annotations

import dataclasses
import time
from typing import Sequence

import numpy as np

from robust_prune.milp import standard_form
from robust_prune.network import Network
from robust_prune.pruning import eq10
from robust_prune.pruning.batch import margins

CUTOFF_SLACK = 1e-6  # keeps the incumbent feasible under the objective cutoff


@dataclasses.dataclass(frozen=True)
class ImportanceMilp:
  model: standard_form.MilpModel
  score_vars: tuple[np.ndarray, ...]
  start: np.ndarray
  num_binaries: int
  build_seconds: float
  # One row per ReLU binary: (variable index, image, layer, neuron).
  relus: np.ndarray = dataclasses.field(
      default_factory=lambda: np.zeros((0, 4), np.int64))


class _Builder:
  """A MilpModel with a start value for every variable and the ReLU
  binaries listed as they are made."""

  def __init__(self):
    self.model = standard_form.MilpModel()
    self.start = []  # (index, value) pairs
    self.relus = []  # (variable, image, layer, neuron)

  def new_vars(self, n, lb, ub, value, *, cost=0.0, integer=False):
    idx = self.model.add_vars(n, lb, ub, cost=cost, integer=integer)
    self.start.extend(zip(idx.tolist(),
                          np.broadcast_to(value, (n,)).tolist()))
    return idx

  def start_vector(self) -> np.ndarray:
    x = np.zeros(self.model.num_vars)
    idx, val = zip(*self.start)
    x[list(idx)] = val
    return x


def cutoff_score_budget(cutoff: float, num_hidden: int) -> float:
  """The largest sum over layers of mean_j s_lj of a point whose objective
  is <= cutoff (the hinge term is >= 0)."""
  return cutoff + 2.0 * num_hidden + CUTOFF_SLACK


def build_importance_milp(network: Network, images: np.ndarray,
                          labels: np.ndarray, *, margin: float = 0.0,
                          lam: float = 0.0,
                          start_scores: Sequence[np.ndarray] | None = None,
                          cutoff: float | None = None) -> ImportanceMilp:
  """The MILP (see the module docstring); images/labels already checked.

  `start_scores` (default all ones) give the start point. `cutoff` restricts
  to solutions with objective <= cutoff (an incumbent's value): the big-M
  bounds then use the score budgets this implies (sum_j s_lj <= width_l *
  (cutoff + 2L)), which keeps every solution at least as good as the
  incumbent and so the optimum.
  """
  begin = time.perf_counter()
  x = np.asarray(images, np.float64).reshape(-1, network.input_dim)
  labels = np.asarray(labels, np.int64)
  num_hidden = network.num_layers - 1
  if num_hidden < 1:
    raise ValueError("the network has no hidden layer to prune")
  widths = network.hidden_widths
  budgets = None
  if cutoff is not None:
    mean_budget = cutoff_score_budget(cutoff, num_hidden)
    budgets = [min(float(w), w * mean_budget) for w in widths]
  bnd = eq10.score_bounds(network, x, budgets)
  if start_scores is None:
    start_scores = [np.ones(w) for w in widths]
  start_scores = [np.clip(np.asarray(v, np.float64), 0.0, 1.0)
                  for v in start_scores]
  costs = eq10.objective_costs(widths, len(labels), lam)
  b = _Builder()
  score_vars = _add_scores(b, widths, start_scores, costs, cutoff)
  exact_pre, _, exact_logits = eq10.scored_values(network, x, start_scores,
                                                  bnd.offsets)
  exact_margins = margins(exact_logits, labels)
  weights = [w.astype(np.float64) for w in network.weights]
  biases = [v.astype(np.float64) for v in network.biases]
  for n, y in enumerate(labels):
    # The margin coefficients of the last hidden layer for this image.
    diff = weights[-1][:, [y]] - np.delete(weights[-1], y, axis=1)
    h = eq10.first_layer_outputs(score_vars[0], bnd.offsets[0][n])
    for l in range(1, num_hidden):
      lower_half = np.all(diff <= 0.0, axis=1) if l == num_hidden - 1 else None
      h = _add_scored_layer(
          b, weights[l], biases[l], h, score_vars[l], start_scores[l],
          bounds=(bnd.lowers[l][n], bnd.uppers[l][n], bnd.offsets[l][n]),
          exact=exact_pre[l][n], lower_half=lower_half, image=n, layer=l)
    _add_margin_rows(b, h, diff, biases[-1], y, margin=margin, lam=lam,
                     hinge_cost=costs.hinge_cost,
                     exact_margin=exact_margins[n])
  return ImportanceMilp(b.model, score_vars, b.start_vector(), len(b.relus),
                        time.perf_counter() - begin,
                        np.asarray(b.relus, np.int64).reshape(-1, 4))


def _add_scores(b: _Builder, widths, start_scores, costs: eq10.ObjectiveCosts,
                cutoff: float | None) -> tuple[np.ndarray, ...]:
  """The score variables with their objective costs, and the cutoff row."""
  score_vars = tuple(b.new_vars(w, 0.0, 1.0, s0, cost=c)
                     for w, s0, c in zip(widths, start_scores,
                                         costs.score_costs))
  b.model.objective_offset = costs.offset
  if cutoff is not None:
    all_s = np.concatenate(score_vars)
    b.model.add_row(all_s, np.asarray(b.model.cost)[all_s], -np.inf,
                    cutoff_score_budget(cutoff, len(widths)))
  return score_vars


def _add_scored_layer(b: _Builder, weight, bias, inputs: eq10.LinearOutputs,
                      score_vars, start_scores, *, bounds, exact, lower_half,
                      image: int, layer: int) -> eq10.LinearOutputs:
  """One image's scored hidden layer l >= 1: per neuron that can be active,
  a = h_{l-1} @ W[:, k] + b_k as a variable, its scored output h (eq. 10)
  and, where h can be 0 or positive, a binary and the envelope cuts.
  `lower_half[k]`: the neuron only lowers the margins (last layer)."""
  la, ua, u = bounds
  t_exact = exact - (1.0 - start_scores) * u
  w_in = weight[inputs.neurons]  # (live inputs, width)
  cols, neurons = [], []
  for k in np.flatnonzero(ua > 0.0):
    a_var = b.new_vars(1, la[k], ua[k], exact[k])[0]
    coef = inputs.coef * w_in[:, k]
    b.model.add_row(np.r_[a_var, inputs.cols], np.r_[1.0, -coef], bias[k],
                    bias[k])
    # t = a - (1 - s) U lies in [la - U, ua] for every score vector.
    t_lower, t_upper = la[k] - u[k], ua[k]
    h_var = b.new_vars(1, 0.0, max(t_upper, 0.0), max(t_exact[k], 0.0))[0]
    only_lower = lower_half is not None and bool(lower_half[k])
    on = None
    if not only_lower and t_lower < 0.0:
      on = b.new_vars(1, 0.0, 1.0, 1.0 if t_exact[k] > 0 else 0.0,
                      integer=True)[0]
      b.relus.append((on, image, layer, k))
    eq10.scored_relu_rows(b.model, h_var, a_var, score_vars[k], on, u=u[k],
                          t_lower=t_lower, t_upper=t_upper,
                          lower_half_only=only_lower)
    if on is not None:
      for coef_a, coef_s, const in eq10.concave_envelope(la[k], ua[k], u[k]):
        b.model.add_row([h_var, a_var, score_vars[k]],
                        [1.0, -coef_a, -coef_s], -np.inf, const)
    cols.append(h_var)
    neurons.append(k)
  return eq10.LinearOutputs(np.asarray(cols, np.int64), np.ones(len(cols)),
                            np.asarray(neurons, np.int64))


def _add_margin_rows(b: _Builder, h: eq10.LinearOutputs, diff, out_bias, y,
                     *, margin: float, lam: float, hinge_cost: float,
                     exact_margin: float):
  """z_y - z_c = sum_k diff[k, c] h_k + (b_y - b_c) >= margin per other
  class c: a hard row (lam == 0) or one softened by the image's hinge slack
  (lam > 0)."""
  d = diff[h.neurons] * h.coef[:, None]
  b_diff = out_bias[y] - np.delete(out_bias, y)
  if lam > 0.0:
    slack = b.new_vars(1, 0.0, np.inf, max(0.0, margin - exact_margin),
                       cost=hinge_cost)[0]
  for c in range(d.shape[1]):
    if lam > 0.0:
      b.model.add_row(np.r_[h.cols, slack], np.r_[d[:, c], 1.0],
                      margin - b_diff[c], np.inf)
    else:
      b.model.add_row(h.cols, d[:, c], margin - b_diff[c], np.inf)


def milp_objective(network: Network, images: np.ndarray, labels: np.ndarray,
                   scores: Sequence[np.ndarray], *, margin: float = 0.0,
                   lam: float = 0.0) -> float:
  """The MILP's objective at `scores` (`eq10.importance_objective`; the
  margins are those of the scored network, needed when lam > 0)."""
  batch_margins = None
  if lam > 0.0:
    batch_margins = margins(eq10.scored_forward(network, images, scores),
                            labels)
  return eq10.importance_objective(scores, batch_margins, margin=margin,
                                   lam=lam)
