"""Branch and bound over ReLU phases with alpha/beta-CROWN bounds (JAX).

Decides one verification question, `min_{x in box} c^T f(x) > 0?` (c = e_label
- e_target), without a MILP: the certify-mode step between the cheap checks
(CROWN margin bound, PGD) and the MILP fallback.

A *domain* fixes the phase of some unstable hidden neurons (split +1: y >= 0,
split -1: y <= 0). Its lower bound is a CROWN back-substitution in which
  * a split neuron is exact (relu(y) = y or 0 on the domain),
  * an unsplit unstable neuron keeps its root bounds' relaxation (upper chord,
    lower line alpha*y with alpha in [0, 1] optimised: alpha-CROWN),
  * each split constraint s*y >= 0 enters with a multiplier beta >= 0
    (beta-CROWN, Wang et al. 2021): f >= f - beta*s*y on the domain.
Every alpha in [0, 1] and beta >= 0 gives a sound bound, so they are tuned by
projected gradient ascent in float32 (JAX, batched over domains) and a domain
is only discarded when the same bound recomputed in float64 (numpy) from the
same alpha/beta is > 0. The domains with the lowest bounds are split; of the
few neurons whose upper-chord intercept costs the bound most (BaBSR-style
score), the one whose two children bound best in one pass (filtered smart
branching).
Each bound's minimising input vertex is checked by a float64 forward pass, so
a counterexample found on the way ends the search with a witness.

Root intermediate bounds (CROWN) are kept for every domain: sound, since each
domain is a subset of the box; the split constraints are enforced through beta.
"""

from __future__ import annotations

import dataclasses
import functools
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

from robust_prune import bounds as bounds_lib
from robust_prune.network import Network, forward


@dataclasses.dataclass
class BabResult:
  status: str                    # robust | adversarial | unknown
  lower_bound: float             # proven lower bound of the margin (-inf if none)
  x_adv: np.ndarray | None       # witness (float64 margin < 0) when adversarial
  margin: float | None           # float64 margin at x_adv
  domains: int                   # domains bounded
  seconds: float
  reason: str                    # proved | witness | time_limit | domain_limit | exhausted
  # minimisation only: the best margin found (float64 forward pass at
  # x_best) and whether lower_bound >= objective - tolerance was proven.
  objective: float | None = None
  x_best: np.ndarray | None = None
  optimal: bool = False


# float32 values within this of a threshold get the float64 check
SLACK32 = 1e-3
# bab_minimum's default: the objective is within this of the true minimum
# (tighter than the 1e-4 to which it must agree with the MILP's optimum)
OPTIMUM_TOLERANCE = 5e-5


@dataclasses.dataclass(frozen=True)
class BabConfig:
  # Batch, steps and rates chosen on 12 targeted problems of the 100-100
  # net (CPU): 29 s in all, against 49 s for (256, 8, 0.1, 0.05); children
  # start from their parent's alpha/beta, so a few steps suffice.
  time_limit: float = 20.0
  batch_size: int = 512          # child domains bounded per jitted call
  root_steps: int = 40           # alpha iterations at the root
  steps: int = 4                 # alpha/beta iterations per batch of children
  alpha_lr: float = 0.2
  beta_lr: float = 0.1
  # Filtered smart branching (De Palma et al. 2021): the top `candidates`
  # neurons by intercept score are each tried with a one-pass bound of both
  # children (the parent's alpha/beta), and the split whose children's
  # bounds sum highest wins; 1 = the intercept score alone (BaBSR). On the
  # 12 problems above 4 candidates bound 25-45% fewer domains in about the
  # same time; on hard ones (2/0, 40/7, 31/9) they close the gap faster.
  # (Ranking by the worse child instead doubled the domains.)
  candidates: int = 4
  max_domains: int = 200_000


def padded_size(n: int, batch_size: int) -> int:
  """The batch shape `n` domains are padded to: a power of 4 from 4 up to
  `batch_size` (so a search with few open domains, e.g. near the root or on an
  easy problem, does not pay for a full batch, while the number of compiled
  shapes stays at a handful), or `n` itself beyond it."""
  size = 4
  while size < min(n, batch_size):
    size *= 4
  return max(min(size, batch_size), n)


def _pad_rows(a: np.ndarray, size: int) -> np.ndarray:
  """`a` with its first row repeated up to `size` rows."""
  return np.concatenate([a, np.repeat(a[:1], size - len(a), 0)])


