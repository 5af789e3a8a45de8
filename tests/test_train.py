"""End-to-end training: learns, exports, resumes bit-exactly."""

import dataclasses
import errno
import json
import os

import numpy as np
import pytest

from robust_prune import io as io_lib
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


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, mnist_train, mnist_test):
  """A 3-epoch PGD run that nothing interrupts, and its config and data."""
  config = train_lib.TrainConfig(epochs=3, epsilon=0.1, pgd_steps=2,
                                 pgd_step_size=0.05, **SMALL)
  test = _subset(mnist_test, 300)
  workdir = tmp_path_factory.mktemp("uninterrupted")
  history = train_lib.train_and_evaluate(config, str(workdir),
                                         train=mnist_train, test=test)
  return config, test, workdir, history


# Where the job is killed, in epoch `at`: after writing the file, or before.
CRASH_POINTS = [("network.npz", "after", 2), ("checkpoint.msgpack", "before", 2),
                ("metrics.jsonl", "before", 2), ("metrics.jsonl", "before", 3),
                ("checkpoint.msgpack", "before", 3)]


@pytest.mark.parametrize("name,when,at", CRASH_POINTS)
def test_interrupted_run_resumes_to_identical_weights(
    tmp_path, monkeypatch, mnist_train, uninterrupted, name, when, at):
  config, test, reference, reference_history = uninterrupted
  resumed = tmp_path / "interrupted"
  # Every file of the workdir is written through io.atomic_write.
  real_write = io_lib.atomic_write
  seen = []

  def killed(real, path_arg):
    def write(*args):
      hit = os.path.basename(str(args[path_arg])) == name
      if hit:
        seen.append(args[path_arg])
      if hit and len(seen) == at and when == "before":
        raise KeyboardInterrupt  # as if the job were killed here
      real(*args)
      if hit and len(seen) == at:
        raise KeyboardInterrupt
    return write

  monkeypatch.setattr(io_lib, "atomic_write", killed(real_write, 0))
  with pytest.raises(KeyboardInterrupt):
    train_lib.train_and_evaluate(config, str(resumed), train=mnist_train,
                                 test=test)
  monkeypatch.setattr(io_lib, "atomic_write", real_write)
  history = train_lib.train_and_evaluate(config, str(resumed),
                                         train=mnist_train, test=test)
  assert [h["epoch"] for h in history] == [1, 2, 3]
  a = network_lib.load_network(reference / "network.npz")
  b = network_lib.load_network(resumed / "network.npz")
  for wa, wb in zip(a.weights + a.biases, b.weights + b.biases):
    np.testing.assert_array_equal(wa, wb)
  lines = (resumed / "metrics.jsonl").read_text().splitlines()
  assert [json.loads(l)["epoch"] for l in lines] == [1, 2, 3]
  for got, want in zip(history, reference_history):
    assert got["test_accuracy"] == want["test_accuracy"]
    assert got["pgd_accuracy"] == want["pgd_accuracy"]


def test_finished_run_rerun_reexports_its_checkpoint(tmp_path, mnist_train,
                                                     mnist_test):
  """A kill after the last checkpoint but with network.npz stale or gone:
  a rerun trains nothing and writes the checkpoint's network."""
  config = train_lib.TrainConfig(epochs=1, epsilon=0.0, **SMALL)
  test = _subset(mnist_test, 200)
  history = train_lib.train_and_evaluate(config, str(tmp_path),
                                         train=mnist_train, test=test)
  path = tmp_path / "network.npz"
  good = network_lib.load_network(path)
  stale = network_lib.Network(tuple(w * 0 for w in good.weights), good.biases)
  network_lib.save_network(stale, path)
  again = train_lib.train_and_evaluate(config, str(tmp_path),
                                       train=mnist_train, test=test)
  assert again == history
  for wa, wb in zip(network_lib.load_network(path).weights, good.weights):
    np.testing.assert_array_equal(wa, wb)


def test_run_that_failed_before_its_first_epoch_can_be_rerun(
    tmp_path, mnist_train, mnist_test):
  test = _subset(mnist_test, 200)
  too_big = train_lib.TrainConfig(epochs=1, epsilon=0.0,
                                  **{**SMALL, "batch_size": 5000})
  with pytest.raises(ValueError, match="exceeds"):
    train_lib.train_and_evaluate(too_big, str(tmp_path), train=mnist_train,
                                 test=test)
  fixed = train_lib.TrainConfig(epochs=1, epsilon=0.0, **SMALL)
  history = train_lib.train_and_evaluate(fixed, str(tmp_path),
                                         train=mnist_train, test=test)
  assert [h["epoch"] for h in history] == [1]


def test_list_widths_resume_their_own_workdir(tmp_path, mnist_train,
                                              mnist_test):
  test = _subset(mnist_test, 200)
  config = train_lib.TrainConfig(epochs=1, epsilon=0.0,
                                 **{**SMALL, "hidden": [32]})
  assert config.hidden == (32,)
  first = train_lib.train_and_evaluate(config, str(tmp_path),
                                       train=mnist_train, test=test)
  assert train_lib.train_and_evaluate(config, str(tmp_path),
                                      train=mnist_train, test=test) == first


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


