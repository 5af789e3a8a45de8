"""Neuron-importance scores by MILP (ElAraby, Wolf & Carvalho 2020; the
paper's section 3.2, eq. 10).

Each hidden neuron j of layer l gets one continuous score s in [0, 1], shared
by all batch images. For image n the scored network computes

    h_l = ReLU(a_l - (1 - s_l) * U_l),      a_l = h_{l-1} @ W_l + b_l,

(eq. 10 with the ReLU's other Fischetti-Jo constraints) where U_l (per image,
per neuron) is max(0, an upper bound of a_l valid for EVERY score vector).
So s = 1 is the original neuron and s = 0 switches it off whatever the
earlier scores: a neuron scored 0 really contributes nothing.

The objective is the paper's per-layer importance I_l = sum_j (s_lj - 2),
normalised per layer to its mean (a 300-wide and a 100-wide layer weigh the
same, as in the reference implementation), summed over layers, minimised.
The log-sum-exp loss of the original is replaced by a linear one: a hard
margin constraint (true logit >= every other logit + margin) when lam == 0,
or a multi-class hinge penalty lam * mean_n max(0, margin - min_c (z_y -
z_c)) when lam > 0.

Formulation details (see `build_importance_milp`):
* the batch inputs are fixed, so layer 0's pre-activations are constants and
  its scored output is exactly s * ReLU(a_0): linear, no binaries at all;
* bounds of a_l over the score box are exact interval sums for layer 1
  (h_0 ranges over [0, ReLU(a_0)] independently per neuron);
* neurons that cannot be active on an image (upper bound <= 0) get no
  variables; neurons of the last hidden layer whose every margin coefficient
  for that image is <= 0 need only ReLU's convex lower half (lowering them to
  their true value can only help the margins), so no binary;
* the big-M rows are joined by the facets of the concave envelope of
  ReLU(a - (1 - s) U) over the (a, s) box (for la < 0: h <= s U and the
  a-triangle);
* `pattern_descent` (an exact primal heuristic: with the ReLU binaries fixed
  the MILP is an LP) finds a good feasible point first; the MILP is then
  built with its objective as a cutoff, which bounds sum_j s_lj and so
  tightens every big-M constant, and starts from it (SCIP, HiGHS). Without
  it, all-ones scores are the start and a second solve uses the first
  incumbent's objective as the cutoff.

What this does not fix (measured on the 300-100 PGD network, 10 images,
margin 3): the LP relaxation is weak by nature, not by loose constants. Its
optimum is -3.943 with every layer-0 score 0 (the a-triangle lets a layer-1
neuron output a share of its bound U for a tiny score); 25 rounds of
Anderson et al.'s ideal single-neuron cuts over (s_0, s_1) raise it only to
-3.846, and HiGHS's bound after 60 s is -3.886, while the best points found
are near -3.5 (a layer-1 neuron really needs s >= 1 - a/U, a fixed charge
that a relaxation splits into fractions). Even one image alone takes HiGHS
20-40 s to prove (about 90 binaries). Large instances therefore end as
time-limited incumbents, reported as unproven with the solver's bound.
"""

from __future__ import annotations

import dataclasses
import math
import time
from typing import Any, Sequence

import numpy as np

from robust_prune.network import Network, forward
from robust_prune.milp import solvers
from robust_prune.milp import standard_form

BOUND_SAFETY = 1e-9  # float64 round-off allowance on sums of float32 products
CUTOFF_SLACK = 1e-6  # keeps the incumbent feasible under the objective cutoff
# SCIP's default root cutting loop spent a whole 60 s budget on the 300-100
# network (margin 0) without improving the all-ones start; with no cutting
# rounds and frequent RINS it reached incumbents like HiGHS's there (the root
# bound is weak either way, see the module docstring). At margin 3 it still
# found nothing better than the start in 60 s on the shared 2-core machine.
SCIP_OPTIONS = {"separating/maxroundsroot": 0, "separating/maxrounds": 0,
                "heuristics/rins/freq": 5}


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


