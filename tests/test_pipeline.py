"""Quick mode end to end: every stage runs, the report agrees with the result
files, and a rerun skips every finished stage."""

import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from testing import masked_forward

from robust_prune import configs
from robust_prune import io
from robust_prune import network as network_lib
from robust_prune import pipeline as pipeline_lib
from robust_prune.analysis import stats
from robust_prune.verify import records as records_lib

# Large enough a radius that the small quick networks have adversarial
# examples, so reverse testing is exercised on real witnesses.
QUICK_DELTA = 0.15


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory, mnist_train, mnist_test):
  out = str(tmp_path_factory.mktemp("quick"))
  config = configs.presets.quick(delta=QUICK_DELTA)
  pipeline_lib.Pipeline(config, out, splits=(mnist_train, mnist_test)).run()
  return out, config


def _records(out, net):
  return records_lib.read_results(os.path.join(out, f"verify_{net}.jsonl"))


def _examples(out, net):
  """`net`'s adversarial examples used for reverse testing: the verify
  stage's, then the extension's on the images transfer.json names."""
  with open(os.path.join(out, "transfer.json")) as f:
    transfer = json.load(f)
  tested = "pruned" if net == "original" else "original"
  source = transfer[tested]["sources"]
  assert transfer[tested]["examples_of"] == net
  first, stop = source["extension_images"]
  extra = []
  if stop > first:
    extra = [r for r in records_lib.read_results(
        os.path.join(out, f"transfer_extra_{net}.jsonl"))
             if r["image_index"] < stop]
    assert {r["image_index"] for r in extra} == set(range(first, stop))
  return [r for r in _records(out, net) + extra
          if r["status"] == "adversarial"]


def test_every_stage_wrote_its_output(quick_run):
  out, config = quick_run
  for name in ("original/network.npz", "pruned/network.npz",
               "pruned/pruning.json", "verify_original.jsonl",
               "verify_pruned.jsonl", "transfer.json", "report.md",
               "summary.json", "fig1_counts.png", "fig2_examples.png",
               "fig2_heatmap.png", "fig3_by_label.csv", "fig3_by_target.csv",
               "fig4_statistics.csv", "critical.json", "ablation.json",
               "critical.csv", "ablation.csv"):
    assert os.path.getsize(os.path.join(out, name)) > 0, name
  for net in ("original", "pruned"):
    records = _records(out, net)
    pairs = {(r["image_index"], r["target"]) for r in records}
    assert len(pairs) == len(records) == config.verify.num_images * 9
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
    assert sum(decided.values()) == counts["adversarial"] + counts["robust"]
    for step, n in decided.items():
      assert step in ("crown", "pgd", "bab", "milp")
      assert n == sum(r.get("decided_by") == step for r in rs
                      if r["status"] in ("adversarial", "robust"))
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
    found = _examples(out, other[net])
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


def _curve_files(out, config):
  """{(net, delta): records} of every results file of the curve."""
  paper = config.verify.delta
  return {(net, d): records_lib.read_results(os.path.join(
      out, f"verify_{net}.jsonl" if d == paper else
      f"verify_{net}_delta{d:g}.jsonl"))
          for net in ("original", "pruned") for d in config.verify.grid}


def _image_verdict(statuses):
  if "misclassified" in statuses:
    return "misclassified"
  if "adversarial" in statuses:
    return "adversarial"
  return "robust" if statuses == ["robust"] * 9 else "undecided"