def _relaxation(l, u, split, alpha, xp=jnp):
  """(lower slope, upper slope, upper shift) per domain and neuron: exact for
  split and stable neurons, alpha / chord for unsplit unstable ones. `xp` is
  jax.numpy (the search) or numpy (the float64 proof)."""
  unstable = (l < 0) & (u > 0)
  denom = xp.where(unstable, u - l, 1.0)
  chord = xp.where(unstable, u / denom, xp.where(l >= 0, 1.0, 0.0))
  shift = xp.where(unstable, -l * u / denom, 0.0)
  free = unstable & (split == 0)
  fixed = xp.where(split > 0, 1.0, xp.where(split < 0, 0.0, chord))
  low = xp.where(free, xp.clip(alpha, 0.0, 1.0), fixed)
  up = xp.where(free, chord, fixed)
  return low, up, xp.where(free, shift, 0.0)


def _domain_bounds(weights, biases, in_lower, in_upper, lowers, uppers, c,
                   splits, alphas, betas):
  """Lower bounds of c^T f over each domain, batched over the leading axis.
  Returns (bounds (D,), minimising input vertices (D, n_in), per hidden layer
  the coefficients on its post-activations (for branching))."""
  lam = jnp.broadcast_to(c, splits[0].shape[:1] + c.shape)
  const = lam @ biases[-1]
  lam = lam @ weights[-1].T
  coeffs = [None] * len(splits)
  for j in range(len(splits) - 1, -1, -1):
    coeffs[j] = lam
    low, up, shift = _relaxation(lowers[j], uppers[j], splits[j], alphas[j])
    pos, neg = jnp.maximum(lam, 0), jnp.minimum(lam, 0)
    const = const + jnp.sum(neg * shift, axis=-1)
    lam = pos * low + neg * up - jnp.maximum(betas[j], 0) * splits[j]
    const = const + lam @ biases[j]
    lam = lam @ weights[j].T
  bound = (const + jnp.sum(jnp.maximum(lam, 0) * in_lower, -1)
           + jnp.sum(jnp.minimum(lam, 0) * in_upper, -1))
  vertex = jnp.where(lam > 0, in_lower, in_upper)
  return bound, vertex, coeffs


@jax.jit
def _bounds_only(weights, biases, in_lower, in_upper, lowers, uppers, c,
                 splits, alphas, betas):
  return _domain_bounds(weights, biases, in_lower, in_upper, lowers, uppers,
                        c, splits, alphas, betas)[0]


@functools.partial(jax.jit, static_argnames=("steps",))
def _optimise(weights, biases, in_lower, in_upper, lowers, uppers, c, splits,
              alphas, betas, *, steps, alpha_lr, beta_lr):
  """Projected Adam ascent on alpha (in [0,1]) and beta (>= 0); returns the
  last alpha/beta, the best bound seen per domain, its vertex, coefficients."""
  bound_fn = functools.partial(_domain_bounds, weights, biases, in_lower,
                               in_upper, lowers, uppers, c, splits)
  opt = optax.multi_transform(
      {"alpha": optax.adam(alpha_lr), "beta": optax.adam(beta_lr)},
      {"alpha": "alpha", "beta": "beta"})
  params = {"alpha": alphas, "beta": betas}
  state = opt.init(params)
  first, first_vertex, _ = bound_fn(alphas, betas)

  def loss(p):
    b, v, _ = bound_fn(p["alpha"], p["beta"])
    return -jnp.sum(b), (b, v)

  def step(carry, _):
    p, s, best, best_vertex = carry
    (_, (b, v)), g = jax.value_and_grad(loss, has_aux=True)(p)
    better = b > best
    best = jnp.where(better, b, best)
    best_vertex = jnp.where(better[:, None], v, best_vertex)
    updates, s = opt.update(g, s, p)
    p = optax.apply_updates(p, updates)
    p = {"alpha": [jnp.clip(a, 0.0, 1.0) for a in p["alpha"]],
         "beta": [jnp.maximum(b_, 0.0) for b_ in p["beta"]]}
    return (p, s, best, best_vertex), None

  (params, _, best, vertex), _ = jax.lax.scan(
      step, (params, state, first, first_vertex), None, length=steps)
  last, last_vertex, coeffs = bound_fn(params["alpha"], params["beta"])
  better = last > best
  best = jnp.where(better, last, best)
  vertex = jnp.where(better[:, None], last_vertex, vertex)
  # float32 margins at the vertices: only promising ones get a float64 pass
  h = vertex
  for w, b in zip(weights[:-1], biases[:-1]):
    h = jnp.maximum(h @ w + b, 0)
  vertex_margin = (h @ weights[-1] + biases[-1]) @ c
  return params["alpha"], params["beta"], best, vertex, vertex_margin, coeffs