def concave_envelope(a_lower: float, a_upper: float, u: float):
  """The facets of the concave envelope of f(a, s) = max(0, a - (1 - s) u)
  over [a_lower, a_upper] x [0, 1]: a list of (coef_a, coef_s, const) with
  f <= coef_a * a + coef_s * s + const on the whole box.

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


def _scored_values(network: Network, x: np.ndarray, scores, offsets):
  """Pre-activations a_l and outputs h_l of the scored hidden layers, and
  the logits."""
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
  _, hidden, logits = _scored_values(network, x, scores,
                                     score_bounds(network, x).offsets)
  return (logits, hidden) if return_hidden else logits


def margins(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
  """Per image: true logit minus the largest other logit."""
  logits = np.asarray(logits, np.float64)
  labels = np.asarray(labels)
  rows = np.arange(len(labels))
  others = logits.copy()
  others[rows, labels] = -np.inf
  return logits[rows, labels] - others.max(axis=1)


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


@dataclasses.dataclass(frozen=True)
class ImportanceResult:
  """Scores per hidden layer with the solve's honest status."""

  scores: tuple[np.ndarray, ...]
  status: str  # solvers.OPTIMAL (proven) / TIME_LIMIT (unproven) / ...
  raw_status: str
  solver: str
  objective: float | None
  bound: float | None
  solve_seconds: float
  build_seconds: float
  time_limit: float
  mip_gap: float
  margin: float
  lam: float
  labels: tuple[int, ...]
  num_binaries: int
  num_vars: int
  num_rows: int
  min_batch_margin: float | None  # of the scored network, re-checked
  heuristic_objective: float | None = None  # of the pattern descent's point
  heuristic_seconds: float | None = None

  @property
  def proven(self) -> bool:
    return self.status == solvers.OPTIMAL

  def to_json(self) -> dict[str, Any]:
    d = dataclasses.asdict(self)
    d["scores"] = [np.asarray(s).tolist() for s in self.scores]
    d["labels"] = list(self.labels)
    d["proven"] = self.proven
    return d

  @classmethod
  def from_json(cls, d: dict[str, Any]) -> "ImportanceResult":
    known = {f.name for f in dataclasses.fields(cls)}
    d = {k: v for k, v in d.items() if k in known}
    d["scores"] = tuple(np.asarray(s, np.float64) for s in d["scores"])
    d["labels"] = tuple(d["labels"])
    return cls(**d)


def check_options(*, margin: float, lam: float, time_limit: float,
                  mip_gap: float):
  """ValueError naming the first bad option (NaN and infinities included:
  an infinite lambda or time limit would only fail later, inside a solver)."""
  if not (math.isfinite(margin) and margin >= 0):
    raise ValueError(f"margin must be a finite number >= 0, got {margin}")
  if not (math.isfinite(lam) and lam >= 0):
    raise ValueError(f"lambda must be a finite number >= 0, got {lam}")
  if not (math.isfinite(time_limit) and time_limit > 0):
    raise ValueError(f"time limit must be a positive finite number of "
                     f"seconds, got {time_limit}")
  if not 0 <= mip_gap < 1:
    raise ValueError(f"mip_gap must lie in [0, 1), got {mip_gap}")


def check_batch(network: Network, images: np.ndarray, labels: np.ndarray, *,
                margin: float, require_margin: bool, all_classes: bool = True):
  """The batch must be non-empty, cover every class (the reference's one
  image per class) and be classified correctly (with the margin if hard)."""
  images = np.asarray(images, np.float64).reshape(-1, network.input_dim)
  labels = np.asarray(labels, np.int64).reshape(-1)
  if len(labels) == 0 or len(labels) != len(images):
    raise ValueError(f"need as many labels as images (>= 1), got "
                     f"{len(images)} images and {len(labels)} labels")
  if labels.min() < 0 or labels.max() >= network.num_classes:
    raise ValueError(f"labels must lie in [0, {network.num_classes}), got "
                     f"{sorted(set(labels.tolist()))}")
  if all_classes:
    missing = sorted(set(range(network.num_classes)) - set(labels.tolist()))
    if missing:
      raise ValueError(f"the pruning batch misses classes {missing}")
  m = margins(forward(network, images), labels)
  need = margin if require_margin else 0.0
  bad = np.flatnonzero(~(m > 0.0) | (m < need))
  if len(bad):
    raise ValueError(
        f"batch images {bad.tolist()} are not classified correctly with "
        f"margin {need} (their margins: {np.round(m[bad], 4).tolist()})")
  return images, labels


