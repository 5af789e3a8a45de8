"""Standard and Madry PGD adversarial training of the MLP.

    python -m robust_prune.train --workdir=runs/pgd_300_100 --epsilon=0.1

  step.py        TrainState, the pure jitted train_step / train_steps
  loop.py        train_and_evaluate: the resumable epoch loop
  evaluation.py  accuracy / network_accuracy (clean and PGD)
  checkpoint.py  checkpoint.msgpack, metrics.jsonl, config.json
  __main__.py    the binary (flags only)

The config is configs.TrainConfig; its flags come from the flag bridge.
"""

import dataclasses

from absl import flags

from robust_prune import configs
from robust_prune.configs import bridge
from robust_prune.configs.train import TrainConfig
from robust_prune.train.checkpoint import CHECKPOINT
from robust_prune.train.checkpoint import CONFIG
from robust_prune.train.checkpoint import METRICS
from robust_prune.train.checkpoint import NETWORK
from robust_prune.train.evaluation import accuracy
from robust_prune.train.evaluation import network_accuracy
from robust_prune.train.loop import STEPS_PER_CALL
from robust_prune.train.loop import train_and_evaluate
from robust_prune.train.step import create_train_state
from robust_prune.train.step import cross_entropy
from robust_prune.train.step import initial_network
from robust_prune.train.step import train_step
from robust_prune.train.step import train_steps
from robust_prune.train.step import TrainState

flags.disclaim_key_flags()  # the training flags belong to the binary

# The old names, until every caller has moved (pruning/loop.py uses them).
evaluate = accuracy
evaluate_network = network_accuracy
define_data_flags = configs.define_data_flags


def define_train_flags(flag_values: flags.FlagValues = flags.FLAGS) -> None:
  """The training flags (one per TrainConfig field), for the binaries that
  (re)train networks."""
  bridge.define_flags(configs.TRAIN_FLAGS, flag_values)


def config_from_flags(f: flags.FlagValues = flags.FLAGS,
                      **overrides) -> TrainConfig:
  """The TrainConfig the training flags describe, with `overrides`
  (field names) applied; a non-finite or out-of-range value is a
  ValueError naming it."""
  config = bridge.config_from_flags(TrainConfig, configs.TRAIN_FLAGS, f)
  return dataclasses.replace(config, **overrides)