def test_curve_bands_match_result_files(quick_run):
  """Both networks on the same images at every radius; the report's bands
  recomputed from the files: they add up to the images, their Wilson CIs
  follow from the counts, and the curve is consistent."""
  out, config = quick_run
  assert len(config.verify.grid) == 2 and QUICK_DELTA in config.verify.grid
  with open(os.path.join(out, "summary.json")) as f:
    summary = json.load(f)
  files = _curve_files(out, config)
  images = list(range(config.verify.num_images))
  for (net, delta), records in files.items():
    assert {r["delta"] for r in records} == {delta}
    assert sorted({r["image_index"] for r in records}) == images
    pairs = {(r["image_index"], r["target"]) for r in records}
    assert len(pairs) == len(records) == len(images) * 9
    by_image = {}
    for r in sorted(records, key=lambda r: r["target"]):
      by_image.setdefault(r["image_index"], []).append(r["status"])
    verdicts = [_image_verdict(st) for st in by_image.values()]
    row, = [b for b in summary["curve"]["bands"][net] if b["delta"] == delta]
    for kind in ("robust", "adversarial", "undecided", "misclassified"):
      assert row[kind] == verdicts.count(kind), (net, delta, kind)
    assert row["images"] == len(images) == sum(
        row[k] for k in ("robust", "adversarial", "undecided", "misclassified"))
    wilson = stats.wilson_interval(row["robust"], row["images"])
    assert row["lower_bound_ci"] == pytest.approx([wilson.low, wilson.high])
    upper = stats.wilson_interval(row["robust"] + row["undecided"],
                                  row["images"])
    assert row["upper_bound_ci"] == pytest.approx([upper.low, upper.high])
    assert row["robust_accuracy_ci"] == pytest.approx([wilson.low, upper.high])
    assert row["lower_bound"] == pytest.approx(row["robust"] / row["images"])
  assert summary["curve"]["radii"] == list(config.verify.grid)
  assert summary["curve"]["violations"] == {"original": [], "pruned": []}
  for net in ("original", "pruned"):  # robust at D -> robust below D
    small, large = (files[(net, d)] for d in config.verify.grid)
    robust_large = {(r["image_index"], r["target"]) for r in large
                    if r["status"] == "robust"}
    adversarial_small = {(r["image_index"], r["target"]) for r in small
                         if r["status"] == "adversarial"}
    assert not robust_large & adversarial_small
  assert os.path.getsize(os.path.join(out, "fig5_curve.png")) > 0
  with open(os.path.join(out, "curve_bands.csv")) as f:
    assert len(f.read().strip().splitlines()) == 1 + 2 * len(config.verify.grid)


def test_distortion_rq3_and_transfer_tables_match_result_files(
    quick_run, mnist_test):
  """Minimum-distortion intervals, the paired table and reverse testing,
  recomputed from the result files."""
  out, config = quick_run
  with open(os.path.join(out, "summary.json")) as f:
    summary = json.load(f)
  files = _curve_files(out, config)
  with open(os.path.join(out, "distortion.csv")) as f:
    rows = {(r["network"], int(r["image_index"])): r
            for r in csv.DictReader(f)}
  verdicts = {}
  for net in ("original", "pruned"):
    for image in range(config.verify.num_images):
      mine = [r for d in config.verify.grid for r in files[(net, d)]
              if r["image_index"] == image]
      row = rows[(net, image)]
      if any(r["status"] == "misclassified" for r in mine):
        assert row["misclassified"] == "True"
        continue
      proven = {t: max([r["delta"] for r in mine if r["target"] == t
                        and r["status"] == "robust"], default=0.0)
                for t in range(10) if t != mine[0]["label"]}
      witnesses = [float(np.abs(np.asarray(r["x_adv"])
                                - mnist_test.images[image]).max())
                   for r in mine if r["status"] == "adversarial"]
      assert float(row["lower"]) == pytest.approx(min(proven.values()))
      if witnesses:
        assert float(row["upper"]) == pytest.approx(min(witnesses))
      else:
        assert row["upper"] == "inf"
    for d in config.verify.grid:
      by_image = {}
      for r in sorted(files[(net, d)], key=lambda r: r["target"]):
        by_image.setdefault(r["image_index"], []).append(r["status"])
      verdicts[(net, d)] = {i: _image_verdict(st)
                            for i, st in by_image.items()}
  for row in summary["rq3"]["paired"]:
    o, p = verdicts[("original", row["delta"])], verdicts[("pruned",
                                                           row["delta"])]
    robust = lambda v, i: v[i] == "robust"
    assert row["both"] == sum(robust(o, i) and robust(p, i) for i in o)
    assert row["only_original"] == sum(robust(o, i) and not robust(p, i)
                                       for i in o)
    assert row["only_pruned"] == sum(not robust(o, i) and robust(p, i)
                                     for i in o)
    assert row["images"] == config.verify.num_images
  assert {row["delta"] for row in summary["rq3"]["paired"]} == set(
      config.verify.grid)
  assert summary["rq3"]["paragraph"].startswith("**RQ3")
  with open(os.path.join(out, "transfer.json")) as f:
    transfer = json.load(f)
  other = {"original": "pruned", "pruned": "original"}
  for net in ("original", "pruned"):
    network = network_lib.load_network(os.path.join(out, net, "network.npz"))
    found = _examples(out, other[net])
    s = summary["networks"][net]
    if found:
      predicted = network_lib.forward(
          network, np.asarray([r["x_adv"] for r in found])).argmax(-1)
      to_target = int(np.sum(predicted == [r["target"] for r in found]))
      assert s["reverse_to_target"] == transfer[net]["to_target"] == to_target
      wilson = stats.wilson_interval(s["reverse_correct"], len(found))
      assert s["reverse_ci"] == pytest.approx([wilson.low, wilson.high])
    else:
      assert s["reverse_ci"] is None