def build_importance_milp(network: Network, images: np.ndarray,
                          labels: np.ndarray, *, margin: float = 0.0,
                          lam: float = 0.0,
                          start_scores: Sequence[np.ndarray] | None = None,
                          cutoff: float | None = None) -> ImportanceMilp:
  """The MILP (see module docstring); images/labels already checked.

  `start_scores` (default all ones) give the start point. `cutoff` restricts
  to solutions with objective <= cutoff (an incumbent's value): the big-M
  bounds then use the score budgets this implies (sum_j s_lj <= width_l *
  (cutoff + 2L)), which keeps every solution at least as good as the
  incumbent and so the optimum.
  """
  begin = time.perf_counter()
  x = np.asarray(images, np.float64).reshape(-1, network.input_dim)
  labels = np.asarray(labels, np.int64)
  num_images = len(labels)
  num_hidden = network.num_layers - 1
  if num_hidden < 1:
    raise ValueError("the network has no hidden layer to prune")
  widths = network.hidden_widths
  budgets = None
  if cutoff is not None:
    mean_budget = cutoff + 2.0 * num_hidden + CUTOFF_SLACK
    budgets = [min(float(w), w * mean_budget) for w in widths]
  bnd = score_bounds(network, x, budgets)
  if start_scores is None:
    start_scores = [np.ones(w) for w in widths]
  start_scores = [np.clip(np.asarray(v, np.float64), 0.0, 1.0)
                  for v in start_scores]
  exact_pre, exact_post, exact_logits = _scored_values(
      network, x, start_scores, bnd.offsets)
  weights = [w.astype(np.float64) for w in network.weights]
  biases = [b.astype(np.float64) for b in network.biases]

  model = standard_form.MilpModel()
  start = []  # (index, value) pairs of the all-ones feasible start

  def new_vars(n, lb, ub, value, *, cost=0.0, integer=False):
    idx = model.add_vars(n, lb, ub, cost=cost, integer=integer)
    start.extend(zip(idx.tolist(), np.broadcast_to(value, (n,)).tolist()))
    return idx

  score_vars = tuple(
      new_vars(w.shape[1], 0.0, 1.0, s0, cost=1.0 / w.shape[1])
      for w, s0 in zip(weights[:-1], start_scores))
  model.objective_offset = -2.0 * num_hidden  # I_l = mean(s - 2) per layer
  if cutoff is not None:
    all_s = np.concatenate(score_vars)
    model.add_row(all_s, np.asarray(model.cost)[all_s], -np.inf,
                  cutoff + 2.0 * num_hidden + CUTOFF_SLACK)

  num_binaries = 0
  relus = []
  out_w, out_b = weights[-1], biases[-1]
  for n in range(num_images):
    y = labels[n]
    # The margin coefficients of the last hidden layer for this image.
    diff = out_w[:, [y]] - np.delete(out_w, y, axis=1)  # (width, C-1)
    only_hurts = np.all(diff <= 0.0, axis=1)
    # h_0 = s_0 * ReLU(a_0): a linear expression (cols, coefficients).
    r0 = bnd.offsets[0][n]
    alive = np.flatnonzero(r0 > 0.0)
    h_expr = {"cols": score_vars[0][alive], "coef": r0[alive],
              "neurons": alive}
    for l in range(1, num_hidden):
      la, ua, u = bnd.lowers[l][n], bnd.uppers[l][n], bnd.offsets[l][n]
      exact = exact_pre[l][n]
      t_exact = exact - (1.0 - start_scores[l]) * u
      last = l == num_hidden - 1
      live = np.flatnonzero(ua > 0.0)
      w_in = weights[l][h_expr["neurons"]]  # (live inputs, width)
      new_cols, new_neurons = [], []
      for k in live:
        # a = h_{l-1} @ W[:, k] + b_k, as an auxiliary variable.
        a_var = new_vars(1, la[k], ua[k], exact[k])[0]
        coef = h_expr["coef"] * w_in[:, k]
        model.add_row(np.r_[a_var, h_expr["cols"]], np.r_[1.0, -coef],
                      biases[l][k], biases[l][k])
        s_var = score_vars[l][k]
        # t = a - (1 - s) U lies in [la - U, ua] for every score vector.
        t_lower, t_upper = la[k] - u[k], ua[k]
        h_var = new_vars(1, 0.0, max(t_upper, 0.0), max(t_exact[k], 0.0))[0]
        cols_t = [h_var, a_var, s_var]
        # h >= t = a - U + U s
        model.add_row(cols_t, [1.0, -1.0, -u[k]], -u[k], np.inf)
        if last and only_hurts[k]:
          pass  # only the convex lower half matters (see module docstring)
        elif t_lower >= 0.0:
          model.add_row(cols_t, [1.0, -1.0, -u[k]], -u[k], -u[k])  # h = t
        else:
          v_var = new_vars(1, 0.0, 1.0, 1.0 if t_exact[k] > 0 else 0.0,
                           integer=True)[0]
          num_binaries += 1
          relus.append((v_var, n, l, k))
          model.add_row([h_var, v_var], [1.0, -t_upper], -np.inf, 0.0)
          model.add_row(cols_t + [v_var], [1.0, -1.0, -u[k], -t_lower],
                        -np.inf, -u[k] - t_lower)
          for coef_a, coef_s, const in concave_envelope(la[k], ua[k], u[k]):
            model.add_row([h_var, a_var, s_var], [1.0, -coef_a, -coef_s],
                          -np.inf, const)
        new_cols.append(h_var)
        new_neurons.append(k)
      h_expr = {"cols": np.asarray(new_cols, np.int64),
                "coef": np.ones(len(new_cols)),
                "neurons": np.asarray(new_neurons, np.int64)}

    # Output: z_y - z_c = sum_k diff[k, c] h_k + (b_y - b_c) >= margin.
    d = diff[h_expr["neurons"]] * h_expr["coef"][:, None]
    b_diff = out_b[y] - np.delete(out_b, y)
    exact_margin = margins(exact_logits[n:n + 1], labels[n:n + 1])[0]
    if lam > 0.0:
      slack = new_vars(1, 0.0, np.inf, max(0.0, margin - exact_margin),
                       cost=lam / num_images)[0]
    for c in range(d.shape[1]):
      if lam > 0.0:
        model.add_row(np.r_[h_expr["cols"], slack], np.r_[d[:, c], 1.0],
                      margin - b_diff[c], np.inf)
      else:
        model.add_row(h_expr["cols"], d[:, c], margin - b_diff[c], np.inf)

  start_x = np.zeros(model.num_vars)
  idx, val = zip(*start)
  start_x[list(idx)] = val
  return ImportanceMilp(model, score_vars, start_x, num_binaries,
                        time.perf_counter() - begin,
                        np.asarray(relus, np.int64).reshape(-1, 4))


