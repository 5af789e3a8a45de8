"""Later layers' bounds tightened by batched side searches (bab.refine),
against exact ranges from region enumeration."""

import dataclasses
import time

import numpy as np
import pytest

from robust_prune import bab, bounds
from robust_prune.bab import domain_bound, refine
from robust_prune.network import forward
from testing import exact_min_spec, random_network

# ends when every side is decided; the side searches alone (the bounds
# with each side's own cuts, which run first by default, are
# tests/test_cut_bounds.py's)
GENEROUS = refine.RefineConfig(seconds=600.0, cut_steps=0)


def _case(seed, sizes=(3, 6, 6, 3), delta=0.4):
  net = random_network(seed, sizes)
  x = np.random.default_rng(100 + seed).uniform(0.2, 0.8, size=sizes[0])
  lower, upper = bounds.input_box(x, delta)
  return net, lower, upper, bounds.crown_bounds(net, lower, upper)


def _exact_range(net, lower, upper, k, j):
  """min and max of the pre-activation y_kj over the box (enumeration)."""
  low, _ = exact_min_spec(refine.cut_network(net, k, j, 1.0), lower, upper,
                          np.ones(1))
  neg, _ = exact_min_spec(refine.cut_network(net, k, j, -1.0), lower, upper,
                          np.ones(1))
  return low, -neg


def _assert_holds_exact_ranges(net, lower, upper, refined):
  """Every later-layer neuron's exact range lies inside the refined bounds."""
  for k in range(1, net.num_layers - 1):
    for j in range(net.hidden_widths[k]):
      low, high = _exact_range(net, lower, upper, k, j)
      assert refined.lowers[k][j] <= low + 1e-9, (k, j, low)
      assert refined.uppers[k][j] >= high - 1e-9, (k, j, high)


def test_the_cut_network_outputs_the_layers_pre_activations():
  net = random_network(0, (4, 5, 6, 3))
  x = np.random.default_rng(0).uniform(size=(20, 4))
  h = np.maximum(x @ net.weights[0] + net.biases[0], 0)
  y1 = h @ net.weights[1] + net.biases[1]
  np.testing.assert_allclose(forward(refine.cut_network(net, 1), x), y1,
                             rtol=1e-5, atol=1e-5)
  for j in (0, 5):
    for sign in (1.0, -1.0):
      cut = refine.cut_network(net, 1, j, sign)
      np.testing.assert_allclose(forward(cut, x)[:, 0], sign * y1[:, j],
                                 rtol=1e-5, atol=1e-5)


def test_one_spec_per_domain_bounds_each_domain_by_its_own_spec():
  """The batched side searches give each domain its own spec row: the same
  bounds as one call per spec."""
  net, lower, upper, crown = _case(3)
  rng = np.random.default_rng(3)
  n, d = sum(net.hidden_widths), 5
  splits = rng.integers(-1, 2, size=(d, n)).astype(np.float32)
  alphas = rng.uniform(size=(d, n)).astype(np.float32)
  betas = rng.uniform(size=(d, n)).astype(np.float32)
  specs = rng.normal(size=(d, 3))
  cut = lambda a: [a[:, :6], a[:, 6:]]
  args = (net.weights, net.biases, lower, upper, crown.lowers[:-1],
          crown.uppers[:-1])
  batched = domain_bound.domain_bounds(
      *args, specs, cut(splits), cut(alphas), cut(betas), xp=np).bound
  for i in range(d):
    one = domain_bound.domain_bounds(
        *args, specs[i], cut(splits[i:i + 1]), cut(alphas[i:i + 1]),
        cut(betas[i:i + 1]), xp=np).bound
    assert batched[i] == pytest.approx(one[0], abs=1e-12)


