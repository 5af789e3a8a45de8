"""The evaluate binary: output, resume after a kill, bad input."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from robust_prune import evaluate
from robust_prune.milp import verify
from robust_prune.network import Network, save_network, forward

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REQUIRED = ("image_index", "label", "target", "delta", "status", "objective",
            "best_bound", "build_seconds", "solve_seconds", "num_binaries",
            "solver", "bounds")


def small_network(seed=0, hidden=(12, 12)):
  rng = np.random.default_rng(seed)
  sizes = (784,) + tuple(hidden) + (10,)
  return Network(
      tuple((rng.normal(size=(a, b)) / np.sqrt(a) * 3).astype(np.float32)
            for a, b in zip(sizes[:-1], sizes[1:])),
      tuple((0.1 * rng.normal(size=b)).astype(np.float32) for b in sizes[1:]))


@pytest.fixture(scope="module")
def network_path(tmp_path_factory):
  path = str(tmp_path_factory.mktemp("net") / "network.npz")
  save_network(small_network(), path)
  return path


def run_binary(*args, timeout=240):
  return subprocess.run(
      [sys.executable, "-m", "robust_prune.evaluate", *args],
      cwd=REPO, capture_output=True, text=True, timeout=timeout,
      env=dict(os.environ, JAX_PLATFORMS="cpu"))


def test_binary_writes_one_line_per_pair(network_path, tmp_path, mnist_test):
  out = str(tmp_path / "r.jsonl")
  proc = run_binary(f"--network={network_path}", f"--out={out}",
                    "--delta=0.02", "--num_images=3", "--first_image=5",
                    "--workers=2", "--time_limit=20")
  assert proc.returncode == 0, proc.stderr[-2000:]
  records = evaluate.read_results(out)
  assert len(records) == 27
  assert {evaluate.pair_key(r) for r in records} == {
      (i, t) for i in range(5, 8) for t in range(10)
      if t != mnist_test.labels[i]}
  net = small_network()
  for r in records:
    assert all(k in r for k in REQUIRED), r.keys()
    assert r["status"] in verify.STATUSES
    assert r["label"] == mnist_test.labels[r["image_index"]]
    if r["status"] == "adversarial":
      assert len(r["x_adv"]) == 784
      ok, _, _ = verify.check_witness(net, r["x_adv"],
                                      mnist_test.images[r["image_index"]],
                                      0.02, r["label"], r["target"])
      assert ok
    else:
      assert "x_adv" not in r
  # a rerun finds nothing to do and changes nothing
  before = open(out).read()
  proc = run_binary(f"--network={network_path}", f"--out={out}",
                    "--delta=0.02", "--num_images=3", "--first_image=5",
                    "--workers=1")
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert open(out).read() == before


def test_resume_after_kill_loses_and_repeats_nothing(network_path, tmp_path):
  out = str(tmp_path / "r.jsonl")
  args = [f"--network={network_path}", f"--out={out}", "--delta=0.05",
          "--num_images=12", "--workers=1", "--pgd_steps=0"]
  proc = subprocess.Popen(
      [sys.executable, "-m", "robust_prune.evaluate", *args], cwd=REPO,
      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
      env=dict(os.environ, JAX_PLATFORMS="cpu"))
  deadline = time.time() + 180
  while time.time() < deadline and proc.poll() is None:
    if os.path.exists(out) and open(out).read().count("\n") >= 9:
      break
    time.sleep(0.02)
  assert proc.poll() is None, "finished before it could be killed"
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  partial = evaluate.read_results(out)
  assert 9 <= len(partial) < 12 * 9
  # simulate a kill in the middle of a write as well
  with open(out, "a") as f:
    f.write('{"image_index": 11, "target": 3, "sta')
  proc = run_binary(*args)
  assert proc.returncode == 0, proc.stderr[-2000:]
  final = evaluate.read_results(out)
  keys = [evaluate.pair_key(r) for r in final]
  assert len(keys) == len(set(keys)) == 12 * 9
  assert final[:len(partial)] == partial  # old lines kept verbatim
  assert open(out).read().endswith("\n")


def test_library_resume_and_reader(tmp_path, mnist_test):
  net = small_network(1, hidden=(8, 8))
  out = str(tmp_path / "lib.jsonl")
  idx = [0, 1]
  first = evaluate.verify_images(net, mnist_test.images[idx],
                                 mnist_test.labels[idx], idx, 0.02,
                                 out_path=out, workers=1)
  assert len(first) == 18
  again = evaluate.verify_images(net, mnist_test.images[[0, 1, 2]],
                                 mnist_test.labels[[0, 1, 2]], [0, 1, 2], 0.02,
                                 out_path=out, workers=1)
  assert len(again) == 27 and len(evaluate.read_results(out)) == 27
  with pytest.raises(evaluate.EvaluateError, match="delta"):
    evaluate.verify_images(net, mnist_test.images[idx], mnist_test.labels[idx],
                           idx, 0.03, out_path=out, workers=1)


def test_work_units_skip_done_pairs():
  units = evaluate.plan_work_units([3, 7], [10, 11], {(10, 0), (10, 1)})
  assert units[0] == evaluate.WorkUnit(10, 3, (2, 4, 5, 6, 7, 8, 9))
  assert units[1].targets == (0, 1, 2, 3, 4, 5, 6, 8, 9)
  assert evaluate.plan_work_units([3], [10], {(10, t) for t in range(10)}) == []


@pytest.mark.parametrize("args,message", [
    (["--network=/nonexistent/network.npz"], "network file not found"),
    (["--delta=-0.1"], "--delta must be"),
    (["--first_image=9998", "--num_images=5"], "out of range"),
    (["--solver=GUROBI"], "installed solvers: "),
    (["--time_limit=0"], "--time_limit must be"),
    (["--bab_time_limit=-1"], "--bab_time_limit must be"),
])
def test_bad_input_is_one_clear_line(network_path, tmp_path, args, message):
  base = {"--network": network_path, "--out": str(tmp_path / "r.jsonl"),
          "--delta": "0.05", "--num_images": "1"}
  for a in args:
    base[a.split("=")[0]] = a.split("=", 1)[1]
  proc = run_binary(*(f"{k}={v}" for k, v in base.items()))
  assert proc.returncode != 0
  assert "Traceback" not in proc.stderr
  error_lines = [l for l in proc.stderr.splitlines() if "error" in l.lower()]
  assert len(error_lines) == 1 and message in error_lines[0], proc.stderr
  assert not os.path.exists(tmp_path / "r.jsonl")


def test_corrupt_network_file(tmp_path):
  bad = tmp_path / "bad.npz"
  bad.write_bytes(b"not a zip file")
  proc = run_binary(f"--network={bad}", f"--out={tmp_path / 'r.jsonl'}",
                    "--delta=0.05", "--num_images=1")
  assert proc.returncode != 0 and "Traceback" not in proc.stderr
  assert "cannot read network file" in proc.stderr


def test_time_limit_hit_is_recorded(tmp_path, mnist_test):
  net = small_network(2, hidden=(60, 60))
  out = str(tmp_path / "t.jsonl")
  records = evaluate.verify_images(
      net, mnist_test.images[[0]], mnist_test.labels[[0]], [0], 0.1,
      time_limit=0.01, out_path=out, workers=1, pgd_steps=0)
  assert len(records) == 9
  for r in records:
    assert r["optimal"] is False
    assert r["status"] in ("timeout", "adversarial", "robust", "misclassified")
  assert len(evaluate.read_results(out)) == 9
