"""Branch and bound (alpha/beta-CROWN) against exact ground truth."""

import time

import jax.numpy as jnp
import numpy as np
import pytest

from robust_prune import bab, bounds
from robust_prune.bab import domain_bound
from robust_prune.bab.domains import OpenDomains
from robust_prune.milp import verify
from robust_prune.network import Network, forward
from testing import (exact_min_margin, exact_min_spec, pre_activations,
                     random_network, solve_targeted)


@pytest.mark.parametrize("seed", range(6))
def test_domain_bound_is_sound_on_sampled_inputs(seed):
  """For random splits, alphas and betas, the float64 domain bound never
  exceeds the margin of any sampled input in the box that satisfies the
  splits; the float32 JAX bound is the same number."""
  net = random_network(seed, (6, 10, 8, 4))
  rng = np.random.default_rng(seed)
  x0 = rng.uniform(0.2, 0.8, size=6)
  lower, upper = bounds.input_box(x0, 0.3)
  lb = bounds.crown_bounds(net, lower, upper)
  label, target = 0, 1 + seed % 3
  c = bounds.margin_spec(label, [target], 4)[0]
  samples = rng.uniform(lower, upper, size=(200_000, 6))
  samples[:64] = np.where(rng.uniform(size=(64, 6)) < 0.5, lower, upper)
  pre = pre_activations(net, samples)
  margins = forward(net, samples) @ c
  num_domains = 8
  splits, alphas, betas = [], [], []
  inside = np.ones((num_domains, len(samples)), bool)
  # Each domain's splits follow one sampled input, so no domain is empty.
  anchors = rng.choice(len(samples), size=num_domains, replace=False)
  for j, (l, u) in enumerate(lb.hidden):
    unstable = np.flatnonzero((l < 0) & (u > 0))
    split = np.zeros((num_domains, len(l)), np.int8)
    for d in range(num_domains):
      chosen = rng.choice(unstable, size=min(2, len(unstable)), replace=False)
      split[d, chosen] = np.where(pre[j][anchors[d], chosen] >= 0, 1, -1)
      for n in chosen:
        inside[d] &= (pre[j][:, n] * split[d, n]) >= 0
    splits.append(split)
    alphas.append(rng.uniform(size=(num_domains, len(l))).astype(np.float32))
    betas.append(rng.exponential(size=(num_domains, len(l))).astype(np.float32))
  proven = bab.bound_float64(net, lower, upper, lb, c, splits, alphas, betas)
  # the same proof under XLA, in chunks of 3 domains (the last one padded)
  by_xla = bab.XlaProof(net, lower, upper, lb, 3)(c, splits, alphas, betas)
  np.testing.assert_allclose(by_xla, proven, rtol=0, atol=1e-12)
  for d in range(num_domains):
    assert inside[d, anchors[d]]
    assert proven[d] <= margins[inside[d]].min() + 1e-9
  f32 = lambda a: jnp.asarray(a, jnp.float32)
  result = domain_bound.domain_bounds(
      tuple(f32(w) for w in net.weights), tuple(f32(b) for b in net.biases),
      f32(lower), f32(upper), tuple(f32(l) for l in lb.lowers[:-1]),
      tuple(f32(u) for u in lb.uppers[:-1]), f32(c),
      tuple(f32(s) for s in splits), [f32(a) for a in alphas],
      [f32(b) for b in betas])
  jax_bound = result.bound
  vertex = bounds.minimising_vertex(result.input_coeffs, f32(lower), f32(upper))
  np.testing.assert_allclose(np.asarray(jax_bound), proven, rtol=1e-4, atol=1e-4)
  assert np.all((np.asarray(vertex) >= lower - 1e-6) & (np.asarray(vertex) <= upper + 1e-6))


def test_pad_rows_repeats_the_first_row():
  from robust_prune.bab.domains import pad_rows  # pylint: disable=g-import-not-at-top
  a = np.arange(6, dtype=np.int8).reshape(3, 2)
  np.testing.assert_array_equal(pad_rows(a, 5), [[0, 1], [2, 3], [4, 5],
                                                  [0, 1], [0, 1]])
  assert pad_rows(a, 5).dtype == np.int8 and pad_rows(a, 3) is a