def bound_float64(network: Network, in_lower, in_upper, layer_bounds, c,
                  splits, alphas, betas) -> np.ndarray:
  """The domain bound of `_domain_bounds` recomputed in float64 (the proof),
  less `bounds.roundoff_allowance` for the magnitude of every term summed
  (the same recursion run on absolute values)."""
  weights = [np.asarray(w, np.float64) for w in network.weights]
  biases = [np.asarray(b, np.float64) for b in network.biases]
  lam = np.broadcast_to(np.asarray(c, np.float64), (splits[0].shape[0], len(c)))
  const = lam @ biases[-1]
  mag_const = np.abs(lam) @ np.abs(biases[-1])
  mag = np.abs(lam) @ np.abs(weights[-1].T)
  lam = lam @ weights[-1].T
  for j in range(len(splits) - 1, -1, -1):
    split = np.asarray(splits[j], np.float64)
    low, up, shift = _relaxation(layer_bounds.lowers[j], layer_bounds.uppers[j],
                                 split, np.asarray(alphas[j], np.float64), np)
    beta = np.maximum(np.asarray(betas[j], np.float64), 0)
    pos, neg = np.maximum(lam, 0), np.minimum(lam, 0)
    const = const + np.sum(neg * shift, axis=-1)
    mag_const = mag_const + np.sum(mag * np.abs(shift), axis=-1)
    lam = pos * low + neg * up - beta * split
    mag = mag * np.maximum(np.abs(low), np.abs(up)) + beta * np.abs(split)
    const = const + lam @ biases[j]
    mag_const = mag_const + mag @ np.abs(biases[j])
    lam = lam @ weights[j].T
    mag = mag @ np.abs(weights[j].T)
  in_lower = np.asarray(in_lower, np.float64)
  in_upper = np.asarray(in_upper, np.float64)
  bound = (const + np.maximum(lam, 0) @ in_lower
           + np.minimum(lam, 0) @ in_upper)
  magnitude = mag_const + mag @ np.maximum(np.abs(in_lower), np.abs(in_upper))
  return bound - bounds_lib.roundoff_allowance(network, magnitude)


def leaf_minimum(network: Network, in_lower, in_upper, layer_bounds, c,
                 splits) -> tuple[float | None, np.ndarray | None]:
  """A proven lower bound (equal to the exact minimum up to the LP's
  tolerances) of c^T f over a domain in which every unstable neuron is split
  (f is affine there), from one LP over the box and the split half-spaces,
  and the LP's minimising point. (None, None) when the domain is empty."""
  import scipy.optimize  # pylint: disable=g-import-not-at-top
  n_in = len(in_lower)
  x_mag = np.maximum(np.abs(in_lower), np.abs(in_upper))
  a, a0 = np.eye(n_in), np.zeros(n_in)      # h = x @ a + a0
  # Magnitudes of the terms behind each entry of a, a0 (the same recursion
  # on absolute values): the composed affine map is exact only up to
  # float64 round-off on sums of that size.
  mag, mag0 = np.eye(n_in), np.zeros(n_in)
  rows, rhs, row_mag = [], [], []
  for j, (w, b) in enumerate(zip(network.weights[:-1], network.biases[:-1])):
    w = np.asarray(w, np.float64)
    y, y0 = a @ w, a0 @ w + b
    y_mag, y0_mag = mag @ np.abs(w), mag0 @ np.abs(w) + np.abs(b)
    l, split = layer_bounds.lowers[j], np.asarray(splits[j][0])
    # split +1: -y <= 0; split -1: y <= 0
    for n in np.flatnonzero(split):
      rows.append(-split[n] * y[:, n])
      rhs.append(split[n] * y0[n])
      row_mag.append(y_mag[:, n] @ x_mag + y0_mag[n])
    active = (split > 0) | ((split == 0) & (l >= 0))
    a, a0 = y * active, y0 * active
    mag, mag0 = y_mag * active, y0_mag * active
  w_out = np.asarray(network.weights[-1], np.float64)
  out = a @ w_out
  out0 = a0 @ w_out + network.biases[-1]
  out_mag = ((mag @ np.abs(w_out)) @ np.abs(c) @ x_mag
             + (mag0 @ np.abs(w_out) + np.abs(network.biases[-1])) @ np.abs(c))
  cost = out @ c
  a_ub = np.array(rows) if rows else np.zeros((0, n_in))
  b_ub = np.array(rhs) if rows else np.zeros(0)
  res = scipy.optimize.linprog(
      cost, A_ub=a_ub if rows else None, b_ub=b_ub if rows else None,
      bounds=list(zip(in_lower, in_upper)), method="highs")
  if res.status == 2:
    return None, None
  if res.status != 0:
    raise RuntimeError(f"leaf LP failed: {res.message}")
  # The LP's objective is optimal only up to HiGHS's tolerances; what is
  # proven is the Lagrangian bound of its duals.
  duals = res.ineqlin.marginals if rows else np.zeros(0)
  bound = bounds_lib.safe_lp_lower_bound(
      a_ub, cost, np.full(len(b_ub), -np.inf), b_ub, in_lower, in_upper,
      duals)
  # The LP's data (objective and split rows) carry the composition's
  # round-off: it moves the objective by at most the allowance for out_mag
  # and each row by that for its row_mag, which its multiplier weighs.
  slack = bounds_lib.roundoff_allowance(
      network, out_mag + np.abs(duals) @ np.asarray(row_mag).reshape(-1))
  return float(bound + out0 @ c - slack), np.asarray(res.x)


