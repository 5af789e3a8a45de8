"""The verification objective (paper eq. 1): min (e_y - e_target)^T z_out.

The objective vector is a cvxpy Parameter so that one compiled problem serves
all nine targets of an image: only the parameter's value changes.
"""

from __future__ import annotations

import cvxpy as cp
import numpy as np


def margin_vector(label: int, target: int, num_classes: int) -> np.ndarray:
  """e_label - e_target: a negative objective means the target logit wins."""
  if label == target:
    raise ValueError(f"target {target} equals the label")
  c = np.zeros(num_classes)
  c[label], c[target] = 1.0, -1.0
  return c


def margin_objective(logits: cp.Expression):
  """The paper's eq. 1, min (e_y - e_target)^T z_{d+1}: (Parameter c, cvxpy
  Minimize(c^T logits)); set c.value per target (`margin_vector`)."""
  c = cp.Parameter(logits.shape[0], name="margin")
  return c, cp.Minimize(c @ logits)


def margin(logits: np.ndarray, label: int, target: int) -> float:
  """Float margin logit[label] - logit[target] of a forward pass."""
  return float(logits[label] - logits[target])
