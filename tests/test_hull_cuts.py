"""First-layer hull cuts (bounds.hull_cuts) and their use in the branch and
bound: valid at every box vertex, exact (the concave envelope) at the point
they are made for, the same when made at many vertices at once, sound
inside domain bounds, and a planted unsound cut is caught."""

import functools
import itertools

import numpy as np
import pytest
import scipy.optimize

from robust_prune import bab, bounds
from robust_prune.bounds import hull_cuts
from robust_prune.network import forward, Network
from testing import exact_min_spec, random_network


def _layer(seed, n_in=5, width=6):
  rng = np.random.default_rng(seed)
  w, b = rng.normal(size=(n_in, width)), rng.normal(size=width)
  lower = rng.uniform(-1, 0.5, n_in)
  upper = lower + rng.uniform(0.0, 1.5, n_in)
  upper[0] = lower[0]   # a coordinate of zero width
  return rng, w, b, lower, upper


def _vertices(lower, upper):
  return np.array(list(itertools.product(*zip(lower, upper))))


def _worst_violation(cuts, w, b, lower, upper):
  """max over box vertices and cuts of relu(w.x + b) - (v.x + c); a valid
  cut is <= 0 everywhere on the box, and relu minus a linear function is
  convex, so its maximum over the box is at a vertex."""
  v = _vertices(lower, upper)
  relu = np.maximum(v @ w + b, 0) @ cuts.neurons.T
  return float(np.max(relu - (v @ cuts.input_coeffs.T + cuts.constant)))


def _envelope(w_n, b_n, lower, upper, point):
  """The concave envelope of relu(w_n.x + b_n) over the box at `point`: the
  best convex combination of vertex values that averages to the point."""
  v = _vertices(lower, upper)
  res = scipy.optimize.linprog(
      -np.maximum(v @ w_n + b_n, 0), A_eq=np.vstack([v.T, np.ones(len(v))]),
      b_eq=np.append(point, 1.0), bounds=(0, None), method="highs")
  assert res.status == 0
  return -res.fun


@pytest.mark.parametrize("seed", range(8))
def test_facets_are_valid_on_the_box_and_exact_at_their_point(seed):
  rng, w, b, lower, upper = _layer(seed)
  for point in (rng.uniform(lower, upper), np.where(
      rng.random(len(lower)) < 0.5, lower, upper)):
    cuts = hull_cuts.first_layer_facets(w, b, lower, upper, point)
    lows = b + np.minimum(w * lower[:, None], w * upper[:, None]).sum(0)
    ups = b + np.maximum(w * lower[:, None], w * upper[:, None]).sum(0)
    unstable = np.flatnonzero((lows < 0) & (ups > 0))
    np.testing.assert_array_equal(np.argmax(cuts.neurons, 1), unstable)
    assert _worst_violation(cuts, w, b, lower, upper) <= 0
    for k, n in enumerate(unstable):
      value = cuts.input_coeffs[k] @ point + cuts.constant[k]
      assert value == pytest.approx(
          _envelope(w[:, n], b[n], lower, upper, point), abs=1e-7)
      # never above the triangle chord at the point
      y = w[:, n] @ point + b[n]
      chord = ups[n] * (y - lows[n]) / (ups[n] - lows[n])
      assert value <= chord + 1e-7


def test_a_planted_unsound_cut_is_caught():
  """The checks above and the branch and bound's soundness tests would see
  a cut that cuts off a true point: lowering one constant by 0.05 makes the
  vertex check fail and lifts a domain bound above the exact minimum."""
  _, w, b, lower, upper = _layer(3)
  cuts = hull_cuts.first_layer_facets(w, b, lower, upper,
                                      (lower + upper) / 2)
  planted = cuts._replace(constant=cuts.constant - np.eye(cuts.count)[0] * 0.05)
  assert _worst_violation(cuts, w, b, lower, upper) <= 0
  assert _worst_violation(planted, w, b, lower, upper) > 0.01
  net, lower, upper, c, layers = _tiny_problem(1)
  exact, _ = exact_min_spec(net, lower, upper, c)
  cuts = _root_cuts(net, lower, upper)
  bound = _root_bound(net, lower, upper, c, layers, cuts, gamma=1.0)
  assert bound <= exact + 1e-9
  unsound = cuts._replace(constant=cuts.constant - 1.0)
  assert _root_bound(net, lower, upper, c, layers, unsound, 1.0) > exact


