r"""Exact robustness verification of a network on MNIST test images.

  python -m robust_prune.evaluate --network=runs/x/network.npz \
      --out=results.jsonl --delta=0.05 --num_images=100 [--first_image=0] \
      [--mode=targeted|certify|min_distortion] [--solver=HIGHS|SCIP|GLPK_MI] \
      [--time_limit=60] [--bounds=interval|crown|lp] [--workers=2]

One JSON line per (image, target), appended and flushed as soon as its image
is done. A rerun with the same --out skips finished pairs (a line cut off by
a kill is dropped and redone) but retries `error` records; readers keep the
latest record per pair. Every record carries `network_sha256`; an --out
holding another network's results, or another delta or mode, is refused, and
a damaged line stops the run with its file:line. Work is split into `WorkUnit`s (one
image, its remaining targets) solved by the pure `solve_unit`, so a cluster
engine can take the same units.
"""

from __future__ import annotations

import concurrent.futures as futures
import dataclasses
import json
import math
import multiprocessing
import os
import signal
import sys
import time
from typing import Sequence

from absl import app
from absl import flags
from absl import logging
import numpy as np

from robust_prune import bounds as bounds_lib
from robust_prune import cli
from robust_prune import network as network_lib
from robust_prune.milp import solvers as solvers_lib
from robust_prune.milp import verify as verify_lib
from robust_prune.network import Network, NetworkFormatError, load_mnist_network

FLAGS = flags.FLAGS


def define_flags():
  """Flags are defined by the binary only, so that other absl programs can
  import this module's library functions without flag clashes."""
  flags.DEFINE_string("network", None, "network.npz to verify.")
  flags.DEFINE_string("out", None, "results JSONL (appended; resumable).")
  flags.DEFINE_float("delta", None, "L-inf radius of the input box.")
  flags.DEFINE_integer("num_images", 100, "number of test images.")
  flags.DEFINE_integer("first_image", 0, "index of the first test image.")
  flags.DEFINE_enum("mode", "targeted", list(verify_lib.MODES),
                    "targeted: optimum per target (the paper); certify: proven "
                    "verdict per target, cheapest first; min_distortion: "
                    "smallest adversarial radius <= delta per target.")
  flags.DEFINE_string("solver", "HIGHS", "SCIP, HIGHS or GLPK_MI.")
  flags.DEFINE_float("time_limit", 60.0, "seconds per MILP.")
  flags.DEFINE_enum("bounds", "crown", list(bounds_lib.BOUND_METHODS),
                    "pre-activation bounds that fix stable neurons and big-Ms.")
  flags.DEFINE_integer("workers", 2, "processes solving images in parallel.")
  flags.DEFINE_integer("pgd_steps", 50, "PGD steps (certify pre-pass / MIP "
                       "start in targeted mode); 0 disables PGD.")
  flags.DEFINE_float("bab_time_limit", 20.0, "seconds of alpha/beta-CROWN "
                     "branch and bound per target (certify: the verdict; "
                     "targeted: the optimum to 5e-5) before the MILP; 0 goes "
                     "straight to the MILP.")
  flags.DEFINE_string("mnist_manual_dir", None,
                      "folder with the MNIST .gz files (else $MNIST_MANUAL_DIR).")


class EvaluateError(ValueError):
  """Bad input, reported as one line."""


@dataclasses.dataclass(frozen=True)
class WorkUnit:
  """One image and the targets still to verify for it."""

  image_index: int
  label: int
  targets: tuple[int, ...]


def pair_key(record) -> tuple:
  return (int(record["image_index"]), int(record["target"]))


