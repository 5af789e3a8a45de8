"""The MILP against exact ground truth on tiny networks, across solvers."""

import numpy as np
import pytest
from testing import (exact_min_margin, grid_min_margin, random_network,
                     solve_targeted, tiny_case)

from robust_prune import bounds
from robust_prune.milp import model as model_lib
from robust_prune.milp import objective, solvers, standard_form
from robust_prune.network import Network, forward
from robust_prune.verify import cascade as verify

ALL_SOLVERS = solvers.installed_solvers()


@pytest.mark.parametrize("solver", ALL_SOLVERS)
@pytest.mark.parametrize("seed", range(6))
def test_milp_optimum_equals_region_enumeration(seed, solver):
  net, x, label, target = tiny_case(seed)
  delta = 0.25
  lower, upper = bounds.input_box(x, delta)
  truth, _ = exact_min_margin(net, lower, upper, label, target)
  m, milp, outcome = solve_targeted(net, x, delta, label, target, solver)
  assert outcome.proven_optimal
  assert outcome.objective == pytest.approx(truth, abs=1e-5)
  # the grid can only be above the optimum (it samples the same box)
  assert grid_min_margin(net, lower, upper, label, target) >= truth - 1e-6
  # the optimum is attained by its own input point
  x_opt = outcome.x[milp.columns(m.x)]
  assert np.all(x_opt >= lower - 1e-7) and np.all(x_opt <= upper + 1e-7)
  logits = forward(net, np.clip(x_opt, lower, upper))
  assert logits[label] - logits[target] == pytest.approx(truth, abs=1e-5)


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("method", bounds.BOUND_METHODS)
def test_naive_and_tight_formulations_agree(seed, method):
  net = random_network(seed, (10, 12, 12, 10))
  x = np.random.default_rng(seed).uniform(size=10)
  label = int(np.argmax(forward(net, x)))
  for target in (t for t in range(10) if t != label):
    *_, naive = solve_targeted(net, x, 0.1, label, target, "HIGHS",
                               all_binary=True)
    m, _, tight = solve_targeted(net, x, 0.1, label, target, "HIGHS", method)
    assert naive.proven_optimal and tight.proven_optimal
    assert tight.objective == pytest.approx(naive.objective, abs=1e-5)
    assert m.num_binaries <= 24


@pytest.mark.parametrize("seed", range(3))
def test_solvers_agree(seed):
  net = random_network(seed + 50, (16, 10, 10, 10))
  x = np.random.default_rng(seed).uniform(size=16)
  label = int(np.argmax(forward(net, x)))
  lower, upper = bounds.input_box(x, 0.15)
  lb = bounds.crown_bounds(net, lower, upper)
  m = model_lib.build_model(net, lower, upper, lb)
  m.c.value = objective.margin_vector(label, (label + 1) % 10, 10)
  milp = standard_form.compile_model(m.problem)
  for target in range(10):
    if target == label:
      continue
    m.c.value = objective.margin_vector(label, target, 10)
    values = [solvers.solve(milp, s, time_limit=30).objective for s in ALL_SOLVERS]
    assert np.ptp(values) < 1e-5, values


def _verify(net, x, label, delta, **kw):
  kw.setdefault("bab_time_limit", 0.0)  # these tests are about the MILP path
  cfg = verify.VerifyConfig(delta=delta, **kw)
  return {r["target"]: r for r in verify.verify_image(net, x, label, 0, None, cfg)}


@pytest.mark.parametrize("solver", ALL_SOLVERS)
def test_records_and_witnesses(solver):
  net = random_network(7, (12, 10, 10, 10))
  x = np.random.default_rng(7).uniform(size=12)
  label = int(np.argmax(forward(net, x)))
  records = _verify(net, x, label, 0.2, solver=solver, pgd_steps=0)
  assert len(records) == 9
  statuses = {r["status"] for r in records.values()}
  assert statuses <= {"adversarial", "robust"} and "adversarial" in statuses
  for t, r in records.items():
    assert r["optimal"]
    assert r["num_binaries"] is not None and r["build_seconds"] >= 0
    if r["status"] == "adversarial":
      assert r["objective"] < 0
      ok, margin, _ = verify.check_witness(net, r["x_adv"], x, 0.2, label, t)
      assert ok and margin < 0
    else:
      assert r["objective"] >= 0 and "x_adv" not in r