def _tiny_problem(seed):
  net = random_network(seed, (3, 6, 5, 3))
  rng = np.random.default_rng(seed)
  lower, upper = bounds.input_box(rng.uniform(0.3, 0.7, size=3), 0.3)
  c = bounds.margin_spec(0, [1], 3)[0]
  return net, lower, upper, c, bounds.crown_bounds(net, lower, upper)


def _root_cuts(net, lower, upper):
  return hull_cuts.first_layer_facets(net.weights[0], net.biases[0], lower,
                                      upper, (lower + upper) / 2)


def _root_bound(net, lower, upper, c, layers, cuts, gamma):
  """The float64 proof's bound of the undivided box with every cut at
  multiplier `gamma` and CROWN's lower slopes."""
  zeros = [np.zeros((1, len(l))) for l, _ in layers.hidden]
  alphas = [(u > -l).astype(float)[None] for l, u in layers.hidden]
  gammas = None if cuts is None else np.full((1, cuts.count), gamma)
  return bab.bound_float64(net, lower, upper, layers, c, zeros, alphas, zeros,
                           cuts, gammas)[0]


def _margin_problem(seed, delta):
  """A small network's margin spec (label vs another class) on a box."""
  net = random_network(seed, (4, 8, 5, 3))
  x = np.random.default_rng(seed).uniform(0.3, 0.7, size=4)
  label = int(np.argmax(forward(net, x[None])[0]))
  lower, upper = bounds.input_box(x, delta)
  c = bounds.margin_spec(label, [(label + 1 + seed % 2) % 3], 3)[0]
  return net, lower, upper, c, bounds.crown_bounds(net, lower, upper)


def _search_is_exact(net, lower, upper, c, layers, config):
  """The search brackets the exact minimum (region enumeration), and a
  decision search decides its sign; returns that decision search."""
  exact, _ = exact_min_spec(net, lower, upper, c)
  full = bab.branch_and_bound_spec(net, lower, upper, c, config, layers,
                                   minimize=True)
  assert full.optimal and full.lower_bound <= exact + 1e-9
  assert full.objective == pytest.approx(exact, abs=bab.OPTIMUM_TOLERANCE)
  search = bab.MarginSearch(net, lower, upper, c, config, layers)
  decided = search.result or search.advance(60.0)
  if exact > 1e-6:
    assert decided.status == "robust"
  elif exact < -1e-6:
    assert decided.status == "adversarial"
    assert forward(net, decided.x_adv[None])[0] @ c < 0
  return search


@pytest.mark.parametrize("seed", range(4))
def test_domain_bounds_with_cuts_are_sound_and_zero_gammas_change_nothing(
    seed):
  net, lower, upper, c, layers = _tiny_problem(seed)
  exact, _ = exact_min_spec(net, lower, upper, c)
  samples = np.random.default_rng(seed).uniform(lower, upper, (20000, 3))
  assert exact <= np.min(forward(net, samples) @ c) + 1e-9
  cuts = _root_cuts(net, lower, upper)
  without = _root_bound(net, lower, upper, c, layers, None, 0.0)
  assert _root_bound(net, lower, upper, c, layers, cuts, 0.0) == \
      pytest.approx(without, abs=1e-12)
  for gamma in (0.1, 0.5, 2.0, 10.0):
    assert _root_bound(net, lower, upper, c, layers, cuts, gamma) <= exact


