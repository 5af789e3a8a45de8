"""What one verification run is asked to do, and the cascade's tolerances."""

from __future__ import annotations

import dataclasses
import math
import time
from typing import Any

import numpy as np

from robust_prune.bab.config import BabConfig, PROOF_ENGINES
from robust_prune.bab.refine import RefineConfig
from robust_prune.verify.records import MODES, STATUSES  # pylint: disable=unused-import

BOX_TOLERANCE = 1e-6      # a witness may leave the box by solver feasibility tol
# min_distortion asks for margin <= -MIN_DISTORTION_MARGIN so that the witness
# at the optimal radius is strictly adversarial under a float forward pass.
MIN_DISTORTION_MARGIN = 1e-4
# Certify mode's MILP asks for a point with margin below this: a solver's
# "nothing below the cutoff" holds only up to its tolerances (~1e-6), so a
# cutoff a little above 0 makes that answer a proof of margin >= 0.
CERTIFY_CUTOFF = 1e-5
# VerifyConfig.bab_final_proof's default: the budget goes to deciding (the
# report uses no time-out's bound)
FINAL_PROOF_SECONDS = 0.2


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
  # certify/targeted: seconds for all targets of one image (0: off, the
  # per-target bab_time_limit and time_limit apply). With it, the branch and
  # bound of each open target gets share = remaining / open targets left
  # (bab_time_limit and time_limit are ignored, except bab_time_limit=0,
  # which still means "no branch and bound"), the MILP what remains, in a
  # child process killed at the deadline.
  image_time_limit: float = 0.0
  # certify/targeted: the intermediate bounds the branch and bound keeps
  # for every domain: "alpha" (CROWN's, with the hidden layers after the
  # first tightened by alpha-CROWN once per image, bounds.alpha_crown_bounds;
  # on the default 300-100 net at delta 0.1: 3-19% fewer domains for
  # ~0.1-0.5 s per image), "crown", "refine": alpha's, then the later
  # layers' bounds tightened by batched proofs (bab.refine; under an image
  # budget only once a tenth of it, at most 3 s, on alpha's leaves targets
  # open, or at once when a root bound is far from a proof), or
  # "auto": refine where it was measured to pay (certify mode under an
  # image budget of AUTO_REFINE_MIN_SECONDS or more), else alpha. The MILP
  # keeps `bounds`.
  bab_intermediate: str = "auto"
  # certify/targeted: rounds of first-layer hull cuts at each branch and
  # bound's root (bab.BabConfig.cut_rounds; 0: none).
  bab_cut_rounds: int = BabConfig.cut_rounds
  # certify/targeted: rounds of facets made at each root, of which every
  # first-layer neuron keeps its bab_cut_rounds strongest
  # (bab.BabConfig.root_cut_rounds). On the 300-100 net at delta 0.1: 4
  # lifted hard roots by 0.6-1.1 at the search's cost per domain.
  bab_root_cut_rounds: int = 4
  # certify/targeted: first-layer neurons given a facet at each domain's
  # parent's vertex (bab.BabConfig.own_cuts; 0: none)
  bab_own_cuts: int = BabConfig.own_cuts
  # certify/targeted with refine: the refinement's cap in seconds (it also
  # takes at most a quarter of what the image budget has left) and its
  # rounds of side searches (bab.RefineConfig; 0: the per-side cut bounds
  # only: on the 300-100 net at delta 0.1 the side searches after them
  # proved 0-20 of ~100 sides in 1.4-3.3 s per image, see BUILD_NOTES)
  refine_seconds: float = RefineConfig.seconds
  refine_rounds: int = 0
  # certify with an image budget: seconds per target still open when the
  # budget runs out for the float64 re-proof of its open domains (the bound
  # its `timeout` record reports), kept back from the search. Domains not
  # re-proved in time count with their parents' bound: on the 300-100 net
  # at delta 0.1, image 2's eight open targets reported -12.3 to -8.8 at
  # 0.2 s and -4.2 to -0.8 at 2 s, open either way (BUILD_NOTES).
  bab_final_proof: float = FINAL_PROOF_SECONDS
  # certify/targeted: domains bounded per jitted call of the branch and
  # bound (bab.BabConfig.batch_size; its largest compiled shape) and the
  # open pool's cap in GiB (bab.BabConfig.max_pool_bytes). 512 and 2 GiB
  # suit 2 CPU cores; on an H200 GPU 4096 bounded ~6x the domains per
  # second of one CPU core, over a million in a 60 s search, where 2 GiB
  # holds ~330k open ones (BUILD_NOTES).
  bab_batch_size: int = BabConfig.batch_size
  bab_pool_gib: float = BabConfig.max_pool_bytes / 2**30
  # where the float64 proofs of closed domains run (bab.BabConfig.proofs:
  # auto, numpy or xla; auto = numpy on a CPU, XLA on a GPU)
  bab_proofs: str = BabConfig.proofs

  def __post_init__(self):
    if self.bab_intermediate not in BAB_INTERMEDIATE:
      raise ValueError(f"unknown bab_intermediate {self.bab_intermediate!r}; "
                       f"use one of {BAB_INTERMEDIATE}")
    if self.bab_cut_rounds < 0:
      raise ValueError(f"bab_cut_rounds must be >= 0, got "
                       f"{self.bab_cut_rounds}")
    if self.bab_root_cut_rounds < 0:
      raise ValueError(f"bab_root_cut_rounds must be >= 0, got "
                       f"{self.bab_root_cut_rounds}")
    if self.bab_own_cuts < 0:
      raise ValueError(f"bab_own_cuts must be >= 0, got {self.bab_own_cuts}")
    if not (math.isfinite(self.bab_final_proof)
            and self.bab_final_proof >= 0):
      raise ValueError(f"bab_final_proof must be a finite number of seconds "
                       f">= 0, got {self.bab_final_proof}")
    if self.bab_batch_size < 1:
      raise ValueError(f"bab_batch_size must be >= 1, got "
                       f"{self.bab_batch_size}")
    if not (math.isfinite(self.bab_pool_gib) and self.bab_pool_gib > 0):
      raise ValueError(f"bab_pool_gib must be a finite number of GiB > 0, "
                       f"got {self.bab_pool_gib}")
    if self.bab_proofs not in PROOF_ENGINES:
      raise ValueError(f"bab_proofs must be one of {', '.join(PROOF_ENGINES)},"
                       f" got {self.bab_proofs!r}")
    if not (self.refine_seconds >= 0 and self.refine_rounds >= 0):
      raise ValueError(f"refine_seconds must be >= 0 and refine_rounds >= 0,"
                       f" got {self.refine_seconds}, {self.refine_rounds}")

  def bab_config(self, time_limit: float) -> BabConfig:
    """The branch and bound's options for one search of this run."""
    return BabConfig(time_limit=time_limit, cut_rounds=self.bab_cut_rounds,
                     root_cut_rounds=self.bab_root_cut_rounds,
                     own_cuts=self.bab_own_cuts,
                     batch_size=self.bab_batch_size,
                     max_pool_bytes=int(self.bab_pool_gib * 2**30),
                     proofs=self.bab_proofs)

  def refine_config(self) -> RefineConfig:
    """The refinement's options (its cap before any image budget's share)."""
    return RefineConfig(seconds=self.refine_seconds, rounds=self.refine_rounds,
                        proofs=self.bab_proofs)

  @property
  def intermediate_bounds(self) -> str:
    """bab_intermediate with "auto" resolved (alpha, crown or refine)."""
    if self.bab_intermediate != "auto":
      return self.bab_intermediate
    budgeted = (self.mode == "certify"
                and self.image_time_limit >= AUTO_REFINE_MIN_SECONDS)
    return "refine" if budgeted else "alpha"