def read_results(path: str) -> list[dict]:
  """The records of a results file, one per (image, target): a pair written
  twice (an `error` record retried by a rerun) keeps its latest record, in
  the place the pair first appeared. A line cut off by a kill (the last one,
  without a newline) is skipped; any other unreadable line is an
  EvaluateError naming the file and line."""
  if not os.path.exists(path):
    return []
  records = []
  with open(path, "r", encoding="utf-8") as f:
    for number, line in enumerate(f, 1):
      if not line.endswith("\n"):
        break  # a write cut off by a kill
      line = line.strip()
      if not line:
        continue
      try:
        record = json.loads(line)
        pair_key(record)
        _check_record_fields(record)
      except (ValueError, TypeError, KeyError, OverflowError) as e:
        raise EvaluateError(
            f"{path}:{number}: not a result record ({type(e).__name__}: "
            f"{e}); move the file away or pass another --out") from e
      records.append(record)
  return latest_per_pair(records)


def _check_record_fields(record: dict):
  """The fields a rerun reads: a status it knows, a numeric delta, a mode
  string (TypeError/ValueError otherwise)."""
  if record["status"] not in verify_lib.STATUSES:
    raise ValueError(f"unknown status {record['status']!r}")
  delta = record.get("delta", 0.0)
  if (isinstance(delta, bool) or not isinstance(delta, (int, float))
      or not math.isfinite(delta)):
    raise TypeError(f"delta {delta!r} is not a finite number")
  if not isinstance(record.get("mode", ""), str):
    raise TypeError(f"mode {record['mode']!r} is not a string")


def latest_per_pair(records: Sequence[dict]) -> list[dict]:
  """One record per pair: the last one given, in first-appearance order."""
  latest = {}
  for r in records:
    latest[pair_key(r)] = r
  return list(latest.values())


def _drop_partial_line(path: str) -> None:
  """Truncates a trailing line without newline (killed mid-write)."""
  if not os.path.exists(path):
    return
  with open(path, "rb+") as f:
    data = f.read()
    if data and not data.endswith(b"\n"):
      f.truncate(data.rfind(b"\n") + 1)


def plan_work_units(labels: Sequence[int], indices: Sequence[int],
                    done: set, num_classes: int = 10) -> list[WorkUnit]:
  units = []
  for index, label in zip(indices, labels):
    targets = tuple(t for t in range(num_classes)
                    if t != int(label) and (int(index), t) not in done)
    if targets:
      units.append(WorkUnit(int(index), int(label), targets))
  return units


def solve_unit(network: Network, image, unit: WorkUnit,
               config: verify_lib.VerifyConfig) -> list[dict]:
  """Pure: the records of one work unit (never raises; errors are records)."""
  return verify_lib.verify_image(network, image, unit.label, unit.image_index,
                                 unit.targets, config)


# Worker processes hold the network and images once (spawned, since JAX and
# fork do not mix).
_WORKER = {}


def _worker_init(weights, biases, images, config):
  os.environ.setdefault("JAX_PLATFORMS", "cpu")
  _WORKER.update(network=Network(weights, biases), images=images,
                 config=config)


def _worker_solve(unit: WorkUnit, position: int):
  return solve_unit(_WORKER["network"], _WORKER["images"][position], unit,
                    _WORKER["config"])


def _check_config_matches(existing: list[dict], config: verify_lib.VerifyConfig,
                          network_id: str, path: str):
  for r in existing:
    if (abs(float(r.get("delta", config.delta)) - config.delta) > 1e-12
        or r.get("mode", config.mode) != config.mode):
      raise EvaluateError(
          f"{path} already holds results for delta={r.get('delta')} "
          f"mode={r.get('mode')}; use another --out for delta={config.delta} "
          f"mode={config.mode}")
    if r.get("network_sha256", network_id) != network_id:
      raise EvaluateError(
          f"{path} already holds results of another network (sha256 "
          f"{r['network_sha256']}, this one {network_id}); use another --out")


def _jsonable(record: dict) -> dict:
  return {k: (float(v) if isinstance(v, (np.floating,)) else
              int(v) if isinstance(v, np.integer) else v)
          for k, v in record.items()}


