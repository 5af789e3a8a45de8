"""Importance MILP, structural pruning and baselines (issue 4)."""

import numpy as np
import pytest

from robust_prune.milp import solvers
from robust_prune.milp import standard_form
from robust_prune.network import Network, forward
from robust_prune.pruning import batch as batch_lib
from robust_prune.pruning import eq10
from robust_prune.pruning import importance as imp
from robust_prune.pruning import structure

SOLVERS = solvers.SOLVERS


def net(*layers):
  return Network(tuple(np.asarray(w, np.float32) for w, _ in layers),
                 tuple(np.asarray(b, np.float32) for _, b in layers))


# Two inputs, two classes. Hidden neuron 0 copies x0, neuron 1 copies x1,
# neuron 2 is dead on every input in [0, 1]^2 (weights -1, bias -1).
# Class 0 needs neuron 0 (logit gap 2 * h0 on x = (1, 0)), class 1 neuron 1.
ONE_HIDDEN = net(
    ([[1, 0, -1], [0, 1, -1]], [0, 0, -1]),
    ([[1, -1], [-1, 1], [5, -5]], [0, 0]))
# The same with a second hidden layer (identity on neurons 0, 1 and a third
# neuron that is never active), so the score MILP has binaries.
TWO_HIDDEN = net(
    ([[1, 0, -1], [0, 1, -1]], [0, 0, -1]),
    ([[1, 0, 0], [0, 1, 0], [0, 0, 1]], [0, 0, -0.5]),
    ([[1, -1], [-1, 1], [3, -3]], [0, 0]))
TOY_IMAGES = np.array([[1.0, 0.0], [0.0, 1.0]])
TOY_LABELS = np.array([0, 1])


@pytest.mark.parametrize("solver", SOLVERS)
@pytest.mark.parametrize("network", [ONE_HIDDEN, TWO_HIDDEN])
def test_dead_neuron_scores_zero_and_sole_path_scores_one(solver, network):
  # Margin 2 is exactly what neurons 0 and 1 give at full activation.
  r = imp.importance_scores(network, TOY_IMAGES, TOY_LABELS, margin=2.0,
                            solver=solver, time_limit=20)
  assert r.proven, r
  for s in r.scores:
    np.testing.assert_allclose(s[:2], 1.0, atol=1e-6)
    assert s[2] <= 1e-6
  masks = structure.keep_masks_from_scores(r.scores, 1e-3)
  pruned, kept = structure.prune_network(network, masks)
  assert pruned.hidden_widths == (2,) * (network.num_layers - 1)
  assert all(k.tolist() == [0, 1] for k in kept)
  # Objective: per-layer mean of (s - 2), summed: each layer has 2/3 kept.
  assert r.objective == pytest.approx((network.num_layers - 1) * (2 / 3 - 2),
                                      abs=1e-5)


def test_smaller_margin_lowers_scores():
  # With margin 1 the sole path needs only half its activation in layer 0.
  r = imp.importance_scores(ONE_HIDDEN, TOY_IMAGES, TOY_LABELS, margin=1.0,
                            solver="HIGHS", time_limit=20)
  np.testing.assert_allclose(r.scores[0], [0.5, 0.5, 0.0], atol=1e-6)
  assert r.min_batch_margin == pytest.approx(1.0, abs=1e-6)


def test_hinge_penalty_trades_margin_for_sparsity():
  # Each image's hinge costs lam/2 per unit of margin missed; dropping s_j
  # by ds costs 2*ds of margin for 1/3*ds of objective. lam small: prune.
  small = imp.importance_scores(ONE_HIDDEN, TOY_IMAGES, TOY_LABELS,
                                margin=2.0, lam=0.1, time_limit=20)
  large = imp.importance_scores(ONE_HIDDEN, TOY_IMAGES, TOY_LABELS,
                                margin=2.0, lam=10.0, time_limit=20)
  assert np.all(small.scores[0] <= 1e-6)
  np.testing.assert_allclose(large.scores[0][:2], 1.0, atol=1e-6)


