"""Standard and Madry PGD adversarial training of the MLP (absl binary).

    python -m robust_prune.train --workdir=runs/pgd_300_100 --epsilon=0.1

writes `network.npz` (the exported network), `config.json`, `metrics.jsonl`
(one line per epoch) and `checkpoint.msgpack`; rerunning with the same
`--workdir` resumes after the last completed epoch. Same seed and device give
the same weights.
"""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile
import time
from typing import Any, Sequence

from absl import flags
from absl import logging
from flax import serialization
from flax.training import train_state
import jax
import jax.numpy as jnp
import numpy as np
import optax

from robust_prune import attacks
from robust_prune import cli
from robust_prune import data as data_lib
from robust_prune import models
from robust_prune import network as network_lib

CHECKPOINT = "checkpoint.msgpack"
CONFIG = "config.json"
METRICS = "metrics.jsonl"
NETWORK = "network.npz"
# Train steps per device call (one lax.scan); the progress log comes between.
STEPS_PER_CALL = 100


@dataclasses.dataclass(frozen=True)
class TrainConfig:
  hidden: tuple[int, ...] = models.DEFAULT_HIDDEN
  epochs: int = 20
  batch_size: int = 128
  learning_rate: float = 1e-3
  # 0 = standard training; > 0 = Madry PGD adversarial training at this radius.
  epsilon: float = 0.1
  # Epochs over which the training epsilon ramps linearly from 0 (MLPs train
  # to a better robust optimum with a short warm-up).
  epsilon_warmup_epochs: int = 2
  pgd_steps: int = 10
  pgd_step_size: float = 0.025
  seed: int = 0
  max_train_examples: int = 0  # 0 = all 60000
  # Evaluation attack (the PGD-40, step 0.01, random start).
  eval_epsilon: float = -1.0  # < 0: same as epsilon (0.1 if epsilon is 0)
  eval_pgd_steps: int = 40
  eval_pgd_step_size: float = 0.01
  # Test images attacked after each epoch; the final epoch uses all of them.
  eval_pgd_examples: int = 1000

  def __post_init__(self):
    if self.epochs < 1 or self.batch_size < 1 or self.learning_rate <= 0:
      raise ValueError("epochs, batch_size and learning_rate must be positive")
    if self.epsilon < 0 or self.pgd_steps < 0 or self.pgd_step_size < 0:
      raise ValueError("epsilon, pgd_steps and pgd_step_size must be >= 0")
    if self.epsilon > 0 and self.pgd_steps == 0:
      raise ValueError("adversarial training (epsilon > 0) needs pgd_steps > 0")
    # A tuple, whatever sequence was given, so that a config read back from
    # config.json (a list there) compares equal to the one that wrote it.
    object.__setattr__(self, "hidden", models.parse_widths(self.hidden))

  @property
  def attack_epsilon(self) -> float:
    if self.eval_epsilon >= 0:
      return self.eval_epsilon
    return self.epsilon if self.epsilon > 0 else 0.1

  def to_json(self) -> dict[str, Any]:
    return {**dataclasses.asdict(self), "hidden": list(self.hidden)}

  @classmethod
  def from_json(cls, d: dict[str, Any]) -> "TrainConfig":
    known = {f.name for f in dataclasses.fields(cls)}
    d = {k: v for k, v in d.items() if k in known}
    return cls(**{**d, "hidden": tuple(d.get("hidden", models.DEFAULT_HIDDEN))})


