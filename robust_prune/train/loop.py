"""The epoch loop: train, evaluate, export, checkpoint; resumable.

    train_and_evaluate(config, workdir) -> metrics, one dict per epoch

writes `network.npz`, `config.json`, `metrics.jsonl` and `checkpoint.msgpack`
into `workdir` (checkpoint.py); rerunning with the same workdir resumes
after the last completed epoch. Same seed and device give the same weights.
The workdir is locked for the run: a second run on it is refused.
"""

from __future__ import annotations

import os
import time
from typing import Any

from absl import logging
import jax
import jax.numpy as jnp
import numpy as np

from robust_prune import data as data_lib
from robust_prune import io
from robust_prune import network as network_lib
from robust_prune.configs.train import TrainConfig
from robust_prune.train import checkpoint
from robust_prune.train.evaluation import accuracy
from robust_prune.train.step import create_train_state
from robust_prune.train.step import TrainState
from robust_prune.train.step import train_steps

# Train steps per device call (one lax.scan); the progress log comes between.
STEPS_PER_CALL = 100


def _training_examples(config: TrainConfig, train: data_lib.Split
                       ) -> tuple[np.ndarray, np.ndarray, int]:
  """(images, labels, steps per epoch) of the examples trained on."""
  images, labels = train.images, train.labels
  if config.max_train_examples:
    images = images[:config.max_train_examples]
    labels = labels[:config.max_train_examples]
  steps_per_epoch = len(labels) // config.batch_size
  if steps_per_epoch == 0:
    raise ValueError(f"batch size {config.batch_size} exceeds the "
                     f"{len(labels)} training examples")
  return images, labels, steps_per_epoch


def epoch_epsilon(config: TrainConfig, epoch: int) -> float:
  """The training radius of `epoch` (1-based): ramped linearly from 0 over
  the warm-up epochs."""
  warmup = config.epsilon_warmup_epochs
  return config.epsilon * min(1.0, epoch / warmup) if warmup else config.epsilon


def _train_epoch(state: TrainState, config: TrainConfig, images, labels,
                 steps_per_epoch: int, epoch: int, data_rng, epsilon: float
                 ) -> tuple[TrainState, dict[str, float]]:
  """One epoch in chunks of STEPS_PER_CALL steps; the summed metrics."""
  perm_rng, attack_rng = jax.random.split(jax.random.fold_in(data_rng, epoch))
  perm = jax.random.permutation(perm_rng, len(labels))
  batches = perm[:steps_per_epoch * config.batch_size].reshape(
      steps_per_epoch, config.batch_size)
  sums = {"loss": 0.0, "accuracy": 0.0}
  for first in range(0, steps_per_epoch, STEPS_PER_CALL):
    state, m = train_steps(state, images, labels,
                           batches[first:first + STEPS_PER_CALL], attack_rng,
                           first, epsilon,
                           config.pgd_steps if config.epsilon > 0 else 0,
                           config.pgd_step_size, config.rs_weight,
                           config.l1_weight)
    for k in sums:
      sums[k] += m[k]
    logging.log_every_n_seconds(
        logging.INFO, "epoch %d step %d/%d", 30, epoch,
        min(first + STEPS_PER_CALL, steps_per_epoch), steps_per_epoch)
  jax.block_until_ready(state)
  return state, sums


def _test_accuracies(state: TrainState, config: TrainConfig,
                     test: data_lib.Split, final: bool
                     ) -> tuple[float, float, int]:
  """(clean accuracy on the whole test split, PGD accuracy, images
  attacked): the final epoch attacks every test image."""
  n_eval = len(test.labels) if final else min(config.eval_pgd_examples,
                                              len(test.labels))
  clean_acc, _ = accuracy(state.apply_fn, state.params, test.images,
                          test.labels, epsilon=0.0, pgd_steps=0,
                          pgd_step_size=0.0)
  _, pgd_acc = accuracy(state.apply_fn, state.params, test.images[:n_eval],
                        test.labels[:n_eval], epsilon=config.attack_epsilon,
                        pgd_steps=config.eval_pgd_steps,
                        pgd_step_size=config.eval_pgd_step_size,
                        seed=config.seed)
  return clean_acc, pgd_acc, n_eval


def _export(workdir: str, state: TrainState) -> None:
  network_lib.save_network(network_lib.network_from_params(state.params),
                           os.path.join(workdir, checkpoint.NETWORK))


def _run_epoch(state, config, workdir, data, epoch, history):
  """Trains, evaluates, exports and checkpoints epoch `epoch`."""
  images, labels, steps_per_epoch, test, data_rng = data
  epsilon = epoch_epsilon(config, epoch)
  start = time.perf_counter()
  state, sums = _train_epoch(state, config, images, labels, steps_per_epoch,
                             epoch, data_rng, epsilon)
  seconds = time.perf_counter() - start
  clean_acc, pgd_acc, n_eval = _test_accuracies(state, config, test,
                                                final=epoch == config.epochs)
  record = {
      "epoch": epoch,
      "train_loss": float(sums["loss"]) / steps_per_epoch,
      "train_accuracy": float(sums["accuracy"]) / steps_per_epoch,
      "train_epsilon": epsilon if config.epsilon > 0 else 0.0,
      "test_accuracy": clean_acc,
      "pgd_accuracy": pgd_acc,
      "pgd_epsilon": config.attack_epsilon,
      "pgd_eval_examples": n_eval,
      "epoch_seconds": seconds,
      "examples_per_second": steps_per_epoch * config.batch_size / seconds,
  }
  history.append(record)
  # The network first: a crash between the two writes repeats the epoch,
  # which rewrites the network; never a checkpoint ahead of network.npz.
  _export(workdir, state)
  checkpoint.save(workdir, state, epoch, history)
  logging.info(
      "epoch %d/%d: loss %.4f, clean acc %.4f, PGD-%d acc %.4f (eps %.3f, "
      "%d imgs), %.0f ex/s", epoch, config.epochs, record["train_loss"],
      clean_acc, config.eval_pgd_steps, pgd_acc, config.attack_epsilon,
      n_eval, record["examples_per_second"])
  return state


def train_and_evaluate(config: TrainConfig, workdir: str, *,
                       train: data_lib.Split | None = None,
                       test: data_lib.Split | None = None,
                       init_network: network_lib.Network | None = None,
                       manual_dir: str | None = None) -> list[dict[str, Any]]:
  """Trains, checkpointing each epoch into `workdir`; returns the metrics.

  Resumes from `workdir` when it holds a checkpoint of the same config;
  refuses a workdir another live run holds or another config trained.
  """
  with io.locked_workdir(workdir, "training run"):
    if train is None or test is None:
      train, test = data_lib.load_mnist(manual_dir)
    images, labels, steps_per_epoch = _training_examples(config, train)
    checkpoint.guard_config(workdir, config)
    init_rng, data_rng = jax.random.split(jax.random.key(config.seed))
    state = create_train_state(config, init_rng, init_network=init_network,
                               steps_total=config.epochs * steps_per_epoch)
    state, start_epoch, history = checkpoint.restore(workdir, state, config)
    if start_epoch:
      logging.info("resuming %s after epoch %d", workdir, start_epoch)
    data = (jnp.asarray(images), jnp.asarray(labels), steps_per_epoch, test,
            data_rng)
    for epoch in range(start_epoch + 1, config.epochs + 1):
      state = _run_epoch(state, config, workdir, data, epoch, history)
    if start_epoch >= config.epochs:  # nothing ran: re-export the checkpoint
      _export(workdir, state)
    return history
