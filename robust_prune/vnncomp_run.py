"""Runs a VNN-COMP benchmark's instances and writes its results CSV.

  python -m robust_prune.vnncomp_run --instances=mnistfc_instances.csv \
      --out=results.csv [--result_dir=DIR] [--networks=256x2] [--limit=N]

Each instance (onnx, vnnlib, timeout; paths relative to the csv) is decided
in this one process (networks and compiled functions are reused), one at a
time, within its timeout counted from its start, and appended to --out as
`benchmark,onnx,vnnlib,prepare seconds,result,run seconds` (flushed and
fsynced). Before the first instance of each network the decision's jitted
steps are compiled (decide.warm_up), as a VNN-COMP tool's prepare step may:
its timeout starts after that, and the compile's seconds are printed on
their own line (`warm-up NET: S s`), in no instance's columns. A rerun
skips the instances already in --out, so an interrupted run resumes where
it stopped. --result_dir keeps each instance's result file
(counterexamples included).
"""

import time

_STARTED = time.monotonic()

# pylint: disable=g-import-not-at-top,wrong-import-position
import os
import sys

from absl import flags

from robust_prune import cli
from robust_prune import io as io_lib
from robust_prune import vnnlib_verify
from robust_prune.formats import instance as instance_lib
from robust_prune.formats import results as results_lib
from robust_prune.verify import engines

FLAGS = flags.FLAGS
flags.DEFINE_string("instances", None, "The benchmark's instances.csv.")
flags.DEFINE_string("benchmark", None, "Benchmark name in the results (default:"
                    " the csv's name without _instances.csv).")
flags.DEFINE_string("result_dir", None, "Where to keep per-instance result "
                    "files (optional).")
flags.DEFINE_list("networks", [], "Only instances whose onnx name contains one "
                  "of these.")
flags.DEFINE_integer("limit", 0, "At most this many instances (0: all).")


def _benchmark_name() -> str:
  if FLAGS.benchmark:
    return FLAGS.benchmark
  name = os.path.basename(FLAGS.instances)
  return name.removesuffix(".csv").removesuffix("_instances") or "benchmark"


def selected_instances():
  instances = results_lib.read_instances(FLAGS.instances)
  if FLAGS.networks:
    instances = [i for i in instances
                 if any(n in os.path.basename(i.onnx) for n in FLAGS.networks)]
  return instances[:FLAGS.limit] if FLAGS.limit > 0 else instances


def run_one(inst, networks, config):
  """(result row, InstanceResult or None); input errors are an `error` row.
  A network's first instance is preceded by its warm-up (the compile), which
  its timeout does not count."""
  started = time.monotonic()
  try:
    warm = instance_lib.warm_up_network(inst.onnx_path, inst.vnnlib_path,
                                        networks, config)
    if warm:
      print(f"warm-up {inst.onnx}: {warm:.2f} s", flush=True)
    started = time.monotonic()
    outcome = instance_lib.run_instance(
        inst.onnx_path, inst.vnnlib_path, inst.timeout, started=started,
        config=config, networks=networks)
  except instance_lib.INPUT_ERRORS as e:
    outcome = instance_lib.InstanceResult(
        "error", time.monotonic() - started, 0.0, message=str(e))
  except Exception as e:  # pylint: disable=broad-except
    # one instance's failure is its recorded result, not the run's end
    outcome = instance_lib.InstanceResult(
        "error", 0.0, time.monotonic() - started,
        message=f"{type(e).__name__}: {e}")
  row = [_benchmark_name(), inst.onnx, inst.vnnlib,
         f"{outcome.prepare_seconds:.6f}", outcome.result,
         f"{outcome.run_seconds:.6f}"]
  return row, outcome


def main(argv):
  del argv
  if not FLAGS.instances or not FLAGS.out:
    raise ValueError("--instances and --out are required")
  instances = selected_instances()
  config = vnnlib_verify.config_from_flags()
  engines.set_up_process()   # its cache: a rerun loads the warm-ups' compiles
  networks = {}
  with io_lib.WorkdirLock(FLAGS.out, "vnncomp_run"):
    done = {results_lib.instance_key(r[1], r[2])
            for r in results_lib.read_results(FLAGS.out)
            if r[4] in results_lib.RESULTS}
    todo = [i for i in instances
            if results_lib.instance_key(i.onnx, i.vnnlib) not in done]
    print(f"start-up {time.monotonic() - _STARTED:.2f} s; {len(todo)} of "
          f"{len(instances)} instances to run", flush=True)
    for inst in todo:
      row, outcome = run_one(inst, networks, config)
      if FLAGS.result_dir:
        os.makedirs(FLAGS.result_dir, exist_ok=True)
        name = (f"{os.path.splitext(os.path.basename(inst.onnx))[0]}__"
                f"{os.path.splitext(os.path.basename(inst.vnnlib))[0]}.txt")
        io_lib.atomic_write(os.path.join(FLAGS.result_dir, name),
                            results_lib.result_text(outcome.result, outcome.x,
                                                    outcome.y, outcome.message))
      results_lib.append_result(FLAGS.out, row)
      print(",".join(row), outcome.message, flush=True, file=sys.stdout)


if __name__ == "__main__":
  cli.run(main)
