"""What every solver backend shares: the outcome statuses (only OPTIMAL and
INFEASIBLE are proofs), the gaps and tolerances a proof is good to, and the
settings of one solve."""

from __future__ import annotations

import dataclasses

import numpy as np

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


@dataclasses.dataclass(frozen=True)
class SolveSettings:
  """One solve's options, as the backends take them."""

  time_limit: float
  mip_gap: float
  cutoff: float | None
  stop_at_first: bool
  start: np.ndarray | None
  options: dict
  verbose: bool


def cached(cache: dict | None, key: str, build):
  """The solver's object for the form: built once and kept in `cache` (a
  CompiledMilp's, whose targets re-cost one form), or built afresh."""
  if cache is None:
    return build()
  if key not in cache:
    cache[key] = build()
  return cache[key]
