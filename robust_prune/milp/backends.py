"""The native solver calls behind `solvers.solve`: HiGHS (highspy), SCIP
(pyscipopt) and GLPK_MI (cvxopt.glpk). Each takes a standard form, a cost
and `SolveSettings`, and returns (status, the solver's own words, x, bound).
"""

from __future__ import annotations

import os
import tempfile
import time

import numpy as np
import scipy.sparse as sp

from robust_prune.milp import standard_form
from robust_prune.milp.statuses import (ERROR, GLPK_TOL_OBJ, INFEASIBLE,
                                        NO_SOLUTION, OPTIMAL, SOLUTION_LIMIT,
                                        TIME_LIMIT, SolveSettings, cached)


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


def solve_highs(form, c, offset, settings: SolveSettings, cache):
  import highspy  # pylint: disable=g-import-not-at-top
  h = cached(cache, "HIGHS", lambda: highs_model(form))
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


def solve_scip(form, c, offset, settings: SolveSettings, cache):
  import pyscipopt  # pylint: disable=g-import-not-at-top
  model, variables = cached(cache, "SCIP", lambda: _scip_model(form))
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


def solve_glpk(form, c, offset, settings: SolveSettings, cache):
  """GLPK through cvxopt: no MIP start, no cutoff, no solution limit and no
  dual bound. cvxopt says 'optimal' only when glp_intopt finished with
  GLP_OPT; a time-limit stop with an incumbent is 'feasible', one without
  is 'undefined' (cvxopt still hands back a meaningless x)."""
  del offset
  import cvxopt  # pylint: disable=g-import-not-at-top
  from cvxopt import glpk  # pylint: disable=g-import-not-at-top
  g, h, (a, b) = cached(cache, "GLPK_MI", lambda: _glpk_data(form))
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
