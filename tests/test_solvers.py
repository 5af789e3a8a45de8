"""The one native solver layer against brute force on a tiny mixed MILP."""

import itertools

import numpy as np
import pytest

from robust_prune.milp import solvers
from robust_prune.milp import standard_form

ALL_SOLVERS = solvers.installed_solvers()


def _knapsack(seed=0, n=10):
  """min -v.x + 3 y  s.t.  y >= w.x - cap (y >= 0 continuous), 1 <= sum x
  <= n - 2, x binary; and its optimum by enumerating all 2^n choices."""
  rng = np.random.default_rng(seed)
  v = rng.integers(1, 20, n).astype(float)
  w = rng.integers(1, 20, n).astype(float)
  cap = float(w.sum() // 2)
  model = standard_form.MilpModel()
  x = model.add_vars(n, 0, 1, cost=-v, integer=True)
  y = model.add_vars(1, 0, np.inf, cost=3.0)
  model.add_row(np.r_[x, y], np.r_[w, -1.0], -np.inf, cap)
  model.add_row(x, np.ones(n), 1, n - 2)
  model.objective_offset = 0.5
  best = np.inf
  for bits in itertools.product((0.0, 1.0), repeat=n):
    b = np.asarray(bits)
    if 1 <= b.sum() <= n - 2:
      best = min(best, -v @ b + 3 * max(0.0, w @ b - cap) + 0.5)
  return model, best


@pytest.mark.parametrize("solver", ALL_SOLVERS)
@pytest.mark.parametrize("seed, time_limit", [(0, 30.0), (1, float("inf"))])
def test_optimum_matches_brute_force(solver, seed, time_limit):
  # An infinite time limit means none (SCIP and GLPK get their largest).
  model, best = _knapsack(seed)
  out = solvers.solve(model, solver, time_limit=time_limit)
  assert out.status == solvers.OPTIMAL, out.solver_status
  assert out.objective == pytest.approx(best, abs=1e-6)
  assert out.best_bound <= out.objective + 1e-9
  assert model.max_violation(out.x) <= 1e-6
  assert model.objective(out.x) == pytest.approx(out.objective)


@pytest.mark.parametrize("solver", [s for s in ("HIGHS", "SCIP")
                                    if s in ALL_SOLVERS])
def test_cutoff_below_the_optimum_proves_nothing_lies_below(solver):
  model, best = _knapsack(2)
  out = solvers.solve(model, solver, time_limit=30, cutoff=best - 1.0)
  # Either proof that nothing lies below the cutoff will do (HiGHS may
  # solve the problem in presolve and report the optimum itself).
  if out.status == solvers.INFEASIBLE:
    assert out.best_bound >= best - 1.0
  else:
    assert out.status == solvers.OPTIMAL, out.solver_status
    assert out.objective == pytest.approx(best, abs=1e-6)
  above = solvers.solve(model, solver, time_limit=30, cutoff=best + 1.0)
  assert above.status == solvers.OPTIMAL
  assert above.objective == pytest.approx(best, abs=1e-6)


@pytest.mark.parametrize("solver", [s for s in ("HIGHS", "SCIP")
                                    if s in ALL_SOLVERS])
def test_stop_at_first_returns_a_point_below_the_cutoff(solver):
  model, best = _knapsack(3)
  cutoff = best + 5.0
  out = solvers.solve(model, solver, time_limit=30, cutoff=cutoff,
                      stop_at_first=True)
  assert out.status in (solvers.SOLUTION_LIMIT, solvers.OPTIMAL)
  assert out.objective < cutoff
  assert model.max_violation(out.x) <= 1e-6


@pytest.mark.parametrize("solver", [s for s in ("HIGHS", "SCIP")
                                    if s in ALL_SOLVERS])
def test_a_feasible_start_is_used_and_never_worsened(solver):
  model, best = _knapsack(4)
  start = np.zeros(model.num_vars)
  start[0] = 1.0  # one item; y covers any overweight
  start[-1] = max(0.0, model.form().a[0].toarray()[0, 0] -
                  model.row_upper[0])
  assert model.max_violation(start) == 0
  out = solvers.solve(model, solver, time_limit=30, start=start)
  assert out.objective <= model.objective(start) + 1e-9
  assert out.objective == pytest.approx(best, abs=1e-6)


def test_non_positive_time_limit_and_unknown_solver_are_clear_errors():
  model, _ = _knapsack(0)
  with pytest.raises(solvers.SolverUnavailableError, match="time limit"):
    solvers.solve(model, "HIGHS", time_limit=0)
  with pytest.raises(solvers.SolverUnavailableError,
                     match="installed solvers: " + ", ".join(ALL_SOLVERS)):
    solvers.solve(model, "CPLEX", time_limit=1)