# ------------------------------------------------------------------ the model
def create_train_state(config: TrainConfig, rng: jax.Array, *,
                       init_network: network_lib.Network | None = None,
                       steps_total: int = 1) -> train_state.TrainState:
  """Fresh Adam state; `init_network` replaces the random initial weights
  (fine-tuning or lottery-ticket rewinding of a pruned architecture)."""
  model = models.MLP(hidden=tuple(config.hidden))
  if init_network is not None:
    if init_network.hidden_widths != tuple(config.hidden):
      raise ValueError(f"init network widths {init_network.hidden_widths} != "
                       f"config widths {tuple(config.hidden)}")
    params = jax.tree.map(jnp.asarray,
                          network_lib.params_from_network(init_network))
  else:
    params = model.init(rng, jnp.zeros((1, data_lib.NUM_PIXELS), jnp.float32))
  schedule = optax.cosine_decay_schedule(config.learning_rate,
                                         max(steps_total, 1))
  return train_state.TrainState.create(apply_fn=model.apply, params=params,
                                       tx=optax.adam(schedule))


def initial_network(config: TrainConfig) -> network_lib.Network:
  """The weights training starts from at `config.seed` (for rewinding)."""
  init_rng, _ = jax.random.split(jax.random.key(config.seed))
  state = create_train_state(config, init_rng)
  return network_lib.network_from_params(state.params)


def cross_entropy(logits, labels):
  return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()


@jax.jit(static_argnames=("pgd_steps",))
def train_step(state: train_state.TrainState, images, labels, key, epsilon,
               pgd_steps: int, pgd_step_size):
  """One optimizer step on PGD adversarial examples (clean when pgd_steps=0).

  Madry et al.: the inner maximisation sees the current parameters but no
  gradient flows through it into the update.
  """
  if pgd_steps > 0:
    images = jax.lax.stop_gradient(attacks.pgd(
        state.apply_fn, state.params, images, labels, epsilon=epsilon,
        steps=pgd_steps, step_size=pgd_step_size, key=key))

  def loss_fn(params):
    logits = state.apply_fn(params, images)
    return cross_entropy(logits, labels), logits

  (loss, logits), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
  accuracy = jnp.mean(jnp.argmax(logits, -1) == labels)
  return state.apply_gradients(grads=grads), {"loss": loss, "accuracy": accuracy}


@jax.jit(static_argnames=("pgd_steps",))
def train_steps(state: train_state.TrainState, images, labels, batch_indices,
                attack_key, first_step, epsilon, pgd_steps: int,
                pgd_step_size):
  """`len(batch_indices)` train steps in one device call (`lax.scan`): step i
  trains on images[batch_indices[i]] with the attack key
  fold_in(attack_key, first_step + i). The data stay on the device and the
  host dispatches once per chunk, not per step (on a GPU the per-step host
  round trips cost more than the step). Returns the state and the metrics
  summed over the steps."""
  def body(state, xs):
    i, idx = xs
    return train_step(state, images[idx], labels[idx],
                      jax.random.fold_in(attack_key, first_step + i), epsilon,
                      pgd_steps, pgd_step_size)
  steps = jnp.arange(batch_indices.shape[0])
  state, metrics = jax.lax.scan(body, state, (steps, batch_indices))
  return state, jax.tree.map(jnp.sum, metrics)


@jax.jit(static_argnames=("apply_fn", "pgd_steps"))
def _correct_counts(apply_fn, params, images, labels, key, epsilon,
                    pgd_steps: int, pgd_step_size):
  clean = jnp.argmax(apply_fn(params, images), -1) == labels
  if pgd_steps == 0:
    return jnp.sum(clean), jnp.sum(clean)
  adv = attacks.pgd(apply_fn, params, images, labels, epsilon=epsilon,
                    steps=pgd_steps, step_size=pgd_step_size, key=key)
  robust = clean & (jnp.argmax(apply_fn(params, adv), -1) == labels)
  return jnp.sum(clean), jnp.sum(robust)


