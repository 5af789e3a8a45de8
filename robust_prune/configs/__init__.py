"""Configs as code: the dataclasses every binary reads, their presets, and
the one flag bridge that turns dataclass fields into absl flags.

  TrainConfig                 train.py    `python -m robust_prune.train`
  PipelineConfig              pipeline.py train / prune / verify, nested
  PAPER, QUICK                presets.py  named configurations
  SWEEPS, QUICK_SWEEPS        sweeps.py   the ablation sweeps
  bridge                      bridge.py   flags <-> dataclasses
"""

from absl import flags

from robust_prune import data as data_lib
from robust_prune.configs import bridge
from robust_prune.configs.pipeline import options_of_stage
from robust_prune.configs.pipeline import PipelineConfig
from robust_prune.configs.pipeline import PruneStage
from robust_prune.configs.pipeline import VerifyStage
from robust_prune.configs.pipeline import AnalysisStage
from robust_prune.configs.presets import PAPER
from robust_prune.configs.presets import QUICK
from robust_prune.configs.sweeps import QUICK_SWEEPS
from robust_prune.configs.sweeps import SWEEPS
from robust_prune.configs.train import TrainConfig

TRAIN_FLAGS = bridge.flag_specs(TrainConfig)
PIPELINE_FLAGS = bridge.flag_specs(PipelineConfig)


def define_data_flags(flag_values: flags.FlagValues = flags.FLAGS) -> None:
  """--mnist_manual_dir, shared by the binaries that read MNIST."""
  flags.DEFINE_string("mnist_manual_dir", None,
                      f"Folder with the four MNIST .gz archives (offline); "
                      f"defaults to ${data_lib.MANUAL_DIR_ENV}, else download.",
                      flag_values=flag_values)