def test_cut_rounds_tighten_the_root_and_the_search_stays_exact():
  """On small networks the root bound with cuts is never looser and
  sometimes tighter, and the search with cuts still brackets the exact
  minimum (region enumeration)."""
  tighter = 0
  for seed in range(6):
    net = random_network(seed, (4, 6, 5, 3))
    rng = np.random.default_rng(seed)
    lower, upper = bounds.input_box(rng.uniform(0.3, 0.7, size=4), 0.3)
    c = bounds.margin_spec(0, [1 + seed % 2], 3)[0]
    layers = bounds.crown_bounds(net, lower, upper)
    root = {}
    for rounds in (0, 2):
      config = bab.BabConfig(time_limit=0.0, cut_rounds=rounds, batch_size=16)
      root[rounds] = bab.branch_and_bound_spec(
          net, lower, upper, c, config, layers, minimize=True).lower_bound
    assert root[2] >= root[0] - 1e-4
    tighter += root[2] > root[0] + 1e-3
    exact, _ = exact_min_spec(net, lower, upper, c)
    full = bab.branch_and_bound_spec(
        net, lower, upper, c, bab.BabConfig(time_limit=60.0, cut_rounds=2,
                                            batch_size=16), layers,
        minimize=True)
    assert full.optimal and full.lower_bound <= exact + 1e-9
    assert full.objective == pytest.approx(exact, abs=bab.OPTIMUM_TOLERANCE)
  assert tighter >= 2


def test_cut_rounds_must_not_be_negative():
  with pytest.raises(ValueError, match="cut_rounds"):
    bab.BabConfig(cut_rounds=-1)
  with pytest.raises(ValueError, match="root_cut_rounds"):
    bab.BabConfig(root_cut_rounds=-1)


@pytest.mark.parametrize("per_domain", [False, True])
def test_padded_cuts_keep_their_rows_and_add_zero_ones(per_domain):
  rng = np.random.default_rng(3)
  lead = (2,) if per_domain else ()
  cuts = hull_cuts.Cuts(np.eye(4)[[0, 2, 3]], rng.normal(size=lead + (3, 5)),
                        rng.normal(size=lead + (3,)))
  wide = hull_cuts.padded(cuts, 7)
  assert wide.count == 7 and wide.neurons.shape == (7, 4)
  assert wide.input_coeffs.shape == lead + (7, 5)
  assert np.array_equal(wide.neurons[:3], cuts.neurons)
  assert np.array_equal(wide.input_coeffs[..., :3, :], cuts.input_coeffs)
  assert np.array_equal(wide.constant[..., :3], cuts.constant)
  assert not (wide.neurons[3:].any() or wide.input_coeffs[..., 3:, :].any()
              or wide.constant[..., 3:].any())
  with pytest.raises(ValueError, match="do not fit"):
    hull_cuts.padded(cuts, 2)


@pytest.mark.parametrize("per_neuron", [1, 2])
def test_strongest_rows_keep_each_neurons_largest_multipliers(per_neuron):
  rng = np.random.default_rng(per_neuron)
  owner = rng.integers(0, 5, size=40)
  gammas = rng.choice([0.0, 0.25, 0.5, 1.0], size=40)   # ties too
  cuts = hull_cuts.Cuts(np.eye(5)[owner], rng.normal(size=(40, 3)),
                        rng.normal(size=40))
  rows = hull_cuts.strongest_rows(cuts, gammas, per_neuron)
  expected = []
  for n in range(5):   # by multiplier, then the earlier row
    mine = sorted(np.flatnonzero(owner == n), key=lambda k: (-gammas[k], k))
    expected += mine[:per_neuron]
  assert list(rows) == sorted(expected)
  kept = hull_cuts.take(cuts, rows)
  assert np.array_equal(kept.input_coeffs, cuts.input_coeffs[rows])


def test_root_cut_rounds_keep_the_slots_and_the_search_stays_exact():
  """Extra root rounds with one kept facet per neuron: the search's cut
  slots stay one round's, its root is never looser than one round's and
  sometimes tighter, and it still brackets the exact minimum (region
  enumeration) and decides the exact minimum's sign."""
  tighter = 0
  for seed in range(8):
    net, lower, upper, c, layers = _margin_problem(seed, 0.3)
    root = {}
    for extra in (0, 4):
      config = bab.BabConfig(time_limit=0.0, cut_rounds=1, batch_size=16,
                             root_cut_rounds=extra)
      root[extra] = bab.branch_and_bound_spec(
          net, lower, upper, c, config, layers, minimize=True).lower_bound
      search = bab.MarginSearch(net, lower, upper, c, config, layers)
      if search.result is None:
        assert search._search.problem.cuts.count == 8   # one round's slots
    assert root[4] >= root[0] - 1e-9
    tighter += root[4] > root[0] + 1e-3
    _search_is_exact(net, lower, upper, c, layers, bab.BabConfig(
        time_limit=60.0, cut_rounds=1, batch_size=16, root_cut_rounds=4))
  assert tighter >= 2


