"""VNN-COMP 2021 mnistfc with our verifier, against the published tools.

  .venv/bin/python launch/bench/bench_vnncomp.py --out=RESULTS.csv \
      [--networks=256x2] [--limit=N] [--norun]

Runs `python -m robust_prune.vnncomp_run` on the selected instances (one at
a time, each within its published timeout; resumable through --out), then
prints per tool (ours and each file in results_csv/): SAT, UNSAT, unknown,
median seconds, solved counts per network and epsilon, start-up time, and
every instance where two tools' verdicts contradict each other.
Our seconds are an instance's whole time (reading its files + deciding;
each network's warm-up, the compile before its first instance, is printed
on its own);
the published run seconds include each tool's start-up, so the start-up
(ours: the runner's process start and imports; theirs: the competition's
convention, the tool's smallest run time) is printed separately.
"""

import collections
import os
import re
import statistics
import subprocess
import sys
import time

from absl import app, flags

_REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(
    __file__))))
sys.path.insert(0, _REPO)
from robust_prune.formats import results as results_lib  # pylint: disable=g-import-not-at-top,wrong-import-position
from robust_prune.formats import vnnlib  # pylint: disable=g-import-not-at-top,wrong-import-position

_SHARED = os.path.join(os.path.dirname(_REPO), "shared", "vnncomp2021")
FLAGS = flags.FLAGS
flags.DEFINE_string("instances", os.path.join(_SHARED, "mnistfc",
                                              "mnistfc_instances.csv"),
                    "The benchmark's instances.csv.")
flags.DEFINE_string("published", os.path.join(_SHARED, "results_csv"),
                    "Folder of the published per-tool results.")
flags.DEFINE_string("out", None, "Our results CSV (resumable).")
flags.DEFINE_list("networks", [], "Only these networks (e.g. 256x2).")
flags.DEFINE_integer("limit", 0, "At most this many instances (0: all).")
flags.DEFINE_bool("run", True, "Run our verifier (else only tabulate --out).")
flags.DEFINE_bool("completed_only", False, "Tabulate only the instances our "
                  "results already hold (a partial run).")
flags.DEFINE_list("withdrawn", ["RPM"], "Published tools left out (the "
                  "organisers withdrew RPM's mnistfc results).")

OURS = "robust_prune"


def _run_ours():
  cmd = [sys.executable, "-m", "robust_prune.vnncomp_run",
         f"--instances={FLAGS.instances}", f"--out={FLAGS.out}",
         f"--result_dir={FLAGS.out}.d", f"--limit={FLAGS.limit}"]
  if FLAGS.networks:
    cmd.append(f"--networks={','.join(FLAGS.networks)}")
  env = dict(os.environ, JAX_PLATFORMS=os.environ.get("JAX_PLATFORMS", "cpu"))
  t0 = time.monotonic()
  proc = subprocess.run(cmd, cwd=_REPO, env=env, capture_output=True,
                        text=True, check=False)
  wall = time.monotonic() - t0
  sys.stderr.write(proc.stderr[-4000:])
  if proc.returncode != 0:
    raise SystemExit(f"vnncomp_run failed ({proc.returncode})")
  startup = re.search(r"start-up ([\d.]+) s", proc.stdout)
  for line in re.findall(r"^warm-up .*$", proc.stdout, re.M):
    print(line, "(compile, before the network's first timeout)")
  return wall, float(startup.group(1)) if startup else None


def _selected_instances():
  instances = [i for i in results_lib.read_instances(FLAGS.instances)
               if not FLAGS.networks
               or any(n in i.onnx for n in FLAGS.networks)]
  return instances[:FLAGS.limit] if FLAGS.limit > 0 else instances


def _check_files(instances):
  """One line before any run if an instance's file is missing: the runner
  would record each such instance as `error` (VNN-COMP's rule for an
  unreadable instance), a wasted measurement here."""
  missing = [path for i in instances
             for path in (i.onnx_path, i.vnnlib_path)
             if not os.path.isfile(path)]
  if missing:
    raise SystemExit(f"{FLAGS.instances}: {len(missing)} instance files not "
                     f"found, e.g. {missing[0]} (paths are read relative to "
                     f"the CSV's folder)")


def _tool_rows(path, seconds_of):
  """{instance key: (verdict, seconds)} of one results CSV."""
  rows = {}
  for r in results_lib.read_results(path):
    rows[results_lib.instance_key(r[1], r[2])] = (results_lib.normalise(r[4]),
                                                  seconds_of(r))
  return rows


def load_tools(keys):
  tools = {}
  ours = _tool_rows(FLAGS.out, lambda r: float(r[3]) + float(r[5]))
  tools[OURS] = {k: v for k, v in ours.items() if k in keys}
  for name in sorted(os.listdir(FLAGS.published)):
    tool = name.removesuffix(".csv")
    if name.endswith(".csv") and tool not in FLAGS.withdrawn:
      rows = _tool_rows(os.path.join(FLAGS.published, name),
                        lambda r: float(r[5]))
      tools[tool] = {k: v for k, v in rows.items() if k in keys}
  return tools


def _group(key):
  """(network, epsilon) of an instance key."""
  eps = re.search(r"_([\d.]+)\.vnnlib$", key[1])
  return key[0].removesuffix(".onnx"), eps.group(1) if eps else "?"


