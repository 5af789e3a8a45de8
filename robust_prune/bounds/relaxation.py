"""The linear ReLU relaxation, once, for every bound in the project.

On a neuron with pre-activation bounds [l, u]:

    low * y  <=  relu(y)  <=  up * y + shift

* stable neurons are exact: low = up = 1, shift = 0 when l >= 0;
  low = up = 0, shift = 0 when u <= 0;
* a neuron fixed by a branch-and-bound split is exact on its domain:
  split +1 (y >= 0) gives relu(y) = y, split -1 (y <= 0) gives relu(y) = 0;
* an unstable, unsplit neuron gets the chord through (l, 0) and (u, u) as
  its upper line (slope u / (u - l), shift -l u / (u - l)) and a lower line
  alpha * y with any alpha in [0, 1]; by default CROWN's adaptive choice
  (alpha = 1 when u > -l, else 0), or a given alpha (alpha-CROWN), clipped
  to [0, 1] so that every value an optimiser proposes stays sound.

Works on jax.numpy (the jitted bounds and the search) and numpy (the float64
proofs, the LP) through `xp`.
"""

from __future__ import annotations

import jax.numpy as jnp


def relu_relaxation(lower, upper, split=None, alpha=None, xp=jnp):
  """(lower slope, upper slope, upper shift) per neuron; see the module
  docstring. `split` (same shape, values -1/0/+1) and `alpha` broadcast
  against the bounds (e.g. one row per branch-and-bound domain)."""
  unstable = (lower < 0) & (upper > 0)
  active = lower >= 0
  denom = xp.where(unstable, upper - lower, 1.0)
  chord = xp.where(unstable, upper / denom, xp.where(active, 1.0, 0.0))
  shift = xp.where(unstable, -lower * upper / denom, 0.0)
  if alpha is None:
    alpha = xp.where(upper > -lower, 1.0, 0.0)
  else:
    alpha = xp.clip(alpha, 0.0, 1.0)
  if split is None:
    return xp.where(unstable, alpha, chord), chord, shift
  free = unstable & (split == 0)
  fixed = xp.where(split > 0, 1.0, xp.where(split < 0, 0.0, chord))
  return (xp.where(free, alpha, fixed), xp.where(free, chord, fixed),
          xp.where(free, shift, 0.0))
