"""Named configurations, one place per default: the paper run (the
dataclass defaults) and the quick run (the sweeps: sweeps.py).

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
             time_limit=30.0, prune_time_limit=20.0, radii=(0.05,),
             # the analysis stages in about a minute: 2 s per importance
             # MILP at margin 1 (at 3 no image of class 9 keeps its margin
             # under PGD on both quick nets), 2 images per ablated network,
             # 10 reverse-testing examples per side
             critical_time_limit=2.0, critical_margin=1.0, ablation_images=2,
             ablation_image_time_limit=1.0, transfer_examples=10,
             transfer_max_images=200)

def quick(**overrides) -> PipelineConfig:
  """The quick configuration, with {flag name: value} overrides."""
  return PipelineConfig.from_flat({**QUICK, **overrides})
