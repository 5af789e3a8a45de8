r"""Certify-mode verification speed, this checkout against a pinned revision,
in one run (machines are shared and noisy, so the figure is a ratio).

  python launch/bench/bench_certify.py --network=runs/paper/original/network.npz \
      --deltas=0.1,0.05 --num_images=20 --image_time_limit=60 --out_dir=out/bench_certify

For every radius it runs `python -m robust_prune.evaluate --mode=certify` of
this checkout and of `--baseline_revision` (checked out with `git worktree`
into OUT_DIR, so nothing here changes) on the same images, one after the
other, and prints per code version: images/s, the decided fraction, the
per-pair and per-image time distributions, and how many pairs each step
decided. Results files are kept (and reused on a rerun: delete OUT_DIR to
measure again).
"""

from __future__ import annotations

import collections
import json
import os
import subprocess
import sys
import time

from absl import app
from absl import flags
import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

FLAGS = flags.FLAGS
flags.DEFINE_string("network", None, "network.npz to certify", required=True)
flags.DEFINE_list("deltas", ["0.1", "0.05"], "L-inf radii")
flags.DEFINE_integer("num_images", 20, "first test images")
flags.DEFINE_integer("workers", 2, "evaluate --workers")
flags.DEFINE_float("image_time_limit", 60.0, "this checkout: seconds per image "
                   "(all targets); 0 = the binary's default. The baseline "
                   "gets it only through --baseline_flags (the issue's "
                   "pinned revision predates the flag)")
flags.DEFINE_string("baseline_revision", "ef6d293", "git revision to compare "
                    "against ('' = none)")
flags.DEFINE_string("baseline_flags", "", "extra flags for the baseline, "
                    "space separated")
flags.DEFINE_string("current_flags", "", "extra flags for this checkout")
flags.DEFINE_string("out_dir", "out/bench_certify", "results and worktree")
flags.DEFINE_list("only", [], "run only these versions ('current', or the "
                  "baseline revision); the others' results are read if "
                  "present")


def _worktree(revision: str, out_dir: str) -> str:
  path = os.path.join(os.path.abspath(out_dir), f"tree_{revision}")
  if not os.path.isdir(path):
    subprocess.run(["git", "-C", ROOT, "worktree", "add", "--detach", "-f",
                    path, revision], check=True, capture_output=True)
  return path


def _run(tree: str, out: str, delta: str, extra: list[str]) -> float:
  cmd = [sys.executable, "-m", "robust_prune.evaluate",
         f"--network={os.path.abspath(FLAGS.network)}", f"--out={out}",
         f"--delta={delta}", f"--num_images={FLAGS.num_images}",
         "--mode=certify", f"--workers={FLAGS.workers}", *extra]
  env = dict(os.environ, PYTHONPATH=tree, JAX_PLATFORMS="cpu")
  t0 = time.perf_counter()
  subprocess.run(cmd, cwd=tree, env=env, check=True)
  return time.perf_counter() - t0


def _percentiles(values) -> str:
  if not values:
    return "n/a"
  p = np.percentile(values, [50, 90, 100])
  return f"median {p[0]:.1f} s, p90 {p[1]:.1f} s, max {p[2]:.1f} s"


def summarize(path: str, wall: float) -> dict:
  latest = {}
  with open(path, encoding="utf-8") as f:
    for line in f:
      if line.strip():
        r = json.loads(line)
        latest[(r["image_index"], r["target"])] = r
  records = list(latest.values())
  statuses = collections.Counter(r["status"] for r in records)
  decided = sum(statuses[s] for s in ("robust", "adversarial", "misclassified"))
  per_image = collections.defaultdict(float)
  for r in records:
    per_image[r["image_index"]] = max(per_image[r["image_index"]],
                                      r.get("image_seconds") or 0.0)
  undecided_images = {r["image_index"] for r in records
                      if r["status"] not in ("robust", "adversarial",
                                             "misclassified")}
  by_step = collections.defaultdict(list)
  for r in records:
    by_step[r.get("decided_by") or "-" if r["status"] in (
        "robust", "adversarial", "misclassified") else "undecided"].append(
            r.get("solve_seconds") or 0.0)
  # an image is "decided by" the last step it needed (crown < pgd < bab <
  # milp); one with an undecided pair is "undecided"
  order = {"-": 0, "crown": 1, "pgd": 2, "bab": 3, "milp": 4}
  image_step = {}
  for r in records:
    step = (r.get("decided_by") or "-") if r["status"] in (
        "robust", "adversarial", "misclassified") else "undecided"
    old = image_step.get(r["image_index"], "-")
    if old != "undecided" and (step == "undecided"
                               or order.get(step, 5) > order.get(old, 5)):
      image_step[r["image_index"]] = step
  images_by_step = collections.defaultdict(list)
  for image, step in image_step.items():
    images_by_step[step].append(per_image[image])
  return {
      "pairs": len(records), "images": len(per_image), "wall_s": wall,
      "images_per_s": len(per_image) / wall if wall else float("nan"),
      "decided_fraction": decided / max(len(records), 1),
      "statuses": dict(statuses),
      "decided_by": dict(collections.Counter(
          r.get("decided_by") or "-" for r in records)),
      "pair_seconds": _percentiles([r.get("solve_seconds") or 0.0
                                    for r in records]),
      "image_seconds": _percentiles(list(per_image.values())),
      "images_fully_decided": len(per_image) - len(undecided_images),
      "pair_seconds_by_step": {k: f"{len(v)} pairs, {_percentiles(v)}"
                               for k, v in sorted(by_step.items())},
      "image_seconds_by_last_step": {
          k: f"{len(v)} images, {_percentiles(v)}"
          for k, v in sorted(images_by_step.items())},
      "max_image_seconds": max(per_image.values(), default=0.0),
  }


def main(argv):
  del argv
  os.makedirs(FLAGS.out_dir, exist_ok=True)
  versions = [("current", ROOT, FLAGS.current_flags.split())]
  if FLAGS.image_time_limit > 0:
    versions[0][2].append(f"--image_time_limit={FLAGS.image_time_limit}")
  if FLAGS.baseline_revision:
    versions.append((FLAGS.baseline_revision,
                     _worktree(FLAGS.baseline_revision, FLAGS.out_dir),
                     FLAGS.baseline_flags.split()))
  report = {}
  for delta in FLAGS.deltas:
    for name, tree, extra in versions:
      out = os.path.abspath(os.path.join(FLAGS.out_dir,
                                         f"{name}_delta{delta}.jsonl"))
      timing = out + ".wall"
      if FLAGS.only and name not in FLAGS.only and not os.path.exists(
          timing):
        continue
      if os.path.exists(timing):
        with open(timing) as f:
          wall = float(f.read())
      else:
        wall = _run(tree, out, delta, extra)
        with open(timing, "w") as f:
          f.write(f"{wall}\n")
      report[f"{name} delta={delta}"] = summary = summarize(out, wall)
      print(f"\n== {name}, delta {delta}: {summary['images']} images, "
            f"{summary['pairs']} pairs, {wall:.0f} s wall")
      for key, value in summary.items():
        print(f"  {key}: {value}")
      if name == "current" and FLAGS.image_time_limit > 0:
        held = summary["max_image_seconds"] <= FLAGS.image_time_limit + 2
        print(f"  budget held (max image_seconds <= "
              f"{FLAGS.image_time_limit:g} + 2 s): {held}")
  with open(os.path.join(FLAGS.out_dir, "summary.json"), "w") as f:
    json.dump(report, f, indent=2)


if __name__ == "__main__":
  app.run(main)
