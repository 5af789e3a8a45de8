"""FGSM / PGD: feasibility (ball ∩ box) and that they actually attack."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from robust_prune import attacks
from robust_prune import models
from robust_prune import train as train_lib

EPS = 0.1


@pytest.fixture(scope="module")
def trained(mnist_train, mnist_test):
  """A quickly trained small MLP (a random net makes a weak attack target)."""
  config = train_lib.TrainConfig(hidden=(64,), epochs=1, epsilon=0.0,
                                 max_train_examples=6000)
  state = train_lib.create_train_state(config, jax.random.key(0),
                                       steps_total=50)
  x = jnp.asarray(mnist_train.images[:6000])
  y = jnp.asarray(mnist_train.labels[:6000])
  for i in range(0, 6000, 128):
    state, _ = train_lib.train_step(state, x[i:i + 128], y[i:i + 128],
                                    jax.random.key(i), 0.0, 0, 0.0)
  return state.apply_fn, state.params, mnist_test.images[:256], mnist_test.labels[:256]


def _feasible(x_adv, x, eps):
  x_adv, x = np.asarray(x_adv), np.asarray(x)
  assert np.all(np.abs(x_adv - x) <= eps + 1e-6)
  assert x_adv.min() >= 0.0 and x_adv.max() <= 1.0


@pytest.mark.parametrize("random_start", [True, False])
def test_pgd_stays_feasible_and_raises_loss(trained, random_start):
  apply_fn, params, x, y = trained
  x_adv = jax.jit(lambda p, a, b, k: attacks.pgd(
      apply_fn, p, a, b, epsilon=EPS, steps=20, step_size=0.01, key=k,
      random_start=random_start))(params, x, y, jax.random.key(1))
  _feasible(x_adv, x, EPS)
  clean = attacks.attack_objective(apply_fn(params, x), y, None)
  adv = attacks.attack_objective(apply_fn(params, x_adv), y, None)
  assert float(adv.mean()) > float(clean.mean()) + 0.5
  clean_acc = np.mean(np.argmax(apply_fn(params, x), -1) == y)
  adv_acc = np.mean(np.argmax(apply_fn(params, x_adv), -1) == y)
  assert clean_acc > 0.7 and adv_acc < clean_acc - 0.2


def test_targeted_pgd_raises_target_margin(trained):
  apply_fn, params, x, y = trained
  target = (y + 1) % 10
  x_adv = attacks.pgd(apply_fn, params, x, y, epsilon=EPS, steps=20,
                      step_size=0.01, key=jax.random.key(2), target=target)
  _feasible(x_adv, x, EPS)
  margin = lambda xs: attacks.attack_objective(apply_fn(params, xs), y, target)
  gain = np.asarray(margin(x_adv) - margin(x))
  assert np.all(gain > -1e-4) and gain.mean() > 1.0


def test_fgsm_is_one_signed_step(trained):
  apply_fn, params, x, y = trained
  x_adv = np.asarray(attacks.fgsm(apply_fn, params, x, y, epsilon=EPS))
  _feasible(x_adv, x, EPS)
  moved = np.abs(x_adv - x)
  # Every pixel moves by exactly eps unless the box clipped it.
  interior = (x > EPS) & (x < 1 - EPS)
  assert np.allclose(moved[interior & (moved > 0)], EPS, atol=1e-6)


def test_random_start_needs_a_key(trained):
  apply_fn, params, x, y = trained
  with pytest.raises(ValueError, match="key"):
    attacks.pgd(apply_fn, params, x, y, epsilon=EPS, steps=1, step_size=0.01)
