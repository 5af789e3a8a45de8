"""Neuron-importance scores by MILP (ElAraby, Wolf & Carvalho 2020; the
paper's section 3.2, eq. 10): solving the MILP of `importance_milp`.

The scored network, eq. 10's rows and the objective are in `eq10`; the MILP
of one batch is built by `importance_milp.build_importance_milp`. Solving it
(`importance_scores`):
* `descent.pattern_descent` (an exact primal heuristic: with the ReLU
  binaries fixed the MILP is an LP) finds a good feasible point first; the
  MILP is then built with its objective as a cutoff, which bounds
  sum_j s_lj and so tightens every big-M constant, and starts from it
  (SCIP, HiGHS);
* without it, all-ones scores are the start and a refining second solve uses
  the first incumbent's objective as the cutoff;
* a solver that ends with nothing as good as the heuristic's point falls
  back to that point, unproven.

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
from typing import Any

import numpy as np

from robust_prune.milp import solvers
from robust_prune.network import Network
# The names below are re-exported: `importance.X` is the package's one door
# to the scores (prune, bench_prune, critical and the tests use it).
from robust_prune.pruning.batch import check_batch, margins  # pylint: disable=unused-import
from robust_prune.pruning.descent import DescentResult, pattern_descent  # pylint: disable=unused-import
from robust_prune.pruning.eq10 import (  # pylint: disable=unused-import
    BOUND_SAFETY, ScoreBounds, concave_envelope, importance_objective,
    score_bounds, scored_forward, scored_values)
from robust_prune.pruning.importance_milp import (  # pylint: disable=unused-import
    CUTOFF_SLACK, ImportanceMilp, build_importance_milp, milp_objective)

# SCIP's default root cutting loop spent a whole 60 s budget on the 300-100
# network (margin 0) without improving the all-ones start; with no cutting
# rounds and frequent RINS it reached incumbents like HiGHS's there (the root
# bound is weak either way, see the module docstring). At margin 3 it still
# found nothing better than the start in 60 s on the shared 2-core machine.
SCIP_OPTIONS = {"separating/maxroundsroot": 0, "separating/maxrounds": 0,
                "heuristics/rins/freq": 5}


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


@dataclasses.dataclass(frozen=True)
class _Batch:
  """One checked batch and the MILP's options: builds and solves its MILP."""

  network: Network
  images: np.ndarray
  labels: np.ndarray
  margin: float
  lam: float
  solver: str
  mip_gap: float
  verbose: bool

  def build(self, **kwargs) -> ImportanceMilp:
    return build_importance_milp(self.network, self.images, self.labels,
                                 margin=self.margin, lam=self.lam, **kwargs)

  def solve(self, built: ImportanceMilp, time_limit: float):
    """The solver's outcome and its scores (None without an incumbent)."""
    options = SCIP_OPTIONS if self.solver == "SCIP" else None
    result = solvers.solve(built.model, self.solver, time_limit=time_limit,
                           mip_gap=self.mip_gap, start=built.start,
                           verbose=self.verbose, options=options)
    scores = None
    if result.status in (solvers.OPTIMAL, solvers.TIME_LIMIT):
      scores = tuple(np.clip(result.x[v], 0.0, 1.0) for v in built.score_vars)
    return result, scores


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
  batch = _Batch(network, images, labels, margin, lam, solver, mip_gap,
                 verbose)
  built = batch.build()
  build_seconds = built.build_seconds
  heuristic = None
  if descent:
    built, heuristic, seconds = _descent_start(batch, built,
                                               descent_share * time_limit)
    build_seconds += seconds
  # GLPK takes no start, so a split would only restart its search; after
  # the descent the cutoff is in place already.
  refine = refine and solver != "GLPK_MI" and heuristic is None
  remaining = time_limit - (time.perf_counter() - begin)
  result, scores = batch.solve(
      built, max(0.01, remaining * (first_phase if refine else 1.0)))
  remaining = time_limit - (time.perf_counter() - begin)
  if refine and result.status == solvers.TIME_LIMIT and remaining > 1.0:
    built, result, scores = _refine(batch, result, scores, remaining)
    build_seconds += built.build_seconds
  solve_seconds = time.perf_counter() - begin - build_seconds
  if heuristic is not None:
    result, scores = _fall_back_to_heuristic(result, scores, heuristic)
  return _scores_result(batch, built, result, scores, heuristic,
                        time_limit=time_limit, build_seconds=build_seconds,
                        solve_seconds=solve_seconds)


