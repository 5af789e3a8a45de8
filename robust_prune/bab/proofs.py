"""What the branch and bound proves: every discarded domain's bound
recomputed in float64 with a round-off allowance, the exact minimum of a
fully split domain (one LP), and the lowest proven bound of what is left
open when the search stops."""

from __future__ import annotations

import math
import time

import jax
import jax.numpy as jnp
import numpy as np

from robust_prune import bounds as bounds_lib
from robust_prune.bounds import hull_cuts, relaxation
from robust_prune.bab.domain_bound import domain_bounds
from robust_prune.bab.domains import pad_rows, padded_size
from robust_prune.network import Network


def _float64(arrays):
  return [np.asarray(a, np.float64) for a in arrays]


def bound_float64(network: Network, in_lower, in_upper, layer_bounds, c,
                  splits, alphas, betas, cuts=None, gammas=None) -> np.ndarray:
  """The search's domain bound (bab.domain_bound) recomputed in float64 by
  the same back-substitution (the proof), less `bounds.roundoff_allowance`
  for the magnitude of every term summed (each cut adds a term to the sums
  it enters: two per cut are allowed for)."""
  sets = () if cuts is None else hull_cuts.as_sets(cuts)
  if cuts is not None:
    # the input rows keep their dtype (float32 is exact in the float64
    # products they enter; a batch's float64 copy cost more than the proof)
    cuts = tuple(one._replace(neurons=np.asarray(one.neurons, np.float64),
                              input_coeffs=np.asarray(one.input_coeffs),
                              constant=np.asarray(one.constant, np.float64))
                 for one in sets)
    gammas = np.asarray(gammas, np.float64)
  result = domain_bounds(
      _float64(network.weights), _float64(network.biases),
      np.asarray(in_lower, np.float64), np.asarray(in_upper, np.float64),
      layer_bounds.lowers[:-1], layer_bounds.uppers[:-1],
      np.asarray(c, np.float64), _float64(splits), _float64(alphas),
      _float64(betas), cuts, gammas, xp=np, track_magnitude=True)
  return _less_allowance(network, result.bound, result.magnitude, sets)


def _less_allowance(network, bound, magnitude, cut_sets):
  """The bound less the round-off allowance for its terms' magnitude (each
  cut adds a term to the sums it enters: two per cut are allowed for)."""
  extra = 2 * sum(one.count for one in cut_sets)
  return bound - bounds_lib.roundoff_allowance(network, magnitude, extra)


@jax.jit
def _bound_and_magnitude(weights, biases, in_lower, in_upper, lowers, uppers,
                         c, splits, alphas, betas, cuts, gammas):
  # the domains cross to the device in their own (narrower) dtypes
  c, splits, alphas, betas, cuts, gammas = jax.tree.map(
      lambda a: a.astype(jnp.float64), (c, splits, alphas, betas, cuts, gammas))
  result = domain_bounds(weights, biases, in_lower, in_upper, lowers, uppers,
                         c, splits, alphas, betas, cuts, gammas, xp=jnp,
                         track_magnitude=True)
  return result.bound, result.magnitude


class XlaProof:
  """`bound_float64` run by XLA in float64 on the search's device: the same
  back-substitution with the same magnitudes and allowance (XLA's float64
  sums err within the allowance's bound whatever their order), in chunks of
  at most `batch_size` domains padded to the search's compiled shapes. On
  an H200 a search bounded 11-19% more domains per second with it; on 2
  CPU cores numpy is as fast or faster (17 vs 26 ms per 512 domains of the
  300-100 net; BUILD_NOTES)."""

  def __init__(self, network: Network, in_lower, in_upper, layer_bounds,
               batch_size: int):
    self._network, self._batch_size = network, batch_size
    with jax.enable_x64(True):
      f64 = lambda arrays: tuple(jnp.asarray(a, jnp.float64) for a in arrays)
      self._fixed = (f64(network.weights), f64(network.biases),
                     *f64((in_lower, in_upper)),
                     f64(layer_bounds.lowers[:-1]),
                     f64(layer_bounds.uppers[:-1]))

  def __call__(self, c, splits, alphas, betas, cuts=None, gammas=None):
    sets = () if cuts is None else hull_cuts.as_sets(cuts)
    count, parts = len(splits[0]), []
    # inside: jnp.asarray keeps float64 (outside it would round to float32)
    with jax.enable_x64(True):
      for start in range(0, count, self._batch_size):
        rows = slice(start, min(start + self._batch_size, count))
        parts.append(self._chunk(rows, c, splits, alphas, betas, sets, gammas))
    bound = np.concatenate([np.zeros(0)] + [b for b, _ in parts])
    magnitude = np.concatenate([np.zeros(0)] + [m for _, m in parts])
    return _less_allowance(self._network, bound, magnitude, sets)

  def _chunk(self, rows, c, splits, alphas, betas, sets, gammas):
    used = rows.stop - rows.start
    size = padded_size(used, self._batch_size)
    take = lambda a: jnp.asarray(pad_rows(np.asarray(a)[rows], size))
    per_domain = lambda a, shared_ndim: (take(a) if np.ndim(a) > shared_ndim
                                         else jnp.asarray(a))
    cuts = tuple(hull_cuts.Cuts(jnp.asarray(one.neurons),
                                per_domain(one.input_coeffs, 2),
                                per_domain(one.constant, 1)) for one in sets)
    bound, magnitude = _bound_and_magnitude(
        *self._fixed, per_domain(c, 1), [take(a) for a in splits],
        [take(a) for a in alphas], [take(a) for a in betas], cuts or None,
        None if gammas is None else take(gammas))
    return np.asarray(bound)[:used], np.asarray(magnitude)[:used]


