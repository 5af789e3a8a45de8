"""One MILP for a whole conjunction of output rows: is there an input in the
box with `g_r(f(x)) >= 0` for every row r?

It minimises `s` subject to `s >= -g_r(f(x))` for every row (the network
exactly, by the project's big-M encoding), so `min s > 0` proves the
conjunction infeasible. As in certify mode, the solver runs with a cutoff a
little above 0 and stops at its first point below 0: a proven "nothing below
the cutoff" refutes the conjunction despite the solver's tolerances, and a
point is a candidate counterexample that the caller re-checks.
"""

from __future__ import annotations

import dataclasses

import cvxpy as cp
import numpy as np

from robust_prune.milp import model as model_lib
from robust_prune.milp import solvers as solvers_lib
from robust_prune.milp import standard_form
from robust_prune.network import Network

CUTOFF = 1e-5


@dataclasses.dataclass(frozen=True)
class ConjunctionOutcome:
  refuted: bool
  x: np.ndarray | None        # a candidate counterexample (not re-checked)
  status: str                 # the solver layer's status
  seconds: float


def solve_conjunction(network: Network, lower, upper, layer_bounds, coeffs,
                      consts, *, time_limit: float,
                      solver: str = "HIGHS") -> ConjunctionOutcome:
  """The MILP above over [lower, upper], given sound layer bounds."""
  model = model_lib.build_model(network, lower, upper, layer_bounds)
  s = cp.Variable(name="s")
  rows = np.atleast_2d(np.asarray(coeffs, np.float64))
  consts = np.asarray(consts, np.float64).reshape(-1)
  problem = cp.Problem(cp.Minimize(s), list(model.problem.constraints) + [
      s >= -(rows @ model.logits + consts)])
  milp = standard_form.compile_model(problem)
  outcome = solvers_lib.solve(milp, solver, time_limit=max(time_limit, 0.01),
                              cutoff=CUTOFF, stop_at_first=True,
                              useful_below=0.0)
  refuted = outcome.best_bound is not None and outcome.best_bound > 0
  x = None
  if (outcome.x is not None and outcome.objective is not None
      and outcome.objective <= 0):
    x = np.clip(outcome.x[milp.columns(model.x)], lower, upper)
  return ConjunctionOutcome(bool(refuted), x, outcome.status, outcome.seconds)
