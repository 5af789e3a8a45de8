"""The prune stage's ranking methods (milp, robust_milp, lp, magnitude,
random) and equal-width pruning (issue 16)."""

import itertools
import json
import os
import subprocess
import sys

import numpy as np
import pytest

import testing

from robust_prune import configs
from robust_prune import data as data_lib
from robust_prune import prune as prune_lib
from robust_prune import train as train_lib
from robust_prune.milp import backends
from robust_prune.network import forward
from robust_prune.pruning import critical as critical_lib
from robust_prune.pruning import importance as imp
from robust_prune.pruning import loop
from robust_prune.pruning import methods
from robust_prune.pruning import structure
from testing import random_network

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RECIPE = train_lib.TrainConfig(
    hidden=(12, 6), epochs=3, batch_size=32, learning_rate=3e-3, epsilon=0.02,
    epsilon_warmup_epochs=0, pgd_steps=1, pgd_step_size=0.02,
    max_train_examples=3000, eval_pgd_steps=5, eval_pgd_step_size=0.01,
    eval_pgd_examples=200)
METHODS = loop.METHODS


# ------------------------------------------------------------ LP relaxation
def _toy_batch(seed, sizes=(2, 4, 4, 2), margin=0.05):
  """A random network and one input per class it predicts with margin."""
  net = random_network(seed, sizes)
  rng = np.random.default_rng(seed)
  x = rng.uniform(0, 1, size=(400, sizes[0]))
  m = imp.margins(forward(net, x), np.argmax(forward(net, x), axis=1))
  pred = np.argmax(forward(net, x), axis=1)
  pick = [np.flatnonzero((pred == c) & (m > margin))[0]
          for c in range(sizes[-1])]
  return net, x[pick], pred[pick]


def _brute_force_optimum(built) -> float:
  """The MILP's optimum by enumeration: each assignment of its binaries
  leaves an LP (HiGHS); the best feasible one is the optimum."""
  form = built.model.form()
  binaries = np.flatnonzero(form.integer)
  assert 0 < len(binaries) <= 12, len(binaries)
  highs = backends.highs_lp(built.model)
  best = np.inf
  for bits in itertools.product([0.0, 1.0], repeat=len(binaries)):
    lb, ub = form.col_lower.copy(), form.col_upper.copy()
    lb[binaries] = ub[binaries] = bits
    x = backends.highs_lp_solve(highs, lb, ub, 10.0)
    if x is not None:
      best = min(best, built.model.objective(x))
  return best


@pytest.mark.parametrize("seed", [9, 14])
def test_lp_relaxation_bounds_the_brute_force_milp_optimum(seed):
  net, x, y = _toy_batch(seed)
  options = loop.PruneOptions(margin=0.05, baseline="lp", retrain="finetune")
  built = imp.build_importance_milp(net, x, y, margin=0.05)
  optimum = _brute_force_optimum(built)
  milp = imp.importance_scores(net, x, y, margin=0.05, time_limit=20)
  assert milp.proven and milp.objective == pytest.approx(optimum, abs=1e-6)
  lp = methods.lp_relaxation_scores(net, x, y, options)
  assert lp.proven and lp.solver == "HIGHS_LP"
  assert lp.objective <= optimum + 1e-7
  for s in lp.scores:
    assert np.all((s >= 0.0) & (s <= 1.0))
  # the relaxation is a real relaxation: its point breaks some binary
  x_lp = backends.highs_lp_solve(backends.highs_lp(built.model),
                                 built.model.form().col_lower,
                                 built.model.form().col_upper, 10.0)
  assert built.model.objective(x_lp) == pytest.approx(lp.objective)


# ------------------------------------------------------- on a trained net
@pytest.fixture(scope="module")
def splits(mnist_train, mnist_test):
  # training reads the first 3000 (RECIPE); batches search further
  return (data_lib.Split(mnist_train.images[:20000], mnist_train.labels[:20000]),
          data_lib.Split(mnist_test.images[:200], mnist_test.labels[:200]))


@pytest.fixture(scope="module")
def trained(tmp_path_factory, splits):
  return testing.trained_network_path(tmp_path_factory, RECIPE, splits)


@pytest.fixture(scope="module")
def network(trained):
  from robust_prune import network as network_lib
  return network_lib.load_network(trained)


def _options(method, widths=(), **kwargs):
  return loop.PruneOptions(margin=0.01, time_limit=10.0, baseline=method,
                           retrain="finetune", widths=widths, **kwargs)


@pytest.fixture(scope="module")
def records(network, splits):
  return {m: methods.compute_scores(network, splits[0], _options(m, (8, 4)),
                                    RECIPE) for m in METHODS}