def test_pgd_never_beats_milp_and_certify_agrees():
  net = random_network(8, (12, 10, 10, 10))
  x = np.random.default_rng(8).uniform(size=12)
  label = int(np.argmax(forward(net, x)))
  delta = 0.15
  targeted = _verify(net, x, label, delta, pgd_steps=0)
  targets = [t for t in range(10) if t != label]
  pgd = verify.pgd_candidates(net, x, label, targets, delta, steps=100,
                              restarts=4, seed=0)
  for t in targets:
    assert pgd[t][0] >= targeted[t]["objective"] - 1e-5
  certified = _verify(net, x, label, delta, mode="certify")
  for t in targets:
    assert certified[t]["status"] == targeted[t]["status"]
  # with PGD as warm start the optimum is unchanged
  warm = _verify(net, x, label, delta, pgd_steps=30)
  for t in targets:
    assert warm[t]["objective"] == pytest.approx(targeted[t]["objective"], abs=1e-5)


@pytest.mark.parametrize("seed", range(3))
def test_min_distortion_is_the_threshold(seed):
  net, x, label, target = tiny_case(seed)
  records = _verify(net, x, label, 0.4, mode="min_distortion", pgd_steps=0)
  r = records[target]
  if r["status"] == "robust":
    # no adversarial example within 0.4: the targeted optimum agrees
    *_, outcome = solve_targeted(net, x, 0.4, label, target, "HIGHS")
    assert outcome.objective > -verify.MIN_DISTORTION_MARGIN
    return
  assert r["status"] == "adversarial"
  radius = r["objective"]
  ok, margin, _ = verify.check_witness(net, r["x_adv"], x, radius + 1e-6,
                                       label, target)
  assert ok and margin <= -verify.MIN_DISTORTION_MARGIN + 1e-6
  # just inside the radius, even the margin threshold cannot be reached
  *_, outcome = solve_targeted(net, x, max(radius - 1e-3, 0), label, target,
                               "HIGHS")
  assert outcome.objective > -verify.MIN_DISTORTION_MARGIN


def test_misclassified_is_skipped():
  net = random_network(9, (5, 6, 10))
  x = np.random.default_rng(9).uniform(size=5)
  wrong = (int(np.argmax(forward(net, x))) + 1) % 10
  records = _verify(net, x, wrong, 0.1)
  assert {r["status"] for r in records.values()} == {"misclassified"}


def hard_case():
  """A problem no solver proves within a millisecond."""
  net = random_network(11, (784, 60, 60, 10), bias_scale=0.0)
  x = np.random.default_rng(11).uniform(size=784)
  label = int(np.argmax(forward(net, x)))
  return net, x, label


@pytest.mark.parametrize("solver", ALL_SOLVERS)
def test_time_limit_never_reports_unproven_optimum(solver):
  net, x, label = hard_case()
  records = _verify(net, x, label, 0.05, solver=solver, time_limit=0.01,
                    pgd_steps=0, mode="targeted", bab_time_limit=0.0)
  assert any(r["status"] == "timeout" for r in records.values())
  for r in records.values():
    assert r["optimal"] is False
    assert r["status"] in ("timeout", "adversarial", "robust")
    if r["status"] == "robust":
      assert r["best_bound"] >= 0
    if r["status"] == "adversarial":
      assert verify.check_witness(net, r["x_adv"], x, 0.05, label, r["target"])[0]