def min_proven_bound(inherited: np.ndarray, prove, chunk: int = 4096) -> float:
  """min_i max(inherited[i], prove(rows)[i]): the lowest proven bound of the
  open domains when the search stops. Re-proves in order of the inherited
  bound and stops once that reaches the running minimum, since no later
  domain can go below it (a time-out leaves ~1e5 domains)."""
  order = np.argsort(inherited)
  low = np.inf
  for start in range(0, len(order), chunk):
    rows = order[start:start + chunk]
    if inherited[rows[0]] >= low:
      break
    low = min(low, float(np.maximum(inherited[rows], prove(rows)).min()))
  return low


def _branch_scores(coeffs, layer_bounds, splits):
  """Per domain and (concatenated) neuron: how much the upper-chord intercept
  of an unsplit unstable neuron lowers the bound; -inf where nothing to split."""
  scores = []
  for j, lam in enumerate(coeffs):
    l, u = layer_bounds.lowers[j], layer_bounds.uppers[j]
    unstable = (l < 0) & (u > 0)
    shift = np.where(unstable, -l * u / np.where(unstable, u - l, 1.0), 0.0)
    lam = np.asarray(lam, np.float64)
    score = np.maximum(-lam, 0) * shift + 1e-6 * np.abs(lam) * np.minimum(u, -l)
    scores.append(np.where(unstable & (splits[j] == 0), score, -np.inf))
  return np.concatenate(scores, axis=1)


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