def test_critical_tables_match_result_files(quick_run):
  """RQ1/RQ2: one batch for both networks; the critical sets follow from
  the scores; the report's per-layer counts and Jaccard from the sets."""
  out, config = quick_run
  critical = io.read_json(os.path.join(out, "critical.json"))
  summary = io.read_json(os.path.join(out, "summary.json"))["rq12"]
  kept = io.read_json(os.path.join(out, "pruned", "pruning.json"))[
      "kept_original_indices"]
  batch = critical["batch_indices"]
  assert len(batch) == 10 * config.prune.images_per_class
  assert critical["original"]["batch_indices"] == batch
  assert critical["pruned"]["batch_indices"] == batch
  assert summary["critical"]["batch_indices"] == batch
  sets = {}
  for net in ("original", "pruned"):
    for kind in ("clean", "adversarial"):
      entry = critical[net][kind]
      mine = []
      for l, scores in enumerate(entry["scores"]):
        idx = [i for i, s in enumerate(scores) if s >= critical["threshold"]]
        mine.append(set(kept[l][i] for i in idx) if net == "pruned"
                    else set(idx))
      assert [set(c) for c in entry["critical"]] == mine
      sets[(net, kind)] = mine
      assert summary["critical"]["solves"][f"{net}/{kind}"]["proven"] == (
          entry["status"] == "optimal")
  for row in summary["critical"]["layers"]:
    l = row["layer"]
    for net in ("original", "pruned"):
      a, b = sets[(net, "clean")][l], sets[(net, "adversarial")][l]
      r = row[net]
      assert (r["num_clean"], r["num_adversarial"], r["num_both"]) == (
          len(a), len(b), len(a & b))
      if a | b:
        assert r["jaccard"] == pytest.approx(len(a & b) / len(a | b))
    for kind in ("clean", "adversarial"):
      a, b = sets[("original", kind)][l], sets[("pruned", kind)][l]
      r = row[f"consistency_{kind}"]
      assert (r["num_original"], r["num_pruned"], r["num_both"]) == (
          len(a), len(b), len(a & b))
      assert b <= set(kept[l])
      if a and b:
        p = stats.overlap_test(a, b, row["width_original"]).p_value
        assert r["overlap_p"] == pytest.approx(p)
  with open(os.path.join(out, "report.md")) as f:
    report = f.read()
  assert f"indices {batch}" in report
  assert "**RQ1:" in report and "**RQ2:" in report