def test_padded_batch_shapes_do_not_change_a_domains_bound():
  """Domains are padded to one of a few compiled batch shapes; each domain's
  optimised alpha/beta and bound depend on that domain alone."""
  assert [bab.padded_size(n, 256) for n in (1, 4, 5, 16, 17, 100, 256, 300)] \
      == [4, 4, 16, 16, 64, 256, 256, 300]
  assert bab.padded_size(3, 2) == 3 and bab.padded_size(1, 2) == 2
  for limit in (2, 256, 512):   # what a warm-up compiles: every shape used
    assert bab.padded_sizes(limit) == sorted(
        {bab.padded_size(n, limit) for n in range(1, limit + 1)})
  net = random_network(7, (6, 10, 8, 4))
  rng = np.random.default_rng(7)
  lower, upper = bounds.input_box(rng.uniform(0.2, 0.8, size=6), 0.3)
  lb = bounds.crown_bounds(net, lower, upper)
  c = bounds.margin_spec(0, [2], 4)[0]
  f32 = lambda a: jnp.asarray(a, jnp.float32)
  splits = [rng.integers(-1, 2, size=(16, len(l))).astype(np.int8)
            for l, _ in lb.hidden]
  alphas = [rng.uniform(size=s.shape).astype(np.float32) for s in splits]
  betas = [np.zeros(s.shape, np.float32) for s in splits]

  def optimise(rows):
    out = domain_bound.optimise(
        tuple(f32(w) for w in net.weights), tuple(f32(b) for b in net.biases),
        f32(lower), f32(upper), tuple(f32(l) for l in lb.lowers[:-1]),
        tuple(f32(u) for u in lb.uppers[:-1]), f32(c),
        tuple(f32(s[rows]) for s in splits), [f32(a[rows]) for a in alphas],
        [f32(b[rows]) for b in betas], steps=5, alpha_lr=0.1, beta_lr=0.05)
    return np.asarray(out[2])

  together = optimise(np.arange(16))
  alone = np.concatenate([optimise(np.arange(r, r + 4)) for r in range(0, 16, 4)])
  np.testing.assert_allclose(alone, together, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("seed", range(3))
def test_min_proven_bound_equals_the_full_minimum(seed):
  """The early-stopping minimum over open domains is the plain one."""
  rng = np.random.default_rng(seed)
  inherited = rng.normal(size=1000)
  own = inherited + rng.exponential(size=1000) * (rng.uniform(size=1000) < 0.3)
  calls = []

  def prove(rows):
    calls.append(len(rows))
    return own[rows]

  expected = np.maximum(inherited, own).min()
  assert bab.min_proven_bound(inherited, prove, chunk=64) == expected
  assert sum(calls) < 1000   # it stopped early
  assert bab.min_proven_bound(inherited, prove, chunk=5000) == expected


def test_min_proven_bound_out_of_time_falls_back_to_inherited_bounds():
  # with no time to re-prove, the answer is the inherited (proven) minimum;
  # after the first slow chunk, the rest count with their inherited bound
  inherited = np.linspace(-3.0, 1.0, 100)
  own = inherited + 2.0
  calls = []

  def slow_prove(rows):
    calls.append(len(rows))
    time.sleep(0.05)
    return own[rows]
  assert bab.min_proven_bound(inherited, slow_prove, chunk=10,
                              seconds=0.0) == -3.0
  assert calls == []
  low = bab.min_proven_bound(inherited, slow_prove, chunk=10, seconds=0.01)
  assert calls == [10]
  assert low == min(own[:10].min(), inherited[10])
  assert low <= np.maximum(inherited, own).min()


def test_beta_enforces_the_split():
  """Splitting the neuron that decides a 1-D network makes its domains
  provable only through beta: relu(y) with y = x over [-1, 1] has min 0 on
  the active half, but the identity over the whole box reaches -1."""
  from robust_prune.network import Network
  net = Network((np.array([[1.0]], np.float32), np.array([[1.0, 0.0]], np.float32)),
                (np.zeros(1, np.float32), np.array([0.0, -0.1], np.float32)))
  lower, upper = np.array([-1.0]), np.array([1.0])
  lb = bounds.crown_bounds(net, lower, upper)
  c = bounds.margin_spec(0, [1], 2)[0]   # relu(x) + 0.1 >= 0.1 > 0
  splits = [np.array([[1]], np.int8)]
  alphas = [np.zeros((1, 1), np.float32)]
  no_beta = bab.bound_float64(net, lower, upper, lb, c, splits, alphas,
                              [np.zeros((1, 1), np.float32)])
  with_beta = bab.bound_float64(net, lower, upper, lb, c, splits, alphas,
                                [np.ones((1, 1), np.float32)])
  assert no_beta[0] == pytest.approx(-0.9)
  assert with_beta[0] == pytest.approx(0.1)


@pytest.mark.parametrize("seed,proofs", [(0, "numpy"), (1, "numpy"),
                                         (2, "numpy"), (3, "numpy"),
                                         (0, "xla"), (2, "xla")])
def test_verdict_matches_region_enumeration(seed, proofs):
  """Robust means the exact minimum (enumerating activation regions) is
  positive and at least the returned bound; adversarial means a witness
  inside the box whose float margin is negative (proofs by numpy or XLA)."""
  net = random_network(seed, (3, 5, 4, 4))
  rng = np.random.default_rng(50 + seed)
  x = rng.uniform(0.2, 0.8, size=3)
  label = int(np.argmax(forward(net, x)))
  delta = (0.05, 0.15, 0.3)[seed % 3]
  lower, upper = bounds.input_box(x, delta)
  decided = 0
  for target in range(4):
    if target == label:
      continue
    exact, _ = exact_min_margin(net, lower, upper, label, target)
    if abs(exact) < 1e-3:
      continue  # too close to zero for a float verdict either way
    result = bab.bab_margin(net, lower, upper, label, target,
                            bab.BabConfig(time_limit=30.0, batch_size=16,
                                          proofs=proofs))
    assert result.status in ("robust", "adversarial"), result
    if exact > 0:
      assert result.status == "robust"
      assert 0 < result.lower_bound <= exact + 1e-6
    else:
      assert result.status == "adversarial"
      ok, margin, _ = verify.check_witness(net, result.x_adv, x, delta, label,
                                           target)
      assert ok and margin == pytest.approx(result.margin, abs=1e-6)
    decided += 1
  assert decided >= 2


@pytest.mark.parametrize("candidates", [1, 4])
def test_verdicts_match_the_milp_where_branching_is_needed(candidates):
  """Every ordered (label, target) pair of small random networks at a wide
  box: BaB's verdict is the sign of the MILP optimum, robust bounds never
  exceed it, witnesses re-check; the cases include branching and leaf LPs."""
  branched, statuses = 0, set()
  for seed in range(6):
    net = random_network(seed, (5, 12, 10, 4))
    x = np.random.default_rng(50 + seed).uniform(0.2, 0.8, size=5)
    lower, upper = bounds.input_box(x, 0.3)
    for label in range(4):
      for target in range(4):
        if target == label:
          continue
        *_, outcome = solve_targeted(net, x, 0.3, label, target, "HIGHS")
        assert outcome.proven_optimal
        if abs(outcome.objective) < 1e-4:
          continue
        result = bab.bab_margin(net, lower, upper, label, target,
                                bab.BabConfig(time_limit=30.0, batch_size=16,
                                              candidates=candidates))
        statuses.add(result.status)
        branched += result.domains > 1
        if outcome.objective > 0:
          assert result.status == "robust"
          assert 0 < result.lower_bound <= outcome.objective + 1e-6
        else:
          assert result.status == "adversarial"
          ok, margin, _ = verify.check_witness(net, result.x_adv, x, 0.3,
                                               label, target)
          assert ok and margin >= outcome.objective - 1e-6
  assert statuses == {"robust", "adversarial"} and branched >= 5


def test_time_limit_gives_unknown_with_a_sound_bound():
  net = random_network(3, (20, 40, 30, 10))
  x = np.random.default_rng(3).uniform(size=20)
  label = int(np.argmax(forward(net, x)))
  lower, upper = bounds.input_box(x, 0.1)
  samples = np.random.default_rng(0).uniform(lower, upper, size=(20000, 20))
  logits = forward(net, samples)
  config = bab.BabConfig(time_limit=0.0, root_steps=2)
  stopped = 0
  for target in range(10):
    if target == label:
      continue
    result = bab.bab_margin(net, lower, upper, label, target, config)
    sampled_min = np.min(logits[:, label] - logits[:, target])
    if result.status != "unknown":  # decided at the root
      assert result.status in ("robust", "adversarial")
      continue
    stopped += 1
    assert result.reason == "time_limit" and result.domains == 1
    assert result.lower_bound <= sampled_min
    minimum = bab.bab_minimum(net, lower, upper, label, target, config)
    assert minimum.reason == "time_limit" and not minimum.optimal
    assert minimum.lower_bound <= sampled_min
    assert minimum.lower_bound <= minimum.objective
    if minimum.x_best is not None:  # the objective is a real input's margin
      best = forward(net, minimum.x_best)
      assert best[label] - best[target] == pytest.approx(minimum.objective,
                                                         abs=1e-5)
  assert stopped >= 1  # the time limit really stopped some searches


def test_certify_records_bab_verdicts_that_match_the_milp():
  """In certify mode the branch and bound decides pairs that CROWN and PGD
  leave open, and its verdicts are the targeted MILP's."""
  net = random_network(8, (12, 10, 10, 10))
  x = np.random.default_rng(8).uniform(size=12)
  label = int(np.argmax(forward(net, x)))
  config = verify.VerifyConfig(delta=0.15, mode="certify", pgd_steps=0)
  certified = verify.verify_image(net, x, label, 0, None, config)
  targeted = verify.verify_image(
      net, x, label, 0, None,
      verify.VerifyConfig(delta=0.15, mode="targeted", pgd_steps=0))
  by_bab = [r for r in certified if r.get("decided_by") == "bab"]
  assert by_bab, [r.get("decided_by") for r in certified]
  for c, t in zip(certified, targeted):
    assert c["status"] == t["status"]
    if c.get("decided_by") == "bab" and c["status"] == "robust":
      assert 0 < c["best_bound"] <= t["objective"] + 1e-6


def test_targeted_optimum_by_bab_matches_the_milp():
  """Targeted mode settles pairs by bab_minimum: the same verdicts as the
  MILP, objectives within 1e-4, bounds below both optima, witnesses valid."""
  net = random_network(7, (12, 10, 10, 10))
  x = np.random.default_rng(7).uniform(size=12)
  label = int(np.argmax(forward(net, x)))
  for delta in (0.05, 0.2):
    by_bab = verify.verify_image(net, x, label, 0, None, verify.VerifyConfig(
        delta=delta, mode="targeted", pgd_steps=20))
    by_milp = verify.verify_image(net, x, label, 0, None, verify.VerifyConfig(
        delta=delta, mode="targeted", pgd_steps=20, bab_time_limit=0.0))
    assert all(r["decided_by"] == "milp" for r in by_milp)
    assert sum(r["decided_by"] == "bab" for r in by_bab) >= 7
    for b, m in zip(by_bab, by_milp):
      assert b["status"] == m["status"] and b["optimal"] and m["optimal"]
      assert b["objective"] == pytest.approx(m["objective"], abs=1e-4)
      assert b["best_bound"] <= m["objective"] + 1e-6
      if b["status"] == "adversarial":
        ok, margin, _ = verify.check_witness(net, b["x_adv"], x, delta, label,
                                             b["target"])
        assert ok and margin == pytest.approx(b["objective"], abs=1e-6)


@pytest.mark.parametrize("candidates", [1, 4])
def test_every_exit_bounds_the_true_minimum(candidates):
  # A 1-input net whose fully split domains reach the leaf LP; the search
  # used to stop there ("exhausted") with a bound that ignored open domains.
  net = Network(
      (np.array([[-1.0, 1.0, 1.0]], np.float32),
       np.array([[1.0, 0.0], [-1.0, 0.0], [2.4, 0.0]], np.float32)),
      (np.array([0.5, -0.5, -0.75], np.float32), np.zeros(2, np.float32)))
  grid = np.linspace(0, 1, 10001)[:, None]
  true_min = float(np.min(forward(net, grid) @ np.array([1.0, -1.0])))
  assert true_min == pytest.approx(-0.25)
  lo, up = np.zeros(1), np.ones(1)
  config = bab.BabConfig(time_limit=20, candidates=candidates)
  decided = bab.bab_margin(net, lo, up, 0, 1, config)
  assert decided.status != "robust"
  assert decided.lower_bound <= true_min + 1e-9
  minimum = bab.bab_minimum(net, lo, up, 0, 1, config)
  assert minimum.lower_bound <= true_min + 1e-9
  if minimum.optimal:
    assert minimum.objective == pytest.approx(true_min, abs=1e-4)


def test_leaf_proof_allows_for_round_off_of_huge_cancelling_weights():
  # A review's construction: weights ~2^20 whose products cancel to a
  # margin of 1e-4 - (tiny) with a float64 minimum of -2.8e-3 in the box.
  # The leaf LP's proof once said "robust" (bound 1e-4) without an allowance
  # for the round-off of composing the affine map.
  s = np.float32(2**20)
  net = Network((np.array([[3 * s, 5 * s]], np.float32),
                 np.array([[5 * s, 0], [-3 * s, 0]], np.float32)),
                (np.zeros(2, np.float32), np.array([1e-4, 0], np.float32)))
  lower, upper = np.array([0.5]), np.array([1.0])
  xs = np.linspace(0.5, 1.0, 20001)[:, None]
  true_min = float(np.min(forward(net, xs) @ np.array([1.0, -1.0])))
  assert true_min < 0
  layer = bounds.crown_bounds(net, lower, upper)
  zero = [np.zeros((1, 2))]
  leaf, _ = bab.leaf_minimum(net, lower, upper, layer, np.array([1.0, -1.0]),
                             zero)
  assert leaf <= true_min
  result = bab.bab_margin(net, lower, upper, 0, 1, bab.BabConfig(time_limit=5))
  assert result.status != "robust" and result.lower_bound <= true_min


@pytest.mark.parametrize("seed", range(3))
def test_a_general_spec_is_bracketed_and_decided_soundly(seed):
  """branch_and_bound_spec with c = a general vector over the logits (not a
  margin): the bracket holds the exact minimum (region enumeration), the
  objective is attained by x_best, and the decision matches its sign."""
  net = random_network(seed, (3, 5, 4, 4))
  rng = np.random.default_rng(70 + seed)
  lower, upper = bounds.input_box(rng.uniform(0.2, 0.8, size=3), 0.3)
  c = rng.normal(size=4)
  exact, _ = exact_min_spec(net, lower, upper, c)
  config = bab.BabConfig(time_limit=30.0, batch_size=16)
  minimum = bab.branch_and_bound_spec(net, lower, upper, c, config,
                                      minimize=True)
  assert minimum.optimal
  assert minimum.lower_bound <= exact + 1e-9
  assert minimum.objective == pytest.approx(exact, abs=bab.OPTIMUM_TOLERANCE)
  assert forward(net, minimum.x_best) @ c == pytest.approx(minimum.objective)
  for shift in (exact - 0.05, exact + 0.05):
    # c^T f - shift: the offset is one more logit, a constant output
    shifted = Network(
        (*net.weights[:-1], np.concatenate(
            [net.weights[-1], np.zeros((4, 1), np.float32)], 1)),
        (*net.biases[:-1], np.append(net.biases[-1], np.float32(-shift))))
    c_shifted = np.append(c, 1.0)
    decided = bab.branch_and_bound_spec(shifted, lower, upper, c_shifted,
                                        config)
    if shift < exact:
      assert decided.status == "robust"
      # the shift as stored (float32): the hull cuts can make the bound
      # exact, closer than float32's rounding of the shift
      true_min = exact + float(np.float32(-shift))
      assert 0 < decided.lower_bound <= true_min + 1e-9
    else:
      assert decided.status == "adversarial" and decided.margin < 0
      assert forward(shifted, decided.x_adv) @ c_shifted == pytest.approx(
          decided.margin)


def test_branch_and_bound_is_branch_and_bound_spec_of_the_margin():
  net = random_network(4, (5, 12, 10, 4))
  x = np.random.default_rng(54).uniform(0.2, 0.8, size=5)
  lower, upper = bounds.input_box(x, 0.3)
  config = bab.BabConfig(time_limit=30.0, batch_size=16)
  by_margin = bab.bab_minimum(net, lower, upper, 0, 2, config)
  by_spec = bab.branch_and_bound_spec(
      net, lower, upper, bounds.margin_spec(0, [2], 4)[0], config,
      minimize=True)
  assert (by_margin.status, by_margin.domains, by_margin.objective) == \
      (by_spec.status, by_spec.domains, by_spec.objective)
  with pytest.raises(ValueError, match="spec c must be 4 finite numbers"):
    bab.branch_and_bound_spec(net, lower, upper, np.ones(3), config)


def test_branching_rules_are_swappable():
  """`branching="babsr"` is the intercept score alone (the same search as
  one candidate); filtered smart branching searches differently and both
  reach the same optimum; an unknown rule is refused."""
  net = random_network(2, (5, 12, 10, 4))
  x = np.random.default_rng(52).uniform(0.2, 0.8, size=5)
  lower, upper = bounds.input_box(x, 0.3)
  runs = {name: bab.bab_minimum(net, lower, upper, 1, 3, bab.BabConfig(
      time_limit=30.0, batch_size=16, **kw)) for name, kw in (
          ("babsr", {"branching": "babsr"}), ("one", {"candidates": 1}),
          ("fsb", {"branching": "fsb", "candidates": 4}))}
  assert runs["babsr"].domains == runs["one"].domains
  assert all(r.optimal for r in runs.values())
  assert runs["fsb"].objective == pytest.approx(runs["babsr"].objective,
                                                abs=bab.OPTIMUM_TOLERANCE)
  assert runs["fsb"].domains != runs["babsr"].domains
  with pytest.raises(ValueError, match="unknown branching rule"):
    bab.BabConfig(branching="magic")


def test_domain_pool_keeps_rows_together():
  n = 3
  pool = bab.DomainPool(
      splits=np.array([[1, 0, 0], [0, -1, 0], [0, 0, 1]], np.int8),
      alphas=np.arange(9, dtype=np.float32).reshape(3, n),
      betas=np.ones((3, n), np.float32), lb=np.array([0.3, -0.2, 0.1]),
      key=np.array([0.5, -0.1, 0.2]), scores=np.zeros((3, n)))
  open_domains = OpenDomains(pool)
  lowest = open_domains.pop_lowest(2)
  np.testing.assert_array_equal(lowest.key, [-0.1, 0.2])
  np.testing.assert_array_equal(lowest.splits, pool.splits[[1, 2]])
  np.testing.assert_array_equal(open_domains.view().alphas, pool.alphas[[0]])
  open_domains.add(lowest.filter(lowest.lb > 0))
  both = open_domains.view()
  np.testing.assert_array_equal(both.lb, [0.3, 0.1])
  np.testing.assert_array_equal(both.splits, pool.splits[[0, 2]])
  assert len(both) == 2 and len(pool.take([])) == 0
  everything = OpenDomains(pool).pop_lowest(5)
  np.testing.assert_array_equal(everything.key, [-0.1, 0.2, 0.5])


def _branching_pairs(seeds):
  """(net, lower, upper, label, target) where some searches branch for
  several batches."""
  for seed in seeds:
    net = random_network(seed, (20, 40, 30, 10))
    x = np.random.default_rng(50 + seed).uniform(0.2, 0.8, size=20)
    lower, upper = bounds.input_box(x, 0.1)
    label = int(np.argmax(forward(net, x)))
    for target in range(10):
      if target != label:
        yield net, lower, upper, label, target


def _margin_search(net, lower, upper, label, target, config):
  return bab.MarginSearch(net, lower, upper,
                          bounds.margin_spec(label, [target], 10)[0], config,
                          bounds.crown_bounds(net, lower, upper))


def test_a_search_resumed_batch_by_batch_repeats_nothing():
  """MarginSearch advanced one batch per turn bounds exactly the domains of
  one uninterrupted run and ends with its verdict, bound and witness."""
  config = bab.BabConfig(time_limit=30.0, batch_size=16)
  resumed = 0
  for net, lower, upper, label, target in _branching_pairs(range(4)):
    whole = bab.bab_margin(net, lower, upper, label, target, config)
    search = _margin_search(net, lower, upper, label, target, config)
    turns = 0
    while search.result is None and turns < 10_000:
      search.advance(0.0)   # one batch, then the turn is over
      turns += 1
    result = search.stop()
    assert (result.status, result.reason, result.domains) == (
        whole.status, whole.reason, whole.domains)
    assert result.lower_bound == whole.lower_bound
    if whole.status == "adversarial":
      np.testing.assert_array_equal(result.x_adv, whole.x_adv)
    resumed += turns > 1   # paused and resumed at least once
  assert resumed >= 3


def test_a_stopped_search_bounds_the_sampled_minimum():
  """Stopped after one batch, an undecided search's proven bound is at most
  the margin of every sampled input."""
  stopped = 0
  for net, lower, upper, label, target in _branching_pairs(range(2)):
    search = _margin_search(net, lower, upper, label, target,
                            bab.BabConfig(batch_size=2))
    if search.result is None and search.advance(0.0) is None:
      samples = np.random.default_rng(target).uniform(lower, upper,
                                                      (20000, 20))
      logits = forward(net, samples)
      sampled_min = np.min(logits[:, label] - logits[:, target])
      result = search.stop()
      assert result.status == "unknown" and result.reason == "time_limit"
      assert result.lower_bound <= search.estimate() + 1e-3
      assert result.lower_bound <= sampled_min
      stopped += 1
  assert stopped >= 2


def test_at_the_domain_limit_a_turn_re_proves_only_within_its_seconds(
    monkeypatch):
  """A search whose open pool reaches its memory cap inside a turn stops
  there (not before) and re-proves its open domains in what is left of
  that turn (a full re-proof of ~2e5 domains took ~3 s past an image
  budget), and its bound stays proven."""
  from robust_prune.bab import problem as problem_lib
  given = []
  original = problem_lib.Problem.pool_minimum

  def pool_minimum(self, pool, seconds=np.inf, chunk=4096):
    given.append(seconds)
    return original(self, pool, seconds, chunk)

  monkeypatch.setattr(problem_lib.Problem, "pool_minimum", pool_minimum)
  limited = 0
  for net, lower, upper, label, target in _branching_pairs(range(8)):
    free = _margin_search(net, lower, upper, label, target, bab.BabConfig())
    if free.result is not None:
      continue
    row_bytes = free._search.pool.nbytes() // len(free._search.pool)
    search = _margin_search(net, lower, upper, label, target,
                            bab.BabConfig(batch_size=4,
                                          max_pool_bytes=4 * row_bytes))
    given.clear()
    result = search.advance(0.5)
    if result is None or result.reason != "domain_limit":
      continue
    # a batch pops 2 parents for 4 children: the cap is met within a batch
    assert 4 <= len(search._search.pool) < 4 + 4
    assert given and max(given) <= 0.5
    samples = np.random.default_rng(target).uniform(lower, upper,
                                                    (20000, 20))
    logits = forward(net, samples)
    assert result.lower_bound <= np.min(logits[:, label] - logits[:, target])
    limited += 1
  assert limited >= 2


def test_open_domains_pop_the_lowest_and_keep_rows_together():
  # random adds, pops and drops against a plain list of rows: the popped
  # keys are the lowest, in order, and every row keeps its own fields
  rng = np.random.default_rng(0)
  n, next_id, reference = 5, 0, {}

  def domains(count):
    nonlocal next_id
    ids = np.arange(next_id, next_id + count)
    next_id += count
    key = rng.normal(size=count)
    for i, k in zip(ids, key):
      reference[int(i)] = k
    rows = np.repeat(ids[:, None], n, 1)
    return bab.DomainPool((rows % 3 - 1).astype(np.int8),
                          rows.astype(np.float32), -rows.astype(np.float32),
                          ids.astype(np.float64), key, rows.astype(np.float32))

  def check(pool: bab.DomainPool):
    ids = pool.lb.astype(int)
    np.testing.assert_array_equal(pool.alphas, np.repeat(ids[:, None], n, 1))
    np.testing.assert_array_equal(pool.betas, -pool.scores)
    np.testing.assert_array_equal(pool.splits[:, 0], ids % 3 - 1)
    np.testing.assert_array_equal(pool.key, [reference[i] for i in ids])

  open_domains = OpenDomains(domains(7))
  for step in range(300):
    action = rng.integers(3)
    if action == 0:
      open_domains.add(domains(int(rng.integers(0, 900))))
    elif action == 1:
      count = int(rng.integers(1, 600))
      popped = open_domains.pop_lowest(count)
      check(popped)
      expected = sorted(reference.values())[:count]
      np.testing.assert_array_equal(popped.key, expected)
      for i in popped.lb.astype(int):
        del reference[int(i)]
    else:
      live = open_domains.view()
      keep = rng.uniform(size=len(live)) < 0.8
      for i in live.lb[~keep].astype(int):
        del reference[int(i)]
      open_domains.keep(keep)
    live = open_domains.view()
    check(live)
    assert sorted(live.lb.astype(int)) == sorted(reference)
    assert len(open_domains) == len(reference), step
    # the pool's memory cap counts the open rows, not the spare capacity:
    # int8 splits, float32 alphas, betas, scores; float64 lb, key
    assert open_domains.nbytes() == len(reference) * (13 * n + 16), step


class _ClockedSearch:
  """A stand-in for MarginSearch on a fake clock: decided once it has had
  `need` seconds in all."""

  def __init__(self, clock, need, estimate):
    self.clock, self.need, self._estimate = clock, need, estimate
    self.result, self.had = None, 0.0

  def estimate(self):
    return self._estimate

  def advance(self, seconds):
    used = min(seconds, self.need - self.had)
    self.had += used
    self.clock[0] += used
    if self.had >= self.need:
      self.result = bab.BabResult("robust", 0.1, None, None, 1, self.had,
                                  "proved")
    return self.result

  def stop(self, seconds):
    return self.result or bab.BabResult("unknown", -1.0, None, None, 1,
                                        self.had, "time_limit")


def test_turns_give_a_hard_search_first_in_line_the_time_it_needs():
  # equal shares in this order (9 s / 3 each, passing leftovers on) would
  # leave b open; in turns all three are decided within the 9 s
  clock = [0.0]
  searches = {"b": _ClockedSearch(clock, 5.0, -3.0),
              "c": _ClockedSearch(clock, 2.5, -2.0),
              "a": _ClockedSearch(clock, 0.5, -1.0)}
  results = bab.take_turns(searches, lambda: 9.0 - clock[0], overrun=0.0,
                           final_proof=0.0, min_step=0.1)
  assert {k: r.status for k, r in results.items()} == {
      "a": "robust", "b": "robust", "c": "robust"}
  assert clock[0] == pytest.approx(8.0)


class _RisingSearch(_ClockedSearch):
  """A _ClockedSearch whose estimate rises at `rate` per second of search
  from `start`; decided when it reaches 0."""

  def __init__(self, clock, start, rate):
    super().__init__(clock, -start / rate, start)
    self.start, self.rate = start, rate

  def estimate(self):
    return self.start + self.rate * self.had


def test_turns_go_to_the_search_closest_to_closing_at_its_pace():
  # in rounds (1 s each, then 2 s each) the near search would have had 3 s
  # of the 9; going alone once the pace shows, it closes after its 5 s
  clock = [0.0]
  searches = {"far": _RisingSearch(clock, -10.0, 0.01),
              "near": _RisingSearch(clock, -1.0, 0.2),
              "far2": _RisingSearch(clock, -8.0, 0.01)}
  results = bab.take_turns(searches, lambda: 9.0 - clock[0], overrun=0.0,
                           final_proof=0.0, min_step=0.1)
  assert results["near"].status == "robust"
  assert searches["near"].had == pytest.approx(5.0)
  assert results["far"].status == results["far2"].status == "unknown"
  assert clock[0] == pytest.approx(9.0)


def test_turns_end_when_stop_says_so():
  clock, stopped_on = [0.0], []

  def stop(key, result):
    stopped_on.append(key)
    return key == "c"
  searches = {"b": _ClockedSearch(clock, 5.0, -3.0),
              "c": _ClockedSearch(clock, 2.5, -2.0),
              "a": _ClockedSearch(clock, 0.5, -1.0)}
  results = bab.take_turns(searches, lambda: 100.0 - clock[0], overrun=0.0,
                           final_proof=0.0, min_step=0.1, stop=stop)
  assert stopped_on == ["a", "c"]
  assert results["b"].status == "unknown" and searches["b"].had < 5.0


def test_a_search_proves_by_xla_when_told_and_a_planted_xla_bound_is_caught(
    monkeypatch):
  """With proofs="xla" every float64 proof of a search is XLA's (a numpy
  proof fails here): a branched robust search ends as numpy's does, below
  the exact minimum, and a branched adversarial one finds its witness. The
  XLA proof overstated by 1 turns that adversarial verdict into a robust
  one: the search trusts this proof alone."""
  from robust_prune.bab import proofs   # pylint: disable=g-import-not-at-top

  def case(seed, label, target):
    net = random_network(seed, (3, 5, 4, 4))
    x = np.random.default_rng(50 + seed).uniform(0.2, 0.8, size=3)
    lower, upper = bounds.input_box(x, 0.3)
    assert int(np.argmax(forward(net, x))) == label
    c = bounds.margin_spec(label, [target], 4)[0]
    return (net, lower, upper, c), exact_min_spec(net, lower, upper, c)[0]

  config = bab.BabConfig(time_limit=30.0, batch_size=4)
  xla = bab.BabConfig(time_limit=30.0, batch_size=4, proofs="xla")
  robust, robust_min = case(8, 2, 1)
  adversarial, adversarial_min = case(13, 1, 0)
  assert robust_min > 0 > adversarial_min
  by_numpy = bab.branch_and_bound_spec(*robust, config)

  def no_numpy(*args, **kwargs):
    raise AssertionError("a numpy proof under proofs='xla'")
  monkeypatch.setattr(proofs, "bound_float64", no_numpy)
  by_xla = bab.branch_and_bound_spec(*robust, xla)
  assert by_numpy.status == by_xla.status == "robust"
  assert by_xla.domains == by_numpy.domains > 1
  assert by_xla.lower_bound == pytest.approx(by_numpy.lower_bound, abs=1e-9)
  assert by_xla.lower_bound <= robust_min
  found = bab.branch_and_bound_spec(*adversarial, xla)
  assert found.status == "adversarial" and found.domains > 1
  honest = proofs.XlaProof.__call__
  monkeypatch.setattr(proofs.XlaProof, "__call__",
                      lambda self, *a, **k: honest(self, *a, **k) + 1.0)
  assert bab.branch_and_bound_spec(*adversarial, xla).status == "robust"


def test_an_unknown_proof_engine_is_refused():
  with pytest.raises(ValueError, match="proof engine 'gpu'"):
    bab.BabConfig(proofs="gpu")
