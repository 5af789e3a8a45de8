"""One branch-and-bound question's fixed data and its running best point:
`Problem` holds the network, box, root layer bounds, spec c and first-layer
cuts with their float32 device copies and runs the bounds on them
(bab.domain_bound, bab.proofs); `Incumbent` holds the best input seen and
decides what closes a domain.

With cuts, a domain's `betas` row holds the split multipliers of every
hidden neuron followed by one multiplier (gamma) per cut slot: the root's
cuts (shared by every domain), then, with own cuts, one slot per chosen
first-layer neuron for the facets made at the domain's parent's minimising
vertex (one set per domain)."""

from __future__ import annotations

import dataclasses
import math

import jax
import numpy as np

from robust_prune.bab import proofs
from robust_prune.bounds import hull_cuts
from robust_prune.bab.branching import intercept_scores
from robust_prune.bab.config import proofs_on_device, SLACK32
from robust_prune.bab.domain_bound import bounds_only, optimise
from robust_prune.bab.domains import (DomainPool, LayerSlices, pad_rows,
                                      padded_size)
from robust_prune.bab.vertex_cuts import layer_facets, VertexCuts
from robust_prune.network import forward


def device32(array):
  """A float32 copy of `array` on the device. A fresh copy, which the device
  may then share: on the CPU device_put does not copy it again, where
  jnp.asarray would (~1 ms per (1200, 784) cut rows, a root makes many)."""
  return jax.device_put(np.array(array, np.float32))


class Incumbent:
  """The best input seen (by a float64 forward pass) and what closes a
  domain: a bound > 0 (decision) or >= best - tolerance (minimisation)."""

  def __init__(self, network, c, in_lower, in_upper, minimize, tolerance):
    self._network, self._c = network, c
    self._box = (in_lower, in_upper)
    self.minimize, self.tolerance = minimize, tolerance
    self.margin, self.x = np.inf, None

  def consider(self, points, margins32=None) -> bool:
    """Float64 margins of candidate inputs; keeps the best. True when a
    decision search has found its witness. With float32 margins, only the
    points that may beat the incumbent (or 0) get the float64 pass."""
    points = np.atleast_2d(points)
    if margins32 is not None:
      cap = self.margin if self.minimize else 0.0
      points = points[margins32 < cap + SLACK32]
      if len(points) == 0:
        return False
    points = np.clip(points, *self._box)
    margins = forward(self._network, points) @ self._c
    i = int(np.argmin(margins))
    if margins[i] < self.margin:
      self.margin, self.x = float(margins[i]), points[i]
    return not self.minimize and self.margin < 0

  def threshold(self) -> float:
    return self.margin - self.tolerance if self.minimize else 0.0

  def closes(self, lb):
    return lb >= self.threshold() if self.minimize else lb > 0


@dataclasses.dataclass(frozen=True)
class Evaluated:
  """Optimised domains: alpha/beta, float32 bound, vertex, its float32
  margin, coefficients per hidden layer (all cut to the real domains)."""
  alphas: np.ndarray
  betas: np.ndarray
  bound: np.ndarray
  vertex: np.ndarray
  vertex_margin: np.ndarray
  coeffs: list
  own_coeffs: object = None   # the own cuts' float32 rows (device), if any


