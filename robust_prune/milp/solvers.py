"""SCIP, HiGHS and GLPK_MI through their own APIs: the one solver layer.

Every MILP here (verification and pruning) reaches a solver as a
`standard_form.StandardForm` plus a cost. The solvers are called natively,
not through cvxpy's `problem.solve`, because cvxpy hides what a proof needs:
the solver's own termination status and its dual (best) bound. cvxpy reports
SCIP's time-limit stop as `optimal_inaccurate` and hands on a time-limited
GLPK_MI incumbent (cvxopt status 'feasible') as the solution, which is how an
unproven value ends up reported as an optimum.

Here every outcome carries the solver's own words (`solver_status`) and one
of the statuses below; only OPTIMAL and INFEASIBLE are proofs. A returned
point is re-checked against the form, and one that breaks it by more than
`standard_form.MAX_VIOLATION` makes the outcome an ERROR.

Time limits: SCIP `limits/time` (s), HiGHS `time_limit` (s), GLPK `tm_lim`
(ms, integer).
"""

from __future__ import annotations

import dataclasses
import math
import time

import numpy as np

from robust_prune.milp import backends, standard_form
from robust_prune.milp.backends import (highs_lp, highs_lp_solve,  # pylint: disable=unused-import
                                        highs_model)
from robust_prune.milp.statuses import (  # pylint: disable=unused-import
    ERROR, GLPK_TOL_OBJ, INFEASIBLE, MIP_GAP, NO_SOLUTION, OPTIMAL,
    OPTIMAL_BOUND_FLOOR, SOLUTION_LIMIT, TIME_LIMIT, SolveSettings)

SOLVERS = ("SCIP", "HIGHS", "GLPK_MI")
DEFAULT_SOLVER = "HIGHS"


class SolverUnavailableError(ValueError):
  """Unknown or uninstalled solver, or unusable options."""


def installed_solvers() -> tuple[str, ...]:
  """Those of SOLVERS whose native Python package imports."""
  found = []
  for name, module in (("SCIP", "pyscipopt"), ("HIGHS", "highspy"),
                       ("GLPK_MI", "cvxopt.glpk")):
    try:
      __import__(module)
      found.append(name)
    except ImportError:
      pass
  return tuple(found)


def check_solver(name: str) -> str:
  """Canonical solver name, or SolverUnavailableError listing installed ones."""
  canonical = str(name).upper().replace("-", "_")
  canonical = {"GLPK": "GLPK_MI", "HIGHSPY": "HIGHS"}.get(canonical, canonical)
  installed = installed_solvers()
  if canonical not in installed:
    raise SolverUnavailableError(
        f"solver {name!r} is unknown or not installed; installed solvers: "
        f"{', '.join(installed) or 'none'}")
  return canonical


@dataclasses.dataclass(frozen=True)
class SolveOutcome:
  solver: str
  status: str                 # one of the statuses above
  solver_status: str          # the solver's own words
  objective: float | None     # the incumbent's objective (offset included)
  best_bound: float | None    # proven lower bound (offset included), if known
  x: np.ndarray | None        # the incumbent's full column vector
  seconds: float
  time_limit: float
  mip_gap: float
  violation: float | None = None  # of x, re-checked against the form

  @property
  def proven_optimal(self) -> bool:
    return self.status == OPTIMAL

  @property
  def proven_infeasible(self) -> bool:
    return self.status == INFEASIBLE

  @property
  def hit_time_limit(self) -> bool:
    return self.status in (TIME_LIMIT, NO_SOLUTION)