def verify_images(network: Network, images, labels, indices: Sequence[int],
                  delta: float, mode: str = "targeted", solver: str = "HIGHS",
                  time_limit: float = 60.0, bounds: str = "crown",
                  out_path: str | None = None, workers: int = 2,
                  pgd_steps: int = 50, bab_time_limit: float = 20.0,
                  config: verify_lib.VerifyConfig | None = None,
                  log_every: float = 10.0) -> list[dict]:
  """Verifies images[i] (test index indices[i]) for every target; returns
  all records (old ones from `out_path` included). With `out_path`, finished
  pairs are skipped and new records are appended and flushed per image.
  workers > 1 spawns processes: a calling script needs the usual
  `if __name__ == "__main__":` guard."""
  if config is None:
    config = verify_lib.VerifyConfig(
        delta=float(delta), mode=mode, solver=solvers_lib.check_solver(solver),
        time_limit=float(time_limit), bounds=bounds, pgd_steps=pgd_steps,
        bab_time_limit=float(bab_time_limit))
  indices = [int(i) for i in indices]
  images = np.asarray(images, np.float32)
  if images.ndim < 2 or len(images) != len(indices) or (
      images[0].size != network.input_dim):
    raise EvaluateError(
        f"images of shape {images.shape} do not match {len(indices)} indices "
        f"of {network.input_dim}-pixel images")
  images = images.reshape(len(indices), network.input_dim)
  if len(labels) != len(indices) or len(set(indices)) != len(indices):
    raise EvaluateError(f"{len(labels)} labels for {len(indices)} indices "
                        f"({len(set(indices))} distinct); need one label per "
                        f"distinct index")
  network_id = network_lib.network_digest(network)
  existing = []
  if out_path:
    _drop_partial_line(out_path)
    existing = read_results(out_path)
    _check_config_matches(existing, config, network_id, out_path)
  # An `error` record (e.g. a solver crash) is not final: a rerun retries it.
  done = {pair_key(r) for r in existing if r["status"] != "error"}
  units = plan_work_units(labels, indices, done, network.num_classes)
  position = {int(i): p for p, i in enumerate(indices)}
  total_pairs = sum(len(u.targets) for u in units)
  logging.info("%d pairs to verify (%d already in %s), %d workers",
               total_pairs, len(done), out_path, workers)
  results = list(existing)
  out = open(out_path, "a", encoding="utf-8") if out_path else None
  start, finished, last_log = time.time(), 0, 0.0

  def record_done(records):
    nonlocal finished, last_log
    for r in records:
      r["network_sha256"] = network_id
      if out:
        out.write(json.dumps(_jsonable(r)) + "\n")
      results.append(r)
    if out:
      out.flush()
      os.fsync(out.fileno())
    finished += len(records)
    elapsed = time.time() - start
    if finished == total_pairs or elapsed - last_log >= log_every:
      last_log = elapsed
      eta = elapsed / finished * (total_pairs - finished)
      counts = {}
      for r in results:
        counts[r["status"]] = counts.get(r["status"], 0) + 1
      logging.info("%d/%d pairs, %.0fs elapsed, ETA %.0fs, %s", finished,
                   total_pairs, elapsed, eta, counts)

  try:
    if workers <= 1 or len(units) <= 1:
      for unit in units:
        record_done(solve_unit(network, images[position[unit.image_index]],
                               unit, config))
    else:
      context = multiprocessing.get_context("spawn")
      used = np.array([position[u.image_index] for u in units])
      local = {int(p): k for k, p in enumerate(used)}
      pool = futures.ProcessPoolExecutor(
          max_workers=workers, mp_context=context, initializer=_worker_init,
          initargs=(network.weights, network.biases, images[used], config))
      try:
        pending = [pool.submit(_worker_solve, u, local[position[u.image_index]])
                   for u in units]
        for future in futures.as_completed(pending):
          record_done(future.result())
      finally:
        # On an interrupt, do not leave workers solving for nobody.
        for process in list(getattr(pool, "_processes", {}).values()):
          if process.is_alive():
            process.terminate()
        pool.shutdown(wait=True, cancel_futures=True)
  finally:
    if out:
      out.close()
  return latest_per_pair(results)


