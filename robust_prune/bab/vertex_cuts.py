"""First-layer hull facets at many box vertices: made on the device, proven
in float64.

The search's own cuts (each domain's facets at its parent's minimising
vertex) and the refinement's per-side cuts (each side's facets at its own
minimising vertex) both need a set of facets per vertex, (D, K, n_in)
arrays. `VertexCuts` makes them in float32 in one jitted pass
(hull_cuts.vertex_facet_rows) and gives the float64 proof the same rows
with their constants recomputed to be valid on the whole box
(hull_cuts.valid_constants), so a row's round-off never makes a cut
unsound. The root's cuts (one vertex at a time, in float64: `at_vertex`)
use the same rows: no per-vertex sort.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from robust_prune.bab.domains import pad_rows
from robust_prune.bounds import hull_cuts


@functools.partial(jax.jit, static_argnames=("repeat",))
def _rows(plan, bits, repeat: int = 1):
  """Facet rows at the vertices `bits`, each repeated `repeat` times (in
  the jitted call: an eager repeat compiles per shape)."""
  rows, constant = hull_cuts.vertex_facet_rows(plan, bits, xp=jnp)
  return jnp.repeat(rows, repeat, axis=0), jnp.repeat(constant, repeat, axis=0)


def _device(plan: hull_cuts.FacetPlan) -> hull_cuts.FacetPlan:
  kind = {"f": jnp.float32, "i": jnp.int32}
  return hull_cuts.FacetPlan(*(jnp.asarray(a, kind.get(a.dtype.kind, a.dtype))
                               for a in plan))


class VertexCuts:
  """The facets of chosen first-layer neurons (None: every unstable one)
  at box vertices, in `slots` cut slots (unused ones all-zero). The plan
  (~25 ms on the 300-100 net) is made on first use."""

  def __init__(self, weights, bias, in_lower, in_upper, neurons, slots: int):
    self.neurons = neurons
    self.in_lower = np.asarray(in_lower, np.float64)
    self.in_upper = np.asarray(in_upper, np.float64)
    self._layer, self._slots = (weights, bias), slots

  @functools.cached_property
  def plan64(self) -> hull_cuts.FacetPlan:
    return hull_cuts.facet_plan(*self._layer, self.in_lower, self.in_upper,
                                self.neurons, self._slots)

  @functools.cached_property
  def _plan(self) -> hull_cuts.FacetPlan:
    return _device(self.plan64)

  def at_vertex(self, vertex) -> hull_cuts.Cuts:
    """float64 facets at one box vertex, a row per chosen neuron (the
    root's shared cuts): `first_layer_facets` there, without its per-point
    sort, and with the constants of `valid_constants`."""
    plan, rows = self.plan64, self.plan64.neurons.any(1)
    coeffs = hull_cuts.vertex_facet_rows(plan, self.bits(vertex))[0][0, rows]
    return hull_cuts.Cuts(plan.neurons[rows], coeffs,
                          hull_cuts.valid_constants(
                              coeffs, plan.w[rows], plan.bias[rows],
                              self.in_lower, self.in_upper))

  def bits(self, vertices) -> np.ndarray:
    """Which end of the box each input of each vertex (row) is at."""
    vertices = np.asarray(np.atleast_2d(vertices), np.float64)
    return (np.abs(vertices - self.in_upper)
            < np.abs(vertices - self.in_lower))

  def device(self, bits, size: int, repeat: int = 1) -> hull_cuts.Cuts:
    """float32 cuts at the vertices `bits`, each repeated `repeat` times
    (both children of a parent share its vertex), padded to `size` rows."""
    coeffs, constant = _rows(self._plan, pad_rows(
        np.asarray(bits, bool), size // repeat), repeat=repeat)
    return hull_cuts.Cuts(self._plan.neurons, coeffs, constant)

  def proof(self, coeffs) -> hull_cuts.Cuts:
    """Cuts for the float64 proof from float32 rows (D, K, n_in): their
    constants recomputed in float64, valid on the whole box (the rows stay
    float32, exact in float64 arithmetic)."""
    plan, coeffs = self.plan64, np.asarray(coeffs)
    return hull_cuts.Cuts(plan.neurons, coeffs, hull_cuts.valid_constants(
        coeffs, plan.w, plan.bias, self.in_lower, self.in_upper))


def layer_facets(network, in_lower, in_upper) -> VertexCuts:
  """Facets of every unstable first-layer neuron, one slot per neuron of
  the layer (one compiled shape for every image): the root's cuts
  (Problem.facets_at) and each side's in the cut bounds."""
  return VertexCuts(network.weights[0], network.biases[0], in_lower,
                    in_upper, None, len(network.biases[0]))
