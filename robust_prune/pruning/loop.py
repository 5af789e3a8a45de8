"""Prune -> retrain -> prune ...: the resumable driver behind `prune.py`.

Workdir layout (every file written atomically, every finished stage skipped
on a rerun):

    options.json                 the network, options and recipe of the run
    round_K/scores.json          the importance MILP on round K's input
    round_K/pruned_init.npz      the pruned network before retraining
    round_K/retrain/             train_and_evaluate's workdir (resumes)
    round_K/round.json           round K's record (also a line of rounds.jsonl)
    original_eval.json           accuracy of the input network
    scores.json                  = round_1/scores.json (scores of the input)
    network.npz                  the final (pruned, retrained) network
    pruning.json                 summary: widths, parameters, accuracies, times
    rounds.jsonl                 one line per finished round
    critical.json                optional critical-neuron analysis

The rounds themselves are in `rounds`, the options in `options`.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import numpy as np

from robust_prune import data as data_lib
from robust_prune import io
from robust_prune import network as network_lib
from robust_prune import train as train_lib
from robust_prune.network import Network
from robust_prune.pruning import critical as critical_lib
from robust_prune.pruning import rounds
# Re-exported: the prune binary and the pipeline know them as loop.X.
from robust_prune.pruning.options import (  # pylint: disable=unused-import
    BASELINES, METHODS, RETRAIN_MODES, PruneOptions, check_widths)

# Keys of options.json that a rerun may not change once round 1 has scores.
_RECIPE_KEYS = ("network", "network_sha256", "train_config")


def train_config_for(network_path: str,
                     overrides: dict[str, Any] | None = None
                     ) -> train_lib.TrainConfig:
  """The recipe that trained `network_path` (config.json beside it, else the
  defaults), with `overrides` applied."""
  path = os.path.join(os.path.dirname(os.path.abspath(network_path)),
                      train_lib.CONFIG)
  try:
    stored = io.read_json(path)
    base = (train_lib.TrainConfig() if stored is None
            else train_lib.TrainConfig.from_json(stored))
  except (ValueError, TypeError) as e:
    raise ValueError(f"cannot read the training config {path}: {e}") from e
  return dataclasses.replace(base, **(overrides or {}))


def run_pruning(network_path: str, workdir: str,
                options: PruneOptions = PruneOptions(), *,
                train_overrides: dict[str, Any] | None = None,
                train: data_lib.Split | None = None,
                test: data_lib.Split | None = None,
                manual_dir: str | None = None) -> dict[str, Any]:
  """Prunes (and retrains) the network at `network_path` into `workdir`;
  returns the summary written to pruning.json. Resumable."""
  original = network_lib.load_mnist_network(network_path)
  if original.num_layers < 2:
    raise ValueError(f"{network_path} has no hidden layer to prune")
  check_widths(options.widths, original.hidden_widths)
  config = train_config_for(network_path, train_overrides)
  os.makedirs(workdir, exist_ok=True)
  _guard_options(workdir, network_path, options, config,
                 network_lib.network_digest(original))
  if train is None or test is None:
    train, test = data_lib.load_mnist(manual_dir)

  original_eval = _cached(
      os.path.join(workdir, "original_eval.json"),
      lambda: rounds.accuracy_of(original, test, config))
  run = rounds.Run(workdir, options, config, train, test,
                   tuple(original.hidden_widths), original_eval)
  done = rounds.run_rounds(run, original)
  if done.final is None:  # nothing pruned: the input network is the result
    final_network, final_eval = original, original_eval
    final_kept = tuple(np.arange(w) for w in original.hidden_widths)
  else:
    final_network, final_eval, final_kept = done.final
  network_lib.save_network(final_network, os.path.join(workdir, "network.npz"))
  summary = _summary(run, network_path, original, done, final_network,
                     final_eval, final_kept)
  # Written before the critical analysis, which may fail (e.g. no image of
  # some class survives PGD) without losing the pruning's summary.
  rounds.write_json(os.path.join(workdir, "pruning.json"), summary)
  if options.critical and done.final is not None:
    summary["critical"] = _critical_for(workdir, original, final_network,
                                        final_kept, train, config, options)
    rounds.write_json(os.path.join(workdir, "pruning.json"), summary)
  return summary


def _summary(run: rounds.Run, network_path: str, original: Network,
             done: rounds.Rounds, final_network: Network,
             final_eval: dict[str, Any], final_kept) -> dict[str, Any]:
  """pruning.json: the run's widths, parameters, accuracies and times."""
  original_eval = run.original_eval
  return {
      "network": os.path.abspath(network_path),
      "options": dataclasses.asdict(run.options),
      "train_config": run.config.to_json(),
      "rounds_run": len(done.records),
      "rounds_accepted": sum(r["accepted"] for r in done.records),
      "stop_reason": done.stop_reason,
      "widths_before": list(run.original_widths),
      "widths_after": list(final_network.hidden_widths),
      "params_before": original.num_parameters,
      "params_after": final_network.num_parameters,
      "param_reduction": 1.0 - final_network.num_parameters
                         / original.num_parameters,
      "kept_original_indices": [np.asarray(v).tolist() for v in final_kept],
      "original": original_eval,
      "final": {key: final_eval[key] for key in
                ("clean_accuracy", "pgd_accuracy", "pgd_epsilon",
                 "hidden_widths", "parameters")},
      "clean_accuracy_change": final_eval["clean_accuracy"]
                               - original_eval["clean_accuracy"],
      "pgd_accuracy_change": final_eval["pgd_accuracy"]
                             - original_eval["pgd_accuracy"],
      # Every importance MILP solved, including one whose round stopped
      # before retraining (nothing below the threshold).
      "solver_status": done.statuses,
      "seconds": {"solve": sum(r["solve_seconds"] for r in done.records),
                  "retrain": sum(r["retrain_seconds"] for r in done.records)},
  }


