"""Verifying many images: work units, a process pool, a resumable results
file.

Work is split into `WorkUnit`s (one image, its remaining targets) solved by
the pure `solve_unit` on an engine (`engines.py`: local or Ray). With a
results file, the run holds its lock (a second run on it is refused),
validates every line before writing anything, skips finished pairs, retries
`error` records, and appends each image's records as soon as they are done.
"""

from __future__ import annotations

import dataclasses
import functools
import time
from typing import Sequence

from absl import logging
import numpy as np

from robust_prune import io
from robust_prune import network as network_lib
from robust_prune.milp import solvers as solvers_lib
from robust_prune.network import Network
from robust_prune.verify import engines
from robust_prune.verify import records as records_lib
from robust_prune.verify.config import VerifyConfig
from robust_prune.verify.engines import WorkerDiedError, solve_unit  # pylint: disable=unused-import
from robust_prune.verify.records import Verdict


class EvaluateError(ValueError):
  """Bad input, reported as one line."""


@dataclasses.dataclass(frozen=True)
class WorkUnit:
  """One image and the targets still to verify for it."""

  image_index: int
  label: int
  targets: tuple[int, ...]


def plan_work_units(labels: Sequence[int], indices: Sequence[int],
                    done: set, num_classes: int = 10) -> list[WorkUnit]:
  units = []
  for index, label in zip(indices, labels):
    targets = tuple(t for t in range(num_classes)
                    if t != int(label) and (int(index), t) not in done)
    if targets:
      units.append(WorkUnit(int(index), int(label), targets))
  return units


def _solve_units(network: Network, images, units: list[WorkUnit],
                 position: dict, config: VerifyConfig, workers: int,
                 on_done, engine: str = "local",
                 ray_address: str | None = None) -> None:
  """Solves every unit on `engine`, calling on_done(verdicts) as each
  finishes."""
  unit_images = [images[position[u.image_index]] for u in units]
  if engine == "ray":
    engines.solve_on_ray(network, unit_images, units, config, ray_address,
                         on_done)
  else:
    engines.solve_locally(network, np.asarray(unit_images), units, config,
                          workers, on_done)


class _Progress:
  """Logs pairs done, elapsed time, ETA and status counts now and then."""

  def __init__(self, total: int, log_every: float):
    self.total, self.log_every = total, log_every
    self.finished, self.start, self.last_log = 0, time.time(), 0.0

  def update(self, count: int, results: Sequence[Verdict]) -> None:
    self.finished += count
    elapsed = time.time() - self.start
    if self.finished == self.total or elapsed - self.last_log >= self.log_every:
      self.last_log = elapsed
      eta = elapsed / self.finished * (self.total - self.finished)
      logging.info("%d/%d pairs, %.0fs elapsed, ETA %.0fs, %s", self.finished,
                   self.total, elapsed, eta, status_counts(results))


def status_counts(results: Sequence[Verdict]) -> dict[str, int]:
  counts = {}
  for r in results:
    counts[r["status"]] = counts.get(r["status"], 0) + 1
  return counts


def _check_config_matches(existing: Sequence[Verdict], config: VerifyConfig,
                          network_id: str, path: str):
  for r in existing:
    delta = config.delta if r.delta is None else r.delta
    if abs(delta - config.delta) > 1e-12 or (r.mode or config.mode) != config.mode:
      raise EvaluateError(
          f"{path} already holds results for delta={r.delta} mode={r.mode}; "
          f"use another --out for delta={config.delta} mode={config.mode}")
    if (r.network_sha256 or network_id) != network_id:
      raise EvaluateError(
          f"{path} already holds results of another network (sha256 "
          f"{r.network_sha256}, this one {network_id}); use another --out")


def _checked_inputs(network: Network, images, labels, indices):
  indices = [int(i) for i in indices]
  images = np.asarray(images, np.float32)
  if images.ndim < 2 or len(images) != len(indices) or (
      images[0].size != network.input_dim):
    raise EvaluateError(
        f"images of shape {images.shape} do not match {len(indices)} indices "
        f"of {network.input_dim}-pixel images")
  if len(labels) != len(indices) or len(set(indices)) != len(indices):
    raise EvaluateError(f"{len(labels)} labels for {len(indices)} indices "
                        f"({len(set(indices))} distinct); need one label per "
                        f"distinct index")
  return images.reshape(len(indices), network.input_dim), indices


