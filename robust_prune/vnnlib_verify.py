"""Checks one VNN-LIB property on one ONNX network, VNN-COMP style.

  python -m robust_prune.vnnlib_verify --onnx=NET.onnx --vnnlib=SPEC.vnnlib \
      --timeout=120 --out=RESULT.txt

writes the result file: `sat` with the counterexample `((X_0 v) ... (Y_0 v)
...)` (re-checked by a float64 forward pass), `unsat`, `timeout`, `unknown`,
or `error` with its message. The timeout is a wall-clock budget counted from
the process's start. Bad input (an unsupported ONNX op, a malformed VNN-LIB
file, a timeout <= 0) writes `error` and ends in one error line, exit 2.
Compiled steps are kept in JAX's persistent cache ($ROBUST_PRUNE_CACHE, by
default ~/.cache/robust_prune), so a run after the first on a network of
the same shapes loads them instead of compiling within its timeout.
"""

import os
import time

_STARTED = time.monotonic()   # before the heavy imports: they count too

# pylint: disable=g-import-not-at-top,wrong-import-position
from absl import flags

from robust_prune import cli
from robust_prune import io as io_lib
from robust_prune.formats import onnx_io, vnnlib
from robust_prune.formats import results as results_lib

FLAGS = flags.FLAGS
# the instance's files are unusable: an `error` result (as
# formats.instance.INPUT_ERRORS, without importing JAX for it)
INPUT_ERRORS = (onnx_io.OnnxFormatError, vnnlib.VnnlibError, ValueError,
                FileNotFoundError)
flags.DEFINE_string("onnx", None, "The network (.onnx).")
flags.DEFINE_string("vnnlib", None, "The property (.vnnlib).")
flags.DEFINE_float("timeout", None, "Wall-clock seconds for the whole run.")
flags.DEFINE_string("out", None, "Where to write the result file.")
flags.DEFINE_string("solver", "HIGHS", "MILP solver: HIGHS, SCIP, GLPK_MI.")
flags.DEFINE_integer("pgd_restarts", 8, "PGD restarts per disjunct.")
flags.DEFINE_integer("pgd_steps", 100, "PGD steps per restart.")
flags.DEFINE_integer("bab_batch_size", 512, "Domains per branch and bound "
                     "batch (its largest compiled shape).", lower_bound=1)
flags.DEFINE_bool("milp", True, "Try the conjunction MILP after the branch "
                  "and bound (time is kept for it only where an open "
                  "disjunct has several rows).")
flags.DEFINE_enum("bab_intermediate", "refine", ["crown", "alpha", "refine"],
                  "Hidden-layer bounds of the branch and bound and the MILP: "
                  "CROWN's, alpha-CROWN's, or alpha's refined by proofs once "
                  "the first tenth of the branch and bound leaves disjuncts "
                  "open.")
flags.DEFINE_float("refine_seconds", 90.0, "Cap on the refinement (it also "
                   "takes at most a quarter of the time left).")
flags.DEFINE_integer("refine_rounds", 4, "Rounds of the refinement's side "
                     "searches (each asks the sides proved in the last one "
                     "for half its step again).", lower_bound=1)


def config_from_flags():
  """The DecideConfig of the flags (JAX is imported only here and below, so
  that bad flags fail fast)."""
  from robust_prune.formats import decide as decide_lib
  return decide_lib.DecideConfig(pgd_restarts=FLAGS.pgd_restarts,
                                 pgd_steps=FLAGS.pgd_steps,
                                 solver=FLAGS.solver, use_milp=FLAGS.milp,
                                 bab_batch_size=FLAGS.bab_batch_size,
                                 intermediate=FLAGS.bab_intermediate,
                                 refine_seconds=FLAGS.refine_seconds,
                                 refine_rounds=FLAGS.refine_rounds)


def main(argv):
  del argv
  for name in ("onnx", "vnnlib", "timeout", "out"):
    if FLAGS[name].value is None:
      raise ValueError(f"--{name} is required")
  folder = os.path.dirname(os.path.abspath(FLAGS.out))
  if not os.path.isdir(folder):
    raise ValueError(f"--out: folder {folder} does not exist")
  try:
    if not (FLAGS.timeout > 0 and FLAGS.timeout < float("inf")):
      raise ValueError(f"--timeout must be a positive number of seconds, "
                       f"got {FLAGS.timeout}")
    from robust_prune.formats import instance as instance_lib
    from robust_prune.verify import engines
    # one process per instance (as VNN-COMP runs tools): a later instance
    # loads what an earlier one compiled
    engines.set_up_process()
    outcome = instance_lib.run_instance(
        FLAGS.onnx, FLAGS.vnnlib, FLAGS.timeout, started=_STARTED,
        config=config_from_flags())
  except INPUT_ERRORS as e:
    io_lib.atomic_write(FLAGS.out, results_lib.result_text("error",
                                                           message=str(e)))
    raise
  io_lib.atomic_write(FLAGS.out, results_lib.result_text(
      outcome.result, outcome.x, outcome.y, outcome.message))


if __name__ == "__main__":
  cli.run(main, cli.USER_ERRORS + INPUT_ERRORS)