@pytest.mark.parametrize("seed", [0, 1, 2, 3, 5, 6])  # 4: nothing to refine
def test_refined_bounds_hold_the_exact_range_and_reach_every_true_threshold(
    seed):
  """Sound (the exact range stays inside), never looser, and complete on
  tiny nets given time: every side whose exact value clears its threshold
  (a quarter of the way from CROWN's bound to the attack's value) is
  proved at least that far."""
  net, lower, upper, crown = _case(seed)
  refined, stats = bab.refine_layer_bounds(net, lower, upper, crown, GENEROUS)
  _assert_holds_exact_ranges(net, lower, upper, refined)
  assert np.all(refined.lowers[1] >= crown.lowers[1])
  assert np.all(refined.uppers[1] <= crown.uppers[1])
  np.testing.assert_array_equal(refined.lowers[0], crown.lowers[0])
  attack_low, attack_high = refine.attack_extremes(net, lower, upper, 1)
  checked = 0
  for j in np.flatnonzero((crown.lowers[1] < 0) & (crown.uppers[1] > 0)):
    low, high = _exact_range(net, lower, upper, 1, j)
    t_low = crown.lowers[1][j] + 0.25 * (attack_low[j] - crown.lowers[1][j])
    t_high = crown.uppers[1][j] - 0.25 * (crown.uppers[1][j] - attack_high[j])
    if low > t_low + 1e-3:
      assert refined.lowers[1][j] > t_low, (j, low, t_low)
      checked += 1
    if high < t_high - 1e-3:
      assert refined.uppers[1][j] < t_high, (j, high, t_high)
      checked += 1
  assert stats.proved >= checked > 0


def test_the_side_searches_prove_the_same_bounds_under_xla():
  """The side searches' proofs (one spec per domain) run under XLA when
  told: the refined bounds are numpy's, and hold the exact ranges."""
  net, lower, upper, crown = _case(1)
  by_numpy, stats = bab.refine_layer_bounds(net, lower, upper, crown, GENEROUS)
  by_xla, _ = bab.refine_layer_bounds(
      net, lower, upper, crown, dataclasses.replace(GENEROUS, proofs="xla"))
  assert stats.proved > 0
  for numpy_side, xla_side in ((by_numpy.lowers, by_xla.lowers),
                               (by_numpy.uppers, by_xla.uppers)):
    for a, b in zip(numpy_side, xla_side):
      np.testing.assert_allclose(b, a, rtol=0, atol=1e-9)
  _assert_holds_exact_ranges(net, lower, upper, by_xla)


@pytest.mark.parametrize("seed", [0, 2])
def test_later_rounds_move_the_proved_sides_further_and_stay_sound(seed):
  """Each round asks the sides proved in the last one for half its step
  again (the VNN-LIB path runs 4): never looser than one round, tighter
  where a second step holds, and still inside the exact ranges."""
  net, lower, upper, crown = _case(seed)
  one, _ = bab.refine_layer_bounds(net, lower, upper, crown, GENEROUS)
  four, stats = bab.refine_layer_bounds(
      net, lower, upper, crown,
      refine.RefineConfig(seconds=600.0, rounds=4, cut_steps=0))
  _assert_holds_exact_ranges(net, lower, upper, four)
  assert np.all(four.lowers[1] >= one.lowers[1])
  assert np.all(four.uppers[1] <= one.uppers[1])
  moved = np.sum(four.lowers[1] > one.lowers[1] + 1e-6) + np.sum(
      four.uppers[1] < one.uppers[1] - 1e-6)
  assert moved > 0 and stats.sides > 6


def test_a_deeper_net_refines_every_later_layer_soundly():
  net, lower, upper, crown = _case(11, sizes=(2, 4, 4, 4, 2), delta=0.5)
  assert all(crown.unstable_counts())   # each later layer has work
  refined, stats = bab.refine_layer_bounds(
      net, lower, upper, crown,
      refine.RefineConfig(seconds=600.0, rounds=3, cut_steps=0))
  _assert_holds_exact_ranges(net, lower, upper, refined)
  assert stats.proved > 0


