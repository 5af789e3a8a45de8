"""TrainConfig: what `python -m robust_prune.train` trains (one flag per
field, through the bridge)."""

from __future__ import annotations

import dataclasses
from typing import Any

from robust_prune import models
from robust_prune.configs.bridge import check_finite
from robust_prune.configs.bridge import option


@dataclasses.dataclass(frozen=True)
class TrainConfig:
  hidden: tuple[int, ...] = option(models.DEFAULT_HIDDEN,
                                   "Hidden layer widths, e.g. 300,100.")
  epochs: int = option(20, "Training epochs.")
  batch_size: int = option(128, "Batch size.")
  learning_rate: float = option(1e-3, "Adam learning rate (cosine-decayed "
                                "to 0).")
  # 0 = standard training; > 0 = Madry PGD adversarial training at this radius.
  epsilon: float = option(0.1, "L-inf training radius; 0 = standard "
                          "training.")
  # Epochs over which the training epsilon ramps linearly from 0 (MLPs train
  # to a better robust optimum with a short warm-up).
  epsilon_warmup_epochs: int = option(2, "Epochs of linear epsilon ramp-up.")
  pgd_steps: int = option(10, "PGD steps in training.")
  pgd_step_size: float = option(0.025, "PGD step in training.")
  # Xiao et al. (ICLR 2019): verification-friendly training.
  rs_weight: float = option(0.0, "Weight of the ReLU-stability regulariser "
                            "(Xiao et al. 2019; 0 = off).")
  l1_weight: float = option(0.0, "L1 weight decay on the kernels (0 = off).")
  seed: int = option(0, "Seed for init, data order and attacks.")
  max_train_examples: int = option(0, "Use only the first N training images "
                                   "(0 = all).")
  # Evaluation attack (the PGD-40, step 0.01, random start).
  eval_epsilon: float = option(-1.0, "Evaluation PGD radius (< 0: the "
                               "training epsilon, or 0.1 for standard).")
  eval_pgd_steps: int = option(40, "Evaluation PGD steps.")
  eval_pgd_step_size: float = option(0.01, "Evaluation PGD step size.")
  # Test images attacked after each epoch; the final epoch uses all of them.
  eval_pgd_examples: int = option(1000, "Test images attacked after each "
                                  "epoch (the last epoch attacks all).")

  def __post_init__(self):
    for field in dataclasses.fields(self):
      check_finite(field.name, getattr(self, field.name))
    if self.epochs < 1 or self.batch_size < 1 or self.learning_rate <= 0:
      raise ValueError("epochs, batch_size and learning_rate must be positive")
    if self.epsilon < 0 or self.pgd_steps < 0 or self.pgd_step_size < 0:
      raise ValueError("epsilon, pgd_steps and pgd_step_size must be >= 0")
    if self.epsilon > 0 and self.pgd_steps == 0:
      raise ValueError("adversarial training (epsilon > 0) needs pgd_steps > 0")
    for name in ("max_train_examples", "epsilon_warmup_epochs", "rs_weight",
                 "l1_weight",
                 "eval_pgd_steps", "eval_pgd_step_size"):
      if getattr(self, name) < 0:
        raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
    if self.eval_pgd_examples < 1:
      raise ValueError(f"eval_pgd_examples must be >= 1, got "
                       f"{self.eval_pgd_examples}")
    # A tuple, whatever sequence (or '300,100' text) was given, so that a
    # config read back from config.json (a list there) compares equal to the
    # one that wrote it.
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
