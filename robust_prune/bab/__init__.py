"""Branch and bound over ReLU phases with alpha/beta-CROWN bounds (JAX).

Decides one verification question, `min_{x in box} c^T f(x) > 0?` (c =
e_label - e_target, or any spec vector: `branch_and_bound_spec`), without a
MILP: the certify-mode step between the cheap checks (CROWN margin bound,
PGD) and the MILP fallback; `bab_minimum` brackets the minimum itself (the
targeted question).

  bab.config        BabConfig, BabResult
  bab.domains       DomainPool, OpenDomains (the open pool), branching, batches
  bab.domain_bound  a domain's bound (the one back-substitution of
                    robust_prune.bounds with split-exact relaxations and
                    beta) and its alpha/beta optimisation (float32, jitted)
  bab.branching     which neuron to split: BaBSR or filtered smart branching
  bab.proofs        the float64 re-proof, the leaf LP, the bound left open
  bab.problem       one question's data (Problem) and best point (Incumbent)
  bab.search        the loop, the public entry points, MarginSearch (resumable)
  bab.turns         resumable searches taking turns on one budget
  bab.refine        later layers' bounds tightened by batched side searches
  bab.cut_bounds    later layers' bounds with each side's own hull cuts
                    (the refinement's first step)
  bab.vertex_cuts   first-layer facets at box vertices: made on the
                    device, proven in float64 (per-side and own cuts), or
                    in float64 at one vertex (the root's cuts)
"""

from robust_prune.bab.config import BabConfig
from robust_prune.bab.config import BabResult
from robust_prune.bab.config import OPTIMUM_TOLERANCE
from robust_prune.bab.config import PROOF_ENGINES
from robust_prune.bab.config import SLACK32
from robust_prune.bab.domains import DomainPool
from robust_prune.bab.domains import padded_size, padded_sizes
from robust_prune.bab.proofs import bound_float64
from robust_prune.bab.proofs import leaf_minimum
from robust_prune.bab.proofs import min_proven_bound
from robust_prune.bab.proofs import XlaProof
from robust_prune.bab.search import bab_margin
from robust_prune.bab.search import bab_minimum
from robust_prune.bab.search import branch_and_bound
from robust_prune.bab.search import branch_and_bound_spec
from robust_prune.bab.search import MarginSearch
from robust_prune.bab.search import warm_up
from robust_prune.bab import refine
from robust_prune.bab.refine import cut_network
from robust_prune.bab.refine import RefineConfig
from robust_prune.bab.refine import refine_layer_bounds
from robust_prune.bab.turns import take_turns
from robust_prune.bab.vertex_cuts import layer_facets

__all__ = [
    "BabConfig", "BabResult", "DomainPool", "MarginSearch",
    "OPTIMUM_TOLERANCE", "PROOF_ENGINES", "SLACK32", "XlaProof",
    "bab_margin", "bab_minimum", "bound_float64", "branch_and_bound",
    "branch_and_bound_spec", "leaf_minimum", "min_proven_bound",
    "RefineConfig", "cut_network", "padded_size", "padded_sizes", "refine",
    "layer_facets", "refine_layer_bounds", "take_turns", "warm_up",
]