def _unstable(w, b, lower, upper):
  lows = b + np.minimum(w * lower[:, None], w * upper[:, None]).sum(0)
  ups = b + np.maximum(w * lower[:, None], w * upper[:, None]).sum(0)
  return np.flatnonzero((lows < 0) & (ups > 0))


def _at_upper(points, lower, upper):
  return np.abs(points - upper) < np.abs(points - lower)


@pytest.mark.parametrize("seed", range(6))
def test_vertex_facet_rows_are_the_facets_at_each_vertex_and_valid(seed):
  """At many vertices at once (a running sum per neuron, no per-vertex
  sort), every unstable neuron's rows are first_layer_facets' facet at
  that vertex (its own sort); with valid_constants each is a cut valid on
  the box and tight at its vertex."""
  rng, w, b, lower, upper = _layer(seed, n_in=6, width=7)
  w[1, 2] = 0.0                                   # a zero weight
  every = _vertices(lower, upper)
  points = every[rng.choice(len(every), 9, replace=False)]
  plan = hull_cuts.facet_plan(w, b, lower, upper, None, 7)
  k = len(_unstable(w, b, lower, upper))
  assert k > 0
  rows, constant = hull_cuts.vertex_facet_rows(
      plan, _at_upper(points.astype(np.float32), lower, upper))
  assert not rows[:, k:].any() and not constant[:, k:].any()
  valid = hull_cuts.valid_constants(rows, plan.w, plan.bias, lower, upper)
  for s, point in enumerate(points):
    one = hull_cuts.first_layer_facets(w, b, lower, upper, point)
    np.testing.assert_array_equal(plan.neurons[:k], one.neurons)
    np.testing.assert_allclose(rows[s, :k], one.input_coeffs, atol=1e-12)
    np.testing.assert_allclose(constant[s, :k], one.constant, atol=1e-7)
    np.testing.assert_allclose(valid[s, :k], one.constant, atol=1e-7)
    cuts = hull_cuts.Cuts(plan.neurons, rows[s], valid[s])
    assert _worst_violation(cuts, w, b, lower, upper) <= 0.0
    # tight at its own vertex: the hull is exact at a vertex
    at = np.maximum(point @ w + b, 0) @ one.neurons.T
    np.testing.assert_allclose(rows[s, :k] @ point + valid[s, :k], at,
                               atol=1e-7)


@pytest.mark.parametrize("seed", range(6))
def test_vertex_cuts_on_the_device_are_the_facets_of_chosen_neurons(seed):
  """bab.vertex_cuts: chosen neurons' facets (padded with zero rows, each
  vertex's repeated for both children) in float32 under jit equal the
  float64 facets to round-off, and their proof cuts are valid."""
  from robust_prune.bab.vertex_cuts import VertexCuts
  rng, w, b, lower, upper = _layer(seed, n_in=7, width=8)
  w[2, 3] = 0.0
  chosen = _unstable(w, b, lower, upper)[::-1][:4]
  k = len(chosen)
  points = np.where(rng.random((12, len(lower))) < 0.5, upper, lower)
  facets = VertexCuts(w, b, lower, upper, chosen, k + 2)
  device = facets.device(facets.bits(points), 32, repeat=2)
  rows32 = np.asarray(device.input_coeffs)
  assert rows32.shape == (32, k + 2, len(lower))
  proof = facets.proof(rows32[:24:2])
  for s, point in enumerate(points):
    one = hull_cuts.first_layer_facets(w, b, lower, upper, point, chosen)
    np.testing.assert_array_equal(np.asarray(device.neurons)[:k], one.neurons)
    for row in (2 * s, 2 * s + 1):
      np.testing.assert_allclose(rows32[row, :k], one.input_coeffs,
                                 atol=1e-4)
      np.testing.assert_allclose(np.asarray(device.constant)[row, :k],
                                 one.constant, atol=1e-4)
    assert not rows32[2 * s, k:].any()
    cuts = hull_cuts.Cuts(proof.neurons, proof.input_coeffs[s],
                          proof.constant[s])
    assert _worst_violation(cuts, w, b, lower, upper) <= 0.0
    np.testing.assert_allclose(proof.constant[s, :k], one.constant,
                               atol=1e-4)


