"""The branch-and-bound loop: decides `min_{x in box} c^T f(x) > 0?` for a
spec vector c (c = e_label - e_target for a margin), or brackets that
minimum to a tolerance.

The open domains with the lowest bounds are split (bab.branching); their
children are bounded by optimised alpha/beta-CROWN in float32
(bab.domain_bound), and a domain is only discarded when the same bound
recomputed in float64 closes it (bab.proofs). Each bound's minimising input
vertex is checked by a float64 forward pass (bab.problem.Incumbent), so a
counterexample found on the way ends a decision search with a witness.
"""

from __future__ import annotations

import dataclasses
import time

import numpy as np

from robust_prune import bounds as bounds_lib
from robust_prune.bab import root_cuts
from robust_prune.bab.branching import make_brancher
from robust_prune.bab.config import (BabConfig, BabResult, OPTIMUM_TOLERANCE,
                                     proofs_on_device, SLACK32)
from robust_prune.bab.domains import (branch, DomainPool, OpenDomains,
                                      padded_sizes)
from robust_prune.bab.problem import Incumbent, Problem
from robust_prune.bab.vertex_cuts import VertexCuts
from robust_prune.network import Network


@dataclasses.dataclass
class SearchDomains(DomainPool):
  """Domains with the box vertices own cuts are made at (Problem.vertex_bits;
  (D, 0) without own cuts): `vertex`, the domain's minimising one (its
  children's cuts), and `cut_vertex`, its parent's (its own cuts)."""
  vertex: np.ndarray
  cut_vertex: np.ndarray


