"""MILPs over ReLU MLPs: exact verification (paper eq. 1-9), plus the standard
form and the native solver layer shared with pruning.

  encoding.py   the ReLU big-M encoding (binaries only for unstable neurons)
  model.py      network + box + bounds -> one cvxpy problem (bounds use)
  objective.py  the margin objective as a cvxpy Parameter (eq. 1)
  standard_form.py  the rows and columns every MILP reaches a solver as
                built row by row (pruning) or compiled from cvxpy (verification)
  solvers.py    solve(): SCIP / HiGHS / GLPK_MI, honest statuses, re-checked points
  statuses.py   the outcome statuses, gaps and tolerances every backend shares
  backends.py   the native calls (highspy, pyscipopt, cvxopt.glpk)
  verify.py     moved to robust_prune.verify (kept as a re-export)
"""

from robust_prune.milp.encoding import NeuronPhases, ReluEncoding, relu_big_m
from robust_prune.milp.model import VerificationModel, build_model
from robust_prune.milp.solvers import (SOLVERS, SolverUnavailableError,
                                       check_solver, installed_solvers, solve)
from robust_prune.milp.standard_form import (CompiledMilp, MilpModel,
                                             compile_model)
