"""Intermediate bounds tightened by the branch and bound itself.

alpha-beta-CROWN's `bab-refine` tightens the bounds of the layers after the
first with MILPs (Gurobi). Here the same question goes to our own search,
batched over neurons: for each unstable neuron y_kj (k >= 1) and side
(lower, upper), a decision search on the network cut after layer k asks
whether `y_kj > t` (or `< t`) holds over the box, splitting the earlier
layers' neurons. The thresholds lie a fraction of the way from the current
bound to the value an attack reached (an attained value: no proof can pass
it), so each round asks for a step that is likely provable; proved sides
move and go again, from their new bound, until the time cap.

Why: on the PGD-trained 300-100 net at delta 0.1, alpha-CROWN's second-layer
bounds are ~2.5x wider than the attack's ranges, and the margin's search
spends most of its splits on those neurons; with the bounds moved a quarter
(half) of the way, its searches bound 2-3x (5-10x) fewer domains. All
sides of a layer share one pool and its batches (one spec row per domain),
since a search per side spent its time on Python and tiny batches.

First (RefineConfig.cut_steps > 0, the default), each layer's bounds are
bounded again with every side's own first-layer hull cuts (bab.cut_bounds):
on the hard images that moves them further than the quarter-way proofs
did, in about 3 s, and the side searches then run in what is left of the
cap.
"""

from __future__ import annotations

import dataclasses
import functools
import time

import jax
import jax.numpy as jnp
import numpy as np

from robust_prune import bounds as bounds_lib
from robust_prune.bab import cut_bounds
from robust_prune.bab.config import proofs_on_device, SLACK32
from robust_prune.bab.cut_bounds import cut_network
from robust_prune.bab.domains import (branch, DomainPool, OpenDomains,
                                      padded_sizes)
from robust_prune.bab.problem import Problem
from robust_prune.network import Network, forward


@dataclasses.dataclass(frozen=True)
class RefineConfig:
  seconds: float = 5.0       # cap for the whole image (all layers, rounds)
  # alpha/gamma steps of the bounds with each side's own hull cuts
  # (bab.cut_bounds), before the side searches; 0 = none
  cut_steps: int = 40
  fraction: float = 0.25     # of the way from the bound to the attack's value
  # rounds of side searches, each asking half the last one's fraction;
  # 0 = the per-side cut bounds only
  rounds: int = 1
  min_step: float = 1e-3     # a side whose next step is shorter stops
  side_domains: int = 500    # a side that needs more is given up (per round)
  batch_size: int = 512
  proofs: str = "auto"       # where the float64 proofs run (BabConfig.proofs)
  root_steps: int = 10
  steps: int = 4
  alpha_lr: float = 0.2
  beta_lr: float = 0.1
  attack_steps: int = 60     # signed-gradient steps per restart
  attack_restarts: int = 2   # from the box centre, then uniform starts


@dataclasses.dataclass(frozen=True)
class RefineStats:
  sides: int        # side searches run (all rounds)
  proved: int
  stabilised: int   # neurons made stable
  seconds: float


def _signed_values(weights, biases, idx, signs, x):
  """signs * y_k[idx] at the inputs x (one row per side; float32)."""
  h = x
  for w, b in zip(weights[:-1], biases[:-1]):
    h = jnp.maximum(h @ w + b, 0)
  return signs * (h @ weights[-1] + biases[-1])[jnp.arange(idx.shape[0]), idx]