def test_robust_batch_holds_the_clean_images_and_their_pgd_versions(
    network, splits):
  images, labels, indices = methods.score_batch(
      network, splits[0], _options("robust_milp"), RECIPE)
  n = len(indices)
  assert n == 10 and len(images) == 2 * n
  clean, adversarial = images[:n], images[n:]
  np.testing.assert_array_equal(clean, splits[0].images[indices])
  np.testing.assert_array_equal(labels[:n], labels[n:])
  shift = np.abs(adversarial - clean).reshape(n, -1).max(axis=1)
  assert np.all(shift > 1e-3)       # really other images
  assert np.all(shift <= RECIPE.attack_epsilon + 1e-6)   # in the PGD ball
  assert np.all((adversarial >= 0) & (adversarial <= 1))
  # exactly PGD's outputs: select_robust_batch attacks 2000 candidates at
  # once, seeded with the prune seed (0) plus the chunk's first index
  for start in sorted({int(i) // 2000 * 2000 for i in indices}):
    chunk = slice(start, start + 2000)
    pgd = critical_lib.adversarial_images(
        network, splits[0].images[chunk], splits[0].labels[chunk],
        epsilon=RECIPE.attack_epsilon, steps=RECIPE.eval_pgd_steps,
        step_size=RECIPE.eval_pgd_step_size, seed=start)
    mine = (indices >= start) & (indices < start + 2000)
    np.testing.assert_allclose(adversarial[mine], pgd[indices[mine] - start],
                               atol=1e-6)
  m_clean = imp.margins(forward(network, clean), labels[:n])
  m_adv = imp.margins(forward(network, adversarial), labels[n:])
  assert m_adv.mean() < m_clean.mean() - 1e-3   # pushed toward the border
  assert np.all(m_adv > 0.01)   # yet classified with the MILP's margin


def test_robust_milp_keeps_the_adversarial_images_classified(
    network, splits, records):
  record = records["robust_milp"]
  assert record["batch_size"] == 20 and record["status"] in (
      "optimal", "time_limit")
  images, labels, _ = methods.score_batch(
      network, splits[0], _options("robust_milp"), RECIPE)
  scores = [np.asarray(s) for s in record["scores"]]
  m = imp.margins(imp.scored_forward(network, images[10:], scores),
                  labels[10:])
  assert np.all(m >= 0.01 - 1e-5)


def test_equal_widths_remove_the_same_neurons_per_layer(network, records):
  kept = {}
  for method, record in records.items():
    masks = methods.keep_masks(record, network, _options(method, (8, 4)), 1)
    assert [int(m.sum()) for m in masks] == [8, 4], method
    assert structure.removed_counts(masks) == (4, 2)
    kept[method] = [tuple(np.flatnonzero(m)) for m in masks]
  assert records["magnitude"]["status"] == methods.NO_MILP
  assert records["magnitude"]["scores"] is None
  assert len({tuple(k) for k in kept.values()}) > 1   # different choices


def test_milp_at_the_thresholds_widths_keeps_the_thresholds_neurons(
    network, records):
  record = records["milp"]
  by_threshold = structure.keep_masks_from_scores(record["scores"], 1e-3)
  widths = tuple(int(m.sum()) for m in by_threshold)
  by_widths = methods.keep_masks(record, network, _options("milp", widths), 1)
  for a, b in zip(by_threshold, by_widths):
    np.testing.assert_array_equal(a, b)


def test_top_ranked_masks_break_ties_by_magnitude_then_index():
  scores = np.array([1.0, 1.0, 1.0, 0.0, 0.5])
  magnitude = np.array([2.0, 1.0, 2.0, 9.0, 0.0])
  (mask,) = methods.top_ranked_masks([(scores, magnitude)], [2])
  assert mask.tolist() == [True, False, True, False, False]
  (mask,) = methods.top_ranked_masks([(scores, magnitude)], [1])
  assert mask.tolist() == [False, False, True, False, False]


def test_equal_width_runs_resume_and_record_the_method(trained, splits,
                                                       tmp_path):
  for method in ("magnitude", "lp"):
    summary = loop.run_pruning(trained, str(tmp_path / method),
                               _options(method, (8, 4)), train=splits[0],
                               test=splits[1])
    assert summary["widths_after"] == [8, 4]
    assert [len(k) for k in summary["kept_original_indices"]] == [8, 4]
    with open(tmp_path / method / "options.json") as f:
      assert json.load(f)["options"]["widths"] == [8, 4]
    again = loop.run_pruning(trained, str(tmp_path / method),
                             _options(method, (8, 4)), train=splits[0],
                             test=splits[1])
    assert again["seconds"] == summary["seconds"]   # nothing redone
  with open(tmp_path / "lp" / "scores.json") as f:
    assert json.load(f)["solver"] == "HIGHS_LP"


# ------------------------------------------------------- bad --prune_widths
@pytest.mark.parametrize("widths, message", [
    ("0,5", ">= 1 per layer"), ("5", "one width per hidden layer"),
    ("40,8", "keeps more neurons"), ("a,b", "integers")])
def test_bad_prune_widths_is_one_value_error_naming_the_flag(widths, message):
  with pytest.raises(ValueError, match=f"--prune_widths.*{message}"):
    prune_lib.pipeline_prune_options(configs.presets.quick().replace(
        prune_widths=widths, prune_method="lp"))


def test_widths_are_checked_against_the_network(trained, splits, tmp_path):
  with pytest.raises(ValueError, match="--prune_widths.*keeps more"):
    loop.run_pruning(trained, str(tmp_path), _options("lp", (13, 4)),
                     train=splits[0], test=splits[1])
  assert not os.path.exists(tmp_path / "options.json")


def test_pipeline_binary_refuses_bad_widths_before_training(tmp_path):
  out = tmp_path / "run"
  proc = subprocess.run(
      [sys.executable, "-m", "robust_prune.pipeline", f"--out_dir={out}",
       "--quick", "--prune_widths=99,1", "--prune_method=magnitude"],
      cwd=REPO, capture_output=True, text=True, timeout=300)
  assert proc.returncode == 2, proc.stderr[-2000:]
  assert "--prune_widths" in proc.stderr and "Traceback" not in proc.stderr
  assert not (out / "original").exists()
