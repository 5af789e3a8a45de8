"""The prune -> retrain loop, its files, resuming, and the binary's errors."""

import dataclasses
import json
import os
import subprocess
import sys

import numpy as np
import pytest

import testing

from robust_prune import data as data_lib
from robust_prune import network as network_lib
from robust_prune import train as train_lib
from robust_prune.network import forward
from robust_prune.pruning import critical as critical_lib
from robust_prune.pruning import importance as importance_lib
from robust_prune.pruning import loop
from robust_prune.pruning import rounds
from robust_prune.pruning import structure

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RECIPE = train_lib.TrainConfig(
    hidden=(12, 6), epochs=3, batch_size=32, learning_rate=3e-3, epsilon=0.02,
    epsilon_warmup_epochs=0, pgd_steps=1, pgd_step_size=0.02,
    max_train_examples=3000, eval_pgd_steps=2, eval_pgd_examples=200)


@pytest.fixture(scope="module")
def splits(mnist_train, mnist_test):
  train = data_lib.Split(mnist_train.images[:3000], mnist_train.labels[:3000])
  test = data_lib.Split(mnist_test.images[:300], mnist_test.labels[:300])
  return train, test


@pytest.fixture(scope="module")
def trained(tmp_path_factory, splits):
  """A small PGD-trained network with its config.json beside it."""
  return testing.trained_network_path(tmp_path_factory, RECIPE, splits)


def run(trained, workdir, splits, **options):
  options = {"time_limit": 10.0, "margin": 0.01, **options}
  return loop.run_pruning(trained, str(workdir),
                          loop.PruneOptions(**options), train=splits[0],
                          test=splits[1])


def test_two_rounds_write_every_file_and_resume(trained, splits, tmp_path):
  summary = run(trained, tmp_path, splits, rounds=2, retrain="finetune",
                max_accuracy_drop=1.0)
  for name in ("network.npz", "scores.json", "pruning.json", "rounds.jsonl",
               "original_eval.json", "round_1/pruned_init.npz"):
    assert os.path.exists(tmp_path / name), name
  with open(tmp_path / "rounds.jsonl") as f:
    rounds = [json.loads(line) for line in f]
  assert 1 <= len(rounds) <= 2 and summary["rounds_run"] == len(rounds)
  final = network_lib.load_network(tmp_path / "network.npz")
  assert list(final.hidden_widths) == summary["widths_after"]
  assert summary["params_after"] < summary["params_before"]
  for r in rounds:
    assert r["status"] in ("optimal", "time_limit")
    assert set(r) >= {"widths_after", "clean_accuracy", "pgd_accuracy",
                      "solve_seconds", "proven"}
  # Surviving neurons map back to distinct original indices.
  for k, w in zip(summary["kept_original_indices"], (12, 6)):
    assert len(set(k)) == len(k) and all(0 <= i < w for i in k)
  with open(tmp_path / "scores.json") as f:
    scores = json.load(f)
  assert [len(s) for s in scores["scores"]] == [12, 6]
  # Resume: nothing is recomputed, the answer is the same.
  stamp = os.path.getmtime(tmp_path / "round_1" / "scores.json")
  again = run(trained, tmp_path, splits, rounds=2, retrain="finetune",
              max_accuracy_drop=1.0)
  assert os.path.getmtime(tmp_path / "round_1" / "scores.json") == stamp
  assert again["widths_after"] == summary["widths_after"]
  assert again["final"] == summary["final"]


def test_other_options_need_a_fresh_workdir(trained, splits, tmp_path):
  run(trained, tmp_path, splits, baseline="random", retrain="rewind")
  with pytest.raises(ValueError, match="fresh --workdir"):
    run(trained, tmp_path, splits, baseline="magnitude", retrain="rewind")


def test_workdirs_from_before_widths_resume_and_widths_lock_a_workdir(
    trained, splits, tmp_path):
  """options.json of a run without --prune_widths has no `widths` (folders
  written before the option resume); given widths are part of the lock."""
  summary = run(trained, tmp_path, splits, retrain="finetune")
  with open(tmp_path / "options.json") as f:
    assert "widths" not in json.load(f)["options"]
  again = run(trained, tmp_path, splits, retrain="finetune")
  assert again["seconds"] == summary["seconds"]
  with pytest.raises(ValueError, match="fresh --workdir"):
    run(trained, tmp_path, splits, retrain="finetune",
        widths=tuple(summary["widths_after"]))