def test_ablation_table_matches_result_files(quick_run, mnist_test):
  """The causal test: each ablated network is the original without exactly
  its named neurons; accuracies, verified bands and paired changes
  recomputed from the files."""
  out, config = quick_run
  ablation = io.read_json(os.path.join(out, "ablation.json"))
  rows = {r["network"]: r for r in io.read_json(
      os.path.join(out, "summary.json"))["rq12"]["ablation"]["rows"]}
  original = network_lib.load_network(os.path.join(out, "original",
                                                   "network.npz"))
  widths = original.hidden_widths
  k = [int(np.floor(config.analysis.ablation_fraction * w + 0.5))
       for w in widths]
  assert ablation["removed_per_layer"] == k
  x = mnist_test.images[:200]
  correct = {}
  for name, net in ablation["networks"].items():
    folder = os.path.join(out, "ablation", name)
    with np.load(os.path.join(folder, "correct.npz")) as stored:
      correct[name] = (stored["clean"], stored["pgd"])
    path = (os.path.join(out, "original", "network.npz")
            if name == "original" else os.path.join(folder, "network.npz"))
    network = network_lib.load_network(path)
    clean_np = network_lib.forward(network, mnist_test.images).argmax(-1) == (
        mnist_test.labels)
    assert np.sum(clean_np != correct[name][0]) <= 3  # float32 near-ties
    row = rows[name]
    for key, index in (("clean", 0), ("pgd", 1)):
      n_correct = int(np.sum(correct[name][index]))
      assert net[key] == {"correct": n_correct, "n": len(mnist_test.labels)}
      wilson = stats.wilson_interval(n_correct, len(mnist_test.labels))
      assert row[key]["ci"] == pytest.approx([wilson.low, wilson.high])
    records = records_lib.read_results(
        os.path.join(out, "ablation", f"verify_{name}.jsonl"))
    assert {r["delta"] for r in records} == {config.verify.delta}
    by_image = {}
    for r in sorted(records, key=lambda r: r["target"]):
      by_image.setdefault(r["image_index"], []).append(r["status"])
    verdicts = {str(i): _image_verdict(st) for i, st in by_image.items()}
    assert net["verified"] == verdicts
    assert len(verdicts) == config.analysis.ablation_images
    v = row["verified"]
    for kind in ("robust", "adversarial", "undecided", "misclassified"):
      assert v[kind] == list(verdicts.values()).count(kind)
    if name == "original":
      continue
    removed = io.read_json(os.path.join(folder, "removed.json"))["removed"]
    assert removed == net["removed"] and [len(r) for r in removed] == k
    assert network.hidden_widths == tuple(w - r for w, r in zip(widths, k))
    np.testing.assert_allclose(network_lib.forward(network, x),
                               masked_forward(original, x, removed),
                               rtol=1e-4, atol=1e-4)
  for name in ("accuracy", "robustness", "random"):
    for key, index in (("clean", 0), ("pgd", 1)):
      a, b = correct[name][index], correct["original"][index]
      table = (int(np.sum(a & b)), int(np.sum(a & ~b)), int(np.sum(~a & b)),
               int(np.sum(~a & ~b)))
      change = rows[name]["change"][key]
      assert (change["both"], change["only_first"], change["only_second"],
              change["neither"]) == table
      diff = stats.paired_difference(*table)
      assert change["difference_ci"] == pytest.approx([diff.low, diff.high])
      assert change["mcnemar_p"] == pytest.approx(
          stats.mcnemar_exact(table[1], table[2]).p_value)
  with open(os.path.join(out, "ablation.csv")) as f:
    assert len(list(csv.DictReader(f))) == 4


def test_rerun_skips_finished_stages(quick_run, capsys, mnist_train, mnist_test):
  out, config = quick_run
  before = os.path.getmtime(os.path.join(out, "verify_original.jsonl"))
  pipeline_lib.Pipeline(config, out, splits=(mnist_train, mnist_test)).run()
  printed = capsys.readouterr().out
  assert printed.count("already complete, skipped") == 8
  assert os.path.getmtime(os.path.join(out, "verify_original.jsonl")) == before


def test_rerun_retries_error_records(quick_run, capsys, tmp_path,
                                     mnist_train, mnist_test):
  out, config = quick_run
  copy = str(tmp_path / "copy")
  shutil.copytree(out, copy)
  path = os.path.join(copy, "verify_original.jsonl")
  records = records_lib.read_results(path)
  searched = next(r for r in records if r["status"] != "misclassified")
  lines = open(path).read().count("\n")
  with open(path, "a") as f:  # as if the solver had crashed on this pair
    f.write(json.dumps(dict(searched, status="error", message="crash")) + "\n")
  state = pipeline_lib.Pipeline(config, copy,
                                splits=(mnist_train, mnist_test)).run()
  printed = capsys.readouterr().out
  assert "1 pairs ended in error; retrying them" in printed
  # train, prune, accuracy, critical, ablation
  assert printed.count("already complete, skipped") == 5
  again = {records_lib.pair_key(r): r for r in records_lib.read_results(path)}
  assert again[records_lib.pair_key(searched)]["status"] == searched["status"]
  assert open(path).read().count("\n") == lines + 2  # nothing lost
  assert state["stages"]["verify"]["counts"]["original"]["error"] == 0
  assert all(s["complete"] for s in state["stages"].values())


