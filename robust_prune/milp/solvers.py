"""Solving a compiled verification MILP with SCIP, HiGHS or GLPK_MI natively.

cvxpy builds and compiles the problem once (`compile_model`): rows
`A[:num_eq] x == b[:num_eq]`, `A[num_eq:] x <= b[num_eq:]`, column bounds and
the binary columns. Re-setting the objective Parameter and recompiling costs
about a millisecond, so nine targets share one compiled matrix.

The solvers are then called through their own APIs, not through
`problem.solve`, because cvxpy hides what a proof needs: the solver's own
termination status and its dual (best) bound. In particular cvxpy maps a
time-limited GLPK run (cvxopt status 'feasible') and a time-limited SCIP run
to a solution, which is how an unproven incumbent ends up reported as an
optimum. Here every outcome carries the solver's raw status and only
`proven_optimal` / `proven_infeasible` are proofs.

Time limits: SCIP `limits/time` (s), HiGHS `time_limit` (s), GLPK `tm_lim`
(ms, integer).
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
import time

import cvxpy as cp
import numpy as np
import scipy.sparse as sp

SOLVERS = ("SCIP", "HIGHS", "GLPK_MI")
# Relative/absolute optimality gaps: tight enough that optima agree to 1e-4.
MIP_GAP = 1e-6


class SolverUnavailableError(ValueError):
  pass


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


@dataclasses.dataclass
class SolveOutcome:
  solver_status: str          # the solver's own status, verbatim
  proven_optimal: bool        # objective is a proven optimum (within MIP_GAP)
  proven_infeasible: bool     # no point below the cutoff / no feasible point
  objective: float | None     # best incumbent (None if none)
  best_bound: float | None    # proven lower bound (dual bound) if known
  x: np.ndarray | None        # incumbent's full column vector
  seconds: float
  hit_time_limit: bool = False


@dataclasses.dataclass
class CompiledMilp:
  """Standard form of one cvxpy MILP; the cost depends on the Parameter."""

  problem: cp.Problem
  a: sp.csc_matrix
  b: np.ndarray
  num_eq: int
  col_lower: np.ndarray
  col_upper: np.ndarray
  binary: np.ndarray
  var_cols: dict              # cvxpy variable id -> first column
  _native: dict = dataclasses.field(default_factory=dict)

  @property
  def num_cols(self) -> int:
    return self.a.shape[1]

  def cost(self) -> tuple[np.ndarray, float]:
    """(c, offset) for the problem's current Parameter values. Only the cost
    is refreshed: a Parameter inside constraints needs a new compile_model."""
    data, _, _ = self.problem.get_problem_data(cp.HIGHS)
    c, offset, _, _ = data["param_prob"].apply_parameters()
    return np.asarray(data["c"], np.float64), float(offset)

  def columns(self, variable: cp.Variable) -> slice:
    start = self.var_cols[variable.id]
    return slice(start, start + variable.size)

  def full_assignment(self, values: dict) -> np.ndarray:
    """Column vector from {variable: value}; missing columns are NaN."""
    x = np.full(self.num_cols, np.nan)
    for var, value in values.items():
      if var.id in self.var_cols:
        x[self.columns(var)] = np.ravel(value)
    return x


def compile_model(problem: cp.Problem) -> CompiledMilp:
  data, _, _ = problem.get_problem_data(cp.HIGHS)
  dims = data["dims"]
  n = data["A"].shape[1]
  lower = data["lower_bounds"]
  upper = data["upper_bounds"]
  lower = np.full(n, -np.inf) if lower is None else np.array(lower, np.float64)
  upper = np.full(n, np.inf) if upper is None else np.array(upper, np.float64)
  binary = np.asarray(data["bool_vars_idx"], np.int64)
  if len(data["int_vars_idx"]):
    raise ValueError("general integer variables are not expected here")
  lower[binary] = np.maximum(lower[binary], 0)
  upper[binary] = np.minimum(upper[binary], 1)
  return CompiledMilp(problem, sp.csc_matrix(data["A"], dtype=np.float64),
                      np.asarray(data["b"], np.float64), int(dims.zero),
                      lower, upper, binary,
                      dict(data["param_prob"].var_id_to_col))


# ------------------------------------------------------------------- HiGHS
def _highs_model(milp: CompiledMilp):
  import highspy  # pylint: disable=g-import-not-at-top
  h = highspy.Highs()
  h.setOptionValue("output_flag", False)
  lp = highspy.HighsLp()
  lp.num_col_, lp.num_row_ = milp.num_cols, milp.a.shape[0]
  lp.col_cost_ = np.zeros(milp.num_cols)
  lp.col_lower_, lp.col_upper_ = milp.col_lower, milp.col_upper
  lp.row_lower_ = np.concatenate(
      [milp.b[:milp.num_eq], np.full(len(milp.b) - milp.num_eq, -np.inf)])
  lp.row_upper_ = milp.b
  lp.a_matrix_.format_ = highspy.MatrixFormat.kColwise
  lp.a_matrix_.start_ = milp.a.indptr
  lp.a_matrix_.index_ = milp.a.indices
  lp.a_matrix_.value_ = milp.a.data
  integrality = np.zeros(milp.num_cols, np.int64)
  integrality[milp.binary] = 1
  lp.integrality_ = [highspy.HighsVarType(int(t)) for t in integrality]
  h.passModel(lp)
  return h


def solve_highs(milp: CompiledMilp, c, offset, *, time_limit, cutoff=None,
                stop_at_first=False, start=None, threads=1) -> SolveOutcome:
  import highspy  # pylint: disable=g-import-not-at-top
  if "HIGHS" not in milp._native:
    milp._native["HIGHS"] = _highs_model(milp)
  h = milp._native["HIGHS"]
  h.clearSolver()
  h.changeColsCost(milp.num_cols, np.arange(milp.num_cols, dtype=np.int32),
                   np.asarray(c, np.float64))
  h.changeObjectiveOffset(offset)
  h.setOptionValue("time_limit", float(time_limit))
  h.setOptionValue("mip_rel_gap", MIP_GAP)
  h.setOptionValue("mip_abs_gap", MIP_GAP)
  # (no `threads` option: HiGHS refuses a change once its scheduler exists;
  # parallelism comes from the process pool instead)
  h.setOptionValue("objective_bound", np.inf if cutoff is None else float(cutoff))
  h.setOptionValue("mip_max_improving_sols", 1 if stop_at_first else 2**31 - 1)
  if start is not None and np.all(np.isfinite(start)):
    sol = highspy.HighsSolution()
    sol.col_value = list(np.asarray(start, np.float64))
    sol.value_valid = True
    h.setSolution(sol)
  t0 = time.perf_counter()
  run_status = h.run()
  seconds = time.perf_counter() - t0
  if run_status == highspy.HighsStatus.kError:
    raise RuntimeError(f"HiGHS run failed: {h.modelStatusToString(h.getModelStatus())}")
  status = h.getModelStatus()
  name = h.modelStatusToString(status)
  info = h.getInfo()
  has_sol = info.primal_solution_status == 2  # kSolutionStatusFeasible
  objective = info.objective_function_value if has_sol else None
  bound = info.mip_dual_bound
  bound = float(bound) if np.isfinite(bound) else None
  optimal = status == highspy.HighsModelStatus.kOptimal
  infeasible = status in (highspy.HighsModelStatus.kInfeasible,
                          highspy.HighsModelStatus.kObjectiveBound)
  if infeasible and cutoff is not None:
    bound = float(cutoff) if bound is None else max(bound, float(cutoff))
  if optimal and objective is not None:
    bound = objective if bound is None else min(max(bound, -np.inf), objective)
  return SolveOutcome(
      name, optimal and objective is not None, infeasible, objective, bound,
      np.array(h.getSolution().col_value) if has_sol else None, seconds,
      status == highspy.HighsModelStatus.kTimeLimit)


# ------------------------------------------------------------------- SCIP
def _scip_model(milp: CompiledMilp):
  """SCIP model read from an MPS file written by HiGHS (C code both ways:
  much faster than adding 100k coefficients through Python)."""
  import pyscipopt  # pylint: disable=g-import-not-at-top
  h = milp._native.get("HIGHS") or _highs_model(milp)
  milp._native.setdefault("HIGHS", h)
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
  if len(names) == milp.num_cols:
    variables = [by_name[str(nm)] for nm in names]
  else:
    variables = [by_name[f"c{j}"] for j in range(milp.num_cols)]
  return model, variables


def solve_scip(milp: CompiledMilp, c, offset, *, time_limit, cutoff=None,
               stop_at_first=False, start=None, threads=1) -> SolveOutcome:
  del threads  # SCIP's default build is single-threaded
  if "SCIP" not in milp._native:
    milp._native["SCIP"] = _scip_model(milp)
  model, variables = milp._native["SCIP"]
  import pyscipopt  # pylint: disable=g-import-not-at-top
  model.freeTransform()
  c = np.asarray(c, np.float64)
  nonzero = np.flatnonzero(c)
  model.setObjective(pyscipopt.quicksum(float(c[j]) * variables[j] for j in nonzero),
                     "minimize", clear=True)
  model.setParam("limits/time", float(time_limit))
  model.setParam("limits/gap", MIP_GAP)
  model.setParam("limits/absgap", MIP_GAP)
  model.setParam("limits/solutions", 1 if stop_at_first else -1)
  model.setObjlimit(1e20 if cutoff is None else float(cutoff) - offset)
  if start is not None and np.all(np.isfinite(start)):
    sol = model.createPartialSol()
    for var, value in zip(variables, start):
      model.setSolVal(sol, var, float(value))
    model.addSol(sol)
  t0 = time.perf_counter()
  model.optimize()
  seconds = time.perf_counter() - t0
  status = model.getStatus()
  has_sol = model.getNSols() > 0
  best = model.getBestSol() if has_sol else None
  objective = model.getSolObjVal(best) + offset if has_sol else None
  x = np.array([model.getSolVal(best, v) for v in variables]) if has_sol else None
  bound = model.getDualbound()
  bound = float(bound) + offset if abs(bound) < 1e19 else None
  optimal = status == "optimal" or (status == "gaplimit" and has_sol)
  infeasible = status == "infeasible"
  if infeasible and cutoff is not None:
    bound = float(cutoff) if bound is None else max(bound, float(cutoff))
  return SolveOutcome(status, optimal and has_sol, infeasible, objective, bound,
                      x, seconds, status == "timelimit")


# ------------------------------------------------------------------- GLPK
def _glpk_data(milp: CompiledMilp):
  import cvxopt  # pylint: disable=g-import-not-at-top
  a = milp.a.tocsr()
  eq, leq = a[:milp.num_eq], a[milp.num_eq:]
  # cvxopt's GLPK takes no column bounds: finite ones become rows of G.
  n = milp.num_cols
  has_up = np.flatnonzero(np.isfinite(milp.col_upper))
  has_lo = np.flatnonzero(np.isfinite(milp.col_lower))
  g = sp.vstack([leq, sp.csr_matrix((np.ones(len(has_up)), (np.arange(len(has_up)), has_up)), shape=(len(has_up), n)),
                 sp.csr_matrix((-np.ones(len(has_lo)), (np.arange(len(has_lo)), has_lo)), shape=(len(has_lo), n))]).tocoo()
  h = np.concatenate([milp.b[milp.num_eq:], milp.col_upper[has_up],
                      -milp.col_lower[has_lo]])

  def spmatrix(m):
    m = m.tocoo()
    return cvxopt.spmatrix(m.data.tolist(), m.row.tolist(), m.col.tolist(),
                           size=m.shape)

  eq_args = (spmatrix(eq), cvxopt.matrix(milp.b[:milp.num_eq])) if milp.num_eq else (None, None)
  return spmatrix(g), cvxopt.matrix(h), eq_args


def solve_glpk(milp: CompiledMilp, c, offset, *, time_limit, cutoff=None,
               stop_at_first=False, start=None, threads=1) -> SolveOutcome:
  """GLPK through cvxopt: only status 'optimal' is a proof; 'feasible' is a
  time-limited incumbent and 'undefined' means no solution at all. cvxopt
  exposes no dual bound, so best_bound stays None unless proven optimal."""
  del stop_at_first, start, threads  # not supported by cvxopt's interface
  import cvxopt  # pylint: disable=g-import-not-at-top
  import cvxopt.glpk  # pylint: disable=g-import-not-at-top
  if "GLPK_MI" not in milp._native:
    milp._native["GLPK_MI"] = _glpk_data(milp)
  g, h, (a, b) = milp._native["GLPK_MI"]
  options = {"msg_lev": "GLP_MSG_OFF", "mip_gap": MIP_GAP,
             "tm_lim": max(1, int(round(1000 * float(time_limit))))}
  t0 = time.perf_counter()
  status, x = cvxopt.glpk.ilp(cvxopt.matrix(np.asarray(c, np.float64)), g, h,
                              a, b, set(), set(int(i) for i in milp.binary),
                              options=options)
  seconds = time.perf_counter() - t0
  has_sol = status in ("optimal", "feasible") and x is not None
  x = np.array(x).ravel() if has_sol else None
  objective = float(np.dot(c, x) + offset) if has_sol else None
  optimal = status == "optimal"
  infeasible = status in ("infeasible problem", "LP relaxation is primal infeasible")
  bound = objective if optimal else None
  if cutoff is not None and objective is not None and objective >= cutoff and optimal:
    infeasible = True
  return SolveOutcome(status, optimal, infeasible, objective, bound, x, seconds,
                      status == "feasible" or (status == "undefined"
                                               and seconds >= 0.9 * float(time_limit)))


SOLVE_FUNCTIONS = {"SCIP": solve_scip, "HIGHS": solve_highs, "GLPK_MI": solve_glpk}


def solve(milp: CompiledMilp, solver: str, *, time_limit: float, cutoff=None,
          stop_at_first=False, start=None, threads=1) -> SolveOutcome:
  """Minimises the problem's current objective with `solver`.

  cutoff: only points with objective < cutoff are of interest (certify mode:
    0); a proven-infeasible outcome then proves objective >= cutoff.
  stop_at_first: stop at the first incumbent (below the cutoff).
  start: a full column vector used as a MIP start (HiGHS, SCIP).
  """
  c, offset = milp.cost()
  function = SOLVE_FUNCTIONS[check_solver(solver)]
  outcome = function(milp, c, offset, time_limit=time_limit, cutoff=cutoff,
                     stop_at_first=stop_at_first, start=start, threads=threads)
  stopped_early = stop_at_first and not (
      outcome.proven_optimal or outcome.proven_infeasible
      or outcome.hit_time_limit)
  if stopped_early and (outcome.objective is None or cutoff is None
                        or outcome.objective >= cutoff):
    # The solution limit fired on a point that is no use (HiGHS and SCIP may
    # keep incumbents above the cutoff): go on without it, in the time left.
    remaining = max(float(time_limit) - outcome.seconds, 0.01)
    again = function(milp, c, offset, time_limit=remaining, cutoff=cutoff,
                     stop_at_first=False, start=start, threads=threads)
    again.seconds += outcome.seconds
    return again
  return outcome