def test_each_later_layer_gets_its_share_of_the_cap(monkeypatch):
  """Searches that spend all their time on the first later layer leave the
  next one its share: with two later layers and a 4 s cap, the first
  layer's searches end within 2 s and the second's still get time."""
  net, lower, upper, crown = _case(11, sizes=(2, 4, 4, 4, 2), delta=0.5)
  assert crown.unstable_counts()[1:] == (2, 1)
  config = refine.RefineConfig(seconds=4.0, cut_steps=0)
  refine.warm_up(net, lower, upper, crown, config)   # no compile in the cap
  calls = []

  def spends_its_time(self, specs, tau, t_end):
    calls.append((len(self.layers.lowers) - 1, t_end - time.perf_counter()))
    time.sleep(max(t_end - time.perf_counter(), 0.0))
    return np.full(len(tau), np.nan)   # nothing proved

  monkeypatch.setattr(refine._LayerSides, "run", spends_its_time)  # pylint: disable=protected-access
  bab.refine_layer_bounds(net, lower, upper, crown, config)
  assert [k for k, _ in calls] == [1, 2]
  assert calls[0][1] <= 2.0 and calls[1][1] >= 1.0, calls


def test_a_planted_unsound_proof_is_caught(monkeypatch):
  """The soundness check above fails when the searches' proved bounds are
  overstated by 1."""
  net, lower, upper, crown = _case(0)
  honest = refine._LayerSides.run   # pylint: disable=protected-access

  def overstated(self, specs, tau, t_end):
    return honest(self, specs, tau, t_end) + 1.0

  monkeypatch.setattr(refine._LayerSides, "run", overstated)  # pylint: disable=protected-access
  planted, stats = bab.refine_layer_bounds(net, lower, upper, crown, GENEROUS)
  assert stats.proved > 0
  with pytest.raises(AssertionError):
    _assert_holds_exact_ranges(net, lower, upper, planted)


def test_attack_extremes_are_attained_values():
  """The attack's extremes are values of actual inputs: inside the exact
  range."""
  net, lower, upper, _ = _case(2)
  low, high = refine.attack_extremes(net, lower, upper, 1)
  for j in range(6):
    exact_low, exact_high = _exact_range(net, lower, upper, 1, j)
    assert exact_low - 1e-9 <= low[j] <= high[j] <= exact_high + 1e-9


def test_no_time_changes_nothing():
  net, lower, upper, crown = _case(0)
  refined, stats = bab.refine_layer_bounds(
      net, lower, upper, crown, refine.RefineConfig(seconds=0.0))
  assert stats.sides == 0
  for a, b in zip(refined.lowers + refined.uppers, crown.lowers + crown.uppers):
    np.testing.assert_array_equal(a, b)


def test_no_rounds_gives_the_cut_bounds_alone(monkeypatch):
  """rounds=0 (certify's default): each side's own cut bounds, no side
  search nor its attack started, still inside the exact ranges and tighter than CROWN
  somewhere."""
  net, lower, upper, crown = _case(2)
  started = []
  monkeypatch.setattr(refine._LayerSides, "run",  # pylint: disable=protected-access
                      lambda self, specs, tau, t_end: started.append(1))
  monkeypatch.setattr(refine, "attack_extremes",
                      lambda *a, **k: started.append(2))
  refined, stats = bab.refine_layer_bounds(
      net, lower, upper, crown, refine.RefineConfig(seconds=600.0, rounds=0))
  assert not started and stats.sides == 0
  _assert_holds_exact_ranges(net, lower, upper, refined)
  cut = bab.cut_bounds.tighten_layer(net, lower, upper, crown, 1)
  np.testing.assert_array_equal(refined.lowers[1], cut.lowers[1])
  np.testing.assert_array_equal(refined.uppers[1], cut.uppers[1])
  assert (np.any(refined.lowers[1] > crown.lowers[1] + 1e-6)
          or np.any(refined.uppers[1] < crown.uppers[1] - 1e-6))
