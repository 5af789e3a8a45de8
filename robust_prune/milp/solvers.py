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
import os
import tempfile
import time

import numpy as np
import scipy.sparse as sp

from robust_prune.milp import standard_form

SOLVERS = ("SCIP", "HIGHS", "GLPK_MI")
DEFAULT_SOLVER = "HIGHS"
# Relative and absolute optimality gap of the verification MILP: tight
# enough that optima agree to 1e-4.
MIP_GAP = 1e-6

# The least an optimum's proven bound sits below it.
OPTIMAL_BOUND_FLOOR = 1e-9
# GLPK runs with gap 0 but prunes a node whose bound is within
# tol_obj * (1 + |incumbent|) of the incumbent (set explicitly, its default),
# so its "optimal" proves only that much: a review built a net with true
# minimum margin -5e-8 that GLPK called optimal at +4e-8.
GLPK_TOL_OBJ = 1e-7

OPTIMAL = "optimal"          # proven optimum (within the gap)
INFEASIBLE = "infeasible"    # no feasible point (below the cutoff, if any)
TIME_LIMIT = "time_limit"    # stopped by the limit; x is an unproven incumbent
NO_SOLUTION = "no_solution"  # stopped by the limit with no incumbent
SOLUTION_LIMIT = "solution_limit"  # stopped at the first incumbent, as asked
ERROR = "error"


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