class _Search:
  """The loop's state: the open pool, the incumbent, the smallest proven
  bound of the domains closed so far, and the count of domains bounded."""

  def __init__(self, problem: Problem, incumbent: Incumbent, t_start: float):
    self.problem, self.best, self.t_start = problem, incumbent, t_start
    self.brancher = make_brancher(problem.config)
    self.pool: OpenDomains | None = None
    self.closed_min = np.inf
    self.domains = 0
    # a resumed search (MarginSearch) runs in slices: the seconds of the
    # slices before this one, and this slice's limit
    self.spent, self.limit = 0.0, problem.config.time_limit
    self.checked_at = np.inf   # the incumbent's threshold at the last recheck

  def result(self, reason: str, lower_bound: float) -> BabResult:
    best = self.best
    lower_bound = float(min(lower_bound, best.margin))
    if best.margin < 0:
      status = "adversarial"
    elif lower_bound > 0:
      status = "robust"
    else:
      status = "unknown"
    x_adv = best.x if status == "adversarial" else None
    return BabResult(
        status,
        lower_bound if status != "adversarial" or best.minimize else -np.inf,
        x_adv, best.margin if x_adv is not None else None, self.domains,
        self.seconds(), reason,
        objective=(best.margin if best.minimize and np.isfinite(best.margin)
                   else None),
        x_best=best.x if best.minimize else None,
        optimal=best.minimize and reason in ("proved", "witness"))

  def root(self) -> BabResult | None:
    """Bounds the whole box (alpha only, `root_steps`); the pool's first
    domain unless that already decides."""
    problem = self.problem
    lows = np.concatenate(problem.layer_bounds.lowers[:-1])
    ups = np.concatenate(problem.layer_bounds.uppers[:-1])
    n = problem.slices.num_neurons
    splits = np.zeros((1, n), np.int8)
    evaluated = problem.evaluate(
        splits, np.where(ups > -lows, 1.0, 0.0)[None].astype(np.float32),
        np.zeros((1, n), np.float32), problem.config.root_steps)
    self.domains = 1
    if self.best.consider(evaluated.vertex):
      return self.result("witness", -np.inf)
    if problem.cut_rounds:
      cut = root_cuts.cut_rounds(problem, self.best, splits, evaluated)
      if cut is None:
        return self.result("witness", -np.inf)
      problem, evaluated = cut
      self.problem = problem
      if problem.config.own_cuts:
        evaluated = self.own_neurons(evaluated)
        problem = self.problem
    lb = problem.proven(splits, evaluated.alphas, evaluated.betas)
    if self.best.closes(lb[0]):
      return self.result("proved", lb[0])
    self.checked_at = self.best.threshold()
    bits = problem.vertex_bits(evaluated.vertex)
    self.pool = OpenDomains(SearchDomains(
        splits, evaluated.alphas, evaluated.betas, lb, lb.copy(),
        problem.scores(evaluated.coeffs, splits), bits, bits))
    return None

  def own_neurons(self, evaluated):
    """Chooses the own cuts' neurons: the first-layer neurons whose root
    cuts weigh most (the root's gammas); the root's own gammas start at 0."""
    problem, n = self.problem, self.problem.slices.num_neurons
    gammas = evaluated.betas[0, n:n + problem.cuts.count]
    live = (problem.cuts.neurons.sum(1) > 0) & (gammas > 0)
    top = np.argsort(-np.where(live, gammas, -np.inf))[:problem.config.own_cuts]
    top = top[live[top]]
    if top.size == 0:
      return evaluated
    self.problem = problem.with_own(np.argmax(problem.cuts.neurons[top], 1))
    betas = np.zeros((1, self.problem.multipliers), np.float32)
    betas[:, :evaluated.betas.shape[1]] = evaluated.betas
    return dataclasses.replace(evaluated, betas=betas)

  def close(self, pool: DomainPool, lb: np.ndarray) -> DomainPool:
    """`pool` with the domains whose proven bound `lb` closes them removed."""
    shut = self.best.closes(lb)
    if shut.any():
      self.closed_min = min(self.closed_min, float(lb[shut].min()))
    return pool.filter(~shut)

  def close_by_incumbent(self):
    """A better incumbent closes open domains too (proven in float64)."""
    pool = self.pool.view()
    recheck = np.flatnonzero(pool.key >= self.best.threshold() - SLACK32)
    if recheck.size:
      pool.lb[recheck] = np.maximum(pool.lb[recheck], self.problem.proven(
          pool.splits[recheck], pool.alphas[recheck], pool.betas[recheck],
          own=self.problem.own_at(pool.cut_vertex[recheck])))
    shut = self.best.closes(pool.lb)
    if shut.any():
      self.closed_min = min(self.closed_min, float(pool.lb[shut].min()))
      self.pool.keep(~shut)

  def stop_reason(self) -> str | None:
    if time.perf_counter() - self.t_start > self.limit:
      return "time_limit"
    if self.pool.nbytes() >= self.problem.config.max_pool_bytes:
      return "domain_limit"
    return None

  def close_leaves(self, parents: DomainPool, leaf: np.ndarray):
    """Every unstable neuron of a leaf is split: the network is affine on
    it, and one LP gives its exact minimum and the point attaining it."""
    for row in np.flatnonzero(leaf):
      value, x = self.problem.leaf(parents.splits[row:row + 1])
      if value is None:
        continue  # empty domain
      if self.best.consider(x):
        return self.result("witness", -np.inf)
      if not self.best.minimize and not self.best.closes(value):
        # minimum within float tolerance of 0: no verdict either way; the
        # bound must still cover every domain not closed yet
        return self.result("exhausted", min(
            self.closed_min, value, float(parents.lb.min()),
            self.problem.pool_minimum(self.pool.view())))
      self.closed_min = min(self.closed_min, value)  # nothing left to split
    return None

  def add_children(self, parents: DomainPool, neuron: np.ndarray):
    """Bounds both children of each parent; keeps those not closed."""
    problem = self.problem
    splits, alphas, betas = branch(parents.splits, parents.alphas,
                                   parents.betas, neuron)
    # both children of a parent get the facets at its minimising vertex
    cut_vertex = np.repeat(parents.vertex, 2, 0)
    own = None if problem.own_neurons is None else parents.vertex
    evaluated = problem.evaluate(splits, alphas, betas, problem.config.steps,
                                 own=own, own_repeat=2)
    self.domains += len(splits)
    if self.best.consider(evaluated.vertex, evaluated.vertex_margin):
      return self.result("witness", -np.inf)
    # A child is never worse than its (sound) parent; a child closes only on
    # its bound recomputed in float64.
    lb = np.repeat(parents.lb, 2)
    key = np.maximum(evaluated.bound, lb)
    maybe = np.flatnonzero(key >= self.best.threshold() - SLACK32)
    if maybe.size:
      lb[maybe] = np.maximum(lb[maybe], problem.proven(
          splits[maybe], evaluated.alphas[maybe], evaluated.betas[maybe],
          own=None if own is None else problem.own_proof(
              # indexing on the device would compile a gather per size
              np.asarray(evaluated.own_coeffs)[maybe])))
    children = SearchDomains(splits, evaluated.alphas, evaluated.betas, lb,
                             key, problem.scores(evaluated.coeffs, splits),
                             problem.vertex_bits(evaluated.vertex),
                             cut_vertex)
    self.pool.add(self.close(children, lb))
    return None

  def step(self, parents: DomainPool):
    """Splits the parents (leaves go to the LP)."""
    neuron = self.brancher(parents, self.problem.one_pass_bound)
    leaf = ~np.isfinite(parents.scores[np.arange(len(parents)), neuron])
    done = self.close_leaves(parents, leaf)
    if done is None and not leaf.all():
      done = self.add_children(parents.filter(~leaf), neuron[~leaf])
    return done

  def seconds(self) -> float:
    return self.spent + time.perf_counter() - self.t_start

  def search(self, batches: int = 0) -> BabResult | str:
    """Splits the lowest open domains until decided (its BabResult) or a
    limit (the limit's name; the open domains stay in the pool), bounding
    at least `batches` batches whatever the limits say."""
    half = max(self.problem.config.batch_size // 2, 1)
    while True:
      if (self.best.minimize and len(self.pool)
          and self.best.threshold() < self.checked_at):
        self.checked_at = self.best.threshold()
        self.close_by_incumbent()
      if len(self.pool) == 0:
        return self.result("proved", self.closed_min)
      limit = self.stop_reason() if batches <= 0 else None
      if limit:
        return limit
      parents = self.pool.pop_lowest(half)
      done = self.step(parents)
      if done is not None:
        return done
      batches -= 1

  def give_up(self, reason: str, seconds: float = np.inf) -> BabResult:
    """The answer at a limit: the lowest proven bound of what is open
    (re-proved for about `seconds` at most)."""
    open_min = self.problem.pool_minimum(
        self.pool.view(), seconds, 4096 if seconds == np.inf else 512)
    return self.result(reason, min(self.closed_min, open_min))

  def run(self) -> BabResult:
    done = self.root()
    if done is None:
      done = self.search()
    return self.give_up(done) if isinstance(done, str) else done


class MarginSearch:
  """A decision search (is min c^T f > 0 over the box?) run in slices: the
  targets of one image share its budget and each keeps its open domains
  between turns, so time can go to the target closest to closing and none
  is bounded twice. The root is bounded on construction."""

  def __init__(self, network: Network, in_lower, in_upper, c,
               config: BabConfig, layer_bounds: bounds_lib.LayerBounds,
               facets: VertexCuts | None = None):
    """`facets`: the root's facet maker (bab.layer_facets of this box),
    if the caller shares one between the searches of a box."""
    t_start = time.perf_counter()
    problem = Problem(network, np.asarray(in_lower, np.float64),
                      np.asarray(in_upper, np.float64), layer_bounds,
                      np.asarray(c, np.float64), config, facets=facets)
    self._search = _Search(problem, Incumbent(
        network, problem.c, problem.in_lower, problem.in_upper, False,
        OPTIMUM_TOLERANCE), t_start)
    self.result: BabResult | None = self._search.root()

  def estimate(self) -> float:
    """The open domains' lowest float32 bound (unproven: only an order)."""
    return float(self._search.pool.view().key.min())

  def advance(self, seconds: float) -> BabResult | None:
    """Searches for about `seconds` more (it stops between batches, after
    one batch at least); the result once decided or at the domain limit,
    else None."""
    search = self._search
    if self.result is None:
      search.spent = search.seconds()
      search.t_start, search.limit = time.perf_counter(), seconds
      done = search.search(batches=1)
      if done != "time_limit":
        # at the domain limit the open domains are re-proved within what is
        # left of the turn: a full re-proof of ~2e5 takes seconds that a
        # shared budget does not have
        left = seconds - (time.perf_counter() - search.t_start)
        self.result = (search.give_up(done, max(left, 0.0))
                       if isinstance(done, str) else done)
    return self.result

  def stop(self, seconds: float = np.inf) -> BabResult:
    """The result now: decided, or `time_limit` with the lowest proven
    bound of the open domains (re-proving them for about `seconds` at most:
    a pool of ~1e5 domains takes seconds)."""
    if self.result is None:
      self.result = self._search.give_up("time_limit", seconds)
    return self.result


def branch_and_bound_spec(network: Network, in_lower, in_upper, c,
                          config: BabConfig = BabConfig(),
                          layer_bounds: bounds_lib.LayerBounds | None = None,
                          *, minimize: bool = False,
                          tolerance: float = OPTIMUM_TOLERANCE,
                          start=None) -> BabResult:
  """For a spec vector c over the logits: decides the sign of min c^T f(x)
  over the box (minimize=False: stops at the first witness, c^T f < 0, or
  when every domain is proven > 0) or brackets the minimum to `tolerance`
  (minimize=True; `start`, an input, seeds the incumbent). BabResult's
  margin/objective/lower_bound are values of c^T f."""
  t_start = time.perf_counter()
  in_lower = np.asarray(in_lower, np.float64)
  in_upper = np.asarray(in_upper, np.float64)
  c = np.asarray(c, np.float64)
  if c.shape != (network.num_classes,) or not np.all(np.isfinite(c)):
    raise ValueError(f"spec c must be {network.num_classes} finite numbers, "
                     f"got shape {c.shape}")
  if layer_bounds is None:
    layer_bounds = bounds_lib.crown_bounds(network, in_lower, in_upper)
  problem = Problem(network, in_lower, in_upper, layer_bounds, c, config)
  search = _Search(problem, Incumbent(network, c, in_lower, in_upper,
                                      minimize, tolerance), t_start)
  if start is not None:
    search.best.consider(start)
  return search.run()


def branch_and_bound(network: Network, in_lower, in_upper, label: int,
                     target: int, config: BabConfig = BabConfig(),
                     layer_bounds: bounds_lib.LayerBounds | None = None, *,
                     minimize: bool = False, tolerance: float = OPTIMUM_TOLERANCE,
                     start=None) -> BabResult:
  """`branch_and_bound_spec` for the margin logit[label] - logit[target]."""
  c = bounds_lib.margin_spec(label, [target], network.num_classes)[0]
  return branch_and_bound_spec(network, in_lower, in_upper, c, config,
                               layer_bounds, minimize=minimize,
                               tolerance=tolerance, start=start)


def bab_margin(network: Network, in_lower, in_upper, label: int, target: int,
               config: BabConfig = BabConfig(),
               layer_bounds: bounds_lib.LayerBounds | None = None) -> BabResult:
  """Proves min over the box of logit[label] - logit[target] > 0, finds an
  input where it is < 0, or gives up at the time/domain limit."""
  return branch_and_bound(network, in_lower, in_upper, label, target, config,
                          layer_bounds)


def bab_minimum(network: Network, in_lower, in_upper, label: int, target: int,
                config: BabConfig = BabConfig(),
                layer_bounds: bounds_lib.LayerBounds | None = None, *,
                tolerance: float = OPTIMUM_TOLERANCE, start=None) -> BabResult:
  """The minimum margin over the box to within `tolerance` (the targeted
  question): `objective` is the margin of a float64 forward pass at `x_best`,
  and `optimal` means every domain was closed with a proven bound >=
  objective - tolerance. `start` (an input, e.g. PGD's) seeds the incumbent."""
  return branch_and_bound(network, in_lower, in_upper, label, target, config,
                          layer_bounds, minimize=True, tolerance=tolerance,
                          start=start)


def warm_up(network: Network, lower, upper, layers: bounds_lib.LayerBounds,
            c, config: BabConfig = BabConfig()):
  """Compiles the search's jitted bounds at each padded batch shape
  (domains.padded_sizes; 4x the batch for the branching's one-pass bounds)
  and the root's step count, so that a timed search does not pay it."""
  problem = Problem(network, lower, upper, layers, c, config)

  def zeros(size, dtype=np.float32, width=problem.slices.num_neurons):
    return np.zeros((size, width), dtype)

  def prove(problem, size, own=None):   # under XLA: each shape compiles
    if proofs_on_device(config.proofs):
      problem.proven(zeros(size, np.int8), zeros(size),
                     zeros(size, width=problem.multipliers), own=own)

  problem.evaluate(zeros(1, np.int8), zeros(1), zeros(1), config.root_steps)
  prove(problem, 1)
  if problem.cut_rounds and config.root_cut_rounds > config.cut_rounds:
    wide = problem.widened(config.root_cut_rounds).with_cuts()
    wide.evaluate(zeros(1, np.int8), zeros(1),
                  zeros(1, width=wide.multipliers), config.root_steps)
  if problem.cut_rounds:
    problem = problem.with_cuts()
  betas = lambda size: zeros(size, width=problem.multipliers)
  problem.evaluate(zeros(1, np.int8), zeros(1), betas(1), config.root_steps)
  if problem.cut_rounds and config.own_cuts:
    problem = problem.with_own(np.arange(min(config.own_cuts,
                                             len(network.biases[0]))))
  for size in padded_sizes(config.batch_size):
    # without own cuts too: a search whose root chose no neuron runs so
    problem.evaluate(zeros(size, np.int8), zeros(size), betas(size),
                     config.steps)
    prove(problem, size)
    if problem.own_neurons is not None:   # children: a parent's vertex each
      own = np.zeros((size, len(lower)), bool)
      problem.evaluate(zeros(size, np.int8), zeros(size), betas(size),
                       config.steps, own=own[:size // 2], own_repeat=2)
      prove(problem, size, own=problem.own_at(own))   # the re-proofs' facets
  for size in padded_sizes(4 * config.batch_size):
    problem.one_pass_bound(zeros(size, np.int8), zeros(size), betas(size))
