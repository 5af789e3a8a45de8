"""Xiao et al.'s verification-friendly training: the ReLU-stability loss is
computed from sound interval bounds, and training with it leaves fewer
unstable neurons (issue 16's training recipe)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from robust_prune import bounds, models
from robust_prune import train as train_lib
from robust_prune.network import network_from_params
from robust_prune.train import step as step_lib
from testing import random_network


def test_stability_loss_uses_the_interval_bounds_of_the_ball():
  net = random_network(0, [20, 12, 8, 5])
  rng = np.random.default_rng(1)
  images = rng.uniform(0, 1, (6, 20)).astype(np.float32)
  eps = 0.1
  expected = 0.0
  for image in images:
    lb = bounds.interval_bounds(net, *bounds.input_box(image, eps))
    for l, u in zip(lb.lowers[:-1], lb.uppers[:-1]):
      expected += np.sum(-np.tanh(1.0 + l * u))
  got = step_lib.relu_stability_loss(models.flax_params(net),
                                     jnp.asarray(images), eps)
  # the project's interval bounds are widened by a round-off allowance
  np.testing.assert_allclose(float(got), expected / len(images), rtol=1e-4)


def test_l1_penalty_is_the_sum_of_absolute_kernel_weights():
  net = random_network(2, [6, 4, 3])
  expected = sum(np.abs(w).sum() for w in net.weights)
  np.testing.assert_allclose(float(step_lib.l1_penalty(
      models.flax_params(net))), expected, rtol=1e-6)


def _unstable_after_training(mnist_train, mnist_test, tmp_path, rs_weight):
  config = train_lib.TrainConfig(
      hidden=(64, 32), epochs=2, epsilon=0.1, epsilon_warmup_epochs=0,
      pgd_steps=2, pgd_step_size=0.05, max_train_examples=6000,
      rs_weight=rs_weight, l1_weight=1e-5 if rs_weight else 0.0,
      eval_pgd_examples=100, eval_pgd_steps=5)
  workdir = tmp_path / f"rs_{rs_weight}"
  train_lib.train_and_evaluate(config, str(workdir), train=mnist_train,
                               test=mnist_test)
  from robust_prune.network import load_network  # pylint: disable=g-import-not-at-top
  net = load_network(workdir / "network.npz")
  images = mnist_test.images[:50]
  lowers, uppers = zip(*[bounds.input_box(x, 0.1) for x in images])
  counts = [sum(b.unstable_counts()) for b in bounds.interval_bounds(
      net, np.array(lowers), np.array(uppers))]
  return float(np.mean(counts))


def test_training_with_the_regulariser_leaves_fewer_unstable_neurons(
    mnist_train, mnist_test, tmp_path):
  plain = _unstable_after_training(mnist_train, mnist_test, tmp_path, 0.0)
  stable = _unstable_after_training(mnist_train, mnist_test, tmp_path, 0.5)
  assert stable < 0.7 * plain, (stable, plain)
