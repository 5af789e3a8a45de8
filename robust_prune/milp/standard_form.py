"""The one form every MILP here reaches a solver in, and two ways to get it.

    min c.x + offset   s.t.  row_lower <= A x <= row_upper,
                             col_lower <= x <= col_upper,
                             x_j integer where integer[j]

`MilpModel` builds it row by row (the pruning MILP, whose rows are easier
to write down one neuron at a time); `compile_model` gets it from a cvxpy
problem whose cost is a Parameter (the verification MILP: nine targets share
one compiled matrix, and re-costing takes about a millisecond).
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import cvxpy as cp
import numpy as np
import scipy.sparse as sp

# A point the solver returns that breaks a row or bound by more than this is
# not trusted (solver tolerances are 1e-6 to 1e-9).
MAX_VIOLATION = 1e-4


@dataclasses.dataclass(frozen=True)
class StandardForm:
  """Rows and columns of a MILP; the cost travels separately, so one form
  serves several objectives."""

  a: sp.csr_matrix
  row_lower: np.ndarray
  row_upper: np.ndarray
  col_lower: np.ndarray
  col_upper: np.ndarray
  integer: np.ndarray  # bool per column

  @property
  def num_cols(self) -> int:
    return self.a.shape[1]

  @property
  def num_rows(self) -> int:
    return self.a.shape[0]

  def max_violation(self, x: np.ndarray) -> float:
    """Largest row, bound or integrality violation of x (0 if feasible)."""
    x = np.asarray(x, float)
    ax = self.a @ x
    viol = [np.max(self.col_lower - x, initial=0.0),
            np.max(x - self.col_upper, initial=0.0),
            np.max(self.row_lower - ax, initial=0.0),
            np.max(ax - self.row_upper, initial=0.0)]
    if self.integer.any():
      xi = x[self.integer]
      viol.append(np.max(np.abs(xi - np.round(xi))))
    return float(max(viol))


@dataclasses.dataclass
class MilpModel:
  """A MILP built incrementally: variables with bounds and costs, then rows
  `lower <= sum vals * x[cols] <= upper`."""

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
  _form: StandardForm | None = None

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
    self._form = None
    first = self.num_vars
    self.cost.extend(np.broadcast_to(np.asarray(cost, float), (n,)).tolist())
    self.lb.extend(np.broadcast_to(np.asarray(lb, float), (n,)).tolist())
    self.ub.extend(np.broadcast_to(np.asarray(ub, float), (n,)).tolist())
    self.integer.extend([bool(integer)] * n)
    return np.arange(first, first + n)

  def add_row(self, cols: Sequence[int], vals: Sequence[float], lower: float,
              upper: float):
    """lower <= sum vals * x[cols] <= upper (use +-inf for one-sided)."""
    self._form = None
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

  def form(self) -> StandardForm:
    """The rows and columns so far (cached until the next addition)."""
    if self._form is None:
      if self._rows:
        a = sp.csr_matrix(
            (np.concatenate(self._vals),
             (np.concatenate(self._rows), np.concatenate(self._cols))),
            shape=(self.num_rows, self.num_vars))
      else:
        a = sp.csr_matrix((0, self.num_vars))
      self._form = StandardForm(
          a, np.asarray(self.row_lower, float),
          np.asarray(self.row_upper, float), np.asarray(self.lb, float),
          np.asarray(self.ub, float), np.asarray(self.integer, bool))
    return self._form

  def cost_vector(self) -> tuple[np.ndarray, float]:
    return np.asarray(self.cost, float), float(self.objective_offset)

  def objective(self, x: np.ndarray) -> float:
    return float(np.dot(self.cost, x) + self.objective_offset)

  def max_violation(self, x: np.ndarray) -> float:
    return self.form().max_violation(x)


@dataclasses.dataclass
class CompiledMilp:
  """The standard form of one cvxpy MILP; the cost depends on the problem's
  Parameters and is read afresh by `cost_vector`."""

  problem: cp.Problem
  form_: StandardForm
  var_cols: dict  # cvxpy variable id -> first column
  # Solver objects built from the form, kept across re-costed solves.
  native: dict = dataclasses.field(default_factory=dict)

  def form(self) -> StandardForm:
    return self.form_

  @property
  def num_cols(self) -> int:
    return self.form_.num_cols

  def cost_vector(self) -> tuple[np.ndarray, float]:
    """(c, offset) for the problem's current Parameter values. Only the cost
    is refreshed: a Parameter inside constraints needs a new compile_model."""
    data, _, _ = self.problem.get_problem_data(cp.HIGHS)
    _, offset, _, _ = data["param_prob"].apply_parameters()
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
  """cvxpy's own compilation (equalities first, then `<=` rows)."""
  data, _, _ = problem.get_problem_data(cp.HIGHS)
  num_eq = int(data["dims"].zero)
  a = sp.csr_matrix(data["A"], dtype=np.float64)
  b = np.asarray(data["b"], np.float64)
  n = a.shape[1]
  lower, upper = data["lower_bounds"], data["upper_bounds"]
  lower = np.full(n, -np.inf) if lower is None else np.array(lower, np.float64)
  upper = np.full(n, np.inf) if upper is None else np.array(upper, np.float64)
  if len(data["int_vars_idx"]):
    raise ValueError("general integer variables are not expected here")
  binary = np.asarray(data["bool_vars_idx"], np.int64)
  lower[binary] = np.maximum(lower[binary], 0)
  upper[binary] = np.minimum(upper[binary], 1)
  integer = np.zeros(n, bool)
  integer[binary] = True
  row_lower = np.concatenate([b[:num_eq], np.full(len(b) - num_eq, -np.inf)])
  form = StandardForm(a, row_lower, b, lower, upper, integer)
  return CompiledMilp(problem, form, dict(data["param_prob"].var_id_to_col))
