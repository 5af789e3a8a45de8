"""Later layers' bounds with each side's own hull cuts (bab.cut_bounds):
per-domain cuts bound each domain by its own cuts, and the tightened
bounds hold the exact ranges (region enumeration), tighten some, and a
planted unsound cut is caught."""

import numpy as np
import pytest

from robust_prune import bab, bounds
from robust_prune.bab import cut_bounds, domain_bound, proofs
from robust_prune.bounds import hull_cuts
from testing import exact_min_spec, random_network


def _domains(seed):
  net = random_network(seed, (5, 6, 4, 3))
  x = np.random.default_rng(seed).uniform(0.2, 0.8, 5)
  lower, upper = bounds.input_box(x, 0.4)
  crown = bounds.crown_bounds(net, lower, upper)
  rng = np.random.default_rng(seed + 10)
  d = 4
  per_layer = lambda a: [a[:, :6], a[:, 6:]]
  splits = per_layer(rng.integers(-1, 2, (d, 10)).astype(np.float64))
  alphas = per_layer(rng.uniform(size=(d, 10)))
  betas = per_layer(rng.uniform(size=(d, 10)))
  vertices = np.where(rng.random((d, 5)) < 0.5, lower, upper)
  plan = hull_cuts.facet_plan(net.weights[0], net.biases[0], lower, upper,
                              None, 6)
  rows, _ = hull_cuts.vertex_facet_rows(
      plan, np.abs(vertices - upper) < np.abs(vertices - lower))
  cuts = hull_cuts.Cuts(plan.neurons, rows, hull_cuts.valid_constants(
      rows, plan.w, plan.bias, lower, upper))
  gammas = rng.uniform(size=(d, cuts.count))
  return net, lower, upper, crown, splits, alphas, betas, cuts, gammas


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_per_domain_cuts_bound_each_domain_by_its_own_cuts(seed):
  """One batched bound (and its float64 proof) with a set of cuts per
  domain equals one call per domain with that domain's cuts shared."""
  net, lower, upper, crown, splits, alphas, betas, cuts, gammas = _domains(
      seed)
  assert cuts.count > 0
  c = np.array([1.0, -1.0, 0.0])
  args = (net.weights, net.biases, lower, upper, crown.lowers[:-1],
          crown.uppers[:-1], c)
  batched = domain_bound.domain_bounds(*args, splits, alphas, betas, cuts,
                                       gammas, xp=np).bound
  proved = proofs.bound_float64(net, lower, upper, crown, c, splits, alphas,
                                betas, cuts, gammas)
  without = domain_bound.domain_bounds(*args, splits, alphas, betas,
                                       xp=np).bound
  for i in range(len(gammas)):
    row = lambda arrays: [a[i:i + 1] for a in arrays]
    own = hull_cuts.Cuts(cuts.neurons, cuts.input_coeffs[i], cuts.constant[i])
    one = domain_bound.domain_bounds(*args, row(splits), row(alphas),
                                     row(betas), own, gammas[i:i + 1],
                                     xp=np).bound
    assert batched[i] == pytest.approx(one[0], abs=1e-12)
    assert proved[i] == pytest.approx(proofs.bound_float64(
        net, lower, upper, crown, c, row(splits), row(alphas), row(betas),
        own, gammas[i:i + 1])[0], abs=1e-12)
  assert not np.allclose(batched, without)   # the cuts entered


def _case(seed, sizes=(4, 7, 5, 3), delta=0.4):
  net = random_network(seed, sizes)
  x = np.random.default_rng(200 + seed).uniform(0.2, 0.8, size=sizes[0])
  lower, upper = bounds.input_box(x, delta)
  return net, lower, upper, bounds.crown_bounds(net, lower, upper)


def _exact_ranges(net, lower, upper, k):
  lows, highs = [], []
  for j in range(net.hidden_widths[k]):
    low, _ = exact_min_spec(cut_bounds.cut_network(net, k, j, 1.0), lower,
                            upper, np.ones(1))
    neg, _ = exact_min_spec(cut_bounds.cut_network(net, k, j, -1.0), lower,
                            upper, np.ones(1))
    lows.append(low)
    highs.append(-neg)
  return np.array(lows), np.array(highs)


def _violations(net, lower, upper, tightened, k=1):
  low, high = _exact_ranges(net, lower, upper, k)
  return int(np.sum(tightened.lowers[k] > low + 1e-9)
             + np.sum(tightened.uppers[k] < high - 1e-9))


SEEDS = range(6)


def test_own_cut_bounds_hold_the_exact_ranges_and_tighten_some():
  moved = 0
  for seed in SEEDS:
    net, lower, upper, crown = _case(seed)
    tightened = cut_bounds.tighten_layer(net, lower, upper, crown, 1)
    assert _violations(net, lower, upper, tightened) == 0, seed
    assert np.all(tightened.lowers[1] >= crown.lowers[1])
    assert np.all(tightened.uppers[1] <= crown.uppers[1])
    for a, b in zip(tightened.lowers[:1] + tightened.lowers[2:],
                    crown.lowers[:1] + crown.lowers[2:]):
      np.testing.assert_array_equal(a, b)
    moved += int(np.sum(tightened.lowers[1] > crown.lowers[1] + 1e-6)
                 + np.sum(tightened.uppers[1] < crown.uppers[1] - 1e-6))
  assert moved >= 10


def test_a_deeper_net_tightens_every_later_layer_soundly():
  net, lower, upper, crown = _case(7, sizes=(3, 5, 4, 4, 2), delta=0.5)
  refined, _ = bab.refine_layer_bounds(
      net, lower, upper, crown, bab.RefineConfig(seconds=600.0, rounds=0))
  for k in (1, 2):
    assert _violations(net, lower, upper, refined, k) == 0


def test_a_planted_unsound_cut_is_caught(monkeypatch):
  """Proof cuts whose constants are lowered by 1 cut off true points: the
  tightened bounds then leave some exact range."""
  honest = hull_cuts.valid_constants

  def planted(*args, **kwargs):
    return honest(*args, **kwargs) - 1.0

  monkeypatch.setattr(hull_cuts, "valid_constants", planted)
  caught = 0
  for seed in SEEDS:
    net, lower, upper, crown = _case(seed)
    tightened = cut_bounds.tighten_layer(net, lower, upper, crown, 1)
    caught += _violations(net, lower, upper, tightened)
  assert caught > 0


def test_no_time_changes_nothing():
  net, lower, upper, crown = _case(0)
  tightened = cut_bounds.tighten_layer(net, lower, upper, crown, 1,
                                       t_end=0.0)
  for a, b in zip(tightened.lowers + tightened.uppers,
                  crown.lowers + crown.uppers):
    np.testing.assert_array_equal(a, b)