# ------------------------------------------------------------------ eq. 10
def _one_scored_relu(u, a_lower, a_upper, **kwargs):
  """One scored ReLU's rows (eq10.scored_relu_rows) over columns
  (h, a, s, on)."""
  model = standard_form.MilpModel()
  h, a, s = model.add_vars(3, [0.0, a_lower, 0.0], [np.inf, a_upper, 1.0])
  on = model.add_vars(1, 0.0, 1.0, integer=True)[0]
  t_lower, t_upper = a_lower - u, a_upper
  eq10.scored_relu_rows(model, h, a, s, on if t_lower < 0 else None, u=u,
                        t_lower=t_lower, t_upper=t_upper, **kwargs)
  return model


@pytest.mark.parametrize("a_lower, a_upper, u", [
    (-2.0, 1.5, 1.75), (0.5, 3.0, 3.25),
    (1.0, 1.0, 1.0)])  # the last is always on: no binary
def test_eq10_rows_admit_exactly_the_scored_relu(a_lower, a_upper, u):
  # For every (a, s) in the box, h = max(0, a - (1 - s) u) is the only
  # output the rows allow (with some binary), as eq. 10 intends.
  model = _one_scored_relu(u, a_lower, a_upper)
  rng = np.random.default_rng(0)
  for a, s in zip(rng.uniform(a_lower, a_upper, 200), rng.random(200)):
    true_h = max(0.0, a - (1.0 - s) * u)
    feasible = [model.max_violation([h, a, s, on])
                for h in (true_h, true_h + 0.1, true_h - 0.1) for on in (0, 1)
                if h >= 0]
    assert min(feasible[:2]) < 1e-9, (a, s)
    assert min(feasible[2:]) > 1e-3, (a, s)


def test_eq10_lower_half_only_bounds_the_output_from_below():
  model = _one_scored_relu(2.0, -1.0, 1.0, lower_half_only=True)
  a, s = 0.5, 0.5  # t = 0.5 - 0.5 * 2 = -0.5, so h >= 0 only
  assert model.max_violation([0.0, a, s, 0]) < 1e-12
  assert model.max_violation([3.0, a, s, 0]) < 1e-12  # no upper rows
  assert model.max_violation([0.1, 1.0, 1.0, 0]) > 0.5  # h >= t = 1


def test_eq10_a_relu_that_can_be_off_needs_its_binary():
  with pytest.raises(ValueError, match="needs a binary"):
    eq10.scored_relu_rows(standard_form.MilpModel(), 0, 1, 2, None, u=1.0,
                          t_lower=-1.0, t_upper=1.0)


def test_first_layer_outputs_are_scores_times_relu():
  out = eq10.first_layer_outputs(np.array([7, 8, 9]),
                                 np.array([0.5, 0.0, 2.0]))
  assert out.cols.tolist() == [7, 9] and out.neurons.tolist() == [0, 2]
  np.testing.assert_array_equal(out.coef, [0.5, 2.0])


# ------------------------------------------------------------- the batch
def test_first_per_class_keeps_canonical_order_and_names_short_classes():
  labels = np.array([1, 0, 1, 0, 2, 0, 1, 7])  # 7: no such class, skipped
  accept = lambda idx: (idx != 3, idx * 10)
  idx, payload = batch_lib.first_per_class(
      labels, 3, 1, accept, chunk=3, shortfall=lambda short: f"{short}")
  assert idx.tolist() == [1, 0, 4] and payload == [10, 0, 40]
  idx, _ = batch_lib.first_per_class(labels, 3, 1, accept, offset=2,
                                     shortfall=str)
  assert idx.tolist() == [5, 2, 4]
  with pytest.raises(ValueError, match=r"^\[2\]$"):
    batch_lib.first_per_class(labels, 3, 2, accept, chunk=3, shortfall=str)
  with pytest.raises(ValueError, match="images_per_class"):
    batch_lib.first_per_class(labels, 3, 0, accept, shortfall=str)


# ------------------------------------------------------------ real MNIST
NUM_CLASSES = 4  # digits 0-3 keep the exact MILP small enough for CI