def solve(model, solver: str, *, time_limit: float, mip_gap: float = MIP_GAP,
          cutoff: float | None = None, stop_at_first: bool = False,
          useful_below: float | None = None,
          start: np.ndarray | None = None, options: dict | None = None,
          verbose: bool = False) -> SolveOutcome:
  """Minimises the current cost of `model` (a `MilpModel` or `CompiledMilp`)
  with `solver`; a time-out is an outcome, never an exception.

  mip_gap: relative and absolute optimality gap (GLPK_MI: always 0, since
    cvxopt reports a gap stop and a time-limit stop alike as 'feasible').
  cutoff: only points with objective < cutoff matter (certify mode: 1e-5); a
    proven-infeasible outcome then proves objective >= cutoff.
  stop_at_first: stop at the first incumbent below the cutoff; one not
    below `useful_below` (default: the cutoff) is no use, and the search goes
    on without the stop.
  start: a full column vector used as a MIP start (HiGHS, SCIP).
  options: native settings applied last (SCIP setParam names, HiGHS option
    names; GLPK ignores them).
  """
  solver = check_solver(solver)
  if not time_limit > 0:
    raise SolverUnavailableError(f"time limit must be positive, got "
                                 f"{time_limit}")
  if solver == "GLPK_MI":
    mip_gap = 0.0
  if start is not None:
    start = np.asarray(start, np.float64)
    if start.shape != (model.form().num_cols,) or not np.all(
        np.isfinite(start)):
      start = None  # an incomplete start would only be dropped by the solver
  settings = SolveSettings(float(time_limit), float(mip_gap), cutoff,
                       bool(stop_at_first), start, dict(options or {}),
                       bool(verbose))
  outcome = _solve_once(model, solver, settings)
  useful_below = cutoff if useful_below is None else useful_below
  if (stop_at_first and outcome.status == SOLUTION_LIMIT
      and (useful_below is None or outcome.objective is None
           or outcome.objective >= useful_below)):
    # The solution limit fired on a point that is no use (HiGHS and SCIP may
    # keep incumbents above the cutoff): go on without it, in the time left.
    remaining = max(float(time_limit) - outcome.seconds, 0.01)
    again = _solve_once(model, solver, dataclasses.replace(
        settings, time_limit=remaining, stop_at_first=False))
    return dataclasses.replace(again, seconds=again.seconds + outcome.seconds,
                               time_limit=float(time_limit))
  return outcome


def _solve_once(model, solver: str, settings: SolveSettings) -> SolveOutcome:
  form = model.form()
  c, offset = model.cost_vector()
  cache = getattr(model, "native", None)
  backend = {"SCIP": backends.solve_scip, "HIGHS": backends.solve_highs,
             "GLPK_MI": backends.solve_glpk}[solver]
  begin = time.perf_counter()
  status, raw, x, bound = backend(form, c, offset, settings, cache)
  seconds = time.perf_counter() - begin
  violation = None
  if x is not None:
    violation = form.max_violation(x)
    if violation > standard_form.MAX_VIOLATION:
      # Trust no solver blindly: GLPK once returned an "optimal" point that
      # broke a row by 4 (on a model with 1e-18 coefficients, now dropped).
      status, raw = ERROR, (f"{raw} (returned point violates the model by "
                            f"{violation:.3g})")
  objective = (float(c @ x + offset) if x is not None and status != ERROR
               else None)
  bound = float(bound) if bound is not None and math.isfinite(bound) else None
  if status == INFEASIBLE and settings.cutoff is not None:
    bound = float(settings.cutoff) if bound is None else max(
        bound, float(settings.cutoff))
  if status == OPTIMAL:
    if objective is None:
      status = ERROR
    else:
      # An optimum is proven only to the gap at which the solver stopped
      # (HiGHS may then report its dual bound equal to the incumbent).
      allowance = max(settings.mip_gap * max(1.0, abs(objective)),
                      OPTIMAL_BOUND_FLOOR)
      if solver == "GLPK_MI":
        allowance = max(allowance, 2 * GLPK_TOL_OBJ * (1.0 + abs(objective)))
      bound = objective - allowance if bound is None else min(
          bound, objective - allowance)
  if status == ERROR:
    bound = None
  return SolveOutcome(solver, status, str(raw), objective, bound, x, seconds,
                      settings.time_limit, settings.mip_gap, violation)
