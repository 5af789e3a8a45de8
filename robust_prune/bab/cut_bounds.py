"""Intermediate bounds tightened by hull cuts made for each bound.

A first-layer hull facet (bounds.hull_cuts) is tight near the point it is
made at and loose elsewhere. Cuts made at one second-layer neuron's
minimising vertex hardly move another neuron's bound (300-100 net, delta
0.1, images 2 and 7: by 0.003-0.09, against 0.3-1.0 for its own cuts), so
each side (neuron, sign) of a later layer gets one facet per unstable
first-layer neuron at its own minimising vertex (bab.vertex_cuts),
and its alpha and gamma are optimised for it alone: the sides are the
domains of one batched bound, each with its own cuts (bounds.backsub's
per-domain cuts). Measured there (the refinement's first step, ~3 s per
image): the second layer's mean width 6.73 -> 5.95 (image 7) and 7.98 ->
7.03 (image 2), unstable neurons 69 -> 55 and 90 -> 83; the margin's root
bound -5.19 -> -4.05 (image 7, target 4) and -13.66 -> -11.41 (image 2,
target 2), where the quarter-way proofs alone reach -4.23 and -12.36.
Every new bound is the float64 proof of that bound (bab.proofs), and
only moves a bound inward.
"""

from __future__ import annotations

import dataclasses
import math
import time

import numpy as np

from robust_prune import bounds as bounds_lib
from robust_prune.bab.domain_bound import optimise
from robust_prune.bab.domains import LayerSlices, pad_rows
from robust_prune.bab.proofs import bound_float64
from robust_prune.bab.vertex_cuts import layer_facets
from robust_prune.network import Network


@dataclasses.dataclass(frozen=True)
class CutBoundsConfig:
  vertex_steps: int = 10   # alpha steps before the cuts (their vertex)
  steps: int = 40          # alpha/gamma steps with the cuts
  # sides per jitted call (one compiled shape). Small: each side's rows
  # are (300, 784) floats, and a chunk whose rows stay in cache costs less
  # per side (300-100 net, one core: 12 ms a side in chunks of 64, 9 in
  # 32, 7 in 16, 5.3 in 8, 5.6 in 4), and pads fewer rows
  chunk: int = 8
  alpha_lr: float = 0.2
  gamma_lr: float = 0.1


def cut_network(network: Network, k: int, j: int | None = None,
                sign: float = 1.0) -> Network:
  """The network's first k+1 layers: its outputs are the pre-activations
  of hidden layer k (only sign * y_kj when j is given)."""
  w = [np.asarray(a, np.float64) for a in network.weights[:k + 1]]
  b = [np.asarray(a, np.float64) for a in network.biases[:k + 1]]
  if j is not None:
    w[k], b[k] = sign * w[k][:, [j]], sign * b[k][[j]]
  return Network(tuple(w), tuple(b))


def _cut_problem(network: Network, layer_bounds, k: int):
  """The network cut after hidden layer k (its outputs: y_k) and the layer
  bounds its bound uses (the earlier layers'; layer k's are not read)."""
  dummy = np.zeros(network.hidden_widths[k])
  return cut_network(network, k), bounds_lib.LayerBounds(
      tuple(layer_bounds.lowers[:k]) + (dummy,),
      tuple(layer_bounds.uppers[:k]) + (dummy,))


def _chunk_bounds(cut, layers, in_lower, in_upper, specs, config, facets):
  """Proven lower bounds of specs . y_k (one row per side, a full chunk),
  each side with `facets` at its own minimising vertex."""
  f32 = lambda a: np.asarray(a, np.float32)
  slices = LayerSlices.of(cut.hidden_widths)
  lows = np.concatenate(layers.lowers[:-1])
  ups = np.concatenate(layers.uppers[:-1])
  d, n = len(specs), slices.num_neurons
  splits = np.zeros((d, n), np.int8)
  device = ([f32(w) for w in cut.weights], [f32(b) for b in cut.biases],
            f32(in_lower), f32(in_upper),
            [f32(l) for l in layers.lowers[:-1]],
            [f32(u) for u in layers.uppers[:-1]], f32(specs))
  per_layer = lambda a: [f32(x) for x in slices.per_layer(a)]
  alphas = np.tile(np.where(ups > -lows, 1.0, 0.0), (d, 1))
  zeros = np.zeros((d, n))
  alphas, _, _, vertex, *_ = optimise(
      *device, per_layer(splits), per_layer(alphas), per_layer(zeros),
      steps=config.vertex_steps, alpha_lr=config.alpha_lr,
      beta_lr=config.gamma_lr)
  cuts = facets.device(facets.bits(np.asarray(vertex)), d)
  alphas, _, _, _, _, _, gammas = optimise(
      *device, per_layer(splits), alphas, per_layer(zeros), cuts,
      f32(np.zeros((d, cuts.count))), steps=config.steps,
      alpha_lr=config.alpha_lr, beta_lr=config.gamma_lr)
  return bound_float64(cut, in_lower, in_upper, layers, specs,
                       slices.per_layer(splits),
                       [np.asarray(a) for a in alphas],
                       slices.per_layer(zeros),
                       facets.proof(cuts.input_coeffs), np.asarray(gammas))


def tighten_layer(network: Network, in_lower, in_upper,
                  layer_bounds: bounds_lib.LayerBounds, k: int,
                  config: CutBoundsConfig = CutBoundsConfig(),
                  t_end: float = math.inf) -> bounds_lib.LayerBounds:
  """`layer_bounds` with the unstable neurons of hidden layer k >= 1
  bounded again with their own cuts (each bound only moves inward), a
  chunk of sides at a time until `t_end` (perf_counter)."""
  lowers = [np.array(l, np.float64) for l in layer_bounds.lowers]
  uppers = [np.array(u, np.float64) for u in layer_bounds.uppers]
  neurons = np.flatnonzero((lowers[k] < 0) & (uppers[k] > 0))
  if neurons.size == 0:
    return layer_bounds
  cut, layers = _cut_problem(network, layer_bounds, k)
  signs = np.repeat([1.0, -1.0], len(neurons))
  neuron = np.concatenate([neurons, neurons])
  specs = np.zeros((len(signs), len(lowers[k])))
  specs[np.arange(len(signs)), neuron] = signs
  facets = layer_facets(network, in_lower, in_upper)
  for rows in np.array_split(np.arange(len(signs)),
                             -(-len(signs) // config.chunk)):
    if time.perf_counter() >= t_end:
      break
    found = _chunk_bounds(cut, layers, in_lower, in_upper,
                          pad_rows(specs[rows], config.chunk),
                          config, facets)[:len(rows)]
    low = signs[rows] > 0
    j = neuron[rows]
    lowers[k][j[low]] = np.maximum(lowers[k][j[low]], found[low])
    uppers[k][j[~low]] = np.minimum(uppers[k][j[~low]], -found[~low])
  return bounds_lib.LayerBounds(tuple(lowers), tuple(uppers))


def warm_up(network: Network, in_lower, in_upper,
            layer_bounds: bounds_lib.LayerBounds,
            config: CutBoundsConfig = CutBoundsConfig()):
  """Compiles the bounds of one chunk of sides for each later hidden layer
  (once per process)."""
  facets = layer_facets(network, in_lower, in_upper)
  for k in range(1, network.num_layers - 1):
    cut, layers = _cut_problem(network, layer_bounds, k)
    _chunk_bounds(cut, layers, in_lower, in_upper,
                  np.zeros((config.chunk, network.hidden_widths[k])), config,
                  facets)