def test_a_network_retrained_in_place_needs_a_fresh_workdir(trained, splits,
                                                            tmp_path):
  copy = tmp_path / "net" / "network.npz"
  net = network_lib.load_network(trained)
  network_lib.save_network(net, copy)
  config = os.path.join(os.path.dirname(trained), train_lib.CONFIG)
  (tmp_path / "net" / train_lib.CONFIG).write_text(open(config).read())
  run(str(copy), tmp_path / "w", splits, retrain="finetune")
  changed = network_lib.Network(net.weights,
                                (net.biases[0] + 0.01, *net.biases[1:]))
  network_lib.save_network(changed, copy)
  with pytest.raises(ValueError, match="network_sha256"):
    run(str(copy), tmp_path / "w", splits, retrain="finetune")


def test_baseline_removes_as_many_neurons_as_milp(trained, splits, tmp_path):
  summary = run(trained, tmp_path, splits, baseline="magnitude",
                retrain="finetune")
  with open(tmp_path / "scores.json") as f:
    scores = json.load(f)
  milp_masks = structure.keep_masks_from_scores(scores["scores"], 1e-3)
  assert summary["widths_after"] == [int(m.sum()) for m in milp_masks]


@pytest.mark.parametrize("kwargs, message", [
    (dict(baseline="random", retrain="scratch"), "measures nothing"),
    (dict(critical=True, retrain="scratch"), "re-initialises"),
    (dict(mip_gap=-1.0), "mip_gap"), (dict(mip_gap=float("nan")), "mip_gap"),
    (dict(lam=float("inf")), "lambda"), (dict(margin=float("nan")), "margin"),
    (dict(time_limit=float("inf")), "time limit"),
])
def test_bad_options_are_rejected_up_front(kwargs, message):
  with pytest.raises(ValueError, match=message):
    loop.PruneOptions(**kwargs)


def test_a_failed_importance_milp_is_an_error_not_nothing_to_prune(
    trained, splits, tmp_path, monkeypatch):
  real = importance_lib.importance_scores

  def failing(*args, **kwargs):
    r = real(*args, **kwargs)
    return dataclasses.replace(r, status="no_solution",
                               raw_status="no incumbent in time",
                               objective=None, bound=None,
                               scores=tuple(np.ones_like(v) for v in r.scores))

  monkeypatch.setattr(importance_lib, "importance_scores", failing)
  with pytest.raises(ValueError, match="ended 'no_solution'.*nothing to prune"):
    run(trained, tmp_path, splits)
  assert not os.path.exists(tmp_path / "round_1" / "scores.json")
  assert not os.path.exists(tmp_path / "pruning.json")
  # The failure is not cached and the options are not locked yet: a rerun
  # with other options solves again.
  monkeypatch.setattr(importance_lib, "importance_scores", real)
  summary = run(trained, tmp_path, splits, time_limit=11.0)
  assert [s["round"] for s in summary["solver_status"]] == [1]
  assert summary["solver_status"][0]["status"] in ("optimal", "time_limit")


def test_a_run_that_failed_on_its_batch_can_be_rerun_with_other_options(
    trained, splits, tmp_path):
  with pytest.raises(ValueError, match="margin"):
    run(trained, tmp_path, splits, margin=1000.0)
  summary = run(trained, tmp_path, splits, margin=0.01)
  assert summary["options"]["margin"] == 0.01
  with pytest.raises(ValueError, match="fresh --workdir"):
    run(trained, tmp_path, splits, margin=0.02)


def test_critical_analysis_failure_keeps_the_summary_and_is_redone_for_a_new_final(
    trained, splits, tmp_path, monkeypatch):
  def broken(*args, **kwargs):
    raise ValueError("classes [8] have too few images")

  monkeypatch.setattr(critical_lib, "critical_analysis", broken)
  with pytest.raises(ValueError, match="too few images"):
    run(trained, tmp_path, splits, retrain="finetune", critical=True)
  with open(tmp_path / "pruning.json") as f:
    assert json.load(f)["rounds_run"] == 1
  calls = []
  monkeypatch.setattr(critical_lib, "critical_analysis",
                      lambda *a, **k: calls.append(a[1]) or {"ok": True})
  summary = run(trained, tmp_path, splits, retrain="finetune", critical=True)
  assert summary["critical"]["ok"] and len(calls) == 1
  run(trained, tmp_path, splits, retrain="finetune", critical=True)
  assert len(calls) == 1  # cached: same final network
  with open(tmp_path / "critical.json") as f:
    cached = json.load(f)
  cached["final_widths"] = [1, 1]  # as if written for another final network
  with open(tmp_path / "critical.json", "w") as f:
    json.dump(cached, f)
  run(trained, tmp_path, splits, retrain="finetune", critical=True)
  assert len(calls) == 2