@dataclasses.dataclass(frozen=True)
class _Settings:
  time_limit: float
  mip_gap: float
  cutoff: float | None
  stop_at_first: bool
  start: np.ndarray | None
  options: dict
  verbose: bool


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
  settings = _Settings(float(time_limit), float(mip_gap), cutoff,
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


def _solve_once(model, solver: str, settings: _Settings) -> SolveOutcome:
  form = model.form()
  c, offset = model.cost_vector()
  cache = getattr(model, "native", None)
  backend = {"SCIP": _solve_scip, "HIGHS": _solve_highs,
             "GLPK_MI": _solve_glpk}[solver]
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


def _cached(cache: dict | None, key: str, build):
  """The solver's object for the form: built once and kept in `cache` (a
  CompiledMilp's, whose targets re-cost one form), or built afresh."""
  if cache is None:
    return build()
  if key not in cache:
    cache[key] = build()
  return cache[key]


# ------------------------------------------------------------------- HiGHS
def highs_model(form: standard_form.StandardForm, *, integrality=True):
  """A Highs object holding `form` (zero cost); without `integrality`, its
  LP relaxation."""
  import highspy  # pylint: disable=g-import-not-at-top
  h = highspy.Highs()
  h.setOptionValue("output_flag", False)
  h.setOptionValue("random_seed", 0)
  a = form.a.tocsc()
  lp = highspy.HighsLp()
  lp.num_col_, lp.num_row_ = form.num_cols, form.num_rows
  lp.col_cost_ = np.zeros(form.num_cols)
  lp.col_lower_, lp.col_upper_ = form.col_lower, form.col_upper
  lp.row_lower_, lp.row_upper_ = form.row_lower, form.row_upper
  lp.a_matrix_.format_ = highspy.MatrixFormat.kColwise
  lp.a_matrix_.start_ = a.indptr.astype(np.int32)
  lp.a_matrix_.index_ = a.indices.astype(np.int32)
  lp.a_matrix_.value_ = a.data.astype(np.float64)
  lp.a_matrix_.num_col_ = form.num_cols
  lp.a_matrix_.num_row_ = form.num_rows
  if integrality and form.integer.any():
    lp.integrality_ = [highspy.HighsVarType.kInteger if i else
                       highspy.HighsVarType.kContinuous for i in form.integer]
  h.passModel(lp)
  return h


def _solve_highs(form, c, offset, settings: _Settings, cache):
  import highspy  # pylint: disable=g-import-not-at-top
  h = _cached(cache, "HIGHS", lambda: highs_model(form))
  h.clearSolver()
  n = form.num_cols
  h.changeColsCost(n, np.arange(n, dtype=np.int32), np.asarray(c, np.float64))
  h.changeObjectiveOffset(float(offset))
  h.setOptionValue("output_flag", settings.verbose)
  h.setOptionValue("time_limit", settings.time_limit)
  h.setOptionValue("mip_rel_gap", settings.mip_gap)
  h.setOptionValue("mip_abs_gap", settings.mip_gap)
  # No `threads`: HiGHS's scheduler is process-global, and once it exists
  # a different thread count makes run() fail; parallelism comes from the
  # process pool instead.
  h.setOptionValue("objective_bound", np.inf if settings.cutoff is None
                   else float(settings.cutoff))
  h.setOptionValue("mip_max_improving_sols",
                   1 if settings.stop_at_first else 2**31 - 1)
  for key, value in settings.options.items():
    h.setOptionValue(key, value)
  if settings.start is not None:
    sol = highspy.HighsSolution()
    sol.col_value = settings.start.tolist()
    sol.value_valid = True
    h.setSolution(sol)
  if h.run() == highspy.HighsStatus.kError:
    return ERROR, f"run failed: {h.modelStatusToString(h.getModelStatus())}", \
        None, None
  ms = h.getModelStatus()
  raw = h.modelStatusToString(ms)
  info = h.getInfo()
  has_x = info.primal_solution_status == 2  # kSolutionStatusFeasible
  x = np.asarray(h.getSolution().col_value, np.float64) if has_x else None
  S = highspy.HighsModelStatus
  # A pure LP's objective bounds its optimum from below only once optimal;
  # a time-limited primal point bounds it from above.
  bound = info.mip_dual_bound if form.integer.any() else (
      info.objective_function_value if has_x and ms == S.kOptimal else None)
  if ms == S.kOptimal:
    status = OPTIMAL
  elif ms == S.kInfeasible or (ms == S.kObjectiveBound
                               and settings.cutoff is not None):
    status = INFEASIBLE
  elif ms == S.kSolutionLimit and has_x:
    status = SOLUTION_LIMIT
  elif ms in (S.kTimeLimit, S.kInterrupt, S.kIterationLimit,
              S.kSolutionLimit):
    status = TIME_LIMIT if has_x else NO_SOLUTION
  else:
    status = ERROR
  return status, raw, x, bound


def highs_lp(model):
  """A Highs object holding the LP relaxation of `model` (a `MilpModel` or
  `CompiledMilp`) with its current cost, for `highs_lp_solve`."""
  form = model.form()
  c, offset = model.cost_vector()
  h = highs_model(form, integrality=False)
  h.changeColsCost(form.num_cols, np.arange(form.num_cols, dtype=np.int32),
                   np.asarray(c, np.float64))
  h.changeObjectiveOffset(float(offset))
  return h


def highs_lp_solve(h, lb: np.ndarray, ub: np.ndarray,
                   time_limit: float) -> np.ndarray | None:
  """Re-solves the LP held by `h` (from `highs_lp`) under new column bounds, warm-started from the
  last basis; the optimal x, or None if HiGHS proved no LP optimum."""
  import highspy  # pylint: disable=g-import-not-at-top
  n = len(lb)
  h.setOptionValue("time_limit", float(max(time_limit, 1e-3)))
  h.changeColsBounds(n, np.arange(n, dtype=np.int32),
                     np.asarray(lb, float), np.asarray(ub, float))
  h.run()
  if h.getModelStatus() != highspy.HighsModelStatus.kOptimal:
    return None
  return np.asarray(h.getSolution().col_value, float)


# -------------------------------------------------------------------- SCIP
def _scip_model(form):
  """A SCIP model read from an MPS file written by HiGHS (C code both ways:
  much faster than adding 100k coefficients through Python)."""
  import pyscipopt  # pylint: disable=g-import-not-at-top
  h = highs_model(form)
  fd, path = tempfile.mkstemp(suffix=".mps")
  os.close(fd)
  try:
    h.writeModel(path)
    model = pyscipopt.Model()
    model.hideOutput()
    model.readProblem(path)
  finally:
    os.remove(path)
  by_name = {v.name: v for v in model.getVars()}
  names = h.getLp().col_names_
  if len(names) == form.num_cols:
    variables = [by_name[str(nm)] for nm in names]
  else:
    variables = [by_name[f"c{j}"] for j in range(form.num_cols)]
  return model, variables


def _solve_scip(form, c, offset, settings: _Settings, cache):
  import pyscipopt  # pylint: disable=g-import-not-at-top
  model, variables = _cached(cache, "SCIP", lambda: _scip_model(form))
  model.freeTransform()
  if settings.verbose:
    model.showOutput()
  else:
    model.hideOutput()
  c = np.asarray(c, np.float64)
  model.setObjective(pyscipopt.quicksum(float(c[j]) * variables[j]
                                        for j in np.flatnonzero(c)),
                     "minimize", clear=True)
  model.setParam("limits/time", min(settings.time_limit, 1e20))  # SCIP's max
  model.setParam("limits/gap", settings.mip_gap)
  model.setParam("limits/absgap", settings.mip_gap)
  model.setParam("limits/solutions", 1 if settings.stop_at_first else -1)
  model.setParam("randomization/randomseedshift", 0)
  for key, value in settings.options.items():
    model.setParam(key, value)
  model.setObjlimit(1e20 if settings.cutoff is None
                    else float(settings.cutoff) - offset)
  if settings.start is not None:
    sol = model.createSol()
    for var, value in zip(variables, settings.start):
      model.setSolVal(sol, var, float(value))
    if not model.addSol(sol, free=True):
      # Rejected at SCIP's tolerances: let its completion heuristic repair it.
      partial = model.createPartialSol()
      for var, value in zip(variables, settings.start):
        model.setSolVal(partial, var, float(value))
      model.addSol(partial)
  model.optimize()
  raw = model.getStatus()
  has_x = model.getNSols() > 0
  x = None
  if has_x:
    best = model.getBestSol()
    x = np.array([model.getSolVal(best, v) for v in variables], np.float64)
  bound = model.getDualbound()
  bound = float(bound) + offset if abs(bound) < 1e19 else None
  if raw == "optimal" or (raw == "gaplimit" and has_x):
    status = OPTIMAL  # gaplimit: proven within the requested gap
  elif raw == "infeasible":
    status = INFEASIBLE
  elif raw == "sollimit" and has_x:
    status = SOLUTION_LIMIT
  elif raw in ("timelimit", "userinterrupt", "nodelimit", "totalnodelimit",
               "stallnodelimit", "memlimit", "sollimit", "bestsollimit",
               "restartlimit"):
    status = TIME_LIMIT if has_x else NO_SOLUTION
  else:
    status = ERROR
  return status, raw, x, bound


# ----------------------------------------------------------------- GLPK_MI
def _glpk_data(form):
  """cvxopt's ilp wants G x <= h and A x = b: equal row bounds go to A,
  finite one-sided row and column bounds to G."""
  import cvxopt  # pylint: disable=g-import-not-at-top
  a = form.a.tocsr()
  n = form.num_cols
  eq = form.row_lower == form.row_upper
  up = ~eq & np.isfinite(form.row_upper)
  lo = ~eq & np.isfinite(form.row_lower)
  col_up = np.flatnonzero(np.isfinite(form.col_upper))
  col_lo = np.flatnonzero(np.isfinite(form.col_lower))

  def unit(cols, sign):
    return sp.csr_matrix((np.full(len(cols), sign), (np.arange(len(cols)),
                                                     cols)),
                         shape=(len(cols), n))

  def spmatrix(m):
    m = sp.coo_matrix(m)
    return cvxopt.spmatrix(m.data.tolist(), m.row.tolist(), m.col.tolist(),
                           size=m.shape)

  g = sp.vstack([a[up], -a[lo], unit(col_up, 1.0), unit(col_lo, -1.0)])
  h = np.concatenate([form.row_upper[up], -form.row_lower[lo],
                      form.col_upper[col_up], -form.col_lower[col_lo]])
  if eq.any():
    eq_args = (spmatrix(a[eq]), cvxopt.matrix(form.row_lower[eq]))
  else:
    eq_args = (cvxopt.spmatrix([], [], [], (0, n)),
               cvxopt.matrix(np.zeros((0, 1))))
  return spmatrix(g), cvxopt.matrix(h.astype(np.float64)), eq_args


def _solve_glpk(form, c, offset, settings: _Settings, cache):
  """GLPK through cvxopt: no MIP start, no cutoff, no solution limit and no
  dual bound. cvxopt says 'optimal' only when glp_intopt finished with
  GLP_OPT; a time-limit stop with an incumbent is 'feasible', one without
  is 'undefined' (cvxopt still hands back a meaningless x)."""
  del offset
  import cvxopt  # pylint: disable=g-import-not-at-top
  from cvxopt import glpk  # pylint: disable=g-import-not-at-top
  g, h, (a, b) = _cached(cache, "GLPK_MI", lambda: _glpk_data(form))
  options = {"msg_lev": "GLP_MSG_ALL" if settings.verbose else "GLP_MSG_OFF",
             # milliseconds in a C int; an infinite limit is GLPK's largest
             "tm_lim": max(1, int(round(min(1000.0 * settings.time_limit,
                                            2.0**31 - 1)))),
             "tol_obj": GLPK_TOL_OBJ,
             "presolve": "GLP_ON"}
  begin = time.perf_counter()
  raw, x = glpk.ilp(cvxopt.matrix(np.asarray(c, np.float64)), g, h, a, b,
                    set(), set(int(j) for j in np.flatnonzero(form.integer)),
                    options=options)
  seconds = time.perf_counter() - begin
  x = None if x is None else np.asarray(x, np.float64).ravel()
  if raw == "optimal":
    status = OPTIMAL
  elif raw in ("infeasible problem", "LP relaxation is primal infeasible"):
    status = INFEASIBLE
  elif raw == "feasible":
    status = TIME_LIMIT if x is not None else NO_SOLUTION
  elif raw == "undefined" and seconds >= 0.9 * settings.time_limit:
    status, x = NO_SOLUTION, None
  else:
    status, x = ERROR, None
  return status, raw, x, None
