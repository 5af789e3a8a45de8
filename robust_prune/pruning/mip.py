"""A matrix-form MILP and its solution by SCIP, HiGHS or GLPK_MI natively.

The pruning MILP is built once as sparse rows (`MilpModel`) and handed to a
solver's own API rather than through cvxpy, for three reasons: each solver's
own termination status is read (cvxpy reports SCIP's time-limit stop as
`optimal_inaccurate` and GLPK_MI's time-limit incumbent as `optimal`), the
proven dual bound is available, and SCIP/HiGHS accept a feasible start.

`SolveResult.proven` is True only when the solver itself says it proved
optimality (within `mip_gap`); a time-limited incumbent is `time_limit`.
"""

from __future__ import annotations

import dataclasses
import math
import time
from typing import Sequence

import numpy as np
import scipy.sparse as sp

SOLVERS = ("SCIP", "HIGHS", "GLPK_MI")
DEFAULT_SOLVER = "HIGHS"
# Statuses recorded in results; only OPTIMAL is a proof.
OPTIMAL = "optimal"
TIME_LIMIT = "time_limit"  # stopped by the limit; x is an unproven incumbent
NO_SOLUTION = "no_solution"  # stopped by the limit with no incumbent
INFEASIBLE = "infeasible"
ERROR = "error"
MAX_VIOLATION = 1e-4  # a returned point violating the model more is an error


class SolverError(ValueError):
  """Unknown solver name or unusable solver options."""


def check_solver(name: str) -> str:
  upper = str(name).upper()
  if upper not in SOLVERS:
    raise SolverError(f"unknown solver {name!r}; choose one of {SOLVERS}")
  return upper


@dataclasses.dataclass
class MilpModel:
  """min c.x  s.t.  row_lower <= A x <= row_upper,  lb <= x <= ub,
  x_j integer where `integer[j]`. Built incrementally."""

  cost: list = dataclasses.field(default_factory=list)
  lb: list = dataclasses.field(default_factory=list)
  ub: list = dataclasses.field(default_factory=list)
  integer: list = dataclasses.field(default_factory=list)
  objective_offset: float = 0.0
  _rows: list = dataclasses.field(default_factory=list)
  _cols: list = dataclasses.field(default_factory=list)
  _vals: list = dataclasses.field(default_factory=list)
  row_lower: list = dataclasses.field(default_factory=list)
  row_upper: list = dataclasses.field(default_factory=list)

  @property
  def num_vars(self) -> int:
    return len(self.cost)

  @property
  def num_rows(self) -> int:
    return len(self.row_lower)

  @property
  def num_integer(self) -> int:
    return int(sum(self.integer))

  def add_vars(self, n: int, lb, ub, *, cost=0.0, integer=False) -> np.ndarray:
    """Adds n variables; returns their indices."""
    first = self.num_vars
    self.cost.extend(np.broadcast_to(np.asarray(cost, float), (n,)).tolist())
    self.lb.extend(np.broadcast_to(np.asarray(lb, float), (n,)).tolist())
    self.ub.extend(np.broadcast_to(np.asarray(ub, float), (n,)).tolist())
    self.integer.extend([bool(integer)] * n)
    return np.arange(first, first + n)

  def add_row(self, cols: Sequence[int], vals: Sequence[float], lower: float,
              upper: float):
    """lower <= sum vals * x[cols] <= upper (use +-inf for one-sided)."""
    cols = np.asarray(cols, np.int64)
    vals = np.asarray(vals, float)
    # Round-off dust (|v| < 1e-12, e.g. from plane fits) only confuses the
    # solvers; it moves no row by more than 1e-12 times the variables' range.
    keep = np.abs(vals) >= 1e-12
    row = self.num_rows
    self._rows.append(np.full(int(keep.sum()), row, np.int64))
    self._cols.append(cols[keep])
    self._vals.append(vals[keep])
    self.row_lower.append(float(lower))
    self.row_upper.append(float(upper))

  def matrix(self) -> sp.csr_matrix:
    if not self._rows:
      return sp.csr_matrix((0, self.num_vars))
    return sp.csr_matrix(
        (np.concatenate(self._vals),
         (np.concatenate(self._rows), np.concatenate(self._cols))),
        shape=(self.num_rows, self.num_vars))

  def objective(self, x: np.ndarray) -> float:
    return float(np.dot(self.cost, x) + self.objective_offset)

  def max_violation(self, x: np.ndarray) -> float:
    """Largest bound/row violation of x (0 for a feasible point)."""
    x = np.asarray(x, float)
    ax = self.matrix() @ x
    viol = [np.max(np.maximum(np.asarray(self.lb) - x, 0), initial=0),
            np.max(np.maximum(x - np.asarray(self.ub), 0), initial=0),
            np.max(np.maximum(np.asarray(self.row_lower) - ax, 0), initial=0),
            np.max(np.maximum(ax - np.asarray(self.row_upper), 0), initial=0)]
    ints = np.asarray(self.integer, bool)
    if ints.any():
      viol.append(np.max(np.abs(x[ints] - np.round(x[ints]))))
    return float(max(viol))