class Problem:
  """One question's fixed data: the network, the box, the root layer bounds,
  the spec c, the cuts (None, or a fixed number of slots, unused ones
  all-zero), their float32 device copies, and the bounds run on them."""

  def __init__(self, network, in_lower, in_upper, layer_bounds, c, config,
               cuts: hull_cuts.Cuts | None = None, own_neurons=None,
               facets: VertexCuts | None = None, like: "Problem | None" = None):
    """`like`: a problem of the same network, box, layer bounds, spec and
    batch size whose device copies this one shares (with_cuts and the
    others derive a root's several problems: copying ~1 MB each time cost
    ~15% of a 3 s image)."""
    self.network, self.layer_bounds, self.c = network, layer_bounds, c
    self.in_lower, self.in_upper, self.config = in_lower, in_upper, config
    self.slices = LayerSlices.of(network.hidden_widths)
    self.cuts = cuts
    # the root's facet maker (`facets_at`), made on first use unless given
    # (the targets of one image share the box, so they may share it too)
    self._facets = facets
    # facets of the first-layer neurons `own_neurons` at each domain's own
    # vertex (None: no own cuts), in config.own_cuts slots
    self._own = None if own_neurons is None else VertexCuts(
        network.weights[0], network.biases[0], in_lower, in_upper,
        own_neurons, config.own_cuts)
    self._device_cuts = (None if cuts is None
                         else hull_cuts.Cuts(*(device32(a) for a in cuts)))
    if like is not None:
      self._device, self._xla_proof = like._device, like._xla_proof
      return
    self._device = (tuple(map(device32, network.weights)),
                    tuple(map(device32, network.biases)), device32(in_lower),
                    device32(in_upper),
                    tuple(map(device32, layer_bounds.lowers[:-1])),
                    tuple(map(device32, layer_bounds.uppers[:-1])),
                    device32(c))
    self._xla_proof = (proofs.XlaProof(network, in_lower, in_upper,
                                       layer_bounds, config.batch_size)
                       if proofs_on_device(config.proofs) else None)

  @property
  def own_neurons(self):
    """The first-layer neurons given own cuts (None: no own cuts)."""
    return None if self._own is None else self._own.neurons

  @property
  def cut_rounds(self) -> int:
    """config.cut_rounds, or 0 without a hidden layer to cut."""
    return self.config.cut_rounds if self.slices.num_neurons else 0

  @property
  def multipliers(self) -> int:
    """Columns of a domain's betas row (split and cut multipliers)."""
    return self._columns(0 if self.cuts is None else self.cuts.count)

  @property
  def slotted_multipliers(self) -> int:
    """`multipliers` once `with_cuts` has given the cuts their slots."""
    return self._columns(self._cut_slots)

  @property
  def _cut_slots(self) -> int:
    """config.cut_rounds slots per first-layer neuron."""
    return self.config.cut_rounds * len(self.network.biases[0])

  def _columns(self, cut_count: int) -> int:
    return (self.slices.num_neurons + cut_count
            + (0 if self._own is None else self.config.own_cuts))

  def _derived(self, config=None, cuts=None, own_neurons=None) -> "Problem":
    """This question with another config, cuts or own neurons, sharing the
    device copies."""
    return Problem(self.network, self.in_lower, self.in_upper,
                   self.layer_bounds, self.c,
                   self.config if config is None else config, cuts,
                   own_neurons, self._facets, like=self)

  def with_cuts(self, cuts: hull_cuts.Cuts | None = None) -> "Problem":
    """This problem with `cuts` padded to `config.cut_rounds` slots per
    first-layer neuron (all-zero without cuts)."""
    if cuts is None:
      cuts = hull_cuts.Cuts(np.zeros((0, len(self.network.biases[0]))),
                            np.zeros((0, len(self.in_lower))), np.zeros(0))
    return self._derived(cuts=hull_cuts.padded(cuts, self._cut_slots),
                         own_neurons=self.own_neurons)

  def widened(self, cut_rounds: int) -> "Problem":
    """This problem (no cuts yet) with slots for `cut_rounds` rounds."""
    return self._derived(
        dataclasses.replace(self.config, cut_rounds=cut_rounds))

  def with_own(self, neurons) -> "Problem":
    """This problem with own cuts on `neurons` (at most config.own_cuts
    first-layer neurons)."""
    return self._derived(cuts=self.cuts,
                         own_neurons=np.asarray(neurons, int))

  def facets_at(self, vertex) -> hull_cuts.Cuts:
    """Every unstable first-layer neuron's hull facet tightest at the box
    vertex `vertex` (hull_cuts.first_layer_facets; the root's cuts)."""
    if self._facets is None:
      self._facets = layer_facets(self.network, self.in_lower, self.in_upper)
    return self._facets.at_vertex(vertex)

  def vertex_bits(self, vertices) -> np.ndarray:
    """Which end of the box each input of a minimising vertex is at (what
    a domain keeps for its children's own cuts; (D, 0) without them)."""
    if self._own is None:
      return np.zeros((len(np.atleast_2d(vertices)), 0), bool)
    return self._own.bits(vertices)

  def own_proof(self, coeffs) -> hull_cuts.Cuts:
    """Own cuts for the float64 proof from float32 facet rows (D, K, n_in)
    (bab.vertex_cuts: constants valid on the whole box)."""
    return self._own.proof(coeffs)

  def own_at(self, bits) -> hull_cuts.Cuts | None:
    """Per row of `bits` (vertex_bits), the facet of each own neuron
    tightest at that vertex, for the float64 proof (own_proof); None
    without own cuts."""
    if self._own is None:
      return None
    size = self.config.batch_size
    rows = [bits[i:i + size] for i in range(0, len(bits), size)]
    return self.own_proof(np.concatenate(
        [np.zeros((0, self.config.own_cuts, len(self.in_lower)))]
        + [np.asarray(self._own.device(part, padded_size(len(part), size))
                      .input_coeffs)[:len(part)] for part in rows]))

  def _gammas(self, betas):
    """The root cuts' multipliers (None without cuts)."""
    if self.cuts is None:
      return None
    n = self.slices.num_neurons
    return betas[:, n:n + self.cuts.count]

  def _cuts(self, betas, own, device: bool = False):
    """The cuts and their multipliers for domains with `own` cuts (or
    without: their own cuts' multipliers count as 0, still sound)."""
    cuts = self._device_cuts if device else self.cuts
    if own is None:
      return cuts, self._gammas(betas)
    return (cuts, own), betas[:, self.slices.num_neurons:]

  def _batch(self, splits, alphas, betas, batch_size, own=None):
    """Per-layer float32 splits, alphas, betas padded to the smallest
    compiled batch shape that holds the domains, then the cuts and their
    gammas (None without cuts)."""
    size = padded_size(len(splits), batch_size)
    per_layer = tuple(
        container(device32(x)
                  for x in self.slices.per_layer(pad_rows(a, size)))
        for container, a in ((tuple, splits), (list, alphas), (list, betas)))
    cuts, gammas = self._cuts(betas, own, device=True)
    if gammas is not None:
      gammas = device32(pad_rows(gammas, size))
    return (*per_layer, cuts, gammas)

  def evaluate(self, splits, alphas, betas, steps, c=None, own=None,
               own_repeat: int = 1) -> Evaluated:
    """Optimises alpha/beta of each domain (padded batch); `c` (D, out),
    a spec row per domain, replaces the problem's spec; `own`: the
    vertices (vertex_bits) of the domains' own cuts, if any, one per
    `own_repeat` consecutive domains."""
    n, cfg = len(splits), self.config
    device, size = self._device, padded_size(n, cfg.batch_size)
    if c is not None:
      device = (*device[:-1], device32(pad_rows(c, size)))
    if own is not None:
      own = self._own.device(own, size, own_repeat)
    new_a, new_b, bound, vertex, margin, coeffs, gammas = optimise(
        *device, *self._batch(splits, alphas, betas, cfg.batch_size, own),
        steps=steps, alpha_lr=cfg.alpha_lr, beta_lr=cfg.beta_lr)
    cat = lambda arrays: np.concatenate([np.asarray(a) for a in arrays], 1)[:n]
    return Evaluated(cat(new_a), cat([*new_b, gammas]),
                     np.asarray(bound, np.float64)[:n],
                     np.asarray(vertex, np.float64)[:n],
                     np.asarray(margin, np.float64)[:n],
                     [np.asarray(k)[:n] for k in coeffs],
                     None if own is None else own.input_coeffs)

  def one_pass_bound(self, splits, alphas, betas) -> np.ndarray:
    """float32 bounds without optimisation (branching candidates; batches
    up to 4x the optimised one)."""
    bound = bounds_only(*self._device, *self._batch(
        splits, alphas, betas, 4 * self.config.batch_size))
    return np.asarray(bound)[:len(splits)]

  def proven(self, splits, alphas, betas, c=None, own=None) -> np.ndarray:
    """The domains' bounds in float64, less the round-off allowance (with
    their own cuts `own`, if given)."""
    per_layer, c = self.slices.per_layer, self.c if c is None else c
    cuts, gammas = self._cuts(betas, own)
    if self._xla_proof is not None:
      return self._xla_proof(c, per_layer(splits), per_layer(alphas),
                             per_layer(betas), cuts, gammas)
    return proofs.bound_float64(self.network, self.in_lower, self.in_upper,
                                self.layer_bounds, c, per_layer(splits),
                                per_layer(alphas), per_layer(betas),
                                cuts, gammas)

  def pool_minimum(self, pool: DomainPool, seconds: float = math.inf,
                   chunk: int = 4096) -> float:
    """The lowest proven bound over the open domains (re-proved for about
    `seconds` at most)."""
    own = lambda rows: self.own_at(pool.cut_vertex[rows])
    if self._own is not None:
      # a chunk's own cuts cost ~0.5 s per 512 domains: a time-out's
      # re-proof of ~0.2 s must stop in time
      chunk = min(chunk, 64)
    return proofs.min_proven_bound(pool.lb, lambda rows: self.proven(
        pool.splits[rows], pool.alphas[rows], pool.betas[rows],
        own=own(rows)), chunk, seconds)

  def leaf(self, splits_row, c=None):
    return proofs.leaf_minimum(self.network, self.in_lower, self.in_upper,
                               self.layer_bounds, self.c if c is None else c,
                               self.slices.per_layer(splits_row))

  def scores(self, coeffs, splits) -> np.ndarray:
    # float32 halves the pool's largest array; only their order matters
    return intercept_scores(coeffs, self.layer_bounds,
                            self.slices.per_layer(splits)).astype(np.float32)
