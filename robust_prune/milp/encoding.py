"""The ReLU big-M encoding (paper eq. 2-5, 7; Fischetti & Jo; Tjeng et al.).

One function, `relu_big_m`, used by the verification MILP (the pruning MILP
writes its scored rows directly on `standard_form.MilpModel`): given the affine
cvxpy expression of a layer's pre-activations `pre` and sound bounds
`lower <= pre <= upper`, it returns the post-activation expression and the
constraints that make it equal `max(pre, 0)` exactly.

Neurons are split by their bounds, because only unstable ones need a binary:
  * stable inactive (upper <= 0):  post = 0            (no variable at all)
  * stable active   (lower >= 0):  post = pre          (no variable at all)
  * unstable (lower < 0 < upper):  continuous z in [0, upper], binary v, and
        z >= pre                      (eq. 2; eq. 3 is the variable bound)
        z <= upper * v                (eq. 4, big-M from the upper bound)
        z <= pre - lower * (1 - v)    (eq. 5, big-M from the lower bound)
  with per-neuron big-M constants, so tighter bounds mean a tighter LP
  relaxation as well as fewer binaries.
`all_binary=True` encodes every neuron as unstable (the naive formulation of
the Kolter & Madry tutorial, kept for benchmarks and tests).
"""

from __future__ import annotations

import dataclasses

import cvxpy as cp
import numpy as np
import scipy.sparse as sp


@dataclasses.dataclass(frozen=True)
class NeuronPhases:
  """Indices of the stable-inactive, stable-active and unstable neurons."""

  inactive: np.ndarray
  active: np.ndarray
  unstable: np.ndarray

  @classmethod
  def from_bounds(cls, lower, upper, all_binary: bool = False):
    lower, upper = np.asarray(lower), np.asarray(upper)
    if all_binary:
      every = np.arange(len(lower))
      return cls(np.array([], int), np.array([], int), every)
    return cls(np.flatnonzero(upper <= 0), np.flatnonzero(lower >= 0),
               np.flatnonzero((lower < 0) & (upper > 0)))


@dataclasses.dataclass(frozen=True)
class ReluEncoding:
  post: cp.Expression             # (n,) affine: equals relu(pre) on feasible points
  constraints: list
  z: cp.Variable | None           # post-activations of the unstable neurons
  v: cp.Variable | None           # their binaries (1 = active)
  phases: NeuronPhases

  @property
  def num_binaries(self) -> int:
    return 0 if self.v is None else self.v.size


def scatter(indices: np.ndarray, size: int) -> sp.csr_matrix:
  """(size, len(indices)) 0/1 matrix placing a short vector at `indices`."""
  k = len(indices)
  return sp.csr_matrix((np.ones(k), (indices, np.arange(k))), shape=(size, k))


def relu_big_m(pre: cp.Expression, lower, upper, *, all_binary: bool = False,
               name: str = "") -> ReluEncoding:
  """Exact MILP encoding of `relu(pre)` given sound bounds of `pre` (the
  paper's eq. 2-5 and 7: z >= pre, z >= 0, z <= u v, z <= pre - l (1 - v), v
  binary; Fischetti & Jo 2017, Tjeng et al. 2019).

  Vectorised: one cvxpy constraint per inequality family, never per neuron.
  For `all_binary`, bounds must still be sound (they become the big-Ms); a
  stable neuron then simply gets a binary it does not need.
  """
  lower = np.asarray(lower, np.float64)
  upper = np.asarray(upper, np.float64)
  n = lower.shape[0]
  phases = NeuronPhases.from_bounds(lower, upper, all_binary)
  parts, constraints, z, v = [], [], None, None
  if phases.active.size:
    parts.append(scatter(phases.active, n) @ pre[phases.active])
  if phases.unstable.size:
    idx = phases.unstable
    l, u = lower[idx], np.maximum(upper[idx], 0.0)
    z = cp.Variable(idx.size, name=f"z{name}", bounds=[np.zeros(idx.size), u])
    v = cp.Variable(idx.size, name=f"v{name}", boolean=True)
    pre_u = pre[idx]
    constraints += [
        z >= pre_u,
        z <= cp.multiply(u, v),
        z <= pre_u - cp.multiply(l, 1 - v),
    ]
    parts.append(scatter(idx, n) @ z)
  post = sum(parts[1:], parts[0]) if parts else cp.Constant(np.zeros(n))
  return ReluEncoding(post, constraints, z, v, phases)