@pytest.mark.parametrize("seed", range(6))
def test_root_facets_at_a_float32_vertex_are_the_facets_at_that_vertex(seed):
  """Problem.facets_at (the root's cuts, bab.layer_facets): at a minimising
  vertex as the bounds give it (float32, so each input a hair off its box
  end), one row per unstable neuron equal to first_layer_facets' facet at
  the exact vertex, valid on the box and tight at the vertex. (A sort of
  that float32 point would order the inputs of each group by round-off.)"""
  rng, w, b, lower, upper = _layer(seed, n_in=7, width=8)
  net = Network((w, rng.normal(size=(8, 3))), (b, rng.normal(size=3)))
  facets = bab.layer_facets(net, lower, upper)
  for _ in range(4):
    exact = np.where(rng.random(len(lower)) < 0.5, upper, lower)
    cuts = facets.at_vertex(exact.astype(np.float32).astype(np.float64))
    one = hull_cuts.first_layer_facets(w, b, lower, upper, exact)
    np.testing.assert_array_equal(cuts.neurons, one.neurons)
    np.testing.assert_allclose(cuts.input_coeffs, one.input_coeffs,
                               atol=1e-12)
    np.testing.assert_allclose(cuts.constant, one.constant, atol=1e-7)
    assert _worst_violation(cuts, w, b, lower, upper) <= 0.0
    at = np.maximum(exact @ w + b, 0) @ cuts.neurons.T
    np.testing.assert_allclose(cuts.input_coeffs @ exact + cuts.constant, at,
                               atol=1e-7)


@pytest.mark.parametrize("seed", range(6))
def test_valid_constants_make_any_row_a_valid_cut_tight_on_the_box(seed):
  """Any input row with the constant from `valid_constants` is a cut valid
  at every box vertex (and so on the box) and touching it; for a facet it
  is the facet's own constant."""
  rng, w, b, lower, upper = _layer(seed, n_in=6, width=7)
  chosen = _unstable(w, b, lower, upper)
  plan = hull_cuts.facet_plan(w, b, lower, upper, chosen, len(chosen))
  every = _vertices(lower, upper)
  relu = np.maximum(every @ w[:, chosen] + b[chosen], 0)      # (V, K)
  noise = rng.normal(size=(3, len(chosen), len(lower)))
  for rows in (noise, hull_cuts.vertex_facet_rows(plan, rng.random(
      (3, len(lower))) < 0.5)[0]):
    constant = hull_cuts.valid_constants(rows, plan.w, plan.bias, lower,
                                         upper)
    gap = np.einsum("sko,vo->svk", rows, every) + constant[:, None] - relu
    assert gap.min() >= 0.0
    np.testing.assert_allclose(gap.min(axis=1), 0.0, atol=1e-7)