def evaluate(apply_fn, params, images: np.ndarray, labels: np.ndarray, *,
             epsilon: float, pgd_steps: int, pgd_step_size: float,
             seed: int = 0, batch_size: int = 1000) -> tuple[float, float]:
  """(clean accuracy, PGD robust accuracy); an example counts as robust only
  if it is classified correctly both clean and under attack."""
  key = jax.random.key(seed)
  clean = robust = 0
  for start in range(0, len(labels), batch_size):
    # Pad the last batch so every call has one shape (one compilation).
    xb = images[start:start + batch_size]
    yb = labels[start:start + batch_size]
    n = len(yb)
    if n < batch_size:
      xb = np.concatenate([xb, np.repeat(xb[:1], batch_size - n, 0)])
      yb = np.concatenate([yb, np.full(batch_size - n, -1, yb.dtype)])
    c, r = _correct_counts(apply_fn, params, jnp.asarray(xb), jnp.asarray(yb),
                           jax.random.fold_in(key, start), epsilon, pgd_steps,
                           pgd_step_size)
    clean += int(c)
    robust += int(r)
  return clean / len(labels), robust / len(labels)


def evaluate_network(network: network_lib.Network, split: data_lib.Split, *,
                     epsilon: float, pgd_steps: int = 40,
                     pgd_step_size: float = 0.01, seed: int = 0):
  """Clean and PGD accuracy of an exported network on a split."""
  model = models.MLP(hidden=network.hidden_widths,
                     num_classes=network.num_classes)
  params = jax.tree.map(jnp.asarray, network_lib.params_from_network(network))
  return evaluate(model.apply, params, split.images, split.labels,
                  epsilon=epsilon, pgd_steps=pgd_steps,
                  pgd_step_size=pgd_step_size, seed=seed)


# ------------------------------------------------------------------ files
def _atomic_write(path: str, payload: bytes):
  fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), suffix=".tmp")
  with os.fdopen(fd, "wb") as f:
    f.write(payload)
  os.replace(tmp, path)


def _write_metrics(workdir, metrics):
  lines = "".join(json.dumps(m) + "\n" for m in metrics)
  _atomic_write(os.path.join(workdir, METRICS), lines.encode())


def _save_checkpoint(workdir, state, epoch, metrics):
  # The metrics history travels inside the checkpoint and metrics.jsonl is
  # rewritten from it (here and on restore), so a crash between the writes
  # can never duplicate or drop an epoch's line.
  payload = serialization.to_bytes(
      {"state": state, "epoch": epoch, "metrics": json.dumps(metrics)})
  _atomic_write(os.path.join(workdir, CHECKPOINT), payload)
  _write_metrics(workdir, metrics)


def _restore(workdir, state):
  path = os.path.join(workdir, CHECKPOINT)
  if not os.path.exists(path):
    return state, 0, []
  with open(path, "rb") as f:
    raw = serialization.msgpack_restore(f.read())
  epoch = int(raw["epoch"])
  restored = serialization.from_state_dict(state, raw["state"])
  if "metrics" in raw:
    metrics = json.loads(raw["metrics"])
  else:  # a checkpoint written before the metrics moved into it
    metrics_path = os.path.join(workdir, METRICS)
    metrics = []
    if os.path.exists(metrics_path):
      with open(metrics_path) as f:
        metrics = [json.loads(line) for line in f if line.strip()]
  metrics = metrics[:epoch]
  if [m.get("epoch") for m in metrics] != list(range(1, epoch + 1)):
    raise ValueError(f"{path} is at epoch {epoch} but its metrics history "
                     f"is incomplete; use a fresh --workdir")
  _write_metrics(workdir, metrics)
  return restored, epoch, metrics


def _check_config(workdir: str, config: TrainConfig):
  """Refuses to resume a checkpoint trained under another config. Until the
  first epoch is checkpointed nothing was trained, so config.json is simply
  (re)written: a run that failed early can be rerun with corrected flags."""
  path = os.path.join(workdir, CONFIG)
  if os.path.exists(os.path.join(workdir, CHECKPOINT)):
    if not os.path.exists(path):
      raise ValueError(f"{workdir} holds a checkpoint but no {CONFIG}, so "
                       f"its config is unknown; use a fresh --workdir")
    with open(path) as f:
      previous = TrainConfig.from_json(json.load(f))
    if previous != config:
      diff = {k: (v, getattr(config, k)) for k, v in vars(previous).items()
              if getattr(config, k) != v}
      raise ValueError(
          f"{workdir} holds a run with another config {diff} (old, new); "
          f"use a fresh --workdir")
  else:
    _atomic_write(path, json.dumps(config.to_json(), indent=2).encode())