BAB_INTERMEDIATE = ("auto", "alpha", "crown", "refine")
# "auto" refines at image budgets of at least this many seconds: it gained
# at 20 s and 60 s on the 300-100 net at delta 0.1; under shorter ones (the
# ablation stage's 3 s) the refinement would get under a second, unmeasured.
AUTO_REFINE_MIN_SECONDS = 20.0


# With an image budget: a step is not started with less than this left, and
# the MILP's in-process build (cvxpy, uninterruptible; ~1-3 s on a 300-100
# net) is not started with less than MILP_MIN_SECONDS left.
MIN_STEP_SECONDS = 0.5
MILP_MIN_SECONDS = 5.0
# The branch and bound checks its time limit between batches: it is given
# its share less this (up to a quarter of the share), its usual overrun.
BAB_OVERRUN_SECONDS = 1.0


class Deadline:
  """One image's wall-clock budget; `seconds` <= 0 or inf means none."""

  def __init__(self, seconds: float, clock=time.perf_counter):
    self.seconds = float(seconds) if seconds and seconds > 0 else math.inf
    self._clock = clock
    self._end = clock() + self.seconds

  @property
  def enabled(self) -> bool:
    return math.isfinite(self.seconds)

  def remaining(self) -> float:
    return self._end - self._clock()

  def share(self, open_left: int) -> float:
    """An equal share of what remains for each of `open_left` tasks."""
    return max(self.remaining(), 0.0) / max(int(open_left), 1)

  def ran_out_message(self) -> str:
    return (f"the image budget of {self.seconds:g} s ran out (the bound is "
            f"the best proven before)")


@dataclasses.dataclass(frozen=True)
class ImageProblem:
  """One image's verification problem: the box around it and its bounds."""

  network: Any            # robust_prune.network.Network
  image: np.ndarray       # float64, flattened
  label: int
  lower: np.ndarray       # the input box
  upper: np.ndarray
  layer_bounds: Any       # robust_prune.bounds.LayerBounds