def print_tables(tools, keys, startup):
  groups = sorted({_group(k) for k in keys})
  head = (f"{'tool':<14}{'n':>4}{'SAT':>5}{'UNSAT':>6}{'other':>6}"
          f"{'med s':>8}{'med solved s':>13}{'start-up s':>11}  "
          + "  ".join(f"{n.split('_')[-1]}/{e}" for n, e in groups))
  print(head)
  for tool, rows in tools.items():
    verdicts = collections.Counter(v for v, _ in rows.values())
    solved = [s for v, s in rows.values() if v in ("sat", "unsat")]
    seconds = [s for _, s in rows.values()]
    per = []
    for g in groups:
      members = [k for k in keys if _group(k) == g and k in rows]
      per.append(f"{sum(rows[k][0] in ('sat', 'unsat') for k in members)}/"
                 f"{len(members)}")
    start = (startup if tool == OURS else min(seconds, default=float("nan")))
    print(f"{tool:<14}{len(rows):>4}{verdicts['sat']:>5}{verdicts['unsat']:>6}"
          f"{len(rows) - len(solved):>6}"
          f"{statistics.median(seconds) if seconds else float('nan'):>8.1f}"
          f"{statistics.median(solved) if solved else float('nan'):>13.1f}"
          f"{start if start is not None else float('nan'):>11.1f}  "
          + "  ".join(f"{p:>{len(n.split('_')[-1]) + len(e) + 1}}"
                      for p, (n, e) in zip(per, groups)))


def contradictions(tools, keys):
  """[(key, {verdict: [tools]})] where one tool says sat and another unsat."""
  found = []
  for k in keys:
    by = collections.defaultdict(list)
    for tool, rows in tools.items():
      if k in rows and rows[k][0] in ("sat", "unsat"):
        by[rows[k][0]].append(tool)
    if len(by) > 1:
      found.append((k, dict(by)))
  return found


def _ort_outputs(onnx_path, x):
  import numpy as np  # pylint: disable=g-import-not-at-top
  import onnxruntime as ort  # pylint: disable=g-import-not-at-top
  session = ort.InferenceSession(onnx_path, providers=["CPUExecutionProvider"])
  spec = session.get_inputs()[0]
  shape = [d if isinstance(d, int) and d > 0 else 1 for d in spec.shape]
  y = session.run(None, {spec.name: np.asarray(x, np.float32).reshape(shape)})
  return np.asarray(y[0], np.float64).reshape(-1)


def check_counterexamples(tools, keys, instances, tolerance=1e-4):
  """{key: True/False}: whether each of our sat answers' counterexample,
  run through onnxruntime (float32, as the competition checked them),
  satisfies a disjunct of its property up to `tolerance` (`instances`:
  {key: Instance}, where its files are)."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  checked = {}
  for k in keys:
    if tools[OURS].get(k, ("",))[0] != "sat":
      continue
    name = f"{os.path.splitext(k[0])[0]}__{os.path.splitext(k[1])[0]}.txt"
    try:
      with open(os.path.join(f"{FLAGS.out}.d", name), encoding="utf-8") as f:
        x, _ = results_lib.read_counterexample(f.read())
    except OSError:
      checked[k] = False
      continue
    y = _ort_outputs(instances[k].onnx_path, x)
    prop = vnnlib.parse_vnnlib(instances[k].vnnlib_path)
    checked[k] = any(
        np.all(x >= d.lower - tolerance) and np.all(x <= d.upper + tolerance)
        and np.all(d.coeffs @ y + d.consts >= -tolerance)
        for d in prop.disjuncts)
  return checked


def main(argv):
  del argv
  if not FLAGS.out:
    raise SystemExit("--out is required")
  instances = {results_lib.instance_key(i.onnx, i.vnnlib): i
               for i in _selected_instances()}
  wall = startup = None
  if FLAGS.run:
    _check_files(instances.values())
    wall, startup = _run_ours()
  keys = list(instances)
  if FLAGS.completed_only:
    done = _tool_rows(FLAGS.out, lambda r: 0.0)
    keys = [k for k in keys if k in done]
  tools = load_tools(keys)
  print(f"instances: {len(keys)} ({FLAGS.instances}); ours: {FLAGS.out}"
        + (f"; runner wall {wall:.0f} s" if wall is not None else ""))
  print("start-up: ours = runner process start and imports (this run); "
        "published = the tool's smallest run time (the competition's "
        "overhead convention)")
  print_tables(tools, keys, startup)
  ours = tools[OURS]
  late = [k for k in keys if k in ours and ours[k][1] > instances[k].timeout]
  print(f"ours past the timeout: {len(late)} {late}")
  checked = check_counterexamples(tools, keys, instances)
  print(f"our counterexamples confirmed by onnxruntime (float32, tolerance "
        f"1e-4): {sum(checked.values())} of {len(checked)}")
  found = contradictions(tools, keys)
  print(f"contradictions between any two tools: {len(found)}")
  for k, by in found:
    our_verdict = next((v for v, t in by.items() if OURS in t), None)
    note = ""
    if our_verdict == "sat":
      note = (" (our counterexample is confirmed by onnxruntime: the unsat "
              "answers are wrong)" if checked.get(k) else
              " (our counterexample is NOT confirmed)")
    print(f"  {k[0]} {k[1]}: " + "; ".join(f"{v}: {', '.join(t)}"
                                           for v, t in sorted(by.items()))
          + note)
  against = [k for k, by in found if any(OURS in t for t in by.values())
             and not (checked.get(k) and OURS in by.get("sat", []))]
  print(f"contradictions against our verdict not settled by a confirmed "
        f"counterexample of ours: {len(against)}")
  nobody = [k for k in keys if not any(
      rows.get(k, ("",))[0] in ("sat", "unsat") for t, rows in tools.items()
      if t != OURS)]
  print(f"solved by no published tool: {len(nobody)}; of those ours solved "
        f"{sum(ours.get(k, ('',))[0] in ('sat', 'unsat') for k in nobody)}")


if __name__ == "__main__":
  app.run(main)