def test_other_configuration_in_same_folder_is_refused(quick_run):
  out, config = quick_run
  with pytest.raises(ValueError, match="another configuration"):
    pipeline_lib.Pipeline(configs.presets.quick(delta=0.3), out).run()


# ------------------------------------- issue 17: options, lock, child process
STAGES = pipeline_lib.STAGES
OLD_STAGES = ("train", "prune", "accuracy", "verify", "transfer", "report")


def _stubbed(config, out, fail_at=None):
  """A Pipeline on `out` whose stages only record that they ran (the
  bookkeeping around them is the real one)."""
  pipeline = pipeline_lib.Pipeline(config, str(out))
  ran = []

  def stage(name):
    def run():
      ran.append(name)
      if name == fail_at:
        raise RuntimeError(f"{name} failed")
      return {}
    return run

  for name in STAGES:
    setattr(pipeline, name, stage(name))
  return pipeline, ran


def test_rerun_may_change_options_of_stages_not_started(tmp_path):
  """A rerun used to be refused for any changed option, even one whose
  stage had not run; the options of started stages stay fixed."""
  first = configs.presets.quick()
  pipeline, ran = _stubbed(first, tmp_path, fail_at="accuracy")
  with pytest.raises(RuntimeError):
    pipeline.run()
  assert ran == ["train", "prune", "accuracy"]
  for change in (dict(epochs=4), dict(learning_rate=0.01),
                 dict(prune_margin=1.0), dict(solver="GLPK_MI")):
    pipeline, ran = _stubbed(first.replace(**change), tmp_path)
    with pytest.raises(io.ConfigMismatchError, match="another configuration"):
      pipeline.run()
    assert ran == [], change
  corrected = first.replace(num_images=7, time_limit=10.0, mode="targeted")
  pipeline, ran = _stubbed(corrected, tmp_path)
  state = pipeline.run()
  assert ran == ["accuracy", "critical", "verify", "transfer", "ablation",
                 "report"]
  assert io.read_json(tmp_path / "config.json") == corrected.to_json()
  assert io.read_json(tmp_path / "pipeline.json")["config"] == (
      corrected.to_json())
  assert state["config"] == corrected.to_json()
  # (0.1 is the quick default now: another radius)
  pipeline, ran = _stubbed(corrected.replace(delta=0.3), tmp_path)
  with pytest.raises(io.ConfigMismatchError):
    pipeline.run()  # verify has run: its radius is fixed now
  assert ran == []


def test_verify_args_name_one_file_per_network_and_radius(tmp_path):
  config = configs.presets.quick(delta=0.1, radii=(0.02, 0.05))
  pipeline = pipeline_lib.Pipeline(config, str(tmp_path))
  assert config.verify.grid == (0.02, 0.05, 0.1)
  files = set()
  for net in ("original", "pruned"):
    for delta in config.verify.grid:
      args = dict(a[2:].split("=", 1)
                  for a in pipeline.verify_args(net, delta))
      assert float(args["delta"]) == delta
      assert float(args["image_time_limit"]) == (
          config.verify.image_time_limit) > 0
      assert args["bab_intermediate"] == "auto"
      assert args["bab_cut_rounds"] == "1"
      files.add(os.path.basename(args["out"]))
  assert files == {"verify_original.jsonl", "verify_pruned.jsonl",
                   "verify_original_delta0.02.jsonl",
                   "verify_original_delta0.05.jsonl",
                   "verify_pruned_delta0.02.jsonl",
                   "verify_pruned_delta0.05.jsonl"}
  no_budget = pipeline_lib.Pipeline(config.replace(image_time_limit=0.0),
                                    str(tmp_path))
  assert not [a for a in no_budget.verify_args("original")
              if a.startswith("--image_time_limit")]
  plain = pipeline_lib.Pipeline(config.replace(bab_intermediate="alpha"),
                                str(tmp_path))
  assert "--bab_intermediate=alpha" in plain.verify_args("original")
  no_cuts = pipeline_lib.Pipeline(config.replace(bab_cut_rounds=0),
                                  str(tmp_path))
  assert "--bab_cut_rounds=0" in no_cuts.verify_args("original")


