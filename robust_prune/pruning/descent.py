"""Pattern descent: an exact primal heuristic for the importance MILP (with
its ReLU binaries fixed, the MILP is an LP)."""

from __future__ import annotations

import dataclasses
import time
from typing import Sequence

import numpy as np

from robust_prune.milp import solvers
from robust_prune.milp import standard_form
from robust_prune.network import Network
from robust_prune.pruning import eq10
from robust_prune.pruning.importance_milp import ImportanceMilp, milp_objective

MAX_PATTERN_REPEATS = 200  # LPs per descent, a guard: it stops far earlier


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
  search = _PatternSearch(network, images, labels, built, margin=margin,
                          lam=lam, deadline=begin + time_limit)
  if start_scores is None:
    start_scores = [np.ones(w) for w in network.hidden_widths]
  best = search.descend([np.clip(np.asarray(v, np.float64), 0.0, 1.0)
                         for v in start_scores])
  if best is None:
    return None
  if drop_moves:
    best = search.drop_neurons(best)
  return DescentResult(tuple(best[0]), best[1], search.lps,
                       time.perf_counter() - begin)


class _PatternSearch:
  """The LPs of one descent: one HiGHS LP kept across the calls (only column
  bounds change, so each solve warm-starts from the previous basis)."""

  def __init__(self, network: Network, images, labels, built: ImportanceMilp,
               *, margin: float, lam: float, deadline: float):
    self.network, self.built = network, built
    self.x = np.asarray(images, np.float64).reshape(-1, network.input_dim)
    self.labels = np.asarray(labels, np.int64)
    self.margin, self.lam, self.deadline = margin, lam, deadline
    self.offsets = eq10.score_bounds(network, self.x).offsets
    model = built.model
    self.int_cols = np.flatnonzero(np.asarray(model.integer, bool))
    self.lb0 = np.asarray(model.lb, float)
    self.ub0 = np.asarray(model.ub, float)
    self.highs = solvers.highs_lp(model)
    self.lps = 0

  def pattern(self, scores) -> np.ndarray:
    """The ReLU binaries' values in the scored network at `scores`."""
    relus = self.built.relus
    pre, _, _ = eq10.scored_values(self.network, self.x, scores, self.offsets)
    v = np.zeros(self.built.model.num_vars)
    for l in set(relus[:, 2].tolist()):
      rows = relus[relus[:, 2] == l]
      t = pre[l] - (1.0 - scores[l]) * self.offsets[l]
      v[rows[:, 0]] = (t[rows[:, 1], rows[:, 3]] > 0.0).astype(float)
    return v[self.int_cols]

  def lp(self, pattern, off=()):
    """(scores, objective) of the LP with the binaries fixed to `pattern`
    and the neurons `off` ((layer, neuron) pairs) switched off; None when
    out of time or the LP's point is not a feasible MILP point."""
    model, relus = self.built.model, self.built.relus
    remaining = self.deadline - time.perf_counter()
    if remaining <= 0.05:
      return None
    lb, ub = self.lb0.copy(), self.ub0.copy()
    lb[self.int_cols] = pattern
    ub[self.int_cols] = pattern
    for l, k in off:
      lb[self.built.score_vars[l][k]] = ub[self.built.score_vars[l][k]] = 0.0
      mine = relus[(relus[:, 2] == l) & (relus[:, 3] == k), 0]
      lb[mine] = ub[mine] = 0.0
    self.lps += 1
    sol = solvers.highs_lp_solve(self.highs, lb, ub, remaining)
    if sol is None:
      return None
    if model.max_violation(np.where(np.asarray(model.integer), np.round(sol),
                                    sol)) > standard_form.MAX_VIOLATION:
      return None
    sc = [np.clip(sol[c], 0.0, 1.0) for c in self.built.score_vars]
    return sc, milp_objective(self.network, self.x, self.labels, sc,
                              margin=self.margin, lam=self.lam)

  def descend(self, scores, off=()):
    """LPs from `scores` until the pattern repeats or nothing improves."""
    found, prev = None, None
    for _ in range(MAX_PATTERN_REPEATS):
      v = self.pattern(scores)
      if prev is not None and np.array_equal(v, prev):
        break
      prev = v
      out = self.lp(v, off)
      if out is None:
        break
      if found is not None and out[1] > found[1] - 1e-9:
        break  # no progress (the LP optimum cannot be worse)
      found = out
      scores = out[0]
    return found

  def drop_neurons(self, best):
    """Tries each kept neuron of layers >= 1 switched off, lowest-scored
    first; an improving move is kept (first improvement) and tried again."""
    improved = True
    while improved and time.perf_counter() < self.deadline:
      improved = False
      cands = sorted((float(best[0][l][k]), l, int(k))
                     for l in range(1, len(best[0]))
                     for k in np.flatnonzero(best[0][l] > 0.0))
      for _, l, k in cands:
        if time.perf_counter() >= self.deadline:
          break
        if best[0][l][k] <= 0.0:
          continue
        sc = [s.copy() for s in best[0]]
        sc[l][k] = 0.0
        out = self.descend(sc, off=((l, k),))
        if out is not None and out[1] < best[1] - 1e-7:
          # Descend again without the forced zero (the first LP contains out).
          again = self.descend(out[0])
          best = again if again is not None and again[1] < out[1] else out
          improved = True
    return best
