"""End-to-end training: learns, exports, resumes bit-exactly."""

import json
import os

import numpy as np
import pytest

from robust_prune import network as network_lib
from robust_prune import train as train_lib

SMALL = dict(hidden=(32,), batch_size=100, max_train_examples=3000,
             eval_pgd_examples=200, eval_pgd_steps=5)


def _subset(split, n):
  return type(split)(split.images[:n], split.labels[:n])


def test_short_pgd_run_learns_and_exports(tmp_path, mnist_train, mnist_test):
  config = train_lib.TrainConfig(epochs=2, epsilon=0.1, pgd_steps=3,
                                 pgd_step_size=0.05, learning_rate=3e-3,
                                 **{**SMALL, "max_train_examples": 6000})
  test = _subset(mnist_test, 1000)
  history = train_lib.train_and_evaluate(config, str(tmp_path),
                                         train=mnist_train, test=test)
  assert [h["epoch"] for h in history] == [1, 2]
  assert history[-1]["test_accuracy"] > 0.6  # chance is 0.1
  assert 0.0 < history[-1]["pgd_accuracy"] <= history[-1]["test_accuracy"]
  net = network_lib.load_network(tmp_path / "network.npz")
  assert net.hidden_widths == (32,)
  # The exported network scores what training reported.
  acc = np.mean(network_lib.forward(net, test.images).argmax(-1) == test.labels)
  assert acc == pytest.approx(history[-1]["test_accuracy"], abs=1e-3)
  with open(tmp_path / "config.json") as f:
    assert train_lib.TrainConfig.from_json(json.load(f)) == config
  lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
  assert [json.loads(l)["epoch"] for l in lines] == [1, 2]
  assert all(json.loads(l)["examples_per_second"] > 0 for l in lines)


def test_interrupted_run_resumes_to_identical_weights(tmp_path, monkeypatch,
                                                      mnist_train, mnist_test):
  config = train_lib.TrainConfig(epochs=3, epsilon=0.0, **SMALL)
  test = _subset(mnist_test, 500)
  reference = tmp_path / "uninterrupted"
  train_lib.train_and_evaluate(config, str(reference), train=mnist_train,
                               test=test)

  resumed = tmp_path / "interrupted"
  real_save = network_lib.save_network
  calls = []

  def crash_after_second_epoch(net, path):
    real_save(net, path)
    calls.append(path)
    if len(calls) == 2:
      raise KeyboardInterrupt  # as if the job were killed here

  monkeypatch.setattr(network_lib, "save_network", crash_after_second_epoch)
  with pytest.raises(KeyboardInterrupt):
    train_lib.train_and_evaluate(config, str(resumed), train=mnist_train,
                                 test=test)
  monkeypatch.setattr(network_lib, "save_network", real_save)
  history = train_lib.train_and_evaluate(config, str(resumed),
                                         train=mnist_train, test=test)
  assert [h["epoch"] for h in history] == [1, 2, 3]
  a = network_lib.load_network(reference / "network.npz")
  b = network_lib.load_network(resumed / "network.npz")
  for wa, wb in zip(a.weights + a.biases, b.weights + b.biases):
    np.testing.assert_array_equal(wa, wb)
  lines = (resumed / "metrics.jsonl").read_text().splitlines()
  assert [json.loads(l)["epoch"] for l in lines] == [1, 2, 3]


def test_workdir_with_another_config_is_refused(tmp_path, mnist_train,
                                                mnist_test):
  config = train_lib.TrainConfig(epochs=1, epsilon=0.0, **SMALL)
  test = _subset(mnist_test, 200)
  train_lib.train_and_evaluate(config, str(tmp_path), train=mnist_train,
                               test=test)
  other = train_lib.TrainConfig(epochs=1, epsilon=0.0, seed=1, **SMALL)
  with pytest.raises(ValueError, match="another config"):
    train_lib.train_and_evaluate(other, str(tmp_path), train=mnist_train,
                                 test=test)


@pytest.mark.parametrize("kwargs", [dict(epochs=0), dict(epsilon=-0.1),
                                    dict(epsilon=0.1, pgd_steps=0),
                                    dict(hidden=(0,))])
def test_bad_config_is_rejected(kwargs):
  with pytest.raises(ValueError):
    train_lib.TrainConfig(**kwargs)