def test_the_engine_reaches_the_verification_child_but_not_the_config(
    tmp_path):
  config = configs.presets.quick()
  local = pipeline_lib.Pipeline(config, str(tmp_path))
  assert not [a for a in local.verify_args("original")
              if a.startswith(("--engine", "--ray_address"))]
  on_ray = pipeline_lib.Pipeline(config, str(tmp_path), engine="ray",
                                 ray_address="auto")
  args = on_ray.verify_args("original")
  assert "--engine=ray" in args and "--ray_address=auto" in args
  assert "engine" not in json.dumps(config.to_json())


def test_options_are_checked_before_stage_one(tmp_path):
  pipeline, ran = _stubbed(configs.presets.quick(solver="NO_SUCH_SOLVER"),
                           tmp_path)
  with pytest.raises(ValueError, match="NO_SUCH_SOLVER"):
    pipeline.run()
  assert ran == [] and os.listdir(tmp_path) == []


def test_a_second_pipeline_on_the_folder_is_refused(tmp_path):
  pipeline, ran = _stubbed(configs.presets.quick(), tmp_path)
  with io.WorkdirLock(str(tmp_path)):  # as a live pipeline holds it
    with pytest.raises(io.LockedError, match="in use"):
      pipeline.run()
  assert ran == [] and not (tmp_path / "pipeline.json").exists()
  assert pipeline.run() and ran == list(STAGES)


def test_run_child_runs_the_module_with_its_arguments(tmp_path):
  source = tmp_path / "in.json"
  source.write_text('{"a": [1, 2]}')
  assert pipeline_lib.run_child(
      "json.tool", [str(source), str(tmp_path / "out.json")]) == 0
  assert json.loads((tmp_path / "out.json").read_text()) == {"a": [1, 2]}
  assert pipeline_lib.run_child("json.tool",
                                [str(tmp_path / "absent.json")]) != 0


# The quick configuration as pipeline.json stored it before config.json
# existed (the options added since take their defaults).
OLD_QUICK_CONFIG = {
    "delta": 0.05, "num_images": 5, "first_image": 0, "hidden": [32, 16],
    "train_epsilon": 0.1, "epochs": 3, "max_train_examples": 12000,
    "seed": 0, "threshold": 0.001, "images_per_class": 1,
    "retrain": "finetune", "prune_margin": 3.0, "prune_lambda": 0.0,
    "solver": "HIGHS", "bounds": "crown", "mode": "certify",
    "time_limit": 30.0, "bab_time_limit": 20.0, "prune_time_limit": 20.0,
    "workers": 1, "learning_rate": 3e-3, "epsilon_warmup_epochs": 3}


def test_folder_from_before_config_json_resumes(tmp_path):
  """pipeline.json alone held the options: a rerun with the same flags
  resumes (options added since count at their defaults)."""
  stages = {n: {"complete": True, "seconds": 1.0}
            for n in ("train", "prune", "accuracy")}
  (tmp_path / "pipeline.json").write_text(json.dumps(
      {"config": OLD_QUICK_CONFIG, "stages": stages, "evaluation": {}}))
  config = configs.presets.quick(workers=1)
  pipeline, ran = _stubbed(config, tmp_path)
  pipeline.run()
  assert ran == ["critical", "verify", "transfer", "ablation", "report"]
  assert io.read_json(tmp_path / "config.json") == config.to_json()
  pipeline, ran = _stubbed(config.replace(epochs=4), tmp_path)
  with pytest.raises(io.ConfigMismatchError):
    pipeline.run()