def test_retrain_initialisations(trained, splits, tmp_path):
  network = network_lib.load_network(trained)
  kept = (np.array([0, 3, 5]), np.array([1, 4]))
  keep = [np.isin(np.arange(w), k) for w, k in zip((12, 6), kept)]
  pruned, _ = structure.prune_network(network, keep)
  assert rounds.retrain_init("scratch", pruned, kept, (12, 6), RECIPE) is None
  assert rounds.retrain_init("finetune", pruned, kept, (12, 6), RECIPE) is pruned
  rewound = rounds.retrain_init("rewind", pruned, kept, (12, 6), RECIPE)
  init = train_lib.initial_network(RECIPE)
  np.testing.assert_array_equal(rewound.weights[0], init.weights[0][:, kept[0]])
  np.testing.assert_array_equal(rewound.weights[1],
                                init.weights[1][kept[0]][:, kept[1]])
  np.testing.assert_array_equal(rewound.weights[2], init.weights[2][kept[1]])
  np.testing.assert_array_equal(rewound.biases[1], init.biases[1][kept[1]])
  summary = run(trained, tmp_path, splits, retrain="rewind")
  assert summary["rounds_run"] == 1


def test_critical_sets_and_jaccard():
  sets = critical_lib.critical_sets(
      [np.array([0.0, 0.5, 1.0]), np.array([1.0, 0.0])], 1e-3)
  assert sets == (frozenset({1, 2}), frozenset({0}))
  mapped = critical_lib.critical_sets([np.array([0.9, 0.0])], 1e-3,
                                      kept=[np.array([4, 7])])
  assert mapped == (frozenset({4}),)
  assert critical_lib.jaccard(frozenset({1, 2}), frozenset({2, 3})) == 1 / 3
  assert critical_lib.jaccard(frozenset(), frozenset()) == 1.0


def test_robust_batch_stays_correct_under_pgd(trained, splits):
  network = network_lib.load_network(trained)
  clean, adv, labels, idx = critical_lib.select_robust_batch(
      network, splits[0].images, splits[0].labels, epsilon=0.005, steps=5,
      step_size=0.002)
  assert sorted(labels.tolist()) == list(range(10))
  assert np.all(forward(network, adv).argmax(1) == labels)
  assert np.all(np.abs(adv - clean) <= 0.005 + 1e-6)
  assert np.any(adv != clean)
  np.testing.assert_array_equal(splits[0].images[idx], clean)


def test_pipeline_stage_entry_point(trained, splits, tmp_path):
  import shutil  # pylint: disable=g-import-not-at-top
  from robust_prune import prune  # pylint: disable=g-import-not-at-top
  os.makedirs(tmp_path / "original")
  for name in (train_lib.NETWORK, train_lib.CONFIG):
    shutil.copy(os.path.join(os.path.dirname(trained), name),
                tmp_path / "original" / name)
  options = loop.PruneOptions(
      threshold=1e-3, images_per_class=1, solver="HIGHS", time_limit=10.0,
      retrain="finetune", seed=0, margin=0.01, lam=0.0)
  details = prune.run_pruning_stage(
      str(tmp_path / "original" / train_lib.NETWORK),
      str(tmp_path / "pruned"), options, splits=splits)
  assert details["params_after"] < details["params_before"]
  assert os.path.exists(tmp_path / "pruned" / "network.npz")


# ------------------------------------------------------------- the binary
def _binary(*args):
  env = {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": REPO}
  return subprocess.run([sys.executable, "-m", "robust_prune.prune", *args],
                        capture_output=True, text=True, env=env, cwd=REPO,
                        timeout=120)


def test_binary_rejects_bad_input_without_traceback(trained, tmp_path):
  cases = [
      (["--threshold=1.5"], "threshold must lie in [0, 1]"),
      (["--solver=CPLEX"], "is unknown or not installed"),
  ]
  for extra, message in cases:
    p = _binary(f"--network={trained}", f"--workdir={tmp_path}", *extra)
    assert p.returncode != 0
    assert message in p.stderr, p.stderr
    assert "Traceback" not in p.stderr
  p = _binary(f"--network={tmp_path}/missing.npz", f"--workdir={tmp_path}")
  assert p.returncode != 0 and "network file not found" in p.stderr
  assert "Traceback" not in p.stderr
  corrupt = tmp_path / "corrupt.npz"
  corrupt.write_bytes(b"not a zip file")
  p = _binary(f"--network={corrupt}", f"--workdir={tmp_path}/w")
  assert p.returncode != 0 and "cannot read network file" in p.stderr
  assert "Traceback" not in p.stderr, p.stderr
  odd = tmp_path / "odd.npz"
  network_lib.save_network(network_lib.Network(
      (np.ones((5, 4), np.float32), np.ones((4, 10), np.float32)),
      (np.zeros(4, np.float32), np.zeros(10, np.float32))), odd)
  p = _binary(f"--network={odd}", f"--workdir={tmp_path}/w2")
  assert p.returncode == 2 and "maps 5 inputs to 10 logits" in p.stderr
  assert "Traceback" not in p.stderr, p.stderr