def fitted_net(train, hidden, seed=0):
  """A 2-hidden-layer net on digits 0..NUM_CLASSES-1 fitted in closed form
  (random ReLU features, least-squares read-out): no training run needed."""
  rng = np.random.default_rng(seed)
  sel = np.flatnonzero(train.labels[:5000] < NUM_CLASSES)
  x = train.images[sel].astype(np.float64)
  y = train.labels[sel]
  w0 = rng.normal(size=(784, hidden[0])) / np.sqrt(784 * 0.1)
  b0 = rng.normal(size=hidden[0]) * 0.1
  w1 = rng.normal(size=hidden) / np.sqrt(hidden[0] * 0.3)
  b1 = rng.normal(size=hidden[1]) * 0.1
  h = np.maximum(np.maximum(x @ w0 + b0, 0) @ w1 + b1, 0)
  coef = np.linalg.lstsq(np.c_[h, np.ones(len(h))], np.eye(NUM_CLASSES)[y],
                         rcond=None)[0]
  network = Network(
      tuple(np.asarray(w, np.float32) for w in (w0, w1, coef[:-1])),
      tuple(np.asarray(b, np.float32) for b in (b0, b1, coef[-1])))
  return network, train.images[sel], y


@pytest.fixture(scope="module")
def mnist_subset(mnist_train):
  return fitted_net(mnist_train, (24, 12))


@pytest.fixture(scope="module")
def mnist_net(mnist_subset):
  return mnist_subset[0]


def test_batch_has_correct_images_of_every_class(mnist_subset):
  network, images, labels = mnist_subset
  x, y, idx = batch_lib.select_batch(network, images, labels,
                                     images_per_class=2)
  assert y.tolist() == [0, 0, 1, 1, 2, 2, 3, 3]
  np.testing.assert_array_equal(labels[idx], y)
  assert np.all(imp.margins(forward(network, x), y) > 0)


@pytest.fixture(scope="module")
def mnist_batch(mnist_subset):
  network, images, labels = mnist_subset
  x, y, _ = batch_lib.select_batch(network, images, labels, min_margin=0.05)
  return x, y


@pytest.fixture(scope="module")
def solved(mnist_net, mnist_batch):
  x, y = mnist_batch
  return {s: imp.importance_scores(mnist_net, x, y, margin=0.05, solver=s,
                                   time_limit=30)
          for s in SOLVERS}


def test_all_ones_start_is_feasible(mnist_net, mnist_batch):
  x, y = mnist_batch
  built = imp.build_importance_milp(mnist_net, x, y, margin=0.05)
  assert built.num_binaries > 0
  assert built.model.max_violation(built.start) < 1e-9


def test_milp_objective_is_the_importance_objective(mnist_net, mnist_batch):
  # The MILP's costs (eq10.objective_costs) and eq10.importance_objective
  # agree at the start point, hinge slacks included.
  x, y = mnist_batch
  rng = np.random.default_rng(2)
  scores = [rng.random(w) for w in mnist_net.hidden_widths]
  for lam in (0.0, 0.7):
    built = imp.build_importance_milp(mnist_net, x, y, margin=0.05, lam=lam,
                                      start_scores=scores)
    value = imp.milp_objective(mnist_net, x, y, scores, margin=0.05, lam=lam)
    assert built.model.objective(built.start) == pytest.approx(value,
                                                               abs=1e-9)
    if lam:
      m = imp.margins(imp.scored_forward(mnist_net, x, scores), y)
      assert np.any(m < 0.05)  # the hinge term is really exercised
      assert value > sum(np.mean(s) - 2 for s in scores) + 1e-6


def test_margin_holds_for_returned_scores(mnist_net, mnist_batch, solved):
  x, y = mnist_batch
  for r in solved.values():
    assert r.proven, (r.solver, r.status)
    m = imp.margins(imp.scored_forward(mnist_net, x, r.scores), y)
    assert np.all(m >= 0.05 - 1e-5), (r.solver, m)
    assert r.min_batch_margin == pytest.approx(m.min())
    assert any(np.any(s < 1e-3) for s in r.scores)  # something is pruned


def test_solver_parity(solved):
  objectives = [r.objective for r in solved.values()]
  assert max(objectives) - min(objectives) < 1e-3 * max(1, abs(objectives[0]))
  for r in solved.values():
    assert r.bound <= r.objective + 1e-6