def test_folder_from_before_the_curve_resumes(tmp_path):
  """A folder whose verify stage ran the paper radius only (config.json
  without --radii): a rerun with its options runs the curve's other radii
  and the stages after them; a rerun may not change the radii once the
  verify stage has started."""
  old = configs.presets.quick(delta=0.05).to_json()
  del old["radii"]
  (tmp_path / "config.json").write_text(json.dumps(old))
  stages = {n: {"complete": True, "seconds": 1.0} for n in OLD_STAGES}
  (tmp_path / "pipeline.json").write_text(json.dumps(
      {"config": old, "stages": stages, "evaluation": {}}))
  for net in ("original", "pruned"):
    (tmp_path / f"verify_{net}.jsonl").write_text("")
  config = configs.presets.quick(delta=0.05, radii=(0.02, 0.05))
  pipeline, ran = _stubbed(config, tmp_path)
  pipeline.run()
  assert ran == ["critical", "verify", "transfer", "ablation", "report"]
  assert io.read_json(tmp_path / "config.json") == config.to_json()
  pipeline, ran = _stubbed(config.replace(radii=(0.03,)), tmp_path)
  with pytest.raises(io.ConfigMismatchError):
    pipeline.run()
  assert ran == []


def _finished_by_the_previous_code(tmp_path, config):
  """A folder every stage of the previous code finished (no critical or
  ablation stage; config.json without their options)."""
  old = {k: v for k, v in config.to_json().items()
         if k not in pipeline_lib.ADDED_AFTER_CONFIG_JSON or k in (
             "radii", "image_time_limit")}
  (tmp_path / "config.json").write_text(json.dumps(old))
  stages = {n: {"complete": True, "seconds": 1.0} for n in OLD_STAGES}
  stages["verify"]["radii"] = list(config.verify.grid)
  (tmp_path / "pipeline.json").write_text(json.dumps(
      {"config": old, "stages": stages, "evaluation": {}}))
  for net in ("original", "pruned"):
    for d in config.verify.grid:
      name = pipeline_lib.report_lib.results_name(net, d, config.verify.delta)
      (tmp_path / name).write_text("")
  # transfer.json as the previous code wrote it: no sources
  (tmp_path / "transfer.json").write_text(json.dumps(
      {"original": {"examples": 3, "correct": 2, "to_target": 1},
       "pruned": {"examples": 0, "correct": 0, "to_target": 0}}))


def _transfer_json(tmp_path, config, examples, stop):
  source = {"examples": examples, "extension_images": [5, stop]}
  (tmp_path / "transfer.json").write_text(json.dumps(
      {"version": 2, **{net: {"sources": source}
                        for net in ("original", "pruned")}}))


def test_folder_finished_by_the_previous_code_runs_the_new_stages(tmp_path):
  """The main job's folder, resumed with this code: the critical and
  ablation stages run, transfer (short of --transfer_examples, from before
  the extension) and the report again; nothing else."""
  config = configs.presets.quick(workers=1)
  _finished_by_the_previous_code(tmp_path, config)
  pipeline, ran = _stubbed(config, tmp_path)
  pipeline.run()
  assert ran == ["critical", "transfer", "ablation", "report"]
  assert io.read_json(tmp_path / "config.json") == config.to_json()
  wanted = config.analysis.transfer_examples
  _transfer_json(tmp_path, config, wanted, 6)
  pipeline, ran = _stubbed(config, tmp_path)
  pipeline.run()
  assert ran == []
  # short of the examples with images left: transfer and report again
  _transfer_json(tmp_path, config, wanted - 1, 6)
  pipeline, ran = _stubbed(config, tmp_path)
  pipeline.run()
  assert ran == ["transfer", "report"]
  # short, but the cap on extra images was reached: nothing to gain
  _transfer_json(tmp_path, config, wanted - 1,
                 5 + config.analysis.transfer_max_images)
  pipeline, ran = _stubbed(config, tmp_path)
  pipeline.run()
  assert ran == []
  # the new stages' options are fixed once they started
  pipeline, ran = _stubbed(config.replace(ablation_fraction=0.3), tmp_path)
  with pytest.raises(io.ConfigMismatchError):
    pipeline.run()
  pipeline, ran = _stubbed(config.replace(transfer_examples=7), tmp_path)
  with pytest.raises(io.ConfigMismatchError):
    pipeline.run()