def milp_objective(network: Network, images: np.ndarray, labels: np.ndarray,
                   scores: Sequence[np.ndarray], *, margin: float = 0.0,
                   lam: float = 0.0) -> float:
  """The MILP's objective at `scores` (per-layer mean of s - 2, summed, plus
  the hinge penalty when lam > 0)."""
  value = sum(float(np.mean(s)) - 2.0 for s in scores)
  if lam > 0.0:
    m = margins(scored_forward(network, images, scores), labels)
    value += lam * float(np.mean(np.maximum(0.0, margin - m)))
  return value


@dataclasses.dataclass(frozen=True)
class DescentResult:
  scores: tuple[np.ndarray, ...]
  objective: float
  lps: int
  seconds: float


def pattern_descent(network: Network, images: np.ndarray, labels: np.ndarray,
                    built: ImportanceMilp, *, margin: float = 0.0,
                    lam: float = 0.0,
                    start_scores: Sequence[np.ndarray] | None = None,
                    time_limit: float = 10.0,
                    drop_moves: bool = True) -> DescentResult | None:
  """A primal heuristic for the importance MILP: every point it returns is a
  feasible point of the exact model (no relaxation involved).

  With every ReLU binary fixed to the activation pattern of the current
  scores, the MILP is an LP; its optimum is feasible for the MILP and at
  least as good as the current scores (they satisfy that LP). A neuron that
  the LP leaves exactly at its kink (t = 0, output 0) is then read as
  inactive, which relaxes its row t >= 0 to t <= 0, and the LP is solved
  again: a monotone descent that stops when the pattern repeats. With
  `drop_moves`, each scored neuron of layers >= 1 that is still kept is then
  tried switched off (score 0, binaries 0); an improving move is kept and the
  descent resumed. The LPs go to HiGHS whatever the MILP solver.
  `built` must come from `build_importance_milp` on the same batch (no
  cutoff). Returns None if no LP finished within `time_limit`.
  """
  begin = time.perf_counter()
  deadline = begin + time_limit
  x = np.asarray(images, np.float64).reshape(-1, network.input_dim)
  labels = np.asarray(labels, np.int64)
  offsets = score_bounds(network, x).offsets
  model, relus = built.model, built.relus
  int_cols = np.flatnonzero(np.asarray(model.integer, bool))
  lb0 = np.asarray(model.lb, float)
  ub0 = np.asarray(model.ub, float)
  # One HiGHS LP kept across the calls: only column bounds change, so each
  # solve warm-starts from the previous basis.
  highs = solvers.highs_lp(model)
  if start_scores is None:
    start_scores = [np.ones(w) for w in network.hidden_widths]
  scores = [np.clip(np.asarray(v, np.float64), 0.0, 1.0)
            for v in start_scores]
  lps = 0

  def pattern(sc):
    pre, _, _ = _scored_values(network, x, sc, offsets)
    v = np.zeros(model.num_vars)
    for l in set(relus[:, 2].tolist()):
      rows = relus[relus[:, 2] == l]
      t = pre[l] - (1.0 - sc[l]) * offsets[l]
      v[rows[:, 0]] = (t[rows[:, 1], rows[:, 3]] > 0.0).astype(float)
    return v[int_cols]

  def lp(v, off=()):
    nonlocal lps
    remaining = deadline - time.perf_counter()
    if remaining <= 0.05:
      return None
    lb, ub = lb0.copy(), ub0.copy()
    lb[int_cols] = v
    ub[int_cols] = v
    for l, k in off:
      lb[built.score_vars[l][k]] = ub[built.score_vars[l][k]] = 0.0
      mine = relus[(relus[:, 2] == l) & (relus[:, 3] == k), 0]
      lb[mine] = ub[mine] = 0.0
    lps += 1
    sol = solvers.highs_lp_solve(highs, lb, ub, remaining)
    if sol is None:
      return None
    if model.max_violation(np.where(np.asarray(model.integer), np.round(sol),
                                    sol)) > standard_form.MAX_VIOLATION:
      return None
    sc = [np.clip(sol[c], 0.0, 1.0) for c in built.score_vars]
    return sc, milp_objective(network, x, labels, sc, margin=margin, lam=lam)

  def descend(sc, off=()):
    found, prev = None, None
    for _ in range(200):
      v = pattern(sc)
      if prev is not None and np.array_equal(v, prev):
        break
      prev = v
      out = lp(v, off)
      if out is None:
        break
      if found is not None and out[1] > found[1] - 1e-9:
        break  # no progress (the LP optimum cannot be worse)
      found = out
      sc = out[0]
    return found

  best = descend(scores)
  if best is None:
    return None
  improved = drop_moves
  while improved and time.perf_counter() < deadline:
    improved = False
    # Try the lowest-scored kept neurons first; first improvement is kept.
    cands = sorted((float(best[0][l][k]), l, int(k))
                   for l in range(1, len(best[0]))
                   for k in np.flatnonzero(best[0][l] > 0.0))
    for _, l, k in cands:
      if time.perf_counter() >= deadline:
        break
      if best[0][l][k] <= 0.0:
        continue
      sc = [s.copy() for s in best[0]]
      sc[l][k] = 0.0
      out = descend(sc, off=((l, k),))
      if out is not None and out[1] < best[1] - 1e-7:
        # Descend again without the forced zero (the first LP contains out).
        again = descend(out[0])
        best = again if again is not None and again[1] < out[1] else out
        improved = True
  return DescentResult(tuple(best[0]), best[1], lps,
                       time.perf_counter() - begin)


