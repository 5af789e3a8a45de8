"""`python -m robust_prune.train --workdir=DIR [training flags]`: trains
into DIR (resumed if it holds a checkpoint of the same config) and prints the
last epoch's metrics as one JSON line."""

import json
from typing import Sequence

from absl import flags

from robust_prune import cli
from robust_prune import train as train_lib

flags.DEFINE_string("workdir", None, "Output folder; resumed if it exists.")
flags.mark_flag_as_required("workdir")
train_lib.define_train_flags()
train_lib.define_data_flags()


def main(argv: Sequence[str]):
  del argv
  f = flags.FLAGS
  config = train_lib.config_from_flags(f)
  history = train_lib.train_and_evaluate(config, f.workdir,
                                         manual_dir=f.mnist_manual_dir)
  print(json.dumps({"workdir": f.workdir, **history[-1]}))


if __name__ == "__main__":
  cli.run(main)