@dataclasses.dataclass(frozen=True)
class SolveResult:
  solver: str
  status: str  # one of OPTIMAL, TIME_LIMIT, NO_SOLUTION, INFEASIBLE, ERROR
  raw_status: str  # the solver's own words
  x: np.ndarray | None
  objective: float | None  # incumbent objective (offset included)
  bound: float | None  # proven lower bound (offset included), if reported
  seconds: float
  time_limit: float
  mip_gap: float
  violation: float | None = None  # of x, re-checked against the model

  @property
  def proven(self) -> bool:
    return self.status == OPTIMAL


def solve(model: MilpModel, *, solver: str = DEFAULT_SOLVER,
          time_limit: float = 60.0, mip_gap: float = 1e-4,
          start: np.ndarray | None = None, threads: int = 1,
          verbose: bool = False,
          options: dict | None = None) -> SolveResult:
  """Solves `model` with the named solver; never raises on a time-out.

  `options`: extra native settings (SCIP setParam names, HiGHS option names;
  ignored by GLPK), applied after the defaults here.
  """
  solver = check_solver(solver)
  if not time_limit > 0:
    raise SolverError(f"time limit must be positive, got {time_limit}")
  if solver == "GLPK_MI":
    mip_gap = 0.0  # see _solve_glpk
  fn = {"SCIP": _solve_scip, "HIGHS": _solve_highs,
        "GLPK_MI": _solve_glpk}[solver]
  begin = time.perf_counter()
  status, raw, x, bound = fn(model, time_limit, mip_gap, start, threads,
                             verbose, dict(options or {}))
  seconds = time.perf_counter() - begin
  violation = None
  if x is not None:
    # Trust no solver blindly: GLPK once returned an "optimal" point that
    # broke a row by 4 (on a model with 1e-18 coefficients, now dropped).
    violation = model.max_violation(x)
    if violation > MAX_VIOLATION:
      status, raw = ERROR, f"{raw} (returned point violates the model by " \
                           f"{violation:.3g})"
  objective = (model.objective(x) if x is not None and status != ERROR
               else None)
  if bound is not None and math.isfinite(bound):
    bound = float(bound + model.objective_offset)
  elif status == OPTIMAL and objective is not None:
    bound = objective
  else:
    bound = None
  if status == ERROR:
    bound = None
  return SolveResult(solver, status, raw, x, objective, bound, seconds,
                     float(time_limit), float(mip_gap), violation)


# ------------------------------------------------------------------- HiGHS
def _solve_highs(model, time_limit, mip_gap, start, threads, verbose,
                 options):
  import highspy  # pylint: disable=g-import-not-at-top
  h = highspy.Highs()
  h.setOptionValue("output_flag", bool(verbose))
  h.setOptionValue("time_limit", float(time_limit))
  h.setOptionValue("mip_rel_gap", float(mip_gap))
  # No `threads`: HiGHS's scheduler is process-global, and once it exists
  # (any earlier HiGHS solve in this process, e.g. a verification MILP) a
  # different thread count makes run() fail with status 'Not Set'.
  del threads
  h.setOptionValue("random_seed", 0)
  for key, value in options.items():
    h.setOptionValue(key, value)
  lp = _highs_lp_data(model)
  if model.num_integer:
    lp.integrality_ = [highspy.HighsVarType.kInteger if i else
                       highspy.HighsVarType.kContinuous
                       for i in model.integer]
  h.passModel(lp)
  if start is not None:
    sol = highspy.HighsSolution()
    sol.col_value = np.asarray(start, float).tolist()
    sol.value_valid = True
    h.setSolution(sol)
  h.run()
  ms = h.getModelStatus()
  raw = h.modelStatusToString(ms)
  info = h.getInfo()
  has_x = info.primal_solution_status == 2  # kSolutionStatusFeasible
  x = np.asarray(h.getSolution().col_value, float) if has_x else None
  bound = info.mip_dual_bound if model.num_integer else (
      info.objective_function_value if has_x else None)
  S = highspy.HighsModelStatus
  if ms == S.kOptimal:
    status = OPTIMAL
  elif ms == S.kInfeasible:
    status = INFEASIBLE
  elif ms in (S.kTimeLimit, S.kInterrupt, S.kIterationLimit,
              S.kSolutionLimit):
    status = TIME_LIMIT if has_x else NO_SOLUTION
  else:
    status = ERROR
  return status, raw, x, bound


