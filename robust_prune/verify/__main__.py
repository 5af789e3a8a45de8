r"""Exact robustness verification of a network on MNIST test images.

  python -m robust_prune.verify --network=runs/x/network.npz \
      --out=results.jsonl --delta=0.05 --num_images=100 [--first_image=0] \
      [--mode=targeted|certify|min_distortion] [--solver=HIGHS|SCIP|GLPK_MI] \
      [--time_limit=60] [--bounds=interval|crown|lp] [--workers=2] \
      [--image_time_limit=60]

(`python -m robust_prune.evaluate` is the same binary.) One JSON line per
(image, target), appended and fsynced as soon as its image is done. A rerun
with the same --out skips finished pairs (a line cut off by a kill is
dropped and redone) but retries `error` records; readers keep the latest
record per pair. Every record carries `network_sha256`; an --out holding
another network's results, or another delta or mode, is refused, a damaged
line stops the run with its file:line before anything is written, and a
second run on the same --out is refused while the first holds its lock.
"""

from __future__ import annotations

import math
import os
import time

from absl import flags
from absl import logging

from robust_prune import bounds as bounds_lib
from robust_prune import cli
from robust_prune.milp import solvers as solvers_lib
from robust_prune.network import NetworkFormatError, load_mnist_network
from robust_prune.verify import engines
from robust_prune.verify import runner
from robust_prune.verify.config import MODES, PROOF_ENGINES, VerifyConfig
from robust_prune.verify.runner import EvaluateError

FLAGS = flags.FLAGS


def define_flags():
  """Flags are defined by the binary only, so that other absl programs can
  import the library modules without flag clashes."""
  flags.DEFINE_string("network", None, "network.npz to verify.")
  flags.DEFINE_string("out", None, "results JSONL (appended; resumable).")
  flags.DEFINE_float("delta", None, "L-inf radius of the input box, in (0, 1].")
  flags.DEFINE_integer("num_images", 100, "number of test images.")
  flags.DEFINE_integer("first_image", 0, "index of the first test image.")
  flags.DEFINE_enum("mode", "targeted", list(MODES),
                    "targeted: optimum per target (the paper); certify: proven "
                    "verdict per target, cheapest first; min_distortion: "
                    "smallest adversarial radius <= delta per target.")
  flags.DEFINE_string("solver", "HIGHS", "SCIP, HIGHS or GLPK_MI.")
  flags.DEFINE_float("time_limit", 60.0, "seconds per MILP.")
  flags.DEFINE_enum("bounds", "crown", list(bounds_lib.BOUND_METHODS),
                    "pre-activation bounds that fix stable neurons and big-Ms.")
  flags.DEFINE_integer("workers", 2, "processes solving images in parallel "
                       "(engine local).")
  flags.DEFINE_enum("engine", "local", list(engines.ENGINES),
                    "local: this machine's process pool; ray: Ray tasks, one "
                    "CPU each (a local Ray, or the cluster at --ray_address).")
  flags.DEFINE_string("ray_address", None, "engine ray: 'auto' or host:port "
                      "of a running cluster (else $RAY_ADDRESS); unset starts "
                      "a local Ray sized to the machine.")
  flags.DEFINE_integer("pgd_steps", 50, "PGD steps (certify pre-pass / MIP "
                       "start in targeted mode); 0 disables PGD.")
  flags.DEFINE_float("bab_time_limit", 20.0, "seconds of alpha/beta-CROWN "
                     "branch and bound per target (certify: the verdict; "
                     "targeted: the optimum to 5e-5) before the MILP; 0 goes "
                     "straight to the MILP.")
  flags.DEFINE_float("image_time_limit", 0.0, "certify/targeted: seconds "
                     "for all targets of one image, held to within ~2 s: "
                     "CROWN and PGD for all targets, then the branch and "
                     "bound (certify: resumable searches taking turns of 1, "
                     "2, 4... s, closest to a proof first; targeted: equal "
                     "shares) (--bab_time_limit and --time_limit are then "
                     "ignored; "
                     "--bab_time_limit=0 still skips it), then the MILP, in "
                     "a child process killed at the deadline. 0: off.")
  _define_search_flags()
  flags.DEFINE_string("mnist_manual_dir", None,
                      "folder with the MNIST .gz files (else $MNIST_MANUAL_DIR).")


