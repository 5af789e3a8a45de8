r"""The branch and bound's batch size, proof engine and own cuts on this
machine's JAX platform (CPU or a GPU): certify-mode time and domains per
second, one process.

  python launch/bench/bench_bab_batch.py --network=runs/paper/original/network.npz \
      --delta=0.1 --batch_sizes=512,4096,16384 --proofs=numpy,xla \
      --probe_images=22 --num_images=100 --wall_limit=480 --out=out/bab_batch.jsonl

It certifies the probe images (all targets, --probe_time_limit seconds per
image) once per setting (every batch size x proof engine x own-cut count),
then, with the setting that took least time (ties within 5% go to the first
listed), images --first_image.. under --image_time_limit until --num_images
are done or --wall_limit would be passed. Each image's record (with the
proven bound of each target left open) goes to --out as it ends; the
figures print last. JAX picks the platform as usual (JAX_PLATFORMS=cpu
forces the CPU).

A machine without MNIST or tensorflow-datasets (a lent GPU, say) reads the
images from a file written here first:

  python launch/bench/bench_bab_batch.py --network=... --export_images=images.npz
  python launch/bench/bench_bab_batch.py --network=... --images_npz=images.npz ...
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import os
import sys
import time

from absl import app
from absl import flags
import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, ROOT)

FLAGS = flags.FLAGS
flags.DEFINE_string("network", None, "network.npz to certify", required=True)
flags.DEFINE_float("delta", 0.1, "L-inf radius")
flags.DEFINE_list("batch_sizes", ["512", "4096"], "branch and bound batches")
flags.DEFINE_list("proofs", ["auto"], "--bab_proofs values (auto, numpy, xla)")
flags.DEFINE_list("own_cuts", ["0"], "--bab_own_cuts values")
flags.DEFINE_list("probe_images", ["22"], "test indices timed per setting")
flags.DEFINE_float("probe_time_limit", 20.0, "seconds per probe image")
flags.DEFINE_integer("num_images", 0, "then certify this many images with "
                     "the fastest batch size (0: probe only)")
flags.DEFINE_integer("first_image", 0, "first test index of that run")
flags.DEFINE_float("image_time_limit", 60.0, "seconds per image of that run")
flags.DEFINE_float("wall_limit", 0.0, "no image is started that could end "
                   "past this many seconds from the start (0: none)")
flags.DEFINE_float("pool_gib", 2.0, "--bab_pool_gib of every search")
flags.DEFINE_string("images_npz", None, "read the test images from this file "
                    "(--export_images) instead of MNIST")
flags.DEFINE_string("export_images", None, "write the first 100 test images "
                    "and labels here, and stop")
flags.DEFINE_string("out", "out/bab_batch.jsonl", "one record per image")


def _images():
  if FLAGS.images_npz:
    with np.load(FLAGS.images_npz) as f:
      return np.asarray(f["images"], np.float64), np.asarray(f["labels"], int)
  from robust_prune import data  # pylint: disable=g-import-not-at-top
  test = data.load_split("test", os.environ.get("MNIST_MANUAL_DIR"))
  return test.images, np.asarray(test.labels, int)  # flat, in [0, 1]


def _certify(network, images, labels, index, config, tag, log):
  from robust_prune.verify import cascade  # pylint: disable=g-import-not-at-top
  t0 = time.perf_counter()
  verdicts = cascade.verify_image(network, images[index], labels[index],
                                  index, None, config)
  seconds = time.perf_counter() - t0
  still_open = [v for v in verdicts if v.status in ("timeout", "error")]
  record = {"tag": tag, "image": index, "seconds": seconds,
            "batch_size": config.bab_batch_size, "proofs": config.bab_proofs,
            "own_cuts": config.bab_own_cuts,
            "domains": sum(v.bab_domains or 0 for v in verdicts),
            "open": [v.target for v in still_open],
            "open_bounds": [v.best_bound for v in still_open],
            "statuses": {v.target: v.status for v in verdicts},
            "decided_by": {v.target: v.decided_by for v in verdicts}}
  log.write(json.dumps(record) + "\n")
  log.flush()
  bounds = ", ".join(f"{b:.2f}" for b in record["open_bounds"]
                    if b is not None)
  print(f"{tag} image {index}: {seconds:.1f} s, open {record['open']} "
        f"[{bounds}], "
        f"{record['domains']} domains "
        f"({record['domains'] / max(seconds, 1e-9):.0f}/s)", flush=True)
  return record


def main(argv):
  del argv
  start = time.perf_counter()
  images, labels = _images()
  if FLAGS.export_images:
    np.savez_compressed(FLAGS.export_images, images=images[:100],
                        labels=labels[:100])
    print(f"wrote {FLAGS.export_images}")
    return
  import jax  # pylint: disable=g-import-not-at-top
  from robust_prune import network as network_lib  # pylint: disable=g-import-not-at-top
  from robust_prune.verify import cascade  # pylint: disable=g-import-not-at-top
  from robust_prune.verify.config import VerifyConfig  # pylint: disable=g-import-not-at-top
  print(f"jax {jax.__version__} on {jax.devices()}", flush=True)
  network = network_lib.load_mnist_network(FLAGS.network)
  os.makedirs(os.path.dirname(os.path.abspath(FLAGS.out)), exist_ok=True)
  log = open(FLAGS.out, "a", encoding="utf-8")
  base = VerifyConfig(delta=FLAGS.delta, mode="certify",
                      image_time_limit=FLAGS.image_time_limit,
                      bab_pool_gib=FLAGS.pool_gib)
  probes, best = [], None
  for size, proofs, own in itertools.product(
      (int(b) for b in FLAGS.batch_sizes), FLAGS.proofs,
      (int(k) for k in FLAGS.own_cuts)):
    setting = dict(bab_batch_size=size, bab_proofs=proofs, bab_own_cuts=own)
    name = f"{size}/{proofs}/{own}"
    config = dataclasses.replace(base, **setting,
                                 image_time_limit=FLAGS.probe_time_limit)
    warm = cascade.warm_up(network, images[0], config)
    records = [_certify(network, images, labels, int(i), config,
                        f"probe{name}", log) for i in FLAGS.probe_images]
    seconds = sum(r["seconds"] for r in records)
    domains = sum(r["domains"] for r in records)
    probes.append((name, warm, seconds, domains,
                   sum(len(r["open"]) for r in records)))
    if best is None or seconds < 0.95 * best[2]:
      best = (name, setting, seconds)
  run = []
  if FLAGS.num_images:
    config = dataclasses.replace(base, **best[1])
    cascade.warm_up(network, images[0], config)
    last = min(FLAGS.first_image + FLAGS.num_images, len(labels))
    for index in range(FLAGS.first_image, last):
      elapsed = time.perf_counter() - start
      if FLAGS.wall_limit and elapsed + FLAGS.image_time_limit > FLAGS.wall_limit:
        break
      run.append(_certify(network, images, labels, index, config,
                          f"run{best[0]}", log))
  print(f"\nprobe images {','.join(FLAGS.probe_images)} at delta "
        f"{FLAGS.delta}, {FLAGS.probe_time_limit:g} s each:")
  print(f"{'batch/proofs/own cuts':>22} {'warm-up s':>10} {'seconds':>8} "
        f"{'domains':>9} {'domains/s':>10} {'open':>5}")
  for name, warm, seconds, domains, still_open in probes:
    print(f"{name:>22} {warm:>10.1f} {seconds:>8.1f} {domains:>9} "
          f"{domains / max(seconds, 1e-9):>10.0f} {still_open:>5}")
  if run:
    seconds = [r["seconds"] for r in run]
    pairs = sum(len(r["statuses"]) for r in run)
    still_open = sum(len(r["open"]) for r in run)
    decided = sum(not r["open"] for r in run)
    print(f"\n{best[0]} (batch/proofs/own cuts), images "
          f"{run[0]['image']}..{run[-1]['image']} ({len(run)}), "
          f"{FLAGS.image_time_limit:g} s each: "
          f"{pairs - still_open}/{pairs} pairs decided, {decided} images "
          f"fully decided, median image {np.median(seconds):.1f} s, "
          f"{sum(seconds):.0f} s in all")


if __name__ == "__main__":
  app.run(main)
