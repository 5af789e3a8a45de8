"""Quick mode end to end: every stage runs, the report agrees with the result
files, and a rerun skips every finished stage."""

import json
import os
import shutil

import numpy as np
import pytest

from robust_prune import evaluate as evaluate_lib
from robust_prune import network as network_lib
from robust_prune import pipeline as pipeline_lib

# Large enough a radius that the small quick networks have adversarial
# examples, so reverse testing is exercised on real witnesses.
QUICK_DELTA = 0.15


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory, mnist_train, mnist_test):
  out = str(tmp_path_factory.mktemp("quick"))
  config = pipeline_lib.PipelineConfig(**{**pipeline_lib.QUICK,
                                          "delta": QUICK_DELTA})
  pipeline = pipeline_lib.Pipeline(config, out)
  pipeline._splits = (mnist_train, mnist_test)  # pylint: disable=protected-access
  pipeline.run()
  return out, config


def _records(out, net):
  return evaluate_lib.read_results(os.path.join(out, f"verify_{net}.jsonl"))


def test_every_stage_wrote_its_output(quick_run):
  out, config = quick_run
  for name in ("original/network.npz", "pruned/network.npz",
               "pruned/pruning.json", "verify_original.jsonl",
               "verify_pruned.jsonl", "transfer.json", "report.md",
               "summary.json", "fig1_counts.png", "fig2_examples.png",
               "fig2_heatmap.png", "fig3_by_label.csv", "fig3_by_target.csv",
               "fig4_statistics.csv"):
    assert os.path.getsize(os.path.join(out, name)) > 0, name
  for net in ("original", "pruned"):
    records = _records(out, net)
    pairs = {(r["image_index"], r["target"]) for r in records}
    assert len(pairs) == len(records) == config.num_images * 9
  pruned = network_lib.load_network(os.path.join(out, "pruned", "network.npz"))
  original = network_lib.load_network(os.path.join(out, "original", "network.npz"))
  assert sum(pruned.hidden_widths) <= sum(original.hidden_widths)


def test_report_tables_match_result_files(quick_run):
  out, config = quick_run
  with open(os.path.join(out, "summary.json")) as f:
    summary = json.load(f)
  records = {net: _records(out, net) for net in ("original", "pruned")}
  for net, rs in records.items():
    counts = summary["networks"][net]["counts"]
    assert counts["adversarial"] == sum(r["status"] == "adversarial" for r in rs)
    assert counts["total"] == len(rs) == (counts["searched"] + counts["misclassified"]
                                          + counts["error"])
    decided = summary["networks"][net]["decided_by"]
    assert sum(decided.values()) == counts["searched"]
    for step, n in decided.items():
      assert step in ("crown", "pgd", "bab", "milp")
      assert n == sum(r.get("decided_by") == step for r in rs
                      if r["status"] in ("adversarial", "robust", "timeout"))
  # The report says whether the pruning MILP's result is proven.
  with open(os.path.join(out, "report.md")) as f:
    report = f.read()
  for s in summary["pruning"]["solver_status"]:
    line = next(l for l in report.splitlines()
                if l.startswith(f"- importance MILP, round {s['round']} "))
    assert ("proven optimal" in line and "NOT" not in line) == s["proven"]
  searched = sum(summary["networks"][n]["counts"]["searched"] for n in records)
  found = sum(summary["networks"][n]["counts"]["adversarial"] for n in records)
  for key in ("by_label", "by_target"):
    rows = summary[key]
    assert sum(r["count"] for r in rows) == searched
    assert sum(r["total_adversarial"] for r in rows) == found
    for r in rows:
      assert r["total_adversarial"] == r["original_adversarial"] + r["pruned_adversarial"]
      if r["count"]:
        assert r["success_rate"] == pytest.approx(r["total_adversarial"] / r["count"])
  stats = summary["statistics"]
  assert stats["successful"]["objective"]["count"] == found
  if found:
    assert stats["successful"]["objective"]["max"] < 0
  # Every adversarial record carries a witness that really is adversarial.
  for net, rs in records.items():
    network = network_lib.load_network(os.path.join(out, net, "network.npz"))
    for r in rs:
      if r["status"] == "adversarial":
        logits = network_lib.forward(network, np.asarray(r["x_adv"]))
        assert logits[r["target"]] > logits[r["label"]]


def test_reverse_testing_recomputed(quick_run):
  out, _ = quick_run
  with open(os.path.join(out, "summary.json")) as f:
    summary = json.load(f)
  other = {"original": "pruned", "pruned": "original"}
  for net in ("original", "pruned"):
    network = network_lib.load_network(os.path.join(out, net, "network.npz"))
    found = [r for r in _records(out, other[net]) if r["status"] == "adversarial"]
    reported = summary["networks"][net]
    assert reported["reverse_examples"] == len(found)
    if found:
      x = np.asarray([r["x_adv"] for r in found])
      labels = np.asarray([r["label"] for r in found])
      correct = int(np.sum(network_lib.forward(network, x).argmax(-1) == labels))
      assert reported["reverse_correct"] == correct
      assert reported["reverse_accuracy"] == pytest.approx(correct / len(found))
  assert any(summary["networks"][n]["reverse_examples"] for n in other), (
      "no adversarial examples at all: reverse testing was not exercised")


def test_rerun_skips_finished_stages(quick_run, capsys, mnist_train, mnist_test):
  out, config = quick_run
  before = os.path.getmtime(os.path.join(out, "verify_original.jsonl"))
  pipeline = pipeline_lib.Pipeline(config, out)
  pipeline._splits = (mnist_train, mnist_test)  # pylint: disable=protected-access
  pipeline.run()
  printed = capsys.readouterr().out
  assert printed.count("already complete, skipped") == 6
  assert os.path.getmtime(os.path.join(out, "verify_original.jsonl")) == before


def test_rerun_retries_error_records(quick_run, capsys, tmp_path,
                                     mnist_train, mnist_test):
  out, config = quick_run
  copy = str(tmp_path / "copy")
  shutil.copytree(out, copy)
  path = os.path.join(copy, "verify_original.jsonl")
  records = evaluate_lib.read_results(path)
  searched = next(r for r in records if r["status"] != "misclassified")
  lines = open(path).read().count("\n")
  with open(path, "a") as f:  # as if the solver had crashed on this pair
    f.write(json.dumps(dict(searched, status="error", message="crash")) + "\n")
  pipeline = pipeline_lib.Pipeline(config, copy)
  pipeline._splits = (mnist_train, mnist_test)  # pylint: disable=protected-access
  state = pipeline.run()
  printed = capsys.readouterr().out
  assert "1 pairs ended in error; retrying them" in printed
  assert printed.count("already complete, skipped") == 3  # train..accuracy
  again = {evaluate_lib.pair_key(r): r for r in evaluate_lib.read_results(path)}
  assert again[evaluate_lib.pair_key(searched)]["status"] == searched["status"]
  assert open(path).read().count("\n") == lines + 2  # nothing lost
  assert state["stages"]["verify"]["counts"]["original"]["error"] == 0
  assert all(s["complete"] for s in state["stages"].values())


def test_other_configuration_in_same_folder_is_refused(quick_run):
  out, config = quick_run
  with pytest.raises(ValueError, match="another configuration"):
    pipeline_lib.Pipeline(
        pipeline_lib.PipelineConfig(**{**pipeline_lib.QUICK, "delta": 0.3}), out)
