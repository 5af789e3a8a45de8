"""The pruning rounds: scores -> keep masks -> pruned network -> retrained
network, round after round, each finished step cached in round_K/ (the
layout is in `loop`'s docstring)."""

from __future__ import annotations

import dataclasses
import json
import os
import time
from typing import Any

import numpy as np

from robust_prune import data as data_lib
from robust_prune import io
from robust_prune import network as network_lib
from robust_prune import train as train_lib
from robust_prune.milp import solvers
from robust_prune.network import Network
from robust_prune.pruning import methods
from robust_prune.pruning import structure
from robust_prune.pruning.options import PruneOptions

USABLE_STATUSES = (solvers.OPTIMAL, solvers.TIME_LIMIT, methods.NO_MILP)


def write_json(path: str, payload: Any):
  """`payload` written atomically to `path`, its folder made if needed."""
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  io.atomic_write_json(path, payload)


def accuracy_of(network: Network, test: data_lib.Split,
                config: train_lib.TrainConfig) -> dict[str, Any]:
  """Clean and PGD test accuracy (the recipe's evaluation attack), widths
  and parameters of `network`: the accuracies a round is judged by."""
  start = time.perf_counter()
  clean, robust = train_lib.network_accuracy(
      network, test, epsilon=config.attack_epsilon,
      pgd_steps=config.eval_pgd_steps,
      pgd_step_size=config.eval_pgd_step_size, seed=config.seed)
  return {"clean_accuracy": clean, "pgd_accuracy": robust,
          "pgd_epsilon": config.attack_epsilon,
          "pgd_steps": config.eval_pgd_steps,
          "hidden_widths": list(network.hidden_widths),
          "parameters": network.num_parameters,
          "eval_seconds": time.perf_counter() - start}


def compute_scores(network: Network, train: data_lib.Split,
                   options: PruneOptions,
                   config: train_lib.TrainConfig | None = None
                   ) -> dict[str, Any]:
  """The method's batch and scores (`methods.compute_scores`); `config`
  (the recipe: robust_milp's attack) defaults to TrainConfig()."""
  return methods.compute_scores(network, train, options,
                                config or train_lib.TrainConfig())


def masks_for(record: dict[str, Any], network: Network,
              options: PruneOptions, seed: int):
  """Keep masks of the method (`methods.keep_masks`)."""
  return methods.keep_masks(record, network, options, seed)


def retrain_init(mode: str, pruned: Network, kept_original, original_widths,
                 config: train_lib.TrainConfig) -> Network | None:
  """Initial weights of the retraining: None (scratch: fresh random init at
  config.seed), the pruned trained weights (finetune), or the surviving
  neurons' weights at the original initialisation (rewind, lottery-ticket
  style; `kept_original` are original indices)."""
  if mode == "scratch":
    return None
  if mode == "finetune":
    return pruned
  original_init = train_lib.initial_network(
      dataclasses.replace(config, hidden=tuple(original_widths)))
  keep = [np.isin(np.arange(w), k)
          for w, k in zip(original_widths, kept_original)]
  return structure.prune_network(original_init, keep)[0]


@dataclasses.dataclass(frozen=True)
class Run:
  """What every round reads: the run's folder, options, recipe and data,
  and the input network's widths and accuracies."""

  workdir: str
  options: PruneOptions
  config: train_lib.TrainConfig
  train: data_lib.Split
  test: data_lib.Split
  original_widths: tuple[int, ...]
  original_eval: dict[str, Any]


@dataclasses.dataclass
class Rounds:
  """The rounds so far: their records, every MILP's status, why they
  stopped, and the last accepted (network, record, original indices)."""

  records: list = dataclasses.field(default_factory=list)
  statuses: list = dataclasses.field(default_factory=list)
  stop_reason: str = ""
  final: tuple | None = None


def run_rounds(run: Run, original: Network) -> Rounds:
  """Up to `options.rounds` rounds from `original`; resumable."""
  done = Rounds(stop_reason=f"finished {run.options.rounds} round(s)")
  current, kept = original, tuple(np.arange(w) for w in run.original_widths)
  for k in range(1, run.options.rounds + 1):
    stop = _round(run, k, current, kept, done)
    if stop is not None:
      done.stop_reason = stop
      break
    current, _, kept = done.final
  return done


def _round(run: Run, k: int, current: Network, kept, done: Rounds
           ) -> str | None:
  """Round k on `current` (original indices `kept`); records it in `done`
  and returns why the rounds stop after it, or None."""
  options = run.options
  if options.widths and tuple(current.hidden_widths) == options.widths:
    return f"round {k}: the network has --prune_widths {list(options.widths)}"
  scores, stop = _round_scores(run, k, current, done)
  if scores is None:
    return stop
  masks = masks_for(scores, current, options, seed=options.seed + k)
  if all(m.all() for m in masks):
    proof = "proven optimal" if scores["proven"] else "unproven"
    return (f"round {k}: no neuron scored below the threshold "
            f"(importance MILP: {scores['status']}, {proof})")
  pruned, kept_now = structure.prune_network(current, masks)
  kept_total = structure.compose_kept(kept, kept_now)
  round_dir = os.path.join(run.workdir, f"round_{k}")
  network_lib.save_network(pruned, os.path.join(round_dir,
                                                "pruned_init.npz"))
  retrained, record = _retrained(run, k, current, pruned, kept_total, scores)
  done.records.append(record)
  io.atomic_write(os.path.join(run.workdir, "rounds.jsonl"),
                  "".join(json.dumps(r) + "\n" for r in done.records))
  drop = (f"round {k}: clean accuracy dropped {record['accuracy_drop']:.4f}"
          f" > {options.max_accuracy_drop}")
  if not record["accepted"]:
    return f"{drop}; round rejected"
  done.final = (retrained, record, kept_total)
  if record["accuracy_drop"] > options.max_accuracy_drop:
    return drop
  return None


