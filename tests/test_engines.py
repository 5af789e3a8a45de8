"""The Ray engine gives the local engine's records, and redoes a unit whose
worker was killed once (issue 16). Runs on a local Ray started by the test."""

import dataclasses
import os

import numpy as np
import pytest
import ray

from robust_prune.network import forward
from robust_prune.verify import engines, runner
from testing import random_network

# Timing fields differ from run to run; everything else must be identical.
_TIMING = {"build_seconds", "bounds_seconds", "solve_seconds", "bab_seconds",
           "image_seconds"}


@pytest.fixture(scope="module")
def local_ray():
  ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
           runtime_env={"env_vars": {"JAX_PLATFORMS": "cpu"}},
           logging_level="WARNING")
  yield
  ray.shutdown()


def _problem(n_images=4):
  net = random_network(3, [12, 10, 8, 4])
  rng = np.random.default_rng(0)
  images = rng.uniform(0, 1, (n_images, 12)).astype(np.float32)
  labels = np.argmax(forward(net, images), axis=1)
  return net, images, labels, list(range(n_images))


def _comparable(records):
  return sorted(
      ({k: v for k, v in dataclasses.asdict(r).items() if k not in _TIMING}
       for r in records),
      key=lambda r: (r["image_index"], r["target"]))


def test_ray_and_local_engines_give_the_same_records(local_ray, tmp_path):
  net, images, labels, indices = _problem()
  # The branch and bound decides these pairs in a few domains; its limit is
  # generous because each process's first call pays the JIT compile from
  # it (a short limit made the verdict's path depend on the compile time).
  kwargs = dict(delta=0.15, mode="certify", bab_time_limit=120.0, workers=1)
  local = runner.verify_images(net, images, labels, indices, **kwargs,
                               out_path=str(tmp_path / "local.jsonl"))
  on_ray = runner.verify_images(net, images, labels, indices, **kwargs,
                                out_path=str(tmp_path / "ray.jsonl"),
                                engine="ray")
  assert len(local) == len(indices) * 3
  assert {r.status for r in local} <= {"robust", "adversarial"}
  assert _comparable(on_ray) == _comparable(local)
  # the driver wrote every record once
  with open(tmp_path / "ray.jsonl") as f:
    assert len([line for line in f if line.strip()]) == len(local)


def test_a_killed_ray_worker_is_redone_once(local_ray, tmp_path):
  net, images, labels, indices = _problem(2)
  marker = str(tmp_path / "killed_once")

  def dies_on_first_try(weights, biases, image, unit, config):
    if unit.image_index == 1 and not os.path.exists(marker):
      open(marker, "w").close()
      os._exit(1)   # the worker process dies mid-unit
    return engines._ray_solve(weights, biases, image, unit, config)  # pylint: disable=protected-access

  config = runner.VerifyConfig(delta=0.15, mode="certify", bab_time_limit=5.0)
  units = runner.plan_work_units(labels, indices, set(), net.num_classes)
  done = []
  engines.solve_on_ray(net, images, units, config, None, done.append,
                       solve=dies_on_first_try)
  assert os.path.exists(marker)
  assert sorted(r[0].image_index for r in done) == [0, 1]
  assert all(len(r) == 3 for r in done)


def test_unknown_engine_is_refused():
  net, images, labels, indices = _problem(1)
  with pytest.raises(runner.EvaluateError, match="unknown engine"):
    runner.verify_images(net, images, labels, indices, delta=0.1,
                         engine="spark")


def _blas_threads():
  import threadpoolctl
  return sorted({pool["num_threads"] for pool in threadpoolctl.threadpool_info()
                 if pool["user_api"] == "blas"})


def test_a_local_worker_runs_numpy_blas_on_one_thread():
  """A spawned worker's BLAS runs on one thread (its spinning threads took
  the cores XLA needs), whatever the machine's core count."""
  from robust_prune.verify.config import VerifyConfig
  net, images, _, _ = _problem(1)
  with engines._worker_pool(net, images, 2, VerifyConfig(delta=0.1)) as pool:
    assert pool.submit(_blas_threads).result() == [1]