def _define_search_flags():
  """The branch and bound's own options (VerifyConfig.bab_*, refine_*)."""
  flags.DEFINE_enum("bab_intermediate", "auto",
                    ["auto", "alpha", "crown", "refine"],
                    "intermediate bounds the branch and bound keeps: CROWN's; "
                    "with the layers after the first tightened once per "
                    "image by alpha-CROWN (optimised slopes); (refine) then "
                    "with those layers' bounds tightened by batched proofs "
                    "(a few seconds per image; with --image_time_limit only "
                    "once a tenth of it leaves targets open); auto: refine "
                    "in certify mode under an --image_time_limit of 20 s or "
                    "more, else alpha.")
  flags.DEFINE_integer("bab_cut_rounds", VerifyConfig.bab_cut_rounds,
                       "rounds of first-layer hull cuts at each branch and "
                       "bound's root: each adds, for every unstable "
                       "first-layer neuron, the facet of its convex hull "
                       "over the input box tightest at the root's minimising "
                       "input; 0: none.")
  flags.DEFINE_integer("bab_root_cut_rounds", VerifyConfig.bab_root_cut_rounds,
                       "rounds of those facets made at each root in all; "
                       "every neuron keeps the --bab_cut_rounds with the "
                       "largest multipliers (the search's cost per domain "
                       "stays that of --bab_cut_rounds); <= --bab_cut_rounds: "
                       "no extra rounds.")
  flags.DEFINE_integer("bab_own_cuts", VerifyConfig.bab_own_cuts,
                       "first-layer neurons (those whose root cuts weigh "
                       "most) that also get, in each domain, the hull facet "
                       "tightest at its parent's minimising input; 0: none "
                       "(on 2 CPU cores at delta 0.1 it did not pay, see "
                       "BUILD_NOTES).")
  flags.DEFINE_float("refine_seconds", VerifyConfig.refine_seconds,
                     "refine: cap in seconds on the refinement of an image's "
                     "later-layer bounds (also at most a quarter of what "
                     "--image_time_limit has left).")
  flags.DEFINE_integer("refine_rounds", VerifyConfig.refine_rounds,
                       "refine: rounds of side searches after the per-side "
                       "cut bounds (each asks the sides proved in the last "
                       "one for half its step again); 0: the cut bounds "
                       "only.")
  flags.DEFINE_float("bab_final_proof", VerifyConfig.bab_final_proof,
                     "certify with --image_time_limit: seconds per target "
                     "left open, kept back from the search, for the float64 "
                     "re-proof of its open domains (the bound its timeout "
                     "record reports); more buys a tighter bound, less time "
                     "to decide.")
  flags.DEFINE_integer("bab_batch_size", VerifyConfig.bab_batch_size,
                       "domains the branch and bound bounds per jitted call "
                       "(its largest compiled shape): 512 suits CPUs; on a "
                       "GPU try 4096 (see README).")
  flags.DEFINE_float("bab_pool_gib", VerifyConfig.bab_pool_gib,
                     "GiB of open domains a branch and bound may hold (a "
                     "search stops there with its bound, as at its time "
                     "limit); raise it with a GPU's throughput.")
  flags.DEFINE_enum("bab_proofs", VerifyConfig.bab_proofs, PROOF_ENGINES,
                    "where the branch and bound's float64 proofs of closed "
                    "domains run: numpy on the host, xla on JAX's device; "
                    "auto: numpy on a CPU, xla on a GPU.")