# ----------------------------------------------- issue 17: locks, resume, disk
def test_second_run_on_a_workdir_is_refused(tmp_path, mnist_train, mnist_test):
  """A workdir another live run holds is refused before anything is
  written (two runs with different --hidden used to both exit 0)."""
  config = train_lib.TrainConfig(epochs=1, epsilon=0.0, **SMALL)
  with io_lib.WorkdirLock(str(tmp_path)):  # as the other run holds it
    with pytest.raises(io_lib.LockedError, match="in use"):
      train_lib.train_and_evaluate(config, str(tmp_path), train=mnist_train,
                                   test=_subset(mnist_test, 200))
  assert not (tmp_path / "config.json").exists()
  history = train_lib.train_and_evaluate(config, str(tmp_path),
                                         train=mnist_train,
                                         test=_subset(mnist_test, 200))
  assert [h["epoch"] for h in history] == [1]  # free again once released


def test_checkpoint_of_another_architecture_is_not_resumed(
    tmp_path, mnist_train, mnist_test):
  """config.json says 16 but the checkpoint is 32 wide (what two racing
  runs left behind): the 16 run must not resume the 32 network."""
  test = _subset(mnist_test, 200)
  wide = train_lib.TrainConfig(epochs=1, epsilon=0.0, **SMALL)
  train_lib.train_and_evaluate(wide, str(tmp_path), train=mnist_train,
                               test=test)
  narrow = train_lib.TrainConfig(epochs=2, epsilon=0.0,
                                 **{**SMALL, "hidden": (16,)})
  (tmp_path / "config.json").write_text(json.dumps(narrow.to_json()))
  with pytest.raises(ValueError, match=r"checkpoint\.msgpack.*\[32\]"):
    train_lib.train_and_evaluate(narrow, str(tmp_path), train=mnist_train,
                                 test=test)
  net = network_lib.load_network(tmp_path / "network.npz")
  assert net.hidden_widths == (32,)  # nothing was overwritten


def test_corrupt_checkpoint_error_names_the_file(tmp_path, mnist_train,
                                                 mnist_test):
  test = _subset(mnist_test, 200)
  config = train_lib.TrainConfig(epochs=2, epsilon=0.0, **SMALL)
  train_lib.train_and_evaluate(dataclasses.replace(config, epochs=1),
                               str(tmp_path / "first"), train=mnist_train,
                               test=test)
  # The same config over one epoch: config.json matches, the file is junk.
  (tmp_path / "run").mkdir()
  (tmp_path / "run" / "config.json").write_text(json.dumps(config.to_json()))
  (tmp_path / "run" / "checkpoint.msgpack").write_bytes(b"\xc1 not msgpack")
  with pytest.raises(ValueError, match=str(tmp_path / "run" /
                                           "checkpoint.msgpack")):
    train_lib.train_and_evaluate(config, str(tmp_path / "run"),
                                 train=mnist_train, test=test)


def test_full_disk_leaves_no_temporary(tmp_path, monkeypatch, mnist_train,
                                       mnist_test):
  """The disk fills up while the checkpoint is written: the error comes
  through, and no temporary is left behind (one more used to be left per
  rerun)."""
  real_fdopen = os.fdopen

  class FullDisk:
    def __init__(self, f):
      self.f = f

    def __enter__(self):
      return self

    def __exit__(self, *exc):
      self.f.close()

    def write(self, data):
      if len(data) > 200_000:  # the checkpoint, not the 100 KB network
        raise OSError(errno.ENOSPC, "No space left on device")
      return self.f.write(data)

    def __getattr__(self, name):
      return getattr(self.f, name)

  monkeypatch.setattr(os, "fdopen",
                      lambda fd, *a, **k: FullDisk(real_fdopen(fd, *a, **k)))
  config = train_lib.TrainConfig(epochs=1, epsilon=0.0, **SMALL)
  with pytest.raises(OSError, match="No space"):
    train_lib.train_and_evaluate(config, str(tmp_path), train=mnist_train,
                                 test=_subset(mnist_test, 200))
  assert [n for n in os.listdir(tmp_path) if n.endswith(".tmp")] == []
  assert not (tmp_path / "checkpoint.msgpack").exists()


@pytest.mark.parametrize("kwargs", [
    dict(epsilon=float("nan")), dict(learning_rate=float("nan")),
    dict(pgd_step_size=float("inf")), dict(max_train_examples=-5),
    dict(pgd_steps=-1), dict(eval_epsilon=float("nan"))])
def test_non_finite_or_negative_options_are_refused(kwargs):
  """NaN passed every range check: --epsilon=nan trained *standard* and
  stored NaN in config.json."""
  with pytest.raises(ValueError, match="|".join(kwargs)):
    train_lib.TrainConfig(**kwargs)
