"""python -m robust_prune.report --out_dir=OUT (see robust_prune.report)."""

from absl import flags

from robust_prune import cli
from robust_prune.report.files import write_report

flags.DEFINE_string("out_dir", None, "The pipeline's output folder.")
flags.mark_flag_as_required("out_dir")


def main(argv):
  del argv
  print(write_report(flags.FLAGS.out_dir))


if __name__ == "__main__":
  cli.run(main)