def test_pattern_descent_gives_a_feasible_point_no_better_than_optimum(
    mnist_net, mnist_batch, solved):
  x, y = mnist_batch
  built = imp.build_importance_milp(mnist_net, x, y, margin=0.05)
  assert len(built.relus) == built.num_binaries
  d = imp.pattern_descent(mnist_net, x, y, built, margin=0.05, time_limit=20)
  assert d is not None
  m = imp.margins(imp.scored_forward(mnist_net, x, d.scores), y)
  assert np.all(m >= 0.05 - 1e-6), m
  assert d.objective == pytest.approx(
      imp.milp_objective(mnist_net, x, y, d.scores, margin=0.05))
  # Better than the all-ones start, never better than the proven optimum.
  assert d.objective < -1.0 * len(mnist_net.hidden_widths) - 1e-3
  assert d.objective >= solved["HIGHS"].objective - 1e-6
  # Its point is a feasible start of the cut-off MILP.
  cut = imp.build_importance_milp(mnist_net, x, y, margin=0.05,
                                  start_scores=d.scores, cutoff=d.objective)
  assert cut.model.max_violation(cut.start) < 1e-6


def test_descent_start_keeps_the_proven_optimum(mnist_net, mnist_batch,
                                                solved):
  x, y = mnist_batch
  plain = imp.importance_scores(mnist_net, x, y, margin=0.05, solver="HIGHS",
                                time_limit=30, descent=False)
  assert plain.proven and solved["HIGHS"].proven
  assert solved["HIGHS"].heuristic_objective is not None
  assert plain.heuristic_objective is None
  assert plain.objective == pytest.approx(solved["HIGHS"].objective,
                                          abs=1e-4)


def test_scored_network_at_all_ones_is_the_network(mnist_net, mnist_batch):
  x, _ = mnist_batch
  ones = [np.ones(w) for w in mnist_net.hidden_widths]
  np.testing.assert_allclose(imp.scored_forward(mnist_net, x, ones),
                             forward(mnist_net, x), rtol=1e-12, atol=1e-12)


def test_score_bounds_hold_for_random_scores(mnist_net, mnist_batch):
  x, _ = mnist_batch
  b = imp.score_bounds(mnist_net, x)
  rng = np.random.default_rng(1)
  for _ in range(50):
    scores = [rng.random(w) * (rng.random(w) < 0.7)
              for w in mnist_net.hidden_widths]
    pre, _, _ = eq10.scored_values(mnist_net, x, scores, b.offsets)
    for a, lo, up in zip(pre, b.lowers, b.uppers):
      assert np.all(a >= lo - 1e-9) and np.all(a <= up + 1e-9)


def test_pruned_equals_masked_on_mnist(mnist_net, mnist_test):
  rng = np.random.default_rng(0)
  masks = [rng.random(w) < 0.5 for w in mnist_net.hidden_widths]
  pruned, kept = structure.prune_network(mnist_net, masks)
  masked = structure.masked_network(mnist_net, masks)
  x = mnist_test.images[:500]
  np.testing.assert_allclose(forward(pruned, x), forward(masked, x),
                             rtol=1e-10, atol=1e-10)
  assert pruned.hidden_widths == tuple(int(m.sum()) for m in masks)
  for k, m in zip(kept, masks):
    np.testing.assert_array_equal(k, np.flatnonzero(m))


# -------------------------------------------------------------- structure
def test_layer_is_never_emptied():
  masks = structure.keep_masks_from_scores(
      [np.array([0.0, 0.0005, 0.0002]), np.array([0.5, 0.0])], 1e-3)
  assert masks[0].tolist() == [False, True, False]
  assert masks[1].tolist() == [True, False]
  with pytest.raises(ValueError, match="empty"):
    structure.prune_network(TWO_HIDDEN, [np.zeros(3, bool), np.ones(3, bool)])


def test_baselines_remove_the_same_counts(mnist_net):
  masks = structure.keep_masks_from_scores(
      [np.linspace(0, 1, 24), np.linspace(0, 1, 12)], 0.5)
  assert structure.removed_counts(masks) == (12, 6)
  removed = structure.removed_counts(masks)
  for m in (structure.random_masks(mnist_net.hidden_widths, removed, seed=3),
            structure.magnitude_masks(mnist_net, removed)):
    assert structure.removed_counts(m) == removed
  # Magnitude pruning removes the smallest |in| * |out| neuron first:
  # in TWO_HIDDEN's layer 1, neuron 0 (in 1.0, out 2.0) vs neuron 2
  # (in 1.5, out 6.0).
  m = structure.magnitude_masks(TWO_HIDDEN, [1, 1])
  assert m[1].tolist() == [False, True, True]


