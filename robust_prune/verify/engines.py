"""Where work units are solved: in this process, in a local process pool, or
on a Ray cluster. Every engine calls `on_done(verdicts)` in the driver as each
unit finishes, so the driver alone appends and fsyncs records: an interrupted
run (driver or worker killed) resumes with nothing lost or repeated.

  local  the light default: serial for one worker, else a spawned process
         pool whose workers die with the driver.
  ray    Ray tasks (one CPU each); `address` None starts a local Ray sized to
         the machine, "auto" or "host:port" joins a running cluster. A unit
         whose worker is killed is retried once (Ray's `max_retries=1`).
"""

from __future__ import annotations

import concurrent.futures as futures
import contextlib
import multiprocessing
import os
import signal
import time
from typing import Callable, Sequence

from absl import logging
import numpy as np

from robust_prune import processes
from robust_prune.network import Network
from robust_prune.verify import cascade
from robust_prune.verify import milp_stage
from robust_prune.verify.config import VerifyConfig

ENGINES = ("local", "ray")
OnDone = Callable[[list], None]


class WorkerDiedError(RuntimeError):
  """A worker was killed; what was written stays, a rerun resumes."""


def solve_unit(network: Network, image, unit, config: VerifyConfig) -> list:
  """Pure: the records of one work unit (never raises; errors are records)."""
  return cascade.verify_image(network, image, unit.label, unit.image_index,
                              unit.targets, config)


# ------------------------------------------------------------ warm-up
def compilation_cache_dir() -> str:
  root = os.environ.get("ROBUST_PRUNE_CACHE") or os.path.join(
      os.path.expanduser("~"), ".cache", "robust_prune")
  return os.path.join(root, "jax")


def enable_compilation_cache() -> None:
  """JAX's persistent compilation cache, so that a process loads what an
  earlier one compiled (every compile is kept: minimum time 0)."""
  import jax  # pylint: disable=g-import-not-at-top
  try:
    os.makedirs(compilation_cache_dir(), exist_ok=True)
    jax.config.update("jax_compilation_cache_dir", compilation_cache_dir())
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
  except (OSError, AttributeError, ValueError) as e:
    logging.warning("no persistent JAX compilation cache: %s", e)


def single_blas_thread() -> None:
  """numpy's BLAS on one thread for the rest of this process. OpenBLAS
  keeps its threads spinning between products, on the cores XLA's threads
  need: 7 images at delta 0.1 in one process on 2 cores took 30-31 s
  instead of 39 s; with two workers on 2 cores the decided images of 20
  took a median 3.9 s instead of 6.0 s (BUILD_NOTES)."""
  import threadpoolctl  # pylint: disable=g-import-not-at-top
  threadpoolctl.threadpool_limits(1, user_api="blas")


def set_up_process() -> None:
  """What a process that verifies does first: JAX's persistent compilation
  cache, and numpy's BLAS on one thread."""
  enable_compilation_cache()
  single_blas_thread()


def prepare_process(network: Network, image, config: VerifyConfig
                    ) -> float | None:
  """Before a worker's first unit, with an image budget: the solver child
  started and the jitted shapes compiled (or loaded from the persistent
  cache), so that no image's budget pays for them; returns the seconds
  that took (None without a budget: the first target pays, as before)."""
  if config.image_time_limit <= 0:
    return None
  milp_stage.shared_solver_child().start()
  return cascade.warm_up(network, image, config)


# ------------------------------------------------------------------ local
_WORKER = {}


def _worker_init(parent: int, weights, biases, images, config):
  # A worker outliving a kill -9 of its parent would block on its pipe
  # forever: it dies with the parent, even one that died before this ran.
  processes.die_with_parent()
  if os.getppid() != parent:
    os._exit(1)  # pylint: disable=protected-access
  # Ctrl-C reaches the whole process group; the parent stops the workers.
  signal.signal(signal.SIGINT, signal.SIG_IGN)
  os.environ.setdefault("JAX_PLATFORMS", "cpu")
  set_up_process()
  network = Network(weights, biases)
  _WORKER.update(network=network, images=images, config=config,
                 compile_seconds=prepare_process(network, images[0], config))