# ------------------------------------------------------------------ the loop
def train_and_evaluate(config: TrainConfig, workdir: str, *,
                       train: data_lib.Split | None = None,
                       test: data_lib.Split | None = None,
                       init_network: network_lib.Network | None = None,
                       manual_dir: str | None = None) -> list[dict[str, Any]]:
  """Trains, checkpointing each epoch into `workdir`; returns the metrics.

  Resumes from `workdir` when it holds a checkpoint of the same config.
  """
  os.makedirs(workdir, exist_ok=True)
  if train is None or test is None:
    train, test = data_lib.load_mnist(manual_dir)
  images, labels = train.images, train.labels
  if config.max_train_examples:
    images = images[:config.max_train_examples]
    labels = labels[:config.max_train_examples]
  steps_per_epoch = len(labels) // config.batch_size
  if steps_per_epoch == 0:
    raise ValueError(f"batch size {config.batch_size} exceeds the "
                     f"{len(labels)} training examples")
  _check_config(workdir, config)

  rng = jax.random.key(config.seed)
  init_rng, data_rng = jax.random.split(rng)
  state = create_train_state(config, init_rng, init_network=init_network,
                             steps_total=config.epochs * steps_per_epoch)
  state, start_epoch, history = _restore(workdir, state)
  if start_epoch:
    logging.info("resuming %s after epoch %d", workdir, start_epoch)

  images_dev = jnp.asarray(images)
  labels_dev = jnp.asarray(labels)
  for epoch in range(start_epoch + 1, config.epochs + 1):
    epoch_rng = jax.random.fold_in(data_rng, epoch)
    perm_rng, attack_rng = jax.random.split(epoch_rng)
    perm = jax.random.permutation(perm_rng, len(labels))
    warmup = config.epsilon_warmup_epochs
    epsilon = config.epsilon * min(1.0, epoch / warmup) if warmup else config.epsilon
    start = time.perf_counter()
    sums = {"loss": 0.0, "accuracy": 0.0}
    batches = perm[:steps_per_epoch * config.batch_size].reshape(
        steps_per_epoch, config.batch_size)
    for first in range(0, steps_per_epoch, STEPS_PER_CALL):
      state, m = train_steps(state, images_dev, labels_dev,
                             batches[first:first + STEPS_PER_CALL], attack_rng,
                             first, epsilon,
                             config.pgd_steps if config.epsilon > 0 else 0,
                             config.pgd_step_size)
      for k in sums:
        sums[k] += m[k]
      logging.log_every_n_seconds(
          logging.INFO, "epoch %d step %d/%d", 30, epoch,
          min(first + STEPS_PER_CALL, steps_per_epoch), steps_per_epoch)
    jax.block_until_ready(state)
    seconds = time.perf_counter() - start
    final = epoch == config.epochs
    n_eval = len(test.labels) if final else min(config.eval_pgd_examples,
                                                len(test.labels))
    clean_acc, _ = evaluate(state.apply_fn, state.params, test.images,
                            test.labels, epsilon=0.0, pgd_steps=0,
                            pgd_step_size=0.0)
    _, pgd_acc = evaluate(state.apply_fn, state.params, test.images[:n_eval],
                          test.labels[:n_eval], epsilon=config.attack_epsilon,
                          pgd_steps=config.eval_pgd_steps,
                          pgd_step_size=config.eval_pgd_step_size,
                          seed=config.seed)
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
    network_lib.save_network(network_lib.network_from_params(state.params),
                             os.path.join(workdir, NETWORK))
    _save_checkpoint(workdir, state, epoch, history)
    logging.info(
        "epoch %d/%d: loss %.4f, clean acc %.4f, PGD-%d acc %.4f (eps %.3f, "
        "%d imgs), %.0f ex/s", epoch, config.epochs, record["train_loss"],
        clean_acc, config.eval_pgd_steps, pgd_acc, config.attack_epsilon,
        n_eval, record["examples_per_second"])
  if start_epoch >= config.epochs:  # nothing ran: re-export the checkpoint
    network_lib.save_network(network_lib.network_from_params(state.params),
                             os.path.join(workdir, NETWORK))
  return history