def _cached(path: str, compute):
  """The JSON at `path`, or compute() written there first."""
  value = io.read_json(path)
  if value is None:
    value = compute()
    rounds.write_json(path, value)
  return value


def _critical_for(workdir, original, final_network, final_kept, train,
                  config, options):
  """critical.json when it describes this final network, else recomputed
  (a rerun with more rounds ends at another network)."""
  path = os.path.join(workdir, "critical.json")
  about = {"final_network_sha256": network_lib.network_digest(final_network),
           "final_widths": list(final_network.hidden_widths),
           "final_kept_original_indices": [np.asarray(v).tolist()
                                           for v in final_kept]}
  cached = io.read_json(path)
  if cached is not None and all(cached.get(k) == v for k, v in about.items()):
    return cached
  value = {**about, **critical_lib.critical_analysis(
      original, final_network, final_kept, train, config, options)}
  rounds.write_json(path, value)
  return value


def _guarded_options(options: PruneOptions) -> dict[str, Any]:
  """The options a workdir is locked to; no widths (the default) is left
  out, so workdirs from before --prune_widths resume."""
  out = {k: v for k, v in dataclasses.asdict(options).items()
         if k not in ("rounds", "critical")}
  if not options.widths:
    del out["widths"]
  else:
    out["widths"] = list(options.widths)
  return out


def _guard_options(workdir, network_path, options, config, network_sha256):
  """A workdir belongs to one (network, options, recipe): resuming with
  others would silently mix results. The network counts by content too (a
  network retrained in place is another network). Until round 1 has scores
  nothing depends on them, so a rerun replaces them (and the input's
  accuracies if the network or recipe changed)."""
  path = os.path.join(workdir, "options.json")
  current = {"network": os.path.abspath(network_path),
             "network_sha256": network_sha256,
             "options": _guarded_options(options),
             "train_config": config.to_json()}
  previous = io.read_json(path)
  if isinstance(previous, dict) and "network_sha256" not in previous:
    previous["network_sha256"] = network_sha256  # older workdirs
    io.atomic_write_json(path, previous)
  replaceable = not os.path.exists(
      os.path.join(workdir, "round_1", "scores.json"))
  if (replaceable and isinstance(previous, dict)
      and any(previous.get(k) != current[k] for k in _RECIPE_KEYS)):
    stale = os.path.join(workdir, "original_eval.json")
    if os.path.exists(stale):
      os.remove(stale)
  try:
    io.guard_config(path, current, replaceable=replaceable)
  except io.ConfigMismatchError as e:
    if not isinstance(previous, dict):
      raise
    diff = sorted(k for k in current if previous.get(k) != current[k])
    raise io.ConfigMismatchError(
        f"{workdir} holds a pruning run with other {diff}; use a fresh "
        f"--workdir") from e