def _leaf_pieces(network, in_lower, in_upper, layer_bounds, c, splits):
  """On a fully split domain every relaxation is exact, so the objective and
  each split neuron's pre-activation are affine in x; returns the objective
  and the split rows (-s*y <= 0) as back-substitutions (float64, with the
  magnitudes of their terms)."""
  weights, biases = _float64(network.weights), _float64(network.biases)
  splits = [np.asarray(s[0], np.float64) for s in splits]
  relaxations = [relaxation.relu_relaxation(l, u, s, xp=np) for l, u, s in
                 zip(layer_bounds.lowers[:-1], layer_bounds.uppers[:-1],
                     splits)]
  if any(np.any((low != up) | (shift != 0)) for low, up, shift in relaxations):
    raise ValueError("leaf_minimum needs every unstable neuron split")
  backsub = lambda spec, k: bounds_lib.backsubstitute(
      spec, weights[:k + 1], biases[:k + 1], relaxations[:k], in_lower,
      in_upper, track_magnitude=True, xp=np)
  objective = backsub(np.asarray(c, np.float64), len(weights) - 1)
  rows = []
  for j, split in enumerate(splits):
    fixed = np.flatnonzero(split)
    if fixed.size:   # one row -s_n e_n per split neuron n of layer j
      rows.append(backsub(-split[fixed, None] * np.eye(len(split))[fixed], j))
  return objective, rows


def leaf_minimum(network: Network, in_lower, in_upper, layer_bounds, c,
                 splits) -> tuple[float | None, np.ndarray | None]:
  """A proven lower bound (equal to the exact minimum up to the LP's
  tolerances) of c^T f over a domain in which every unstable neuron is split
  (f is affine there), from one LP over the box and the split half-spaces,
  and the LP's minimising point. (None, None) when the domain is empty."""
  import scipy.optimize  # pylint: disable=g-import-not-at-top
  in_lower = np.asarray(in_lower, np.float64)
  in_upper = np.asarray(in_upper, np.float64)
  objective, rows = _leaf_pieces(network, in_lower, in_upper, layer_bounds,
                                 c, splits)
  a_ub = np.concatenate([r.input_coeffs for r in rows]
                        + [np.zeros((0, len(in_lower)))])
  b_ub = -np.concatenate([r.constant for r in rows] + [np.zeros(0)])
  res = scipy.optimize.linprog(
      objective.input_coeffs, A_ub=a_ub if rows else None,
      b_ub=b_ub if rows else None, bounds=list(zip(in_lower, in_upper)),
      method="highs")
  if res.status == 2:
    return None, None
  if res.status != 0:
    raise RuntimeError(f"leaf LP failed: {res.message}")
  # The LP's objective is optimal only up to HiGHS's tolerances; what is
  # proven is the Lagrangian bound of its duals.
  duals = res.ineqlin.marginals if rows else np.zeros(0)
  bound = bounds_lib.safe_lp_lower_bound(
      a_ub, objective.input_coeffs, np.full(len(b_ub), -np.inf), b_ub,
      in_lower, in_upper, duals)
  # The LP's data (objective and split rows) carry the back-substitution's
  # round-off: it moves the objective by at most the allowance for its
  # magnitude and each row by that for its own, which its multiplier weighs.
  row_mag = np.concatenate([r.magnitude for r in rows] + [np.zeros(0)])
  slack = bounds_lib.roundoff_allowance(
      network, objective.magnitude + np.abs(duals) @ row_mag)
  return float(bound + objective.constant - slack), np.asarray(res.x)


def min_proven_bound(inherited: np.ndarray, prove, chunk: int = 4096,
                     seconds: float = math.inf) -> float:
  """min_i max(inherited[i], prove(rows)[i]): the lowest proven bound of the
  open domains when the search stops. Re-proves in order of the inherited
  bound and stops once that reaches the running minimum, since no later
  domain can go below it (a time-out leaves ~1e5 domains), or after
  `seconds`: the rows not re-proved then count with their inherited bound
  (proven too, only looser)."""
  order = np.argsort(inherited)
  low, t_end = np.inf, time.perf_counter() + seconds
  for start in range(0, len(order), chunk):
    rows = order[start:start + chunk]
    if inherited[rows[0]] >= low:
      break
    if time.perf_counter() > t_end:
      return min(low, float(inherited[rows[0]]))
    low = min(low, float(np.maximum(inherited[rows], prove(rows)).min()))
  return low