def check_flags():
  """Every option, before MNIST or the network is read (EvaluateError)."""
  if not FLAGS.network or not FLAGS.out:
    raise EvaluateError("--network and --out are required")
  delta = FLAGS.delta
  if delta is None or not math.isfinite(delta) or not 0 < delta <= 1:
    raise EvaluateError(f"--delta must be a number in (0, 1] (pixels lie in "
                        f"[0, 1]), got {delta}")
  if not (math.isfinite(FLAGS.time_limit) and FLAGS.time_limit > 0):
    raise EvaluateError(f"--time_limit must be a finite number of seconds "
                        f"> 0, got {FLAGS.time_limit}")
  if not (math.isfinite(FLAGS.bab_time_limit) and FLAGS.bab_time_limit >= 0):
    raise EvaluateError(f"--bab_time_limit must be a finite number of "
                        f"seconds >= 0 (0: MILP only), got "
                        f"{FLAGS.bab_time_limit}")
  budget = FLAGS.image_time_limit
  if not (math.isfinite(budget) and budget >= 0):
    raise EvaluateError(f"--image_time_limit must be a finite number of "
                        f"seconds >= 0 (0: off), got {budget}")
  if budget > 0 and FLAGS.mode == "min_distortion":
    raise EvaluateError("--image_time_limit applies to --mode=certify and "
                        "targeted, not min_distortion")
  if FLAGS.num_images < 1:
    raise EvaluateError(f"--num_images must be >= 1, got {FLAGS.num_images}")
  if FLAGS.first_image < 0:
    raise EvaluateError(f"--first_image must be >= 0, got {FLAGS.first_image}")
  if FLAGS.workers < 1:
    raise EvaluateError(f"--workers must be >= 1, got {FLAGS.workers}")
  if FLAGS.pgd_steps < 0:
    raise EvaluateError(f"--pgd_steps must be >= 0 (0: no PGD), got "
                        f"{FLAGS.pgd_steps}")
  if FLAGS.bab_cut_rounds < 0:
    raise EvaluateError(f"--bab_cut_rounds must be >= 0 (0: no cuts), got "
                        f"{FLAGS.bab_cut_rounds}")
  if FLAGS.bab_root_cut_rounds < 0:
    raise EvaluateError(f"--bab_root_cut_rounds must be >= 0, got "
                        f"{FLAGS.bab_root_cut_rounds}")
  if FLAGS.bab_own_cuts < 0:
    raise EvaluateError(f"--bab_own_cuts must be >= 0 (0: none), got "
                        f"{FLAGS.bab_own_cuts}")
  if not (math.isfinite(FLAGS.refine_seconds) and FLAGS.refine_seconds >= 0):
    raise EvaluateError(f"--refine_seconds must be a finite number of "
                        f"seconds >= 0, got {FLAGS.refine_seconds}")
  try:  # the search's ranges, where VerifyConfig's message names the flag
    VerifyConfig(delta=delta, bab_final_proof=FLAGS.bab_final_proof,
                 bab_batch_size=FLAGS.bab_batch_size,
                 bab_pool_gib=FLAGS.bab_pool_gib)
  except ValueError as e:
    raise EvaluateError(f"--{e}") from e
  if FLAGS.refine_rounds < 0:
    raise EvaluateError(f"--refine_rounds must be >= 0, got "
                        f"{FLAGS.refine_rounds}")
  try:
    solvers_lib.check_solver(FLAGS.solver)
  except solvers_lib.SolverUnavailableError as e:
    raise EvaluateError(str(e)) from e
  _check_out_path(FLAGS.out)


def _check_out_path(out: str):
  """--out must be a file we may append to; its folder is created. The file
  itself is not touched until it is known to be a results file."""
  out = os.path.abspath(out)
  if os.path.isdir(out):
    raise EvaluateError(f"--out={out} is a directory; give a .jsonl file")
  try:
    os.makedirs(os.path.dirname(out), exist_ok=True)
  except OSError as e:
    raise EvaluateError(f"cannot write --out={out}: {e}") from e
  if not os.access(out if os.path.exists(out) else os.path.dirname(out),
                   os.W_OK):
    raise EvaluateError(f"cannot write --out={out}: permission denied")


def _load_inputs():
  """(network, test split, indices), every mismatch one EvaluateError."""
  from robust_prune import data  # pylint: disable=g-import-not-at-top
  try:
    test = data.load_split("test", FLAGS.mnist_manual_dir)
  except data.MnistDataError as e:
    raise EvaluateError(str(e)) from e
  first, count = FLAGS.first_image, FLAGS.num_images
  if first + count > len(test):
    raise EvaluateError(
        f"images {first}..{first + count - 1} are out of range: the test set "
        f"has images 0..{len(test) - 1}")
  try:
    network = load_mnist_network(FLAGS.network)
  except NetworkFormatError as e:
    raise EvaluateError(str(e)) from e
  return network, test, list(range(first, first + count))


def main(argv):
  del argv
  check_flags()
  network, test, indices = _load_inputs()
  engines.set_up_process()
  start = time.time()
  results = runner.verify_images(
      network, test.images[indices], test.labels[indices], indices,
      FLAGS.delta, FLAGS.mode, FLAGS.solver, FLAGS.time_limit, FLAGS.bounds,
      FLAGS.out, FLAGS.workers, FLAGS.pgd_steps, FLAGS.bab_time_limit,
      engine=FLAGS.engine, ray_address=FLAGS.ray_address,
      image_time_limit=FLAGS.image_time_limit,
      bab_intermediate=FLAGS.bab_intermediate,
      bab_cut_rounds=FLAGS.bab_cut_rounds, bab_own_cuts=FLAGS.bab_own_cuts,
      bab_root_cut_rounds=FLAGS.bab_root_cut_rounds,
      refine_seconds=FLAGS.refine_seconds, refine_rounds=FLAGS.refine_rounds,
      bab_final_proof=FLAGS.bab_final_proof,
      bab_batch_size=FLAGS.bab_batch_size, bab_pool_gib=FLAGS.bab_pool_gib,
      bab_proofs=FLAGS.bab_proofs)
  wanted = set(indices)
  mine = [r for r in results if r.image_index in wanted]
  logging.info("done in %.1fs: %d records in %s: %s", time.time() - start,
               len(mine), FLAGS.out, runner.status_counts(mine))


def run():
  define_flags()
  cli.run(main, cli.USER_ERRORS + (runner.WorkerDiedError,))


if __name__ == "__main__":
  run()