@functools.partial(jax.jit, static_argnames=("steps",))
def _descend(weights, biases, in_lower, in_upper, idx, signs, starts, *,
             steps):
  """Signed-gradient descent of each row's signs * y_k[idx] over the box,
  the step halving every 10 steps; the final points."""
  grad = jax.grad(lambda x: jnp.sum(_signed_values(weights, biases, idx,
                                                   signs, x)))
  step, x = 0.25 * (in_upper - in_lower), starts
  for _ in range(max(steps // 10, 1)):
    x = jax.lax.fori_loop(
        0, 10, lambda _, z, s=step: jnp.clip(z - s * jnp.sign(grad(z)),
                                             in_lower, in_upper), x)
    step = step / 2
  return x


def attack_extremes(network: Network, in_lower, in_upper, k: int,
                    config: RefineConfig = RefineConfig()):
  """(smallest, largest) value of each neuron of hidden layer k an attack
  reached, by a float64 forward pass: values attained in the box, so no
  proven bound can pass them. (All neurons of the layer, so that the
  jitted attack has one shape per layer.)"""
  neurons = np.arange(network.hidden_widths[k])
  f32 = lambda a: jnp.asarray(a, jnp.float32)
  weights = tuple(f32(w) for w in network.weights[:k + 1])
  biases = tuple(f32(b) for b in network.biases[:k + 1])
  lo, hi, n = f32(in_lower), f32(in_upper), len(neurons)
  idx = jnp.asarray(np.concatenate([neurons, neurons]), jnp.int32)
  signs = jnp.concatenate([jnp.ones(n), -jnp.ones(n)]).astype(jnp.float32)
  value = lambda x: _signed_values(weights, biases, idx, signs, x)
  key, best = jax.random.PRNGKey(0), None
  for r in range(config.attack_restarts):
    key, sub = jax.random.split(key)
    starts = (jnp.broadcast_to((lo + hi) / 2, (2 * n, lo.size)) if r == 0
              else lo + (hi - lo) * jax.random.uniform(sub, (2 * n, lo.size)))
    x = _descend(weights, biases, lo, hi, idx, signs, starts,
                 steps=config.attack_steps)
    best = x if best is None else jnp.where(
        (value(x) < value(best))[:, None], x, best)
  points = np.clip(np.asarray(best, np.float64), in_lower, in_upper)
  values = forward(cut_network(network, k), points)
  values = values[np.arange(2 * n), np.asarray(idx)]
  return values[:n], values[n:]


@dataclasses.dataclass
class SideDomains(DomainPool):
  """Open domains of many side searches in one pool: `side` says whose."""
  side: np.ndarray = None   # (D,) int


class _LayerSides:
  """One round for the sides of hidden layer k: is spec_s . y_k > tau_s
  over the box (spec_s = +-e_j)? The sides' domains share one pool and
  its batches; a domain closes on its float64 bound, a side falls on a
  float64-checked witness, or is given up past `side_domains`. The sides
  that have cost the fewest domains go first (the pool's key), so under a
  time cap the easy ones finish rather than all starting."""

  def __init__(self, network, in_lower, in_upper, layers, k, config):
    self.cut, self.config = cut_network(network, k), config
    self.box = (np.asarray(in_lower, np.float64),
                np.asarray(in_upper, np.float64))
    dummy = np.zeros(network.hidden_widths[k])   # layer k: the cut's output
    self.layers = bounds_lib.LayerBounds(tuple(layers.lowers[:k]) + (dummy,),
                                         tuple(layers.uppers[:k]) + (dummy,))
    # the spec is given per domain (one side's row each), never the default
    self.problem = Problem(self.cut, *self.box, self.layers, dummy, config)

  def _add(self, splits, alphas, betas, side, steps):
    """Bounds domains of the given sides: refutes, closes, keeps the rest."""
    specs, tau = self.specs[side], self.tau[side]
    done = self.problem.evaluate(splits, alphas, betas, steps, c=specs)
    np.add.at(self.count, side, 1)
    rows = np.flatnonzero(done.vertex_margin < tau + SLACK32)
    if rows.size:   # witnesses, checked in float64
      values = np.sum(forward(self.cut, np.clip(done.vertex[rows], *self.box))
                      * specs[rows], axis=1)
      self.failed[side[rows[values < tau[rows]]]] = True
    lb = np.full(len(splits), -np.inf)
    rows = np.flatnonzero(done.bound > tau - SLACK32)
    if rows.size:
      lb[rows] = self.problem.proven(splits[rows], done.alphas[rows],
                                     done.betas[rows], c=specs[rows])
    shut = lb > tau
    np.minimum.at(self.closed_min, side[shut], lb[shut])
    self.failed |= self.count > self.config.side_domains
    keep = ~shut & ~self.failed[side]
    self.pool.add(SideDomains(
        splits[keep], done.alphas[keep], done.betas[keep], lb[keep],
        self.count[side[keep]].astype(np.float32),
        self.problem.scores([c[keep] for c in done.coeffs], splits[keep]),
        side[keep]))

  def _close_leaf(self, splits, side):
    """Every unstable neuron split: y_k is affine there, and one LP gives
    its exact minimum (bab.proofs.leaf_minimum)."""
    value, _ = self.problem.leaf(splits, c=self.specs[side])
    if value is None:
      return   # an empty domain
    if value > self.tau[side]:
      self.closed_min[side] = min(self.closed_min[side], value)
    else:
      self.failed[side] = True

  def run(self, specs, tau, t_end: float) -> np.ndarray:
    """Per side the proven lower bound of spec . y_k (> tau), or nan."""
    self.specs, self.tau, s = specs, tau, len(tau)
    self.failed, self.count = np.zeros(s, bool), np.zeros(s, int)
    self.closed_min = np.full(s, np.inf)
    n = self.problem.slices.num_neurons
    lows, ups = (np.concatenate(a[:-1]) for a in (self.layers.lowers,
                                                  self.layers.uppers))
    alpha0 = np.where(ups > -lows, 1.0, 0.0).astype(np.float32)
    empty = np.zeros((0, n), np.float32)
    self.pool = OpenDomains(SideDomains(
        empty.astype(np.int8), empty, empty, np.zeros(0), np.zeros(0),
        empty, np.zeros(0, int)))
    for rows in np.array_split(np.arange(s), -(-s // self.config.batch_size)):
      self._add(np.zeros((len(rows), n), np.int8), np.tile(alpha0, (
          len(rows), 1)), np.zeros((len(rows), n), np.float32), rows,
                self.config.root_steps)
    while len(self.pool) and time.perf_counter() < t_end:
      self._split(self.pool.pop_lowest(self.config.batch_size // 2))
    open_sides = np.zeros(s, bool)
    open_sides[self.pool.view().side] = True
    return np.where(self.failed | open_sides, np.nan, self.closed_min)

  def _split(self, parents: SideDomains):
    parents = parents.filter(~self.failed[parents.side])
    neuron = np.argmax(parents.scores, axis=1)   # BaBSR
    leaf = ~np.isfinite(parents.scores[np.arange(len(parents)), neuron])
    for row in np.flatnonzero(leaf):
      self._close_leaf(parents.splits[row:row + 1], parents.side[row])
    parents, neuron = parents.filter(~leaf), neuron[~leaf]
    if len(parents):
      splits, alphas, betas = branch(parents.splits, parents.alphas,
                                     parents.betas, neuron)
      self._add(splits, alphas, betas, np.repeat(parents.side, 2),
                self.config.steps)


def refine_layer_bounds(network: Network, in_lower, in_upper,
                        layer_bounds: bounds_lib.LayerBounds,
                        config: RefineConfig = RefineConfig()):
  """(LayerBounds, RefineStats): the unstable neurons of hidden layers
  >= 1 with their bounds moved by proofs, in rounds (each a `fraction` of
  the way to the attack's value; the sides proved go again) until
  `config.seconds` are spent; every other bound unchanged."""
  t0 = time.perf_counter()
  t_end = t0 + config.seconds
  lowers = [np.array(l, np.float64) for l in layer_bounds.lowers]
  uppers = [np.array(u, np.float64) for u in layer_bounds.uppers]
  sides = proved = 0
  last = network.num_layers - 2
  for k in range(1, last + 1):
    # each layer gets an equal share of what is left: a deep network's
    # first later layer would otherwise spend the whole cap
    now = time.perf_counter()
    layer_end = now + max(t_end - now, 0.0) / (last - k + 1)
    if config.cut_steps and time.perf_counter() < layer_end:
      tightened = cut_bounds.tighten_layer(
          network, in_lower, in_upper,
          bounds_lib.LayerBounds(tuple(lowers), tuple(uppers)), k,
          cut_bounds.CutBoundsConfig(steps=config.cut_steps), layer_end)
      lowers[k], uppers[k] = tightened.lowers[k], tightened.uppers[k]
    neurons = np.flatnonzero((lowers[k] < 0) & (uppers[k] > 0))
    if (neurons.size == 0 or config.rounds == 0
        or time.perf_counter() >= layer_end):
      continue
    low, high = (v[neurons] for v in attack_extremes(
        network, in_lower, in_upper, k, config))
    signs = np.repeat([1.0, -1.0], len(neurons))
    neuron = np.concatenate([neurons, neurons])
    goal = signs * np.concatenate([low, high])
    active, fraction = np.ones(len(signs), bool), config.fraction
    for _ in range(config.rounds):
      current = np.where(signs > 0, lowers[k][neuron], -uppers[k][neuron])
      active &= goal - current > config.min_step
      rows = np.flatnonzero(active)
      if rows.size == 0 or time.perf_counter() >= layer_end:
        break
      specs = np.zeros((rows.size, len(lowers[k])))
      specs[np.arange(rows.size), neuron[rows]] = signs[rows]
      tau = current[rows] + fraction * (goal - current)[rows]
      layers = bounds_lib.LayerBounds(tuple(lowers), tuple(uppers))
      found = _LayerSides(network, in_lower, in_upper, layers, k,
                          config).run(specs, tau, layer_end)
      ok = np.isfinite(found)
      sides, proved = sides + rows.size, proved + int(ok.sum())
      for sign, bounds, better in ((1.0, lowers[k], np.maximum),
                                   (-1.0, uppers[k], np.minimum)):
        moved = ok & (signs[rows] == sign)
        bounds[neuron[rows[moved]]] = better(bounds[neuron[rows[moved]]],
                                             sign * found[moved])
      active[rows[~ok]] = False
      fraction /= 2   # what is left of the way gets harder to prove
  refined = bounds_lib.LayerBounds(tuple(lowers), tuple(uppers))
  stabilised = (sum(bounds_lib.LayerBounds(layer_bounds.lowers,
                                           layer_bounds.uppers)
                    .unstable_counts()) - sum(refined.unstable_counts()))
  return refined, RefineStats(sides, proved, stabilised,
                              time.perf_counter() - t0)


def warm_up(network: Network, in_lower, in_upper,
            layer_bounds: bounds_lib.LayerBounds,
            config: RefineConfig = RefineConfig()):
  """Compiles the attack and the side searches' bounds at every padded
  batch shape and step count they use, for each later hidden layer (once
  per process; with 0 rounds only the cut bounds)."""
  if config.cut_steps:
    cut_bounds.warm_up(network, in_lower, in_upper, layer_bounds,
                       cut_bounds.CutBoundsConfig(steps=config.cut_steps))
  if config.rounds == 0:
    return
  for k in range(1, network.num_layers - 1):
    attack_extremes(network, in_lower, in_upper, k, config)
    problem = _LayerSides(network, in_lower, in_upper, layer_bounds, k,
                          config).problem
    spec = np.zeros((1, network.hidden_widths[k]))
    for size in padded_sizes(config.batch_size):
      zeros = np.zeros((size, problem.slices.num_neurons), np.float32)
      for steps in (config.root_steps, config.steps):
        problem.evaluate(zeros.astype(np.int8), zeros, zeros, steps,
                         c=np.repeat(spec, size, 0))
      if proofs_on_device(config.proofs):
        problem.proven(zeros.astype(np.int8), zeros, zeros,
                       c=np.repeat(spec, size, 0))
