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
import time

import cvxpy as cp
import numpy as np

from robust_prune.milp import model as model_lib
from robust_prune.milp import solvers as solvers_lib
from robust_prune.milp import standard_form
from robust_prune.network import Network

CUTOFF = 1e-5
MIN_SOLVE_SECONDS = 0.1
SKIPPED = "skipped"
# Seconds per weight entry that the model keeps, to build and compile it
# (cvxpy): measured on mnistfc 256x4 on a loaded 2-core machine (700
# unstable neurons, 35 s); updated by every build in the process. A build
# cannot be interrupted, so one not expected to fit in half the step's time
# is not started.
_BUILD = {"seconds_per_entry": 7.5e-5}


def _model_entries(network: Network, layer_bounds) -> int:
  """Weight entries feeding the neurons that are not always inactive."""
  entries, fan_in = 0, network.input_dim
  for lower, upper in zip(layer_bounds.lowers[:-1], layer_bounds.uppers[:-1]):
    entries += fan_in * int(np.sum(upper > 0))
    fan_in = len(upper)
  return entries + fan_in * network.num_classes


def expected_build_seconds(network: Network, layer_bounds) -> float:
  return _BUILD["seconds_per_entry"] * _model_entries(network, layer_bounds)


@dataclasses.dataclass(frozen=True)
class ConjunctionOutcome:
  refuted: bool
  x: np.ndarray | None        # a candidate counterexample (not re-checked)
  status: str                 # the solver layer's status
  seconds: float


def solve_conjunction(network: Network, lower, upper, layer_bounds, coeffs,
                      consts, *, deadline: float,
                      solver: str = "HIGHS") -> ConjunctionOutcome:
  """The MILP above over [lower, upper], given sound layer bounds, built and
  solved by `deadline` (time.monotonic(); the build counts)."""
  start = time.monotonic()
  if expected_build_seconds(network, layer_bounds) > 0.5 * (deadline - start):
    return ConjunctionOutcome(False, None, SKIPPED, 0.0)
  model = model_lib.build_model(network, lower, upper, layer_bounds)
  s = cp.Variable(name="s")
  rows = np.atleast_2d(np.asarray(coeffs, np.float64))
  consts = np.asarray(consts, np.float64).reshape(-1)
  problem = cp.Problem(cp.Minimize(s), list(model.problem.constraints) + [
      s >= -(rows @ model.logits + consts)])
  milp = standard_form.compile_model(problem)
  _BUILD["seconds_per_entry"] = (time.monotonic() - start) / max(
      _model_entries(network, layer_bounds), 1)
  time_limit = deadline - time.monotonic()
  if time_limit < MIN_SOLVE_SECONDS:
    return ConjunctionOutcome(False, None, solvers_lib.NO_SOLUTION,
                              time.monotonic() - start)
  outcome = solvers_lib.solve(milp, solver, time_limit=time_limit,
                              cutoff=CUTOFF, stop_at_first=True,
                              useful_below=0.0)
  refuted = outcome.best_bound is not None and outcome.best_bound > 0
  x = None
  if (outcome.x is not None and outcome.objective is not None
      and outcome.objective <= 0):
    x = np.clip(outcome.x[milp.columns(model.x)], lower, upper)
  return ConjunctionOutcome(bool(refuted), x, outcome.status,
                            time.monotonic() - start)