def _validate(argv_network, delta, num_images, first_image, time_limit,
              solver, num_test):
  if delta is None or not np.isfinite(delta) or delta < 0:
    raise EvaluateError(f"--delta must be a number >= 0, got {delta}")
  if time_limit is None or not time_limit > 0:
    raise EvaluateError(f"--time_limit must be > 0 seconds, got {time_limit}")
  if num_images < 1:
    raise EvaluateError(f"--num_images must be >= 1, got {num_images}")
  if first_image < 0 or first_image + num_images > num_test:
    raise EvaluateError(
        f"images {first_image}..{first_image + num_images - 1} are out of "
        f"range: the test set has images 0..{num_test - 1}")
  try:
    solver = solvers_lib.check_solver(solver)
  except solvers_lib.SolverUnavailableError as e:
    raise EvaluateError(str(e)) from e
  try:
    network = load_mnist_network(argv_network)
  except NetworkFormatError as e:
    raise EvaluateError(str(e)) from e
  return network, solver


def _check_out_path(out: str):
  """--out must be a file we can append to (created with its folder)."""
  out = os.path.abspath(out)
  if os.path.isdir(out):
    raise EvaluateError(f"--out={out} is a directory; give a .jsonl file")
  try:
    os.makedirs(os.path.dirname(out), exist_ok=True)
    with open(out, "a", encoding="utf-8"):
      pass
  except OSError as e:
    raise EvaluateError(f"cannot write --out={out}: {e}") from e


def main(argv):
  if len(argv) > 1:
    raise EvaluateError(f"unexpected arguments: {' '.join(argv[1:])}")
  if not FLAGS.network or not FLAGS.out:
    raise EvaluateError("--network and --out are required")
  from robust_prune import data  # pylint: disable=g-import-not-at-top
  # Cheap checks before MNIST is read.
  if FLAGS.delta is None or FLAGS.delta < 0:
    raise EvaluateError(f"--delta must be a number >= 0, got {FLAGS.delta}")
  if not FLAGS.bab_time_limit >= 0:
    raise EvaluateError(f"--bab_time_limit must be >= 0 seconds (0: MILP "
                        f"only), got {FLAGS.bab_time_limit}")
  try:
    test = data.load_split("test", FLAGS.mnist_manual_dir)
  except data.MnistDataError as e:
    raise EvaluateError(str(e)) from e
  network, solver = _validate(FLAGS.network, FLAGS.delta, FLAGS.num_images,
                              FLAGS.first_image, FLAGS.time_limit, FLAGS.solver,
                              len(test))
  indices = list(range(FLAGS.first_image, FLAGS.first_image + FLAGS.num_images))
  _check_out_path(FLAGS.out)
  start = time.time()
  try:
    results = verify_images(
        network, test.images[indices], test.labels[indices], indices,
        FLAGS.delta, FLAGS.mode, solver, FLAGS.time_limit, FLAGS.bounds,
        FLAGS.out, FLAGS.workers, FLAGS.pgd_steps, FLAGS.bab_time_limit)
  except ValueError as e:
    raise EvaluateError(str(e)) from e
  except OSError as e:  # e.g. the disk filled up while appending
    raise EvaluateError(f"cannot write {FLAGS.out}: {e}") from e
  wanted = set(indices)
  mine = [r for r in results if r["image_index"] in wanted]
  counts = {}
  for r in mine:
    counts[r["status"]] = counts.get(r["status"], 0) + 1
  logging.info("done in %.1fs: %d records in %s: %s", time.time() - start,
               len(mine), FLAGS.out, counts)


def _terminate_gracefully(signum, frame):
  del frame
  raise KeyboardInterrupt(f"signal {signum}")


def run():
  define_flags()
  # SIGTERM unwinds like Ctrl-C: written lines stay, workers are stopped.
  signal.signal(signal.SIGTERM, _terminate_gracefully)
  try:
    app.run(main)
  except EvaluateError as e:
    cli.fail("evaluate", e)
  except KeyboardInterrupt as e:
    # Every finished line is already on disk; a rerun resumes from there.
    print(f"evaluate: interrupted ({e or 'Ctrl-C'}); rerun with the same "
          f"--out to resume", file=sys.stderr)
    sys.exit(130)


if __name__ == "__main__":
  run()