def test_glpk_time_limit_trap():
  """cvxopt's GLPK returns status 'feasible' with an incumbent on a time
  limit; cvxpy passes that on as a solution. Here it is not a proof."""
  if "GLPK_MI" not in ALL_SOLVERS:
    pytest.skip("GLPK_MI not installed")
  net, x, label = hard_case()
  lower, upper = bounds.input_box(x, 0.05)
  m = model_lib.build_model(net, lower, upper,
                            bounds.crown_bounds(net, lower, upper))
  m.c.value = objective.margin_vector(label, (label + 1) % 10, 10)
  milp = standard_form.compile_model(m.problem)
  outcome = solvers.solve(milp, "GLPK_MI", time_limit=0.05)
  assert outcome.solver_status != "optimal"
  assert not outcome.proven_optimal and outcome.best_bound is None


def test_unknown_solver():
  with pytest.raises(solvers.SolverUnavailableError, match="installed solvers"):
    solvers.check_solver("GUROBI")
  assert solvers.check_solver("highs") == "HIGHS"


def test_encoding_uses_binaries_only_for_unstable():
  net = random_network(12, (10, 20, 20, 10))
  x = np.random.default_rng(12).uniform(size=10)
  lower, upper = bounds.input_box(x, 0.05)
  lb = bounds.crown_bounds(net, lower, upper)
  m = model_lib.build_model(net, lower, upper, lb)
  assert m.unstable_per_layer == lb.unstable_counts()
  naive = model_lib.build_model(net, lower, upper, lb, all_binary=True)
  assert naive.num_binaries == 40


@pytest.mark.parametrize("materialize", [True, False])
def test_mip_start_is_a_feasible_full_assignment(materialize):
  """The warm start from an input point fills every column (pre-activation
  variables too), satisfies every row and costs the point's margin."""
  net = random_network(7, (12, 10, 10, 10))
  rng = np.random.default_rng(7)
  x = rng.uniform(size=12)
  label = int(np.argmax(forward(net, x)))
  target = (label + 1) % 10
  lower, upper = bounds.input_box(x, 0.2)
  lb = bounds.crown_bounds(net, lower, upper)
  m = model_lib.build_model(net, lower, upper, lb, materialize=materialize)
  m.c.value = objective.margin_vector(label, target, 10)
  milp = standard_form.compile_model(m.problem)
  point = rng.uniform(lower, upper)
  start = verify.model_start(m, milp, net, point)
  assert start is not None and np.all(np.isfinite(start))
  form = milp.form()
  rows = form.a @ start
  assert np.all(rows >= form.row_lower - 1e-7)
  assert np.all(rows <= form.row_upper + 1e-7)
  assert np.all(start >= form.col_lower - 1e-9)
  assert np.all(start <= form.col_upper + 1e-9)
  assert form.max_violation(start) < 1e-7
  c, offset = milp.cost_vector()
  logits = forward(net, point)
  assert c @ start + offset == pytest.approx(logits[label] - logits[target],
                                             abs=1e-7)


def _tiny_margin_network(scale):
  """One input x in [0, 1], margin -scale * max(x - 0.5, 0): the minimum,
  -scale / 2 at x = 1, is a real but tiny adversarial margin."""
  return Network((np.array([[1.0]], np.float32),
                  np.array([[-scale, 0.0]], np.float32)),
                 (np.array([-0.5], np.float32), np.zeros(2, np.float32)))


@pytest.mark.parametrize("solver", [s for s in ("HIGHS", "SCIP")
                                    if s in ALL_SOLVERS])
@pytest.mark.parametrize("mode", ["certify", "targeted"])
@pytest.mark.parametrize("scale", [2e-6, 2e-7])
def test_an_optimum_within_the_gap_of_zero_is_never_robust(solver, mode,
                                                           scale):
  # Solvers stop at a 1e-6 gap and may report their bound equal to an
  # incumbent of 0; the true minimum here is below 0.
  net = _tiny_margin_network(scale)
  cfg = verify.VerifyConfig(delta=0.5, mode=mode, pgd_steps=0, time_limit=30,
                            bab_time_limit=0, solver=solver)
  (r,) = verify.verify_image(net, np.array([0.5]), 0, 0, [1], cfg)
  assert r["status"] in ("adversarial", "timeout"), r
  if r["status"] == "adversarial":
    assert verify.check_witness(net, r["x_adv"], np.array([0.5]), 0.5, 0,
                                1)[0]
  assert r["best_bound"] is None or r["best_bound"] <= -scale / 2