def _highs_lp_data(model: MilpModel):
  """HighsLp of the model's rows, columns and cost (no integrality)."""
  import highspy  # pylint: disable=g-import-not-at-top
  a = model.matrix().tocsc()
  lp = highspy.HighsLp()
  lp.num_col_ = model.num_vars
  lp.num_row_ = model.num_rows
  lp.col_cost_ = np.asarray(model.cost, float)
  lp.col_lower_ = np.asarray(model.lb, float)
  lp.col_upper_ = np.asarray(model.ub, float)
  lp.row_lower_ = np.asarray(model.row_lower, float)
  lp.row_upper_ = np.asarray(model.row_upper, float)
  lp.a_matrix_.format_ = highspy.MatrixFormat.kColwise
  lp.a_matrix_.start_ = a.indptr.astype(np.int32)
  lp.a_matrix_.index_ = a.indices.astype(np.int32)
  lp.a_matrix_.value_ = a.data.astype(float)
  lp.a_matrix_.num_col_ = model.num_vars
  lp.a_matrix_.num_row_ = model.num_rows
  return lp


def highs_lp(model: MilpModel):
  """A HiGHS object holding the LP relaxation of `model` (integrality
  dropped), for repeated solves with changed column bounds."""
  import highspy  # pylint: disable=g-import-not-at-top
  h = highspy.Highs()
  h.setOptionValue("output_flag", False)
  h.setOptionValue("random_seed", 0)
  lp = _highs_lp_data(model)
  h.passModel(lp)
  return h


def highs_lp_solve(h, lb: np.ndarray, ub: np.ndarray,
                   time_limit: float) -> np.ndarray | None:
  """Re-solves the LP held by `h` (see `highs_lp`) with new column bounds;
  the optimal x, or None if HiGHS did not prove an LP optimum."""
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
def _solve_scip(model, time_limit, mip_gap, start, threads, verbose,
                options):
  import pyscipopt  # pylint: disable=g-import-not-at-top
  m = pyscipopt.Model()
  if not verbose:
    m.hideOutput()
  m.setParam("limits/time", float(time_limit))
  m.setParam("limits/gap", float(mip_gap))
  m.setParam("randomization/randomseedshift", 0)
  for key, value in options.items():
    m.setParam(key, value)
  inf = m.infinity()
  xs = []
  for j in range(model.num_vars):
    lb = model.lb[j] if math.isfinite(model.lb[j]) else -inf
    ub = model.ub[j] if math.isfinite(model.ub[j]) else inf
    xs.append(m.addVar(f"x{j}", vtype="I" if model.integer[j] else "C",
                       lb=lb, ub=ub, obj=model.cost[j]))
  a = model.matrix()
  for r in range(model.num_rows):
    lo, up = model.row_lower[r], model.row_upper[r]
    start_, end = a.indptr[r], a.indptr[r + 1]
    expr = pyscipopt.quicksum(v * xs[c] for c, v in
                              zip(a.indices[start_:end], a.data[start_:end]))
    if lo == up:
      m.addCons(expr == lo)
    else:
      if math.isfinite(lo):
        m.addCons(expr >= lo)
      if math.isfinite(up):
        m.addCons(expr <= up)
  if start is not None:
    sol = m.createSol()
    for var, value in zip(xs, np.asarray(start, float)):
      m.setSolVal(sol, var, float(value))
    m.addSol(sol, free=True)
  m.optimize()
  raw = m.getStatus()
  has_x = m.getNSols() > 0
  x = None
  if has_x:
    best = m.getBestSol()
    x = np.array([m.getSolVal(best, v) for v in xs], float)
  bound = m.getDualbound()
  if raw == "optimal" or (raw == "gaplimit" and has_x):
    status = OPTIMAL  # gaplimit: proven within the requested relative gap
  elif raw == "infeasible":
    status = INFEASIBLE
  elif raw in ("timelimit", "userinterrupt", "nodelimit", "totalnodelimit",
               "stallnodelimit", "memlimit", "sollimit", "bestsollimit",
               "restartlimit"):
    status = TIME_LIMIT if has_x else NO_SOLUTION
  else:
    status = ERROR
  return status, raw, x, bound


