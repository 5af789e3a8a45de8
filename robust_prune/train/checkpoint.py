"""The training workdir's files: the checkpoint, the metrics, the config.

    checkpoint.msgpack  TrainState + epoch + metrics history (one file)
    metrics.jsonl       one line per epoch, rewritten from the checkpoint
    config.json         the TrainConfig this workdir belongs to
    network.npz         the exported network (network.py)

Why flax.serialization msgpack and not orbax: the whole state of these MLPs
is a few MB, so one file written by `io.atomic_write` (temporary, fsync,
rename) is an atomic checkpoint with no directory protocol to recover from;
its format is unchanged, so existing workdirs resume; and orbax (here only
as flax's pinned dependency, not in requirements.txt) brings async, sharded
and multi-host saves that a single-device MLP does not use.
"""

from __future__ import annotations

import json
import os
from typing import Any

from flax import serialization
from flax import traverse_util
import numpy as np

from robust_prune import io
from robust_prune.configs.train import TrainConfig
from robust_prune.train.step import TrainState

CHECKPOINT = "checkpoint.msgpack"
CONFIG = "config.json"
METRICS = "metrics.jsonl"
NETWORK = "network.npz"


def write_metrics(workdir: str, metrics: list[dict[str, Any]]) -> None:
  lines = "".join(json.dumps(m) + "\n" for m in metrics)
  io.atomic_write(os.path.join(workdir, METRICS), lines)


def save(workdir: str, state: TrainState, epoch: int,
         metrics: list[dict[str, Any]]) -> None:
  # The metrics history travels inside the checkpoint and metrics.jsonl is
  # rewritten from it (here and on restore), so a crash between the writes
  # can never duplicate or drop an epoch's line.
  payload = serialization.to_bytes(
      {"state": state, "epoch": epoch, "metrics": json.dumps(metrics)})
  io.atomic_write(os.path.join(workdir, CHECKPOINT), payload)
  write_metrics(workdir, metrics)


def has_checkpoint(workdir: str) -> bool:
  return os.path.exists(os.path.join(workdir, CHECKPOINT))


def _read(path: str) -> dict[str, Any]:
  try:
    with open(path, "rb") as f:
      raw = serialization.msgpack_restore(f.read())
    if not isinstance(raw, dict) or not {"state", "epoch"} <= set(raw):
      raise ValueError("no state and epoch in it")
    raw["epoch"] = int(raw["epoch"])
    return raw
  except OSError:
    raise
  except Exception as e:  # msgpack raises many kinds on a damaged file
    raise ValueError(f"{path} is not a readable training checkpoint ({e}); "
                     f"use a fresh --workdir") from e


def _shapes(params) -> dict[tuple[str, ...], tuple[int, ...]]:
  params = params.get("params", params) if isinstance(params, dict) else params
  return {k: tuple(np.shape(v))
          for k, v in traverse_util.flatten_dict(params).items()}


def _check_shapes(path: str, raw: dict[str, Any], state: TrainState,
                  config: TrainConfig) -> None:
  """A checkpoint of another architecture is refused: resuming it would
  deliver a network the config does not describe."""
  try:
    stored = _shapes(raw["state"]["params"])
  except (KeyError, TypeError, AttributeError) as e:
    raise ValueError(f"{path} holds no network parameters; use a fresh "
                     f"--workdir") from e
  if stored != _shapes(state.params):
    kernels = {key[0]: shape for key, shape in stored.items()
               if key[-1] == "kernel" and len(shape) == 2}
    widths = [kernels[k][1] for k in sorted(
        kernels, key=lambda k: int(k.rsplit("_", 1)[-1]))][:-1]
    raise ValueError(
        f"{path} holds a network with hidden widths {widths}, not the "
        f"{list(config.hidden)} of its config; use a fresh --workdir")


def _stored_metrics(workdir: str, raw: dict[str, Any]) -> list[dict]:
  if "metrics" in raw:
    return json.loads(raw["metrics"])
  # A checkpoint written before the metrics moved into it.
  path = os.path.join(workdir, METRICS)
  if not os.path.exists(path):
    return []
  with open(path) as f:
    return [json.loads(line) for line in f if line.strip()]


def restore(workdir: str, state: TrainState, config: TrainConfig
            ) -> tuple[TrainState, int, list[dict[str, Any]]]:
  """(state, last finished epoch, metrics so far) from the workdir's
  checkpoint; `state` itself at epoch 0 when there is none."""
  path = os.path.join(workdir, CHECKPOINT)
  if not os.path.exists(path):
    return state, 0, []
  raw = _read(path)
  _check_shapes(path, raw, state, config)
  epoch = raw["epoch"]
  try:
    restored = serialization.from_state_dict(state, raw["state"])
  except (KeyError, ValueError, TypeError) as e:
    raise ValueError(f"{path} does not hold this run's training state ({e}); "
                     f"use a fresh --workdir") from e
  metrics = _stored_metrics(workdir, raw)[:epoch]
  if [m.get("epoch") for m in metrics] != list(range(1, epoch + 1)):
    raise ValueError(f"{path} is at epoch {epoch} but its metrics history "
                     f"is incomplete; use a fresh --workdir")
  write_metrics(workdir, metrics)
  return restored, epoch, metrics


def guard_config(workdir: str, config: TrainConfig) -> None:
  """config.json names the config this workdir trains. Until the first
  epoch is checkpointed nothing was trained, so a run that failed early may
  be rerun with corrected flags; after that another config is refused."""
  trained = has_checkpoint(workdir)
  path = os.path.join(workdir, CONFIG)
  if trained and not os.path.exists(path):
    raise ValueError(f"{workdir} holds a checkpoint but no {CONFIG}, so "
                     f"its config is unknown; use a fresh --workdir")
  if trained:
    stored = io.read_json(path)
    try:  # the stored form of the same config (e.g. a key added since)
      if TrainConfig.from_json(stored) == config:
        return
    except (TypeError, ValueError, AttributeError):
      pass
  io.guard_config(path, config.to_json(), replaceable=not trained)
