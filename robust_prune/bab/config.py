"""The branch and bound's options (`BabConfig`) and answer (`BabResult`)."""

from __future__ import annotations

import dataclasses

import numpy as np

# float32 values within this of a threshold get the float64 check
SLACK32 = 1e-3
# bab_minimum's default: the objective is within this of the true minimum
# (tighter than the 1e-4 to which it must agree with the MILP's optimum)
OPTIMUM_TOLERANCE = 5e-5
BRANCHING_RULES = ("fsb", "babsr")
PROOF_ENGINES = ("auto", "numpy", "xla")


def check_proof_engine(engine: str) -> str:
  if engine not in PROOF_ENGINES:
    raise ValueError(f"unknown proof engine {engine!r}; use one of "
                     f"{PROOF_ENGINES}")
  return engine


def proofs_on_device(engine: str) -> bool:
  """Whether a proof engine (PROOF_ENGINES) runs the proofs under XLA
  ("auto": off the CPU)."""
  if check_proof_engine(engine) == "auto":
    import jax  # pylint: disable=g-import-not-at-top
    return jax.default_backend() != "cpu"
  return engine == "xla"


@dataclasses.dataclass
class BabResult:
  status: str                    # robust | adversarial | unknown
  lower_bound: float             # proven lower bound of the margin (-inf if none)
  x_adv: np.ndarray | None       # witness (float64 margin < 0) when adversarial
  margin: float | None           # float64 margin (c^T f) at x_adv
  domains: int                   # domains bounded
  seconds: float
  reason: str                    # proved | witness | time_limit | domain_limit | exhausted
  # minimisation only: the best margin found (float64 forward pass at
  # x_best) and whether lower_bound >= objective - tolerance was proven.
  objective: float | None = None
  x_best: np.ndarray | None = None
  optimal: bool = False


@dataclasses.dataclass(frozen=True)
class BabConfig:
  # Batch and alpha rate chosen on 12 targeted problems of the 100-100 net
  # (CPU): 29 s in all, against 49 s for (256, 8, 0.1, 0.05); children
  # start from their parent's alpha/beta, so a few steps suffice. Steps and
  # beta rate re-chosen at the training radius (300-100 net, delta 0.1):
  # (3, 0.05) took three quarters of (4, 0.1)'s time on eight decided
  # images (BUILD_NOTES, "Three steps and a slower beta per batch").
  time_limit: float = 20.0
  batch_size: int = 512          # child domains bounded per jitted call
  root_steps: int = 40           # alpha iterations at the root
  steps: int = 3                 # alpha/beta iterations per batch of children
  alpha_lr: float = 0.2
  beta_lr: float = 0.05
  # Filtered smart branching (De Palma et al. 2021): the top `candidates`
  # neurons by intercept score are each tried with a one-pass bound of both
  # children (the parent's alpha/beta), and the split whose children's
  # bounds sum highest wins; 1 = the intercept score alone (BaBSR). On the
  # 12 problems above 4 candidates bound 25-45% fewer domains in about the
  # same time; on hard ones (2/0, 40/7, 31/9) they close the gap faster.
  # (Ranking by the worse child instead doubled the domains.)
  candidates: int = 4
  # The open pool's memory cap, a guard rather than a work limit (a search
  # stops here with its bound, as at its time limit): 6.4 KB per open
  # domain on the 300-100 net with its root cuts, so ~330k domains; a 60 s
  # certify budget leaves a search there ~200k (2.1 GB resident). A cap of
  # 200k domains *bounded* stopped ten searches of the 100 images at delta
  # 0.1 with 10-20 s left, for a MILP that decides nothing there.
  max_pool_bytes: int = 2 << 30
  # bab.branching: "fsb" (filtered smart branching over `candidates`) or
  # "babsr" (the intercept score alone, whatever `candidates` says).
  branching: str = "fsb"
  # First-layer hull cuts (bounds.hull_cuts): rounds of cut generation at
  # the root, each adding the facet tightest at the root's minimising
  # vertex for every unstable first-layer neuron; 0 = none.
  cut_rounds: int = 1
  # Rounds of facets made at the root in all (0, or <= cut_rounds: just
  # those): the extra rounds go into a wider root problem, and each neuron
  # then keeps the `cut_rounds` facets with the largest multipliers, so the
  # search's slots (and cost per domain) stay those of `cut_rounds`; kept
  # only if the root's proven bound is no worse.
  root_cut_rounds: int = 0
  # Own cuts: each domain also gets, for the `own_cuts` first-layer neurons
  # whose root cuts weigh most, the facet tightest at its parent's
  # minimising vertex (root cuts are tight near the root's vertex only);
  # 0 = none (also without root cuts, which choose the neurons).
  own_cuts: int = 0
  # Where the float64 proofs of closed domains run (bab.proofs): "numpy" on
  # the host, "xla" on JAX's device (proofs.XlaProof), "auto" = numpy on a
  # CPU (as fast or faster with two workers on 2 cores), XLA elsewhere
  # (11-19% more domains per second on an H200).
  proofs: str = "auto"

  def __post_init__(self):
    if self.batch_size < 1:
      raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
    if self.max_pool_bytes < 0:
      raise ValueError(f"max_pool_bytes must be >= 0, got "
                       f"{self.max_pool_bytes}")
    if self.branching not in BRANCHING_RULES:
      raise ValueError(f"unknown branching rule {self.branching!r}; use one "
                       f"of {BRANCHING_RULES}")
    check_proof_engine(self.proofs)
    if self.cut_rounds < 0:
      raise ValueError(f"cut_rounds must be >= 0, got {self.cut_rounds}")
    if self.root_cut_rounds < 0:
      raise ValueError(f"root_cut_rounds must be >= 0, got "
                       f"{self.root_cut_rounds}")
    if self.own_cuts < 0:
      raise ValueError(f"own_cuts must be >= 0, got {self.own_cuts}")
