"""launch/bench/bench_bab_batch.py: the batch sizes and proof engines reach
the searches, which agree, and every image's record is written as it
ends."""

import json
import os
import subprocess
import sys

import numpy as np

from robust_prune.network import forward, save_network
from testing import random_network

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_the_bench_times_batch_sizes_on_images_from_a_file(tmp_path):
  network = random_network(3, [784, 12, 12, 10])
  rng = np.random.default_rng(0)
  images = rng.uniform(0.0, 1.0, (3, 784))
  labels = np.array([int(np.argmax(forward(network, x))) for x in images])
  save_network(network, tmp_path / "network.npz")
  np.savez(tmp_path / "images.npz", images=images, labels=labels)
  out = tmp_path / "records.jsonl"
  proc = subprocess.run(
      [sys.executable, os.path.join("launch", "bench", "bench_bab_batch.py"),
       f"--network={tmp_path / 'network.npz'}",
       f"--images_npz={tmp_path / 'images.npz'}", "--delta=0.05",
       "--batch_sizes=4,16", "--proofs=numpy,xla", "--probe_images=0,1",
       "--probe_time_limit=20",
       "--num_images=3", "--image_time_limit=20", f"--out={out}"],
      cwd=REPO, env=dict(os.environ, JAX_PLATFORMS="cpu"),
      capture_output=True, text=True, timeout=600, check=False)
  assert proc.returncode == 0, proc.stderr[-3000:]
  records = [json.loads(line) for line in out.read_text().splitlines()]
  probes = {(r["batch_size"], r["proofs"], r["image"]): r for r in records
            if r["tag"].startswith("probe")}
  assert sorted(probes) == [(b, p, i) for b in (4, 16)
                            for p in ("numpy", "xla") for i in (0, 1)]
  # image 0 branches past several batches of 4 (~200 domains), by the same
  # splits whichever engine proves
  assert probes[4, "numpy", 0]["domains"] > 16
  assert probes[4, "xla", 0]["domains"] == probes[4, "numpy", 0]["domains"]
  for image in (0, 1):
    assert len({str(probes[b, p, image]["statuses"]) for b in (4, 16)
                for p in ("numpy", "xla")}) == 1
  run = [r for r in records if r["tag"].startswith("run")]
  assert [r["image"] for r in run] == [0, 1, 2]
  assert all(len(r["statuses"]) == 9 for r in run)
  assert all(set(r["statuses"].values()) <= {"robust", "adversarial"}
             for r in run)
  assert "batch/proofs/own cuts" in proc.stdout
  assert "pairs decided" in proc.stdout