def test_own_cuts_in_a_tuple_are_sound_and_a_planted_one_is_caught():
  """Root cuts and per-domain cuts together (a tuple of cut sets) give a
  bound below the exact minimum at any multipliers; lowering the per-domain
  cuts' constants by 1 lifts it above."""
  net, lower, upper, c, layers = _tiny_problem(1)
  exact, _ = exact_min_spec(net, lower, upper, c)
  root = _root_cuts(net, lower, upper)
  w, b = net.weights[0], net.biases[0]
  chosen = _unstable(w, b, lower, upper)
  plan = hull_cuts.facet_plan(w, b, lower, upper, chosen, len(chosen))
  rows, _ = hull_cuts.vertex_facet_rows(plan, np.array([[True, False, True]]))
  own = hull_cuts.Cuts(plan.neurons, rows, hull_cuts.valid_constants(
      rows, plan.w, plan.bias, lower, upper))
  zeros = [np.zeros((1, len(l))) for l, _ in layers.hidden]
  alphas = [(u > -l).astype(float)[None] for l, u in layers.hidden]
  xla = bab.XlaProof(net, lower, upper, layers, 4)
  for prove in (functools.partial(bab.bound_float64, net, lower, upper,
                                  layers), xla):
    bound = lambda cuts, gamma, prove=prove: prove(
        c, zeros, alphas, zeros, cuts,
        np.full((1, root.count + own.count), gamma))[0]
    for gamma in (0.0, 0.3, 1.0, 5.0):
      assert bound((root, own), gamma) <= exact
    planted = own._replace(constant=own.constant - 1.0)
    assert bound((root, planted), 1.0) > exact


def test_a_batch_of_float32_own_cuts_proves_what_one_domain_at_a_time_does():
  """The float64 proof takes a batch's own cuts a few domains at a time and
  keeps float32 rows as they are (exact in float64): 19 domains (three
  blocks) get the bounds of 19 proofs of one domain each with float64
  rows, and every bound is below the exact minimum."""
  from robust_prune.bab.vertex_cuts import VertexCuts
  net, lower, upper, c, layers = _tiny_problem(2)
  exact, _ = exact_min_spec(net, lower, upper, c)
  rng = np.random.default_rng(2)
  w, b = net.weights[0], net.biases[0]
  chosen = _unstable(w, b, lower, upper)
  facets = VertexCuts(w, b, lower, upper, chosen, len(chosen))
  points = np.where(rng.random((19, len(lower))) < 0.5, upper, lower)
  rows32 = np.asarray(facets.device(facets.bits(points), 19).input_coeffs)
  own = facets.proof(rows32)
  assert own.input_coeffs.dtype == np.float32
  zeros = [np.zeros((19, len(l))) for l, _ in layers.hidden]
  alphas = [rng.random((19, len(l))) for l, _ in layers.hidden]
  gammas = rng.uniform(0.0, 2.0, (19, own.count))
  batch = bab.bound_float64(net, lower, upper, layers, c, zeros, alphas,
                            zeros, own, gammas)
  # under XLA, in chunks of 8 (the last padded): the same bounds
  np.testing.assert_allclose(
      bab.XlaProof(net, lower, upper, layers, 8)(c, zeros, alphas, zeros, own,
                                                  gammas),
      batch, rtol=0, atol=1e-12)
  for d in range(19):
    one = own._replace(input_coeffs=own.input_coeffs[d:d + 1].astype(
        np.float64), constant=own.constant[d:d + 1])
    alone = bab.bound_float64(net, lower, upper, layers, c,
                              [z[d:d + 1] for z in zeros],
                              [a[d:d + 1] for a in alphas],
                              [z[d:d + 1] for z in zeros], one,
                              gammas[d:d + 1])
    assert batch[d] == pytest.approx(alone[0], abs=1e-12)
    assert batch[d] <= exact


def test_search_with_own_cuts_stays_exact(own_cuts=3):
  """With each domain's own facets (at its parent's vertex) the search
  still brackets the exact minimum (region enumeration) on small networks,
  and a decision search's verdict is the exact minimum's sign."""
  used = 0
  for seed in range(8):
    net, lower, upper, c, layers = _margin_problem(seed, 0.2)
    search = _search_is_exact(net, lower, upper, c, layers, bab.BabConfig(
        time_limit=60.0, cut_rounds=1, batch_size=16, own_cuts=own_cuts))
    used += search._search.problem.own_neurons is not None
  assert used >= 3   # the root's cuts chose neurons for own cuts


def test_own_cuts_must_not_be_negative():
  with pytest.raises(ValueError, match="own_cuts"):
    bab.BabConfig(own_cuts=-1)