def branch_and_bound(network: Network, in_lower, in_upper, label: int,
                     target: int, config: BabConfig = BabConfig(),
                     layer_bounds: bounds_lib.LayerBounds | None = None, *,
                     minimize: bool = False, tolerance: float = OPTIMUM_TOLERANCE,
                     start=None) -> BabResult:
  """Decides the sign of the minimum margin (minimize=False: stops at the
  first witness or when every domain is proven > 0) or brackets the minimum
  to `tolerance` (minimize=True)."""
  t_start = time.perf_counter()
  in_lower = np.asarray(in_lower, np.float64)
  in_upper = np.asarray(in_upper, np.float64)
  if layer_bounds is None:
    layer_bounds = bounds_lib.crown_bounds(network, in_lower, in_upper)
  c = bounds_lib.margin_spec(label, [target], network.num_classes)[0]
  widths = network.hidden_widths
  offsets = np.cumsum([0, *widths])
  f32 = lambda a: jnp.asarray(a, jnp.float32)
  args = (tuple(f32(w) for w in network.weights),
          tuple(f32(b) for b in network.biases), f32(in_lower), f32(in_upper),
          tuple(f32(l) for l in layer_bounds.lowers[:-1]),
          tuple(f32(u) for u in layer_bounds.uppers[:-1]), f32(c))

  def per_layer(flat):
    return [flat[:, offsets[j]:offsets[j + 1]] for j in range(len(widths))]

  def device_batch(splits, alphas, betas, batch_size):
    """Per-layer float32 splits, alphas, betas padded to the smallest
    compiled batch shape that holds the domains."""
    size = padded_size(len(splits), batch_size)
    return tuple(
        container(f32(x) for x in per_layer(_pad_rows(a, size)))
        for container, a in ((tuple, splits), (list, alphas), (list, betas)))

  def evaluate(splits, alphas, betas, steps):
    """Optimises alpha/beta of each domain (padded batch)."""
    n = splits.shape[0]
    new_a, new_b, bound, vertex, vertex_margin, coeffs = _optimise(
        *args, *device_batch(splits, alphas, betas, config.batch_size),
        steps=steps, alpha_lr=config.alpha_lr, beta_lr=config.beta_lr)
    new_a = np.concatenate([np.asarray(a) for a in new_a], 1)[:n]
    new_b = np.concatenate([np.asarray(b) for b in new_b], 1)[:n]
    bound = np.asarray(bound, np.float64)[:n]
    vertex = np.asarray(vertex, np.float64)[:n]
    vertex_margin = np.asarray(vertex_margin, np.float64)[:n]
    coeffs = [np.asarray(k)[:n] for k in coeffs]
    return new_a, new_b, bound, (vertex, vertex_margin), coeffs

  def children(splits, alphas, betas, neuron):
    """Both children of each domain split on `neuron` (rows 2i, 2i + 1)."""
    splits = np.repeat(splits, 2, 0)
    rows = np.arange(len(splits))
    splits[rows, np.repeat(neuron, 2)] = np.tile(np.array([1, -1], np.int8),
                                                 len(neuron))
    alphas = np.repeat(alphas, 2, 0)
    betas = np.repeat(betas, 2, 0)
    betas[rows, np.repeat(neuron, 2)] = 0.0
    return splits, alphas, betas

  def choose_split(parent):
    """The neuron each parent is split on (a -inf score marks a leaf)."""
    scores = parent["scores"]
    k = min(config.candidates, scores.shape[1])
    if k <= 1:
      return np.argmax(scores, axis=1)
    top = np.argsort(-scores, axis=1)[:, :k]                  # (P, k)
    p = len(top)
    flat = top.reshape(-1)
    s_c, a_c, b_c = children(np.repeat(parent["splits"], k, 0),
                             np.repeat(parent["alphas"], k, 0),
                             np.repeat(parent["betas"], k, 0), flat)
    bound = np.asarray(_bounds_only(
        *args, *device_batch(s_c, a_c, b_c, 4 * config.batch_size)))
    bound = bound[:len(s_c)]
    gain = bound.reshape(p, k, 2).sum(axis=2)
    gain = np.where(np.isfinite(np.take_along_axis(scores, top, 1)), gain,
                    -np.inf)
    return top[np.arange(p), np.argmax(gain, axis=1)]

  def proven(splits, alphas, betas):
    return bound_float64(network, in_lower, in_upper, layer_bounds, c,
                         per_layer(splits), per_layer(alphas), per_layer(betas))

  def pool_minimum(pool):
    return min_proven_bound(pool["lb"], lambda rows: proven(
        pool["splits"][rows], pool["alphas"][rows], pool["betas"][rows]))

  best = {"margin": np.inf, "x": None}

  def consider(points, margins32=None):
    """Float64 margins of candidate inputs; keeps the best. True when a
    decision search has found its witness. With float32 margins, only the
    points that may beat the incumbent (or 0) get the float64 pass."""
    points = np.atleast_2d(points)
    if margins32 is not None:
      cap = best["margin"] if minimize else 0.0
      points = points[margins32 < cap + SLACK32]
      if len(points) == 0:
        return False
    points = np.clip(points, in_lower, in_upper)
    margins = forward(network, points) @ c
    i = int(np.argmin(margins))
    if margins[i] < best["margin"]:
      best.update(margin=float(margins[i]), x=points[i])
    return not minimize and best["margin"] < 0

  def threshold():
    return best["margin"] - tolerance if minimize else 0.0

  def closes(lb):
    return lb >= threshold() if minimize else lb > 0

  def result(reason, lower_bound):
    lower_bound = float(min(lower_bound, best["margin"]))
    seconds = time.perf_counter() - t_start
    done = reason in ("proved", "witness")
    if best["margin"] < 0:
      status = "adversarial"
    elif lower_bound > 0:
      status = "robust"
    else:
      status = "unknown"
    x_adv = best["x"] if status == "adversarial" else None
    return BabResult(
        status, lower_bound if status != "adversarial" or minimize else -np.inf,
        x_adv, best["margin"] if x_adv is not None else None, domains, seconds,
        reason,
        objective=best["margin"] if minimize and np.isfinite(best["margin"]) else None,
        x_best=best["x"] if minimize else None,
        optimal=minimize and done)

  if start is not None:
    consider(start)
  n = int(offsets[-1])
  lows = np.concatenate(layer_bounds.lowers[:-1])
  ups = np.concatenate(layer_bounds.uppers[:-1])
  init_alpha = np.where(ups > -lows, 1.0, 0.0)[None].astype(np.float32)
  splits = np.zeros((1, n), np.int8)
  alphas, betas, _, (vertex, _), coeffs = evaluate(
      splits, init_alpha, np.zeros((1, n), np.float32), config.root_steps)
  domains = 1
  if consider(vertex):
    return result("witness", -np.inf)
  lb = proven(splits, alphas, betas)
  closed_min = np.inf            # smallest proven bound of closed domains
  if closes(lb[0]):
    return result("proved", lb[0])
  # lb: a proven (float64) bound of the domain; key: the float32 estimate
  # that orders the search (>= lb).
  pool = {"splits": splits, "alphas": alphas, "betas": betas, "lb": lb,
          "key": lb, "scores": _branch_scores(coeffs, layer_bounds,
                                              per_layer(splits))}
  half = max(config.batch_size // 2, 1)
  checked_at = threshold()
  while True:
    if minimize and len(pool["lb"]) and threshold() < checked_at:
      # a better incumbent closes open domains too (proven in float64)
      checked_at = threshold()
      recheck = np.flatnonzero(pool["key"] >= threshold() - SLACK32)
      if recheck.size:
        pool["lb"][recheck] = np.maximum(pool["lb"][recheck], proven(
            pool["splits"][recheck], pool["alphas"][recheck],
            pool["betas"][recheck]))
      shut = closes(pool["lb"])
      if shut.any():
        closed_min = min(closed_min, float(pool["lb"][shut].min()))
        pool = {k: v[~shut] for k, v in pool.items()}
    if len(pool["lb"]) == 0:
      return result("proved", closed_min)
    limit = ("time_limit" if time.perf_counter() - t_start > config.time_limit
             else "domain_limit" if domains >= config.max_domains else None)
    if limit:
      return result(limit, min(closed_min, pool_minimum(pool)))
    order = np.argsort(pool["key"])
    take, keep = order[:half], order[half:]
    parent = {k: v[take] for k, v in pool.items()}
    pool = {k: v[keep] for k, v in pool.items()}
    neuron = choose_split(parent)
    leaf = ~np.isfinite(parent["scores"][np.arange(len(take)), neuron])
    for row in np.flatnonzero(leaf):
      # Every unstable neuron is split: the network is affine on the domain,
      # and one LP gives its exact minimum and the point attaining it.
      value, x = leaf_minimum(network, in_lower, in_upper, layer_bounds, c,
                              per_layer(parent["splits"][row:row + 1]))
      if value is None:
        continue  # empty domain
      if consider(x):
        return result("witness", -np.inf)
      if not minimize and not closes(value):
        # minimum within float tolerance of 0: no verdict either way; the
        # bound must still cover every domain not closed yet
        return result("exhausted", min(closed_min, value,
                                       float(parent["lb"].min()),
                                       pool_minimum(pool)))
      closed_min = min(closed_min, value)   # nothing left to split
    parent = {k: v[~leaf] for k, v in parent.items()}
    neuron = neuron[~leaf]
    if len(neuron) == 0:
      continue
    splits, alphas, betas = children(parent["splits"], parent["alphas"],
                                     parent["betas"], neuron)
    alphas, betas, lb32, (vertex, vertex_margin), coeffs = evaluate(
        splits, alphas, betas, config.steps)
    domains += len(splits)
    if consider(vertex, vertex_margin):
      return result("witness", -np.inf)
    # A child is never worse than its (sound) parent; a child closes only on
    # its bound recomputed in float64.
    lb = np.repeat(parent["lb"], 2)
    key = np.maximum(lb32, lb)
    maybe = np.flatnonzero(key >= threshold() - SLACK32)
    if maybe.size:
      lb[maybe] = np.maximum(lb[maybe], proven(splits[maybe], alphas[maybe],
                                               betas[maybe]))
    done = closes(lb)
    if done.any():
      closed_min = min(closed_min, float(lb[done].min()))
    scores = _branch_scores(coeffs, layer_bounds, per_layer(splits))
    pool = {k: np.concatenate([pool[k], v[~done]]) for k, v in
            (("splits", splits), ("alphas", alphas), ("betas", betas),
             ("lb", lb), ("key", key), ("scores", scores))}