def _worker_solve(unit, position: int):
  """(records, the worker's compile seconds on its first unit, else None)."""
  records = solve_unit(_WORKER["network"], _WORKER["images"][position], unit,
                       _WORKER["config"])
  return records, _WORKER.pop("compile_seconds", None)


def _log_compile(seconds: float | None) -> None:
  if seconds is not None:
    logging.info("worker warm-up: compile_seconds=%.1f (JIT compile or "
                 "cache load, before any image's budget)", seconds)


@contextlib.contextmanager
def _worker_pool(network: Network, images, workers: int,
                 config: VerifyConfig):
  pool = futures.ProcessPoolExecutor(
      max_workers=workers, mp_context=multiprocessing.get_context("spawn"),
      initializer=_worker_init,
      initargs=(os.getpid(), network.weights, network.biases, images, config))
  try:
    yield pool
  finally:
    # On an interrupt, do not leave workers solving for nobody.
    for process in list((getattr(pool, "_processes", None) or {}).values()):
      if process.is_alive():
        process.terminate()
    pool.shutdown(wait=True, cancel_futures=True)


def solve_locally(network: Network, images, units: Sequence, config,
                  workers: int, on_done: OnDone) -> None:
  """images[k] is units[k]'s image."""
  if not units:
    return
  if workers <= 1 or len(units) <= 1:
    _log_compile(prepare_process(network, images[0], config))
    for unit, image in zip(units, images):
      on_done(solve_unit(network, image, unit, config))
    return
  with _worker_pool(network, images, workers, config) as pool:
    pending = [pool.submit(_worker_solve, u, k) for k, u in enumerate(units)]
    try:
      for future in futures.as_completed(pending):
        records, compile_seconds = future.result()
        _log_compile(compile_seconds)
        on_done(records)
    except futures.process.BrokenProcessPool as e:
      raise WorkerDiedError(
          "a verification worker process died (killed, or out of memory); "
          "the records written so far are kept, rerun to resume") from e


# ------------------------------------------------------------------ ray
def ray_address(address: str | None) -> str | None:
  """The flag wins over $RAY_ADDRESS; empty means "start a local Ray"."""
  return address or os.environ.get("RAY_ADDRESS") or None


@contextlib.contextmanager
def ray_session(address: str | None):
  """Joins the cluster at `address`, or starts a local Ray for this run (and
  stops it afterwards)."""
  import ray  # pylint: disable=g-import-not-at-top
  if ray.is_initialized():
    yield ray
    return
  env = {"env_vars": {"JAX_PLATFORMS": os.environ.get("JAX_PLATFORMS", "cpu")}}
  ray.init(address=ray_address(address), include_dashboard=False,
           log_to_driver=False, runtime_env=env,
           logging_level="WARNING")
  try:
    yield ray
  finally:
    ray.shutdown()


_RAY_PREPARED = []


def _ray_solve(weights, biases, image, unit, config):
  network = Network(tuple(weights), tuple(biases))
  if not _RAY_PREPARED:   # once per Ray worker process (logged there)
    _RAY_PREPARED.append(True)
    set_up_process()
    _log_compile(prepare_process(network, image, config))
  return solve_unit(network, image, unit, config)


def solve_on_ray(network: Network, images, units: Sequence, config,
                 address: str | None, on_done: OnDone, solve=_ray_solve
                 ) -> None:
  """One Ray task per unit (1 CPU each), results handed to `on_done` in the
  driver as they finish; pending tasks are cancelled on an interrupt.
  `solve(weights, biases, image, unit, config)` is the task's body."""
  with ray_session(address) as ray:
    task = ray.remote(num_cpus=1, max_retries=1)(solve)
    weights = ray.put(list(network.weights))
    biases = ray.put(list(network.biases))
    pending = [task.remote(weights, biases, np.asarray(image), unit, config)
               for unit, image in zip(units, images)]
    try:
      while pending:
        done, pending = ray.wait(pending, num_returns=1)
        on_done(ray.get(done[0]))
    except (ray.exceptions.WorkerCrashedError,
            ray.exceptions.NodeDiedError) as e:
      raise WorkerDiedError(
          f"a Ray worker died twice on one unit ({type(e).__name__}); the "
          f"records written so far are kept, rerun to resume") from e
    finally:
      for ref in pending:
        ray.cancel(ref, force=True)
