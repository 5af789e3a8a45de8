"""The evaluate binary: output, resume after a kill, bad input."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from robust_prune import data as data_lib
from robust_prune import evaluate
from robust_prune import train as train_lib
from robust_prune.network import (Network, forward, load_network,
                                  network_digest, save_network)
from robust_prune.verify import cascade as verify
from testing import terminal_sigint

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REQUIRED = ("image_index", "label", "target", "delta", "status", "objective",
            "best_bound", "build_seconds", "solve_seconds", "num_binaries",
            "solver", "bounds", "network_sha256")


def small_network(seed=0, hidden=(12, 12)):
  """Random weights: wrong on most images (for shape and error paths)."""
  rng = np.random.default_rng(seed)
  sizes = (784,) + tuple(hidden) + (10,)
  return Network(
      tuple((rng.normal(size=(a, b)) / np.sqrt(a) * 3).astype(np.float32)
            for a, b in zip(sizes[:-1], sizes[1:])),
      tuple((0.1 * rng.normal(size=b)).astype(np.float32) for b in sizes[1:]))


def _train(workdir, hidden, mnist_train, mnist_test):
  config = train_lib.TrainConfig(
      hidden=hidden, epochs=2, batch_size=32, learning_rate=3e-3, epsilon=0.0,
      max_train_examples=3000, eval_pgd_steps=2, eval_pgd_examples=100)
  train_lib.train_and_evaluate(
      config, workdir, train=mnist_train,
      test=data_lib.Split(mnist_test.images[:200], mnist_test.labels[:200]))
  return os.path.join(workdir, train_lib.NETWORK)


@pytest.fixture(scope="module")
def network_path(tmp_path_factory, mnist_train, mnist_test):
  """A briefly trained 16-16 net: right on most test images, so the bounds,
  the branch and bound and the MILP really run."""
  return _train(str(tmp_path_factory.mktemp("net")), (16, 16), mnist_train,
                mnist_test)


@pytest.fixture(scope="module")
def wide_network(tmp_path_factory, mnist_train, mnist_test):
  return load_network(_train(str(tmp_path_factory.mktemp("wide")), (48, 48),
                             mnist_train, mnist_test))


def verified(records):
  """Records of pairs that were really verified (image classified right)."""
  return [r for r in records if r["status"] != "misclassified"]


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
  net = load_network(network_path)
  assert len(verified(records)) >= 18  # most images really verified
  for r in records:
    assert all(k in r for k in REQUIRED), r.keys()
    assert r["network_sha256"] == network_digest(net)
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


def test_library_resume_and_reader(tmp_path, mnist_test, network_path):
  net = load_network(network_path)
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
  assert verified(again)
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
    (["--out=DIR"], "is a directory"),
    (["--out=DIR/file/r.jsonl"], "cannot write --out"),  # a file as folder
    # issue 17: out-of-range and non-finite options, before any work
    (["--delta=2"], "--delta must be a number in (0, 1]"),
    (["--delta=nan"], "--delta must be"),
    (["--delta=0"], "--delta must be"),
    (["--time_limit=inf"], "--time_limit must be a finite"),
    (["--bab_time_limit=nan"], "--bab_time_limit must be"),
    (["--workers=-1"], "--workers must be >= 1"),
    (["--pgd_steps=-1"], "--pgd_steps must be >= 0"),
    (["--bab_intermediate=lp"], "--bab_intermediate"),
    (["--bab_cut_rounds=-1"], "--bab_cut_rounds must be >= 0"),
    (["--bab_root_cut_rounds=-1"], "--bab_root_cut_rounds must be >= 0"),
    (["--refine_seconds=nan"], "--refine_seconds must be a finite"),
    (["--refine_rounds=-1"], "--refine_rounds must be >= 0"),
    (["--bab_final_proof=-1"], "--bab_final_proof must be a finite"),
    (["--bab_batch_size=0"], "--bab_batch_size must be >= 1"),
    (["--bab_pool_gib=0"], "--bab_pool_gib must be a finite"),
    (["--bab_proofs=gpu"], "--bab_proofs"),
])
def test_bad_input_is_one_clear_line(network_path, tmp_path, args, message):
  base = {"--network": network_path, "--out": str(tmp_path / "r.jsonl"),
          "--delta": "0.05", "--num_images": "1"}
  (tmp_path / "file").write_text("")
  for a in args:
    base[a.split("=")[0]] = a.split("=", 1)[1].replace("DIR", str(tmp_path))
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


def test_wrong_input_size_and_missing_mnist_are_one_clear_line(tmp_path):
  odd = str(tmp_path / "odd.npz")
  save_network(Network((np.ones((20, 10), np.float32),),
                       (np.zeros(10, np.float32),)), odd)
  proc = run_binary(f"--network={odd}", f"--out={tmp_path / 'r.jsonl'}",
                    "--delta=0.05", "--num_images=1")
  assert proc.returncode != 0 and "Traceback" not in proc.stderr
  assert proc.returncode == 2
  assert "maps 20 inputs to 10 logits" in proc.stderr
  empty = tmp_path / "empty"
  empty.mkdir()
  proc = subprocess.run(
      [sys.executable, "-m", "robust_prune.evaluate", f"--network={odd}",
       f"--out={tmp_path / 'r.jsonl'}", "--delta=0.05", "--num_images=1",
       f"--mnist_manual_dir={empty}"],
      cwd=REPO, capture_output=True, text=True, timeout=240,
      env=dict(os.environ, JAX_PLATFORMS="cpu",
               ROBUST_PRUNE_CACHE=str(tmp_path / "cache")))
  assert proc.returncode != 0 and "Traceback" not in proc.stderr
  assert "t10k-images-idx3-ubyte.gz" in proc.stderr and str(empty) in \
      proc.stderr, proc.stderr[-2000:]
  assert not os.path.exists(tmp_path / "r.jsonl")


def test_time_limit_hit_is_recorded(tmp_path, mnist_test, wide_network):
  out = str(tmp_path / "t.jsonl")
  records = evaluate.verify_images(
      wide_network, mnist_test.images[[0]], mnist_test.labels[[0]], [0], 0.1,
      time_limit=0.01, out_path=out, workers=1, pgd_steps=0,
      bab_time_limit=0)
  assert len(records) == 9
  assert any(r["status"] == "timeout" for r in records), records
  for r in records:
    assert r["optimal"] is False
    assert r["status"] in ("timeout", "adversarial", "robust")
  assert len(evaluate.read_results(out)) == 9


def test_intermediate_bound_choices_agree_on_every_decided_pair(
    tmp_path, mnist_test, wide_network):
  """Every choice of intermediate bounds is sound, so a pair decided under
  several has one verdict; the alpha (refined) bounds reach the branch and
  bound (no MILP)."""
  idx = [0, 1]
  runs = {}
  for choice, cut_rounds, root_rounds in (
      ("crown", 1, 4), ("alpha", 1, 4), ("refine", 1, 4), ("no cuts", 0, 0),
      ("one root round", 1, 0)):
    records = evaluate.verify_images(
        wide_network, mnist_test.images[idx], mnist_test.labels[idx], idx,
        0.1, mode="certify", workers=1, pgd_steps=0, bab_time_limit=10.0,
        time_limit=0.01, bab_cut_rounds=cut_rounds,
        bab_root_cut_rounds=root_rounds,
        bab_intermediate=choice if root_rounds else "alpha")
    runs[choice] = {(r["image_index"], r["target"]): r for r in records}
  both = [k for k in runs["crown"]
          if runs["crown"][k]["status"] in ("robust", "adversarial")
          and runs["alpha"][k]["status"] in ("robust", "adversarial")]
  assert both
  for k in both:
    assert runs["crown"][k]["status"] == runs["alpha"][k]["status"], k
  for other in ("refine", "no cuts", "one root round"):
    for k, r in runs[other].items():
      if r["status"] in ("robust", "adversarial") and runs["crown"][k][
          "status"] in ("robust", "adversarial"):
        assert r["status"] == runs["crown"][k]["status"], (other, k)


def test_error_records_are_retried_and_replaced(tmp_path, mnist_test,
                                                network_path):
  net = load_network(network_path)
  out = str(tmp_path / "e.jsonl")
  idx = [0]
  first = evaluate.verify_images(net, mnist_test.images[idx],
                                 mnist_test.labels[idx], idx, 0.02,
                                 out_path=out, workers=1)
  assert verified(first)
  failed = dict(first[0], status="error", message="solver crashed")
  with open(out, "a") as f:  # as if a rerun had crashed on this pair
    f.write(json.dumps(failed) + "\n")
  assert evaluate.read_results(out)[0]["status"] == "error"
  again = evaluate.verify_images(net, mnist_test.images[idx],
                                 mnist_test.labels[idx], idx, 0.02,
                                 out_path=out, workers=1)
  assert len(again) == 9 and again[0]["status"] == first[0]["status"]
  assert [r["status"] for r in evaluate.read_results(out)] == [
      r["status"] for r in first]
  assert open(out).read().count("\n") == 11  # nothing written is lost


def test_results_of_another_network_are_refused(tmp_path, mnist_test,
                                                network_path):
  out = str(tmp_path / "n.jsonl")
  idx = [0]
  evaluate.verify_images(load_network(network_path), mnist_test.images[idx],
                         mnist_test.labels[idx], idx, 0.02, out_path=out,
                         workers=1)
  with pytest.raises(evaluate.EvaluateError, match="another network"):
    evaluate.verify_images(small_network(), mnist_test.images[idx],
                           mnist_test.labels[idx], idx, 0.02, out_path=out,
                           workers=1)


@pytest.mark.parametrize("images,labels,message", [
    ((3, 784), 1, "labels for 3 indices"),
    ((3, 783), 3, "do not match 3 indices of 784-pixel"),
    ((2, 784), 3, "do not match 3 indices"),
])
def test_mismatched_inputs_are_refused(tmp_path, images, labels, message):
  with pytest.raises(evaluate.EvaluateError, match=message):
    evaluate.verify_images(small_network(), np.zeros(images, np.float32),
                           np.zeros(labels, np.int64), [0, 1, 2], 0.02,
                           out_path=str(tmp_path / "x.jsonl"), workers=1)
  assert not os.path.exists(tmp_path / "x.jsonl")


@pytest.mark.parametrize("line", [
    '[1, 2]', '{"image_index": 0}', '{"image_index": 0, "target": 1',
    '{"image_index": 0, "target": 1, "status": ["robust"], "delta": 0.05}',
    '{"image_index": 0, "target": 1, "status": "robust", "delta": null}',
    '{"image_index": 0, "target": 1, "status": "robust", "delta": "0.05x"}',
    '{"image_index": 0, "target": 1, "status": "robust", "delta": 0.05, '
    '"mode": 3}',
    '{"image_index": 0, "target": 1, "status": "robust", "delta": NaN}',
    '{"image_index": Infinity, "target": 1, "status": "robust", '
    '"delta": 0.05}'])
def test_damaged_results_file_is_one_clear_line(network_path, tmp_path,
                                                line):
  out = tmp_path / "r.jsonl"
  out.write_text(line + "\n")
  proc = run_binary(f"--network={network_path}", f"--out={out}",
                    "--delta=0.05", "--num_images=1")
  assert proc.returncode != 0
  assert "Traceback" not in proc.stderr, proc.stderr[-2000:]
  assert f"{out}:1: not a result record" in proc.stderr
  assert out.read_text() == line + "\n"


# ------------------------------------------------------------------ issue 17
# A line as evaluate wrote it before the Verdict type.
OLD_LINE = json.dumps({
    "image_index": 0, "label": 7, "target": 0, "delta": 0.02,
    "mode": "targeted", "status": "robust", "objective": 0.5,
    "best_bound": 0.5, "optimal": True, "build_seconds": 0.0,
    "bounds_seconds": 0.01, "solve_seconds": 3.0, "num_binaries": 0,
    "solver": "HIGHS", "bounds": "crown", "witness_margin": None})


def _verify_into(out):
  """Image 0 (all zeros) labelled as what the network does not predict:
  nine quick `misclassified` records."""
  net, image = small_network(), np.zeros((1, 784), np.float32)
  label = (int(np.argmax(forward(net, image[0]))) + 1) % 10
  return evaluate.verify_images(net, image, [label], [0], 0.02,
                                out_path=str(out), workers=1, pgd_steps=0,
                                bab_time_limit=0.0)


@pytest.mark.parametrize("content", [
    b'{\n  "config": {"delta": 0.05},\n  "total_seconds": 12.5\n}',  # pipeline.json
    b"PK\x03\x04\x14\x00\x00\x00\x08\x00binary\xffnpz data",          # an .npz
    b'{"image_index": 0, "target": 1, "status": "robust"}\n{"image_in',
    OLD_LINE.encode() + b"\nsome notes\n" + OLD_LINE[:30].encode(),
])
def test_a_file_that_is_not_results_is_never_written_to(tmp_path, content):
  out = tmp_path / "not_results"
  out.write_bytes(content)
  with pytest.raises(evaluate.EvaluateError, match="not a result record"):
    _verify_into(out)
  assert out.read_bytes() == content


def test_the_binary_leaves_a_file_that_is_not_results_as_it_was(
    network_path, tmp_path):
  out = tmp_path / "pipeline.json"
  content = '{\n  "config": {\n    "delta": 0.05\n  }\n}'   # no final newline
  out.write_text(content)
  proc = run_binary(f"--network={network_path}", f"--out={out}",
                    "--delta=0.05", "--num_images=1")
  assert proc.returncode == 2 and "Traceback" not in proc.stderr
  assert f"{out}:1: not a result record" in proc.stderr
  assert out.read_text() == content


def test_a_cut_off_line_of_a_results_file_is_dropped_and_redone(tmp_path):
  out = tmp_path / "r.jsonl"
  first = _verify_into(out)
  whole = out.read_bytes()
  out.write_bytes(whole[:-200])   # the last record cut off by a kill
  again = _verify_into(out)
  assert [dict(r, image_seconds=0) for r in again] == [
      dict(r, image_seconds=0) for r in first]
  assert again[:8] == first[:8]   # read back as written
  assert out.read_bytes().count(b"\n") == 9
  assert len(evaluate.read_results(str(out))) == 9


def _children(pid):
  """Every live descendant of `pid` (from /proc)."""
  parents = {}
  for entry in os.listdir("/proc"):
    if entry.isdigit():
      try:
        with open(f"/proc/{entry}/stat") as f:
          parent = int(f.read().rsplit(")", 1)[1].split()[1])
      except (OSError, IndexError, ValueError):
        continue
      parents.setdefault(parent, []).append(int(entry))
  found, todo = [], [pid]
  while todo:
    for child in parents.get(todo.pop(), []):
      found.append(child)
      todo.append(child)
  return found


def _alive(pid):
  try:
    with open(f"/proc/{pid}/stat") as f:
      return f.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
  except OSError:
    return False


def _cmdline(pid):
  try:
    with open(f"/proc/{pid}/cmdline", "rb") as f:
      return f.read().replace(b"\0", b" ").decode(errors="replace")
  except OSError:
    return ""


def _pool_workers(pid):
  return [p for p in _children(pid) if "spawn_main" in _cmdline(p)]


def _start_busy_run(network_path, out, workers=2, **popen):
  """An evaluate run with its workers up and its first image written."""
  args = [f"--network={network_path}", f"--out={out}", "--delta=0.1",
          "--num_images=40", f"--workers={workers}", "--mode=certify"]
  proc = subprocess.Popen(
      [sys.executable, "-m", "robust_prune.evaluate", *args], cwd=REPO,
      env=dict(os.environ, JAX_PLATFORMS="cpu"), **popen)
  deadline = time.time() + 180
  while time.time() < deadline and proc.poll() is None:
    if (os.path.exists(out) and open(out).read().count("\n") >= 9
        and len(_pool_workers(proc.pid)) >= (2 if workers > 1 else 0)):
      break
    time.sleep(0.05)
  assert proc.poll() is None, "finished before the test could act"
  return proc, args


def _reap(pids, seconds):
  """The pids still alive after `seconds`, then killed (no test leaks)."""
  deadline = time.time() + seconds
  while time.time() < deadline and any(_alive(p) for p in pids):
    time.sleep(0.1)
  left = [p for p in pids if _alive(p)]
  for p in left:
    os.kill(p, signal.SIGKILL)
  return left


def test_workers_die_with_a_killed_evaluate(network_path, tmp_path):
  out = str(tmp_path / "r.jsonl")
  proc, _ = _start_busy_run(network_path, out, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
  children = _children(proc.pid)
  assert len(_pool_workers(proc.pid)) == 2
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  # pool workers and the resource tracker, none left re-parented and blocked
  assert _reap(children, 10) == []
  assert len(evaluate.read_results(out)) >= 9


def test_ctrl_c_is_one_line_naming_the_signal(network_path, tmp_path):
  out = str(tmp_path / "r.jsonl")
  proc, _ = _start_busy_run(network_path, out, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True,
                            start_new_session=True,
                            preexec_fn=terminal_sigint)
  children = _children(proc.pid)
  os.killpg(proc.pid, signal.SIGINT)   # what Ctrl-C in a terminal does
  _, stderr = proc.communicate(timeout=120)
  assert _reap(children, 10) == []
  assert proc.returncode == 128 + signal.SIGINT, stderr[-2000:]
  assert "Traceback" not in stderr, stderr[-3000:]
  said = [l for l in stderr.splitlines() if "interrupted" in l]
  assert len(said) == 1 and "SIGINT" in said[0], stderr[-2000:]
  assert len(evaluate.read_results(out)) >= 9


def test_a_killed_worker_is_one_line_and_results_stay(network_path, tmp_path):
  out = str(tmp_path / "r.jsonl")
  proc, _ = _start_busy_run(network_path, out, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
  children = _children(proc.pid)
  os.kill(_pool_workers(proc.pid)[0], signal.SIGKILL)
  _, stderr = proc.communicate(timeout=120)
  assert _reap(children, 10) == []
  assert proc.returncode != 0
  assert "Traceback" not in stderr, stderr[-3000:]
  errors = [l for l in stderr.splitlines() if "error" in l.lower()]
  assert len(errors) == 1 and "worker process died" in errors[0], stderr[-2000:]
  written = evaluate.read_results(out)
  assert len(written) >= 9 and open(out).read().endswith("\n")


def test_a_second_run_on_one_out_is_refused(network_path, tmp_path):
  out = str(tmp_path / "r.jsonl")
  first, args = _start_busy_run(network_path, out, workers=1,
                                stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
  try:
    second = run_binary(*args[:2], "--delta=0.1", "--num_images=1",
                        "--mode=certify", "--workers=1")
  finally:
    first.send_signal(signal.SIGTERM)
    first.wait(timeout=60)
  assert second.returncode == 2, second.stderr[-2000:]
  assert "Traceback" not in second.stderr
  errors = [l for l in second.stderr.splitlines() if "error" in l.lower()]
  assert len(errors) == 1 and "in use by another verification run" in \
      errors[0], second.stderr[-2000:]
  lines = open(out).read().splitlines()
  assert len(lines) == len(evaluate.read_results(out))   # no pair twice


def test_verify_is_the_binary_and_evaluate_its_alias(network_path, tmp_path):
  verdicts = {}
  for name in ("verify", "evaluate"):
    out = str(tmp_path / f"{name}.jsonl")
    proc = subprocess.run(
        [sys.executable, "-m", f"robust_prune.{name}",
         f"--network={network_path}", f"--out={out}", "--delta=0.02",
         "--num_images=1", "--first_image=5", "--workers=1"],
        cwd=REPO, capture_output=True, text=True, timeout=240,
        env=dict(os.environ, JAX_PLATFORMS="cpu"))
    assert proc.returncode == 0, proc.stderr[-2000:]
    verdicts[name] = [(r["target"], r["status"], r.get("decided_by"),
                       r["objective"], r["best_bound"])
                      for r in evaluate.read_results(out)]
  assert len(verdicts["verify"]) == 9
  assert verdicts["verify"] == verdicts["evaluate"]