def _two_ended_margin_network(at_0, at_1, top=1e-3):
  """One input x in [0, 1]; margin top - s1 relu(x - .5) - s2 relu(.5 - x),
  equal to `at_0` at x = 0 and `at_1` at x = 1 (a review's construction)."""
  s2, s1 = np.float32(2 * (top - at_0)), np.float32(2 * (top - at_1))
  return Network((np.array([[1.0, -1.0]], np.float32),
                  np.array([[-s1, 0.0], [-s2, 0.0]], np.float32)),
                 (np.array([-0.5, 0.5], np.float32),
                  np.array([top, 0.0], np.float32)))


@pytest.mark.parametrize("solver", ALL_SOLVERS)
@pytest.mark.parametrize("mode", ["certify", "targeted"])
def test_a_minimum_within_solver_tolerance_below_zero_is_never_robust(
    solver, mode):
  # GLPK prunes nodes within tol_obj * (1 + |incumbent|) = 1e-7 of its
  # incumbent, so it stops at x = 0 (margin +4e-8) and calls that optimal;
  # the true minimum, at x = 1, is -5e-8.
  net = _two_ended_margin_network(4e-8, -5e-8)
  x = np.array([0.5])
  truth = min(float(np.subtract(*forward(net, np.array([v]))))
              for v in (0.0, 1.0))
  assert truth < 0
  cfg = verify.VerifyConfig(delta=0.5, mode=mode, pgd_steps=0, time_limit=30,
                            bab_time_limit=0, solver=solver)
  (r,) = verify.verify_image(net, x, 0, 0, [1], cfg)
  assert r["status"] in ("adversarial", "timeout"), r
  assert r["best_bound"] is None or r["best_bound"] <= truth


def test_min_distortion_infeasible_alone_is_not_robust():
  # No input has margin <= -1e-4 (the mode's threshold), yet x = 1 has
  # margin -5e-5: an adversarial example the MILP's infeasibility misses.
  net = _tiny_margin_network(1e-4)
  cfg = verify.VerifyConfig(delta=0.5, mode="min_distortion", pgd_steps=0,
                            time_limit=30)
  (r,) = verify.verify_image(net, np.array([0.5]), 0, 0, [1], cfg)
  assert r["solver_status"].lower() == "infeasible"
  assert r["status"] == "adversarial" and r["optimal"] is False
  ok, margin, _ = verify.check_witness(net, r["x_adv"], np.array([0.5]), 0.5,
                                       0, 1)
  assert ok and -1e-4 < margin < 0


@pytest.mark.parametrize("mode", ["targeted", "min_distortion"])
def test_a_first_layer_dead_on_the_whole_box_still_builds_and_solves(mode):
  # Every first-layer neuron is inactive over the box, so the logits are the
  # constant b1 and nothing in the MILP depends on x (cvxpy then compiled
  # no matrix at all and every pair became an `error` record).
  rng = np.random.default_rng(0)
  net = Network((0.01 * rng.normal(size=(4, 3)).astype(np.float32),
                 rng.normal(size=(3, 3)).astype(np.float32)),
                (np.full(3, -1.0, np.float32),
                 np.array([1.0, 0.0, -0.5], np.float32)))
  x = rng.uniform(0, 1, 4)
  cfg = verify.VerifyConfig(delta=0.1, mode=mode, time_limit=10,
                            bab_time_limit=0, pgd_steps=0)
  records = verify.verify_image(net, x, 0, 0, None, cfg)
  assert [r["target"] for r in records] == [1, 2]
  for r in records:
    assert r["status"] == "robust", r
    if mode == "targeted":
      assert r["optimal"]
      assert r["objective"] == pytest.approx(1.0 - net.biases[1][r["target"]])
