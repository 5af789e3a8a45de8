"""Named configurations, one place per default: the paper run (the
dataclass defaults), the quick run, and the ablation sweeps.

Presets are {flag name: value} overrides, so a flag given explicitly on the
command line still wins over them."""

from __future__ import annotations

from robust_prune.configs.pipeline import PipelineConfig

PAPER = PipelineConfig()

# Quick mode: a small net that still learns in seconds, 5 images, a curve of
# two radii (0.05 and the paper radius --delta). PGD training
# of a narrow net from scratch collapses to a constant classifier unless
# epsilon ramps up over the whole (short) run (measured: 14-9 net, 3 epochs:
# 11% with a 2-epoch ramp, 76% with a 3-epoch ramp).
QUICK = dict(hidden=(32, 16), epochs=3, epsilon_warmup_epochs=3,
             max_train_examples=12000, learning_rate=3e-3, num_images=5,
             time_limit=30.0, prune_time_limit=20.0, radii=(0.05,))

# Ablations (research questions 3-4): one pipeline run per variant, each
# variant a {flag name: value} change of the base configuration.
# RQ4's architectures: ElAraby et al.'s FC baseline (50-20), 100-100,
# LeNet-300-100, their FC4 (200-100-100), FC2 (1000), and a deeper/wider one.
ARCHITECTURES = ((50, 20), (100, 100), (300, 100), (200, 100, 100), (1000,),
                 (500, 500, 500))
# Standard, Madry PGD at 0.1, and PGD with Xiao et al.'s verification-friendly
# ReLU-stability regulariser and L1 decay (their MNIST weights).
TRAINING_RECIPES = (dict(train_epsilon=0.0), dict(train_epsilon=0.1),
                    dict(train_epsilon=0.1, rs_weight=2e-3, l1_weight=2e-5))
SWEEPS = {
    "architectures": [dict(hidden=h) for h in ARCHITECTURES],
    "recipes": list(TRAINING_RECIPES),
    "rq4": [dict(hidden=h, **r) for h in ARCHITECTURES
            for r in TRAINING_RECIPES],
    "delta": [dict(delta=d) for d in (0.02, 0.05, 0.08, 0.1)],
    "widths": [dict(hidden=h) for h in ((100,), (100, 100), (300, 100),
                                        (300, 100, 100))],
    "threshold": [dict(threshold=t) for t in (0.001, 0.01, 0.1, 0.5)],
    "training": [dict(train_epsilon=e) for e in (0.0, 0.1)],
    "retrain": [dict(retrain=r) for r in ("scratch", "finetune", "rewind")],
}
QUICK_SWEEPS = {
    "rq4": [dict(hidden=h, **r) for h in ((16,), (24, 12))
            for r in (dict(train_epsilon=0.1),
                      dict(train_epsilon=0.1, rs_weight=2e-3,
                           l1_weight=2e-5))],
    "delta": [dict(delta=d) for d in (0.02, 0.05, 0.1)],
    "widths": [dict(hidden=h) for h in ((16,), (24, 12), (32, 16, 8))],
}


def quick(**overrides) -> PipelineConfig:
  """The quick configuration, with {flag name: value} overrides."""
  return PipelineConfig.from_flat({**QUICK, **overrides})
