"""Pre-activation bounds of a ReLU MLP over an L-inf input box.

Sound methods (CROWN never looser than interval, alpha-CROWN and LP never
looser than CROWN):

* `interval_bounds` (bounds.interval): interval arithmetic, layer by layer
  (exact for layer 0, since the input set is a box).
* `crown_bounds` (bounds.crown): linear back-substitution (CROWN /
  DeepPoly): every layer's pre-activations are bounded by a linear function
  of the input, propagated back through the ReLU relaxations of all earlier
  layers. JAX, jit-compiled, batched over a leading image axis.
* `alpha_crown_bounds` (bounds.alpha): CROWN with the hidden layers after
  the first tightened by alpha-CROWN (lower slopes optimised per neuron
  bound); what the branch and bound keeps for every domain.
* `lp_tighten` (bounds.lp): one LP per still-unstable neuron (min and max of
  its pre-activation over the triangle relaxation of all earlier layers),
  layer by layer, each layer using the tightened bounds of the ones before
  (HiGHS).

One ReLU relaxation (bounds.relaxation) and one back-substitution
(bounds.backsub) serve CROWN, alpha-CROWN (bounds.alpha), the branch and
bound's search and its float64 proofs (robust_prune.bab).

All functions take an arbitrary input box `(lower, upper)`; `input_box` makes
the verification box `[max(0, x - delta), min(1, x + delta)]`.
Bounds are lists with one array per layer, hidden layers first and the logits
last: `lowers[i]`, `uppers[i]` bound `h_{i-1} @ W_i + b_i`. They are computed
in float64 and widened for round-off (bounds.safety).
"""

from robust_prune.bounds.alpha import alpha_crown_bounds
from robust_prune.bounds.alpha import alpha_crown_margin_lower_bounds
from robust_prune.bounds.alpha import projected_ascent
from robust_prune.bounds.backsub import Backsub
from robust_prune.bounds.backsub import backsubstitute
from robust_prune.bounds.backsub import minimising_vertex
from robust_prune.bounds.crown import crown_bounds
from robust_prune.bounds.crown import crown_margin_lower_bounds
from robust_prune.bounds.crown import margin_spec
from robust_prune.bounds.interval import interval_bounds
from robust_prune.bounds.layers import input_box
from robust_prune.bounds.layers import LayerBounds
from robust_prune.bounds.lp import lp_tighten
from robust_prune.bounds.lp import safe_lp_lower_bound
from robust_prune.bounds.lp import triangle_relaxation_lp
from robust_prune.bounds.methods import BOUND_METHODS
from robust_prune.bounds.methods import layer_bounds
from robust_prune.bounds.relaxation import relu_relaxation
from robust_prune.bounds.safety import roundoff_allowance
from robust_prune.bounds.safety import SAFETY_ABS
from robust_prune.bounds.safety import SAFETY_REL

__all__ = [
    "BOUND_METHODS", "Backsub", "LayerBounds", "SAFETY_ABS", "SAFETY_REL",
    "alpha_crown_bounds", "alpha_crown_margin_lower_bounds", "backsubstitute", "crown_bounds",
    "crown_margin_lower_bounds", "input_box", "interval_bounds",
    "layer_bounds", "lp_tighten", "margin_spec", "minimising_vertex",
    "projected_ascent",
    "relu_relaxation", "roundoff_allowance", "safe_lp_lower_bound",
    "triangle_relaxation_lp",
]
