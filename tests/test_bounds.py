"""Soundness and tightness of the pre-activation bounds."""

import numpy as np
import pytest

from robust_prune import bounds
from robust_prune.network import Network, forward
from testing import random_network as _random_network, sample_box


def random_network(rng, sizes):
  return _random_network(rng, sizes, bias_scale=0.1)


@pytest.mark.parametrize("method", bounds.BOUND_METHODS)
@pytest.mark.parametrize("seed,sizes,delta", [
    (0, (12, 16, 16, 10), 0.1),
    (1, (30, 40, 20, 10), 0.05),
    (2, (8, 10, 10, 10, 3), 0.3),
    (3, (784, 20, 10), 0.02),
])
def test_bounds_contain_sampled_activations(method, seed, sizes, delta):
  rng = np.random.default_rng(seed)
  net = random_network(rng, sizes)
  x = rng.uniform(size=sizes[0])
  lower, upper = bounds.input_box(x, delta)
  b = bounds.layer_bounds(net, lower, upper, method)
  logits, hidden = forward(net, sample_box(rng, lower, upper, 4000),
                           return_hidden=True)
  for l, u, values in zip(b.lowers, b.uppers, hidden + [logits]):
    assert np.all(values >= l) and np.all(values <= u)


@pytest.mark.parametrize("seed", range(4))
def test_tighter_methods_are_inside_interval(seed):
  rng = np.random.default_rng(10 + seed)
  net = random_network(rng, (20, 30, 30, 30, 10))
  lower, upper = bounds.input_box(rng.uniform(size=20), 0.15)
  chain = [bounds.layer_bounds(net, lower, upper, m) for m in bounds.BOUND_METHODS]
  for looser, tighter in zip(chain[:-1], chain[1:]):
    for lo, hi, tl, th in zip(looser.lowers, looser.uppers, tighter.lowers,
                              tighter.uppers):
      assert np.all(tl >= lo) and np.all(th <= hi)
  # back-substitution must actually help on a deep random net
  assert sum(np.sum(u - l) for l, u in zip(chain[1].lowers, chain[1].uppers)) < \
      sum(np.sum(u - l) for l, u in zip(chain[0].lowers, chain[0].uppers))
  assert chain[2].num_unstable <= chain[1].num_unstable <= chain[0].num_unstable


def test_first_layer_is_exact_interval():
  rng = np.random.default_rng(5)
  net = random_network(rng, (6, 5, 10))
  lower, upper = bounds.input_box(rng.uniform(size=6), 0.2)
  b = bounds.crown_bounds(net, lower, upper)
  w, bias = net.weights[0].astype(np.float64), net.biases[0]
  exact_min = np.where(w > 0, lower[:, None], upper[:, None])
  np.testing.assert_allclose(b.lowers[0], (exact_min * w).sum(0) + bias, atol=1e-4)


def test_batched_equals_single():
  rng = np.random.default_rng(6)
  net = random_network(rng, (15, 20, 20, 10))
  xs = rng.uniform(size=(3, 15))
  lower, upper = bounds.input_box(xs, 0.1)
  batched = bounds.crown_bounds(net, lower, upper)
  for i in range(3):
    single = bounds.crown_bounds(net, lower[i], upper[i])
    for a, b in zip(batched[i].lowers, single.lowers):
      np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


def test_input_box_clips_to_unit_interval():
  lower, upper = bounds.input_box(np.array([0.0, 0.5, 1.0]), 0.1)
  np.testing.assert_allclose(lower, [0.0, 0.4, 0.9])
  np.testing.assert_allclose(upper, [0.1, 0.6, 1.0])


@pytest.mark.parametrize("seed", range(3))
def test_crown_margin_bound_is_sound(seed):
  rng = np.random.default_rng(20 + seed)
  net = random_network(rng, (10, 20, 20, 10))
  xs = rng.uniform(size=(2, 10))
  labels = np.array([1, 7])
  lower, upper = bounds.input_box(xs, 0.1)
  margin = bounds.crown_margin_lower_bounds(net, lower, upper, labels)
  assert margin.shape == (2, 10)
  for i in range(2):
    assert np.isinf(margin[i, labels[i]])
    logits = forward(net, sample_box(rng, lower[i], upper[i], 4000))
    reached = (logits[:, labels[i]:labels[i] + 1] - logits).min(0)
    mask = np.arange(10) != labels[i]
    assert np.all(margin[i, mask] <= reached[mask])


def test_unknown_method():
  net = random_network(np.random.default_rng(0), (3, 4, 2))
  with pytest.raises(ValueError, match="unknown bounds method"):
    bounds.layer_bounds(net, np.zeros(3), np.ones(3), "magic")


@pytest.mark.parametrize("seed", range(2))
def test_alpha_crown_margin_is_sound_and_not_looser(seed):
  rng = np.random.default_rng(30 + seed)
  net = random_network(rng, (10, 20, 20, 10))
  xs = rng.uniform(size=(2, 10))
  labels = np.array([2, 5])
  lower, upper = bounds.input_box(xs, 0.1)
  crown = bounds.crown_margin_lower_bounds(net, lower, upper, labels)
  alpha = bounds.alpha_crown_margin_lower_bounds(net, lower, upper, labels,
                                                 steps=20)
  assert np.all(alpha >= crown - 1e-6)
  for i in range(2):
    logits = forward(net, sample_box(rng, lower[i], upper[i], 4000))
    reached = (logits[:, labels[i]:labels[i] + 1] - logits).min(0)
    mask = np.arange(10) != labels[i]
    assert np.all(alpha[i, mask] <= reached[mask])


@pytest.mark.parametrize("scale", [1.0, 10.0, 1000.0])
def test_bounds_hold_when_large_terms_cancel(scale):
  """One hidden neuron whose pre-activation sums 784 large terms to about 1
  at the worst corner (a review's construction: float32 bounds widened only
  relative to the result were off by up to 2.3e-4 here). Logit 1 is a
  constant placed within a few ulps of logit 0's minimum, so the margin's
  sign depends on the last bits."""
  delta = 0.1
  for seed in range(4):
    rng = np.random.default_rng(seed)
    image = (rng.integers(0, 256, 784) / 255).astype(np.float32)
    lower, upper = bounds.input_box(image, delta)
    w = (scale * rng.choice([-1.0, 1.0], 784)
         * rng.uniform(0.5, 1.0, 784)).astype(np.float32)
    corner = np.where(w > 0, lower, upper)  # minimises the neuron
    b0 = np.float32(-float(corner @ w.astype(np.float64)) + 1.0)
    for k in range(8):
      b1 = np.full(10, -100.0, np.float32)
      b1[1] = np.float32(1.0 + (k - 4) * scale * 2e-6)
      w1 = np.zeros((1, 10), np.float32)
      w1[0, 0] = 1.0
      net = Network((w[:, None], w1), (np.array([b0]), b1))
      layer = bounds.crown_bounds(net, lower, upper)
      pre = forward(net, np.stack([corner, np.where(w > 0, upper, lower)]),
                    return_hidden=True)[1][0][:, 0]
      assert layer.lowers[0][0] <= pre[0] and layer.uppers[0][0] >= pre[1]
      logits = forward(net, corner)
      true_min = logits[0] - logits[1]
      bound = bounds.crown_margin_lower_bounds(net, lower, upper, [0])[0, 1]
      assert bound <= true_min, (seed, k, bound, true_min)