def _children(pid, command):
  """The children of `pid` running `command` (after their exec)."""
  try:
    with open(f"/proc/{pid}/task/{pid}/children") as f:
      pids = [int(c) for c in f.read().split()]
  except OSError:
    return []
  found = []
  for child in pids:
    try:
      with open(f"/proc/{child}/cmdline", "rb") as f:
        if command.encode() in f.read():
          found.append(child)
    except OSError:
      pass
  return found


def _alive(pid):
  try:
    with open(f"/proc/{pid}/stat") as f:
      return f.read().rsplit(")", 1)[1].split()[0] != "Z"
  except OSError:
    return False


@pytest.mark.skipif(not os.path.exists("/proc/self/task"),
                    reason="reads the process tree from /proc")
def test_killed_pipeline_takes_its_evaluate_child_along(tmp_path):
  """kill -9 of the pipeline during verify used to leave `evaluate`
  running, appending to the results file a rerun appends to as well."""
  out = tmp_path / "out"
  rng = np.random.default_rng(0)
  for net in ("original", "pruned"):
    network_lib.save_network(network_lib.Network(
        (rng.normal(size=(784, 8)).astype(np.float32),
         rng.normal(size=(8, 10)).astype(np.float32)),
        (np.zeros(8, np.float32), np.zeros(10, np.float32))),
        out / net / "network.npz")
  stages = {n: {"complete": True, "seconds": 1.0}
            for n in ("train", "prune", "accuracy", "critical")}
  (out / "pipeline.json").write_text(json.dumps(
      {"config": OLD_QUICK_CONFIG, "stages": stages, "evaluation": {}}))
  env = {**os.environ, "JAX_PLATFORMS": "cpu"}
  pipeline = subprocess.Popen(
      [sys.executable, "-m", "robust_prune.pipeline", f"--out_dir={out}",
       "--quick", "--workers=1"], env=env, stdout=subprocess.DEVNULL,
      stderr=subprocess.DEVNULL)
  child = None
  try:
    deadline = time.time() + 240
    while child is None and time.time() < deadline and pipeline.poll() is None:
      child = next(iter(_children(pipeline.pid, "robust_prune.evaluate")),
                   None)
      time.sleep(0.05)
    assert child is not None, "the pipeline started no verify child"
    time.sleep(0.5)
    os.kill(pipeline.pid, signal.SIGKILL)
    pipeline.wait()
    # It dies with its parent at once; left alive, it would still be
    # starting up (seconds) and then verify.
    deadline = time.time() + 3
    while _alive(child) and time.time() < deadline:
      time.sleep(0.1)
    assert not _alive(child), "evaluate outlived the killed pipeline"
  finally:
    if pipeline.poll() is None:
      pipeline.kill()
    if child is not None and _alive(child):
      os.kill(child, signal.SIGKILL)


def test_a_skipped_transfer_stays_done_on_a_rerun(tmp_path):
  """A sweep's RQ4-only run records transfer as skipped (no transfer.json):
  a rerun used to reopen it, and the report with it, every time."""
  config = configs.presets.quick()
  pipeline, ran = _stubbed(config, tmp_path)
  pipeline.transfer = lambda: ran.append("transfer") or {"skipped": "RQ4"}
  pipeline.verify = lambda: {"radii": list(config.verify.grid)}
  pipeline.run()
  assert "transfer" in ran and not os.path.exists(tmp_path / "transfer.json")
  pipeline, ran = _stubbed(config, tmp_path)
  pipeline.run()
  assert ran == []


def test_ablation_images_past_the_test_set_are_refused_before_training(
    tmp_path):
  config = configs.presets.quick(first_image=9990, num_images=5,
                                 ablation_images=30)
  pipeline, ran = _stubbed(config, tmp_path)
  with pytest.raises(ValueError, match="--ablation_images=30 from "
                     "--first_image=9990 ends at test image 10019"):
    pipeline.run()
  assert ran == []