def _round_scores(run: Run, k: int, current: Network, done: Rounds):
  """(round k's scores record, None), cached in round_K/scores.json, or
  (None, why the rounds stop). Round 1 without usable scores is an error."""
  scores_path = os.path.join(run.workdir, f"round_{k}", "scores.json")
  cached = None
  try:
    cached = io.read_json(scores_path)
    scores = (cached if cached is not None
              else compute_scores(current, run.train, run.options,
                                  run.config))
  except ValueError as e:
    if k == 1:
      raise
    # e.g. the retrained small network no longer classifies every class.
    return None, f"round {k}: no score MILP: {e}"
  done.statuses.append(_status_entry(k, scores))
  usable = scores["status"] in USABLE_STATUSES
  # A failure in round 1 is not cached: the options may still change
  # then (e.g. a longer --time_limit). Later rounds are locked to these
  # options, so their result, failed or not, is final.
  if cached is None and (usable or k > 1):
    write_json(scores_path, scores)
  if not usable:  # no scores to prune by (all ones)
    message = (f"round {k}: the importance MILP ({scores['solver']}) ended "
               f"'{scores['status']}' ({scores['raw_status']}) after "
               f"{scores['solve_seconds']:.1f} s")
    if k == 1:
      raise ValueError(f"{message}; nothing to prune")
    return None, message
  if k == 1:
    write_json(os.path.join(run.workdir, "scores.json"), scores)
  return scores, None


def _retrained(run: Run, k: int, current: Network, pruned: Network,
               kept_total, scores: dict[str, Any]):
  """(retrained network, round record): cached in round_K/round.json, else
  retrained with the input network's recipe and measured."""
  round_dir = os.path.join(run.workdir, f"round_{k}")
  record_path = os.path.join(round_dir, "round.json")
  record = io.read_json(record_path)
  if record is not None:
    return network_lib.load_network(
        os.path.join(round_dir, "retrain", train_lib.NETWORK)), record
  retrained, retrain_seconds = _retrain(pruned, kept_total, round_dir, run)
  ev = accuracy_of(retrained, run.test, run.config)
  record = {
      "round": k, "baseline": run.options.baseline,
      "retrain": run.options.retrain,
      "widths_before": list(current.hidden_widths),
      "widths_after": list(pruned.hidden_widths),
      "params_before": current.num_parameters,
      "params_after": pruned.num_parameters,
      "kept_original_indices": [v.tolist() for v in kept_total],
      "solver": scores["solver"], "status": scores["status"],
      "proven": scores["proven"], "objective": scores["objective"],
      "bound": scores["bound"], "solve_seconds": scores["solve_seconds"],
      "num_binaries": scores["num_binaries"],
      "retrain_seconds": retrain_seconds, **ev,
      "accuracy_drop": run.original_eval["clean_accuracy"]
                       - ev["clean_accuracy"]}
  # Round 1 is always kept: there is no pruned network to fall back to.
  record["accepted"] = (k == 1 or record["accuracy_drop"]
                        <= run.options.max_accuracy_drop)
  write_json(record_path, record)
  return retrained, record


def _retrain(pruned: Network, kept_original, round_dir: str,
             run: Run) -> tuple[Network, float]:
  """Retrains the pruned architecture with the input network's recipe;
  returns it and its training seconds."""
  retrain_config = dataclasses.replace(run.config,
                                       hidden=tuple(pruned.hidden_widths))
  init = retrain_init(run.options.retrain, pruned, kept_original,
                      run.original_widths, run.config)
  history = train_lib.train_and_evaluate(
      retrain_config, os.path.join(round_dir, "retrain"), train=run.train,
      test=run.test, init_network=init)
  network = network_lib.load_network(
      os.path.join(round_dir, "retrain", train_lib.NETWORK))
  # Training-loop seconds of every epoch (the per-epoch evaluation left
  # out), those of an interrupted earlier call too.
  return network, float(sum(h["epoch_seconds"] for h in history))


def _status_entry(k: int, scores: dict[str, Any]) -> dict[str, Any]:
  return {"round": k, "solver": scores["solver"], "status": scores["status"],
          "raw_status": scores["raw_status"], "proven": scores["proven"],
          "objective": scores["objective"], "bound": scores["bound"],
          "solve_seconds": scores["solve_seconds"]}
