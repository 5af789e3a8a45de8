"""What one verification run is asked to do, and the cascade's tolerances."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from robust_prune.verify.records import MODES, STATUSES  # pylint: disable=unused-import

BOX_TOLERANCE = 1e-6      # a witness may leave the box by solver feasibility tol
# min_distortion asks for margin <= -MIN_DISTORTION_MARGIN so that the witness
# at the optimal radius is strictly adversarial under a float forward pass.
MIN_DISTORTION_MARGIN = 1e-4
# Certify mode's MILP asks for a point with margin below this: a solver's
# "nothing below the cutoff" holds only up to its tolerances (~1e-6), so a
# cutoff a little above 0 makes that answer a proof of margin >= 0.
CERTIFY_CUTOFF = 1e-5


@dataclasses.dataclass(frozen=True)
class VerifyConfig:
  delta: float
  mode: str = "targeted"
  solver: str = "HIGHS"
  time_limit: float = 60.0
  bounds: str = "crown"
  pgd_steps: int = 50        # certify pre-pass / targeted warm start (0: off)
  pgd_restarts: int = 2
  pgd_seed: int = 0
  all_binary: bool = False   # naive formulation (benchmarks only)
  warm_start: bool = True    # targeted: PGD point as MIP start
  bab_time_limit: float = 20.0  # certify/targeted: seconds of alpha/beta-CROWN
                                # branch and bound per target before the MILP
                                # (0: MILP only)


@dataclasses.dataclass(frozen=True)
class ImageProblem:
  """One image's verification problem: the box around it and its bounds."""

  network: Any            # robust_prune.network.Network
  image: np.ndarray       # float64, flattened
  label: int
  lower: np.ndarray       # the input box
  upper: np.ndarray
  layer_bounds: Any       # robust_prune.bounds.LayerBounds