def test_compose_kept_maps_back_to_original_indices():
  outer = (np.array([0, 2, 5, 7]),)
  inner = (np.array([1, 3]),)
  assert structure.compose_kept(outer, inner)[0].tolist() == [2, 7]


# ------------------------------------------------------------- bad input
@pytest.mark.parametrize("threshold", [-0.1, 1.5, float("nan")])
def test_threshold_outside_unit_interval(threshold):
  with pytest.raises(ValueError, match="threshold"):
    structure.keep_masks_from_scores([np.ones(3)], threshold)


def test_batch_missing_a_class():
  with pytest.raises(ValueError, match="misses classes \\[1\\]"):
    imp.importance_scores(ONE_HIDDEN, TOY_IMAGES[:1], TOY_LABELS[:1])


def test_misclassified_batch_image():
  with pytest.raises(ValueError, match="not classified correctly"):
    imp.importance_scores(ONE_HIDDEN, TOY_IMAGES, TOY_LABELS[::-1])


def test_unknown_solver():
  with pytest.raises(solvers.SolverUnavailableError,
                     match="'CPLEX' is unknown or not installed"):
    imp.importance_scores(ONE_HIDDEN, TOY_IMAGES, TOY_LABELS, solver="CPLEX")


def _market_split(seed=1, rows=5, cols=40):
  """A tiny MILP that no solver proves within a fraction of a second."""
  rng = np.random.default_rng(seed)
  a = rng.integers(0, 100, size=(rows, cols))
  model = standard_form.MilpModel()
  x = model.add_vars(cols, 0, 1, integer=True)
  plus = model.add_vars(rows, 0, np.inf, cost=1.0)
  minus = model.add_vars(rows, 0, np.inf, cost=1.0)
  for i in range(rows):
    model.add_row(np.r_[x, plus[i], minus[i]], np.r_[a[i], 1, -1],
                  a[i].sum() // 2, a[i].sum() // 2)
  return model


@pytest.mark.parametrize("solver", SOLVERS)
def test_time_out_is_reported_not_called_optimal(solver):
  r = solvers.solve(_market_split(), solver, time_limit=0.3)
  assert r.status in (solvers.TIME_LIMIT, solvers.NO_SOLUTION), r.solver_status
  assert not r.proven_optimal
  assert r.seconds < 5


def test_time_out_of_the_score_milp_keeps_a_valid_result(mnist_train):
  network, images, labels = fitted_net(mnist_train, (40, 20))
  x, y, _ = batch_lib.select_batch(network, images, labels,
                                   images_per_class=3, min_margin=0.05)
  r = imp.importance_scores(network, x, y, margin=0.05, solver="HIGHS",
                            time_limit=0.2, refine=False)
  assert r.status in (solvers.TIME_LIMIT, solvers.NO_SOLUTION), r.raw_status
  assert not r.proven
  # the pattern descent's point is always kept, so the check below runs
  assert r.status == solvers.TIME_LIMIT or r.heuristic_objective is None
  assert all(np.all((s >= 0) & (s <= 1)) for s in r.scores)
  if r.status == solvers.TIME_LIMIT:  # an unproven incumbent is still feasible
    m = imp.margins(imp.scored_forward(network, x, r.scores), y)
    assert np.all(m >= 0.05 - 1e-5)


def test_cutoff_keeps_the_incumbent_and_tightens_bounds(mnist_net, mnist_batch,
                                                         solved):
  x, y = mnist_batch
  r = solved["HIGHS"]
  built = imp.build_importance_milp(mnist_net, x, y, margin=0.05,
                                    start_scores=r.scores, cutoff=r.objective)
  assert built.model.max_violation(built.start) < 1e-6
  widths = mnist_net.hidden_widths
  budget = [w * (r.objective + 4 + 1e-6) for w in widths]
  tight = imp.score_bounds(mnist_net, x, budget)
  loose = imp.score_bounds(mnist_net, x)
  for lt, ll, ut, ul in zip(tight.lowers, loose.lowers, tight.uppers,
                            loose.uppers):
    assert np.all(lt >= ll - 1e-12) and np.all(ut <= ul + 1e-12)
  # Re-solving the cut-off problem proves the same optimum.
  again = solvers.solve(built.model, "HIGHS", time_limit=30,
                        start=built.start)
  assert again.proven_optimal
  assert again.objective == pytest.approx(r.objective, abs=1e-4)
