"""The pipeline's `critical` stage (RQ1/RQ2): importance scores of the
original and the pruned network on one batch of training images and on
each network's PGD versions of it (pruning/critical.py), with the prune
stage's MILP options; OUT/critical.json.

Each of the four MILP solves is kept in OUT/critical_scores.json as soon as
it ends, so an interrupted stage repeats none of them.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
from typing import Any

import numpy as np

from robust_prune import io
from robust_prune import network as network_lib
from robust_prune import prune as prune_lib
from robust_prune.pruning import critical as critical_lib
from robust_prune.pruning import importance as importance_lib

RESULT = "critical.json"
SOLVES = "critical_scores.json"


def critical_options(config) -> prune_lib.PruneOptions:
  """The prune stage's MILP options, with --critical_time_limit when set."""
  options = prune_lib.pipeline_prune_options(config)
  a = config.analysis
  return dataclasses.replace(
      options, time_limit=a.critical_time_limit or options.time_limit,
      margin=options.margin if a.critical_margin < 0 else a.critical_margin)


def _not_decided(out_dir: str, options, reason: str) -> dict[str, Any]:
  io.atomic_write_json(os.path.join(out_dir, RESULT),
                       {"error": reason, "margin": options.margin})
  print(f"  critical: not decided: {reason}", flush=True)
  return {"error": reason}


def kept_indices(pruned_dir: str) -> list[list[int]]:
  """The original index of each neuron of the pruned network (pruning.json,
  written by the prune loop)."""
  summary = io.read_json(os.path.join(pruned_dir, "pruning.json"))
  if not isinstance(summary, dict) or "kept_original_indices" not in summary:
    raise RuntimeError(f"{pruned_dir}/pruning.json names no kept indices; "
                       f"rerun the prune stage")
  return summary["kept_original_indices"]


class _CachedSolves:
  """solve(network, name, kind, images, labels) -> ImportanceResult, each
  result stored under (name, kind) with what it was solved on."""

  def __init__(self, path: str, options):
    self.path = path
    self.options = {k: v for k, v in dataclasses.asdict(options).items()
                    if k in ("margin", "lam", "solver", "time_limit",
                             "mip_gap", "descent_start")}
    self.stored = io.read_json(path) or {}

  def __call__(self, network, name, kind, images, labels):
    key = f"{name}/{kind}"
    about = {"network_sha256": network_lib.network_digest(network),
             "labels": [int(y) for y in labels], "options": self.options,
             "images_sha256": hashlib.sha256(
                 np.ascontiguousarray(images, np.float32).tobytes()
             ).hexdigest()}
    cached = self.stored.get(key)
    if isinstance(cached, dict) and cached.get("about") == about:
      return importance_lib.ImportanceResult.from_json(cached["result"])
    result = critical_lib._solve(  # pylint: disable=protected-access
        _Options(**self.options), network, name, kind, images, labels)
    self.stored[key] = {"about": about, "result": result.to_json()}
    io.atomic_write_json(self.path, self.stored)
    return result


@dataclasses.dataclass(frozen=True)
class _Options:
  margin: float
  lam: float
  solver: str
  time_limit: float
  mip_gap: float
  descent_start: bool


def run_critical(config, out_dir: str, train) -> dict[str, Any]:
  """critical.json of the pipeline in `out_dir`; the stage's details."""
  options = critical_options(config)
  if config.prune.retrain == "scratch":
    # Scratch retraining re-initialises the pruned network: its neuron i is
    # unrelated to the original's neuron of the same index.
    return _not_decided(out_dir, options, "the pruned network was retrained "
                        "from scratch, so its neurons are not the original's")
  original = network_lib.load_network(
      os.path.join(out_dir, "original", "network.npz"))
  pruned = network_lib.load_network(
      os.path.join(out_dir, "pruned", "network.npz"))
  kept = kept_indices(os.path.join(out_dir, "pruned"))
  if [len(k) for k in kept] != list(pruned.hidden_widths):
    raise RuntimeError(
        f"pruned/pruning.json's kept indices ({[len(k) for k in kept]} "
        f"neurons) do not match the pruned network {pruned.hidden_widths}")
  try:
    result = critical_lib.critical_analysis(
        original, pruned, kept, train, config.train, options,
        solve=_CachedSolves(os.path.join(out_dir, SOLVES), options))
  except ValueError as e:
    # No batch (a class without an image both networks keep under PGD at
    # this margin): a recorded status, not a lost run.
    return _not_decided(out_dir, options, str(e))
  result.update(time_limit=options.time_limit, solver=options.solver,
                margin=options.margin)
  io.atomic_write_json(os.path.join(out_dir, RESULT), result)
  return {"batch_indices": result["batch_indices"],
          "proven": {f"{n}/{k}": result[n][k]["proven"]
                     for n in ("original", "pruned")
                     for k in critical_lib.KINDS}}