# ----------------------------------------------------------------- GLPK_MI
def _solve_glpk(model, time_limit, mip_gap, start, threads, verbose,
                options):
  del mip_gap, start, threads, options  # GLPK via cvxopt takes no start
  import cvxopt  # pylint: disable=g-import-not-at-top
  from cvxopt import glpk  # pylint: disable=g-import-not-at-top
  # cvxopt's ilp wants G x <= h and A x = b; fold bounds and two-sided rows.
  a = model.matrix().tocoo()
  rows_g, cols_g, vals_g, h = [], [], [], []
  rows_e, cols_e, vals_e, b = [], [], [], []
  by_row = [[] for _ in range(model.num_rows)]
  for r, c, v in zip(a.row, a.col, a.data):
    by_row[r].append((c, v))
  for r, entries in enumerate(by_row):
    lo, up = model.row_lower[r], model.row_upper[r]
    if lo == up:
      for c, v in entries:
        rows_e.append(len(b)); cols_e.append(c); vals_e.append(v)
      b.append(lo)
      continue
    if math.isfinite(up):
      for c, v in entries:
        rows_g.append(len(h)); cols_g.append(c); vals_g.append(v)
      h.append(up)
    if math.isfinite(lo):
      for c, v in entries:
        rows_g.append(len(h)); cols_g.append(c); vals_g.append(-v)
      h.append(-lo)
  for j in range(model.num_vars):
    if math.isfinite(model.ub[j]):
      rows_g.append(len(h)); cols_g.append(j); vals_g.append(1.0)
      h.append(model.ub[j])
    if math.isfinite(model.lb[j]):
      rows_g.append(len(h)); cols_g.append(j); vals_g.append(-1.0)
      h.append(-model.lb[j])
  n = model.num_vars
  g = cvxopt.spmatrix([float(v) for v in vals_g], [int(r) for r in rows_g],
                      [int(c) for c in cols_g], (len(h), n))
  hh = cvxopt.matrix(np.asarray(h, float))
  if b:
    aa = cvxopt.spmatrix([float(v) for v in vals_e], [int(r) for r in rows_e],
                         [int(c) for c in cols_e], (len(b), n))
    bb = cvxopt.matrix(np.asarray(b, float))
  else:
    aa = cvxopt.spmatrix([], [], [], (0, n))
    bb = cvxopt.matrix(np.zeros((0, 1)))
  c = cvxopt.matrix(np.asarray(model.cost, float))
  integer = {int(j) for j, i in enumerate(model.integer) if i}
  options = {"msg_lev": "GLP_MSG_ALL" if verbose else "GLP_MSG_OFF",
             "tm_lim": int(max(1, round(time_limit * 1000))),
             "presolve": "GLP_ON"}
  # No relative-gap stop for GLPK: cvxopt reports a gap stop and a time-limit
  # stop alike as "feasible", so GLPK must prove optimality outright.
  raw, x = glpk.ilp(c, g, hh, aa, bb, integer, set(), options=options)
  x = None if x is None else np.asarray(x, float).ravel()
  # cvxopt says "optimal" only when glp_intopt finished and glp_mip_status is
  # GLP_OPT; a time-limit stop with an incumbent is "feasible".
  if raw == "optimal":
    status = OPTIMAL
  elif raw in ("infeasible problem", "LP relaxation is primal infeasible"):
    status = INFEASIBLE
  elif raw == "feasible":  # stopped (time limit) with an integer incumbent
    status = TIME_LIMIT if x is not None else NO_SOLUTION
  elif raw == "undefined":  # stopped before any integer solution; cvxopt
    status, x = NO_SOLUTION, None  # still hands back a meaningless x
  else:
    status = ERROR
  return status, raw, x, None