# ------------------------------------------------------------------ binary
def define_train_flags():
  """Training flags, shared by the binaries that (re)train networks."""
  d = TrainConfig()
  flags.DEFINE_list("hidden", [str(w) for w in d.hidden],
                    "Hidden layer widths, e.g. 300,100.")
  flags.DEFINE_integer("epochs", d.epochs, "Training epochs.")
  flags.DEFINE_integer("batch_size", d.batch_size, "Batch size.")
  flags.DEFINE_float("learning_rate", d.learning_rate, "Adam learning rate "
                     "(cosine-decayed to 0).")
  flags.DEFINE_float("epsilon", d.epsilon,
                     "L-inf training radius; 0 = standard training.")
  flags.DEFINE_integer("epsilon_warmup_epochs", d.epsilon_warmup_epochs,
                       "Epochs of linear epsilon ramp-up.")
  flags.DEFINE_integer("pgd_steps", d.pgd_steps, "PGD steps in training.")
  flags.DEFINE_float("pgd_step_size", d.pgd_step_size, "PGD step in training.")
  flags.DEFINE_integer("seed", d.seed, "Seed for init, data order and attacks.")
  flags.DEFINE_integer("max_train_examples", d.max_train_examples,
                       "Use only the first N training images (0 = all).")
  flags.DEFINE_float("eval_epsilon", d.eval_epsilon, "Evaluation PGD radius "
                     "(< 0: the training epsilon, or 0.1 for standard).")
  flags.DEFINE_integer("eval_pgd_steps", d.eval_pgd_steps, "Evaluation PGD steps.")
  flags.DEFINE_float("eval_pgd_step_size", d.eval_pgd_step_size,
                     "Evaluation PGD step size.")
  flags.DEFINE_integer("eval_pgd_examples", d.eval_pgd_examples,
                       "Test images attacked after each epoch (the last epoch "
                       "attacks all).")


def config_from_flags(f=flags.FLAGS, **overrides) -> TrainConfig:
  values = dict(
      hidden=models.parse_widths(",".join(f.hidden)), epochs=f.epochs,
      batch_size=f.batch_size, learning_rate=f.learning_rate,
      epsilon=f.epsilon, epsilon_warmup_epochs=f.epsilon_warmup_epochs,
      pgd_steps=f.pgd_steps, pgd_step_size=f.pgd_step_size, seed=f.seed,
      max_train_examples=f.max_train_examples, eval_epsilon=f.eval_epsilon,
      eval_pgd_steps=f.eval_pgd_steps, eval_pgd_step_size=f.eval_pgd_step_size,
      eval_pgd_examples=f.eval_pgd_examples)
  values.update(overrides)
  return TrainConfig(**values)


def define_data_flags():
  flags.DEFINE_string("mnist_manual_dir", None,
                      f"Folder with the four MNIST .gz archives (offline); "
                      f"defaults to ${data_lib.MANUAL_DIR_ENV}, else download.")


if __name__ == "__main__":
  flags.DEFINE_string("workdir", None, "Output folder; resumed if it exists.")
  flags.mark_flag_as_required("workdir")
  define_train_flags()
  define_data_flags()


def main(argv: Sequence[str]):
  del argv
  f = flags.FLAGS
  config = config_from_flags(f)
  history = train_and_evaluate(config, f.workdir, manual_dir=f.mnist_manual_dir)
  last = history[-1]
  print(json.dumps({"workdir": f.workdir, **last}))


if __name__ == "__main__":
  cli.run(main)