def verify_images(network: Network, images, labels, indices: Sequence[int],
                  delta: float, mode: str = "targeted", solver: str = "HIGHS",
                  time_limit: float = 60.0, bounds: str = "crown",
                  out_path: str | None = None, workers: int = 2,
                  pgd_steps: int = 50, bab_time_limit: float = 20.0,
                  config: VerifyConfig | None = None,
                  log_every: float = 10.0, engine: str = "local",
                  ray_address: str | None = None,
                  image_time_limit: float = 0.0,
                  bab_intermediate: str = "auto",
                  bab_cut_rounds: int = VerifyConfig.bab_cut_rounds,
                  bab_own_cuts: int = VerifyConfig.bab_own_cuts,
                  bab_root_cut_rounds: int = VerifyConfig.bab_root_cut_rounds,
                  refine_seconds: float = VerifyConfig.refine_seconds,
                  refine_rounds: int = VerifyConfig.refine_rounds,
                  bab_final_proof: float = VerifyConfig.bab_final_proof,
                  bab_batch_size: int = VerifyConfig.bab_batch_size,
                  bab_pool_gib: float = VerifyConfig.bab_pool_gib,
                  bab_proofs: str = VerifyConfig.bab_proofs
                  ) -> list[Verdict]:
  """Verifies images[i] (test index indices[i]) for every target; returns
  all records (old ones from `out_path` included). With `out_path`, finished
  pairs are skipped and new records are appended and fsynced per image,
  under the file's lock. image_time_limit > 0: seconds for all targets of
  one image (see VerifyConfig). workers > 1 spawns processes: a calling script
  needs the usual `if __name__ == "__main__":` guard."""
  if config is None:
    config = VerifyConfig(
        delta=float(delta), mode=mode, solver=solvers_lib.check_solver(solver),
        time_limit=float(time_limit), bounds=bounds, pgd_steps=pgd_steps,
        bab_time_limit=float(bab_time_limit),
        image_time_limit=float(image_time_limit),
        bab_intermediate=bab_intermediate, bab_cut_rounds=int(bab_cut_rounds),
        bab_own_cuts=int(bab_own_cuts),
        bab_root_cut_rounds=int(bab_root_cut_rounds),
        refine_seconds=float(refine_seconds), refine_rounds=int(refine_rounds),
        bab_final_proof=float(bab_final_proof),
        bab_batch_size=int(bab_batch_size), bab_pool_gib=float(bab_pool_gib),
        bab_proofs=bab_proofs)
  images, indices = _checked_inputs(network, images, labels, indices)
  if engine not in engines.ENGINES:
    raise EvaluateError(f"unknown engine {engine!r}; use one of "
                        f"{', '.join(engines.ENGINES)}")
  run = functools.partial(_run, network, images, labels, indices, config,
                          (workers, engine, ray_address), log_every)
  if not out_path:
    return run([], None)
  limits = {"num_classes": network.num_classes,
            "input_size": network.input_dim}
  with io.WorkdirLock(out_path, "verification run"):
    try:
      existing, cut_at = records_lib.scan(out_path, **limits)
    except records_lib.RecordError as e:
      raise EvaluateError(f"{e}; move the file away or pass another --out"
                          ) from e
    _check_config_matches(existing, config,
                          network_lib.network_digest(network), out_path)
    with records_lib.ResultsWriter(out_path, **limits).open(cut_at) as writer:
      return run(existing, writer)


def _run(network: Network, images, labels, indices, config: VerifyConfig,
         where: tuple, log_every: float, existing: Sequence[Verdict],
         writer: records_lib.ResultsWriter | None) -> list[Verdict]:
  network_id = network_lib.network_digest(network)
  done = records_lib.finished_pairs(existing)
  units = plan_work_units(labels, indices, done, network.num_classes)
  position = {i: p for p, i in enumerate(indices)}
  progress = _Progress(sum(len(u.targets) for u in units), log_every)
  workers, engine, ray_address = where
  logging.info("%d pairs to verify (%d already done), engine %s, %d workers",
               progress.total, len(done), engine, workers)
  results = list(existing)

  def record(verdicts: Sequence[Verdict]):
    verdicts = [dataclasses.replace(v, network_sha256=network_id)
                for v in verdicts]
    if writer:
      writer.append(verdicts)
    results.extend(verdicts)
    progress.update(len(verdicts), results)

  _solve_units(network, images, units, position, config, workers, record,
               engine, ray_address)
  return records_lib.latest_per_pair(results)