def importance_scores(network: Network, images: np.ndarray,
                      labels: np.ndarray, *, margin: float = 0.0,
                      lam: float = 0.0, solver: str = solvers.DEFAULT_SOLVER,
                      time_limit: float = 60.0, mip_gap: float = 1e-4,
                      all_classes: bool = True, refine: bool = True,
                      first_phase: float = 0.25, descent: bool = True,
                      descent_share: float = 0.5,
                      verbose: bool = False) -> ImportanceResult:
  """Solves the importance MILP for one batch; see the module docstring.

  With `descent`, `pattern_descent` (at most a `descent_share` of the time
  limit; it stops earlier when no move improves) finds a feasible point
  first, and the MILP is built with that point's objective as a cutoff and
  the point as its start. With `refine`, a first solve (a `first_phase` share
  of the remaining time) looks for a better incumbent; if it is not yet proven
  optimal, the MILP is rebuilt with that incumbent's objective as a cutoff
  (tighter big-M bounds, see `build_importance_milp`) and solved for the
  remaining time from the incumbent. Cutoffs keep every solution at least as
  good as the incumbent, so proofs and bounds hold for the full problem.
  Only the MILP solver's own proof makes a result OPTIMAL; the heuristic's
  point alone is a TIME_LIMIT (unproven) result.

  Raises ValueError for a bad batch or options; a solver time-out is not an
  error but a result with status TIME_LIMIT (incumbent scores, unproven) or
  NO_SOLUTION (scores all 1: nothing is pruned).
  """
  solver = solvers.check_solver(solver)
  check_options(margin=margin, lam=lam, time_limit=time_limit,
                mip_gap=mip_gap)
  images, labels = check_batch(network, images, labels, margin=margin,
                               require_margin=lam == 0.0,
                               all_classes=all_classes)
  begin = time.perf_counter()
  built = build_importance_milp(network, images, labels, margin=margin,
                                lam=lam)
  build_seconds = built.build_seconds
  heuristic = None
  if descent:
    heuristic = pattern_descent(network, images, labels, built, margin=margin,
                                lam=lam, time_limit=descent_share * time_limit)
    if heuristic is not None:
      cut = build_importance_milp(network, images, labels, margin=margin,
                                  lam=lam, start_scores=heuristic.scores,
                                  cutoff=heuristic.objective)
      build_seconds += cut.build_seconds
      if cut.model.max_violation(cut.start) <= 1e-6:
        built = cut
      else:  # not expected; never hand a solver a wrong cutoff
        heuristic = None
  # GLPK takes no start, so a split would only restart its search; after
  # the descent the cutoff is in place already.
  refine = refine and solver != "GLPK_MI" and heuristic is None
  remaining = time_limit - (time.perf_counter() - begin)
  phase_limit = max(0.01, remaining * (first_phase if refine else 1.0))
  options = SCIP_OPTIONS if solver == "SCIP" else None
  result = solvers.solve(built.model, solver, time_limit=phase_limit,
                         mip_gap=mip_gap, start=built.start, verbose=verbose,
                         options=options)
  scores = None
  if result.status in (solvers.OPTIMAL, solvers.TIME_LIMIT):
    scores = tuple(np.clip(result.x[v], 0.0, 1.0) for v in built.score_vars)
  remaining = time_limit - (time.perf_counter() - begin)
  if refine and result.status == solvers.TIME_LIMIT and remaining > 1.0:
    first, first_scores = result, scores
    built = build_importance_milp(network, images, labels, margin=margin,
                                  lam=lam, start_scores=first_scores,
                                  cutoff=first.objective)
    build_seconds += built.build_seconds
    result = solvers.solve(built.model, solver,
                           time_limit=max(1.0, remaining - built.build_seconds),
                           mip_gap=mip_gap, start=built.start,
                           verbose=verbose, options=options)
    if (result.status not in (solvers.OPTIMAL, solvers.TIME_LIMIT)
        or result.objective > first.objective):
      # Nothing better (or the refined solve failed): keep the incumbent,
      # unproven, with the first solve's bound.
      result = dataclasses.replace(
          first, solver_status=f"{first.solver_status}; refined solve: "
          f"{result.solver_status}")
      scores = first_scores
    else:
      scores = tuple(np.clip(result.x[v], 0.0, 1.0) for v in built.score_vars)
  solve_seconds = time.perf_counter() - begin - build_seconds
  if heuristic is not None and (
      scores is None or result.status != solvers.OPTIMAL and
      result.objective > heuristic.objective):
    # The solver found no point as good as the heuristic's (GLPK has no
    # start): report that point, unproven, with the solver's bound if any
    # (valid: the cut-off problem keeps the optimum).
    result = dataclasses.replace(
        result, status=solvers.TIME_LIMIT, objective=heuristic.objective,
        solver_status=f"{result.solver_status}; incumbent from the pattern "
        "descent",
        best_bound=result.best_bound if result.status in (
            solvers.TIME_LIMIT, solvers.NO_SOLUTION) else None)
    scores = heuristic.scores
  if scores is not None:
    min_margin = float(margins(scored_forward(network, images, scores),
                               labels).min())
  else:
    scores = tuple(np.ones(w) for w in network.hidden_widths)
    min_margin = None
  return ImportanceResult(
      scores=scores, status=result.status, raw_status=result.solver_status,
      solver=solver, objective=result.objective, bound=result.best_bound,
      solve_seconds=solve_seconds, build_seconds=build_seconds,
      time_limit=float(time_limit), mip_gap=float(mip_gap),
      margin=float(margin), lam=float(lam),
      labels=tuple(int(y) for y in labels),
      num_binaries=built.num_binaries, num_vars=built.model.num_vars,
      num_rows=built.model.num_rows, min_batch_margin=min_margin,
      heuristic_objective=(None if heuristic is None
                           else heuristic.objective),
      heuristic_seconds=None if heuristic is None else heuristic.seconds)