def _descent_start(batch: _Batch, built: ImportanceMilp, time_limit: float):
  """(MILP to solve, pattern-descent result or None, extra build seconds):
  the MILP cut off at the descent's objective and started from its point."""
  heuristic = pattern_descent(batch.network, batch.images, batch.labels,
                              built, margin=batch.margin, lam=batch.lam,
                              time_limit=time_limit)
  if heuristic is None:
    return built, None, 0.0
  cut = batch.build(start_scores=heuristic.scores, cutoff=heuristic.objective)
  if cut.model.max_violation(cut.start) <= 1e-6:
    return cut, heuristic, cut.build_seconds
  # Not expected; never hand a solver a wrong cutoff.
  return built, None, cut.build_seconds


def _refine(batch: _Batch, first, first_scores, remaining: float):
  """The MILP rebuilt with the first incumbent's objective as a cutoff and
  solved from it for the remaining time: (rebuilt MILP, outcome, scores).
  Nothing better (or a failed solve) keeps the first incumbent, unproven,
  with the first solve's bound."""
  built = batch.build(start_scores=first_scores, cutoff=first.objective)
  result, scores = batch.solve(built,
                               max(1.0, remaining - built.build_seconds))
  if (result.status not in (solvers.OPTIMAL, solvers.TIME_LIMIT)
      or result.objective > first.objective):
    result = dataclasses.replace(
        first, solver_status=f"{first.solver_status}; refined solve: "
        f"{result.solver_status}")
    scores = first_scores
  return built, result, scores


def _fall_back_to_heuristic(result, scores, heuristic: DescentResult):
  """The solver found no point as good as the heuristic's (GLPK has no
  start): report that point, unproven, with the solver's bound if any
  (valid: the cut-off problem keeps the optimum)."""
  if scores is not None and (result.status == solvers.OPTIMAL or
                             result.objective <= heuristic.objective):
    return result, scores
  result = dataclasses.replace(
      result, status=solvers.TIME_LIMIT, objective=heuristic.objective,
      solver_status=f"{result.solver_status}; incumbent from the pattern "
      "descent",
      best_bound=result.best_bound if result.status in (
          solvers.TIME_LIMIT, solvers.NO_SOLUTION) else None)
  return result, heuristic.scores


def _scores_result(batch: _Batch, built: ImportanceMilp, result, scores,
                   heuristic: DescentResult | None, *, time_limit: float,
                   build_seconds: float,
                   solve_seconds: float) -> ImportanceResult:
  """The result record; no incumbent means all-ones scores (nothing pruned)
  and no re-checked margin."""
  if scores is not None:
    min_margin = float(margins(
        scored_forward(batch.network, batch.images, scores),
        batch.labels).min())
  else:
    scores = tuple(np.ones(w) for w in batch.network.hidden_widths)
    min_margin = None
  return ImportanceResult(
      scores=scores, status=result.status, raw_status=result.solver_status,
      solver=batch.solver, objective=result.objective,
      bound=result.best_bound, solve_seconds=solve_seconds,
      build_seconds=build_seconds, time_limit=float(time_limit),
      mip_gap=float(batch.mip_gap), margin=float(batch.margin),
      lam=float(batch.lam), labels=tuple(int(y) for y in batch.labels),
      num_binaries=built.num_binaries, num_vars=built.model.num_vars,
      num_rows=built.model.num_rows, min_batch_margin=min_margin,
      heuristic_objective=(None if heuristic is None
                           else heuristic.objective),
      heuristic_seconds=None if heuristic is None else heuristic.seconds)
