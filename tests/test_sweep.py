"""The sweep on Ray: shared training and pruning come first, once; the
pruning sweep at equal widths, its results and aggregate (issue 16)."""

import csv
import dataclasses
import os

import pytest

from robust_prune import configs
from robust_prune import data as data_lib
from robust_prune import io
from robust_prune import network as network_lib
from robust_prune import sweep as sweep_lib
from robust_prune import sweep_findings
from robust_prune import sweep_report
from robust_prune.analysis import curves
from robust_prune.analysis import stats
from robust_prune.report import files as report_files
from testing import ablation_module


def _ablation_module():
  return ablation_module()


def test_waves_put_each_shared_training_and_pruning_first_once(tmp_path):
  ablation = _ablation_module()
  base = configs.presets.quick()
  sweep = [dict(delta=0.02), dict(delta=0.05), dict(hidden=(24, 12)),
           dict(prune_margin=1.0), dict(hidden=(16,))]
  waves = ablation._phases(base, sweep, str(tmp_path))  # pylint: disable=protected-access
  assert waves == [[dict(delta=0.02), dict(hidden=(24, 12)), dict(hidden=(16,))],
                   [dict(prune_margin=1.0)],
                   [dict(delta=0.05)]]
  # within a wave no two variants share a training or a pruning folder
  for wave in waves[:2]:
    for kind in ("original", "pruned"):
      dirs = [ablation._shared_dir(str(tmp_path), ablation.shared_options(  # pylint: disable=protected-access
          base.replace(**o), kind), kind) for o in wave]
      if kind == "pruned" or wave is waves[0]:
        assert len(set(dirs)) == len(dirs), (kind, wave)


def test_one_variant_per_sweep_when_nothing_is_shared(tmp_path):
  ablation = _ablation_module()
  base = configs.presets.quick()
  sweep = configs.QUICK_SWEEPS["widths"]
  waves = ablation._phases(base, sweep, str(tmp_path))  # pylint: disable=protected-access
  assert waves == [list(sweep)]


def test_rq4_variants_are_valid_and_named_by_every_changed_option():
  ablation = _ablation_module()
  base = configs.presets.quick()
  names = set()
  for sweep in (configs.SWEEPS["rq4"], configs.QUICK_SWEEPS["rq4"]):
    for overrides in sweep:
      config = base.replace(**overrides)
      assert config.train.hidden == tuple(overrides["hidden"])
      assert config.train.rs_weight == overrides.get("rs_weight", 0.0)
      names.add(ablation.variant_name(overrides))
  assert len(names) == len(configs.SWEEPS["rq4"]) + len(
      configs.QUICK_SWEEPS["rq4"])
  assert ablation.variant_name(dict(hidden=(300, 100))) == "hidden_300-100"
  assert ablation.variant_name(dict(train_epsilon=0.1, rs_weight=0.002)) == (
      "train_epsilon_0.1__rs_weight_0.002")


# ------------------------------------------------------ the pruning sweep
# Tiny enough for CI: a 12-6 network, 2 test images, one radius.
TINY = dict(hidden=(12, 6), epochs=5, batch_size=32, learning_rate=1e-2,
            epsilon_warmup_epochs=0, train_epsilon=0.02, pgd_steps=1,
            pgd_step_size=0.02, max_train_examples=5000, eval_pgd_steps=2,
            eval_pgd_examples=100, num_images=2, delta=0.02, radii=(0.02,),
            prune_margin=0.05, prune_time_limit=5.0, time_limit=5.0,
            bab_time_limit=1.0, image_time_limit=3.0, workers=1)


def test_pruned_folders_are_keyed_by_method_and_widths(tmp_path):
  base = configs.presets.quick()
  key = lambda c: sweep_lib.shared_dir(
      str(tmp_path), sweep_lib.shared_options(c, "pruned"), "pruned")
  keys = {key(base.replace(prune_method=m)) for m in
          configs.sweeps.PRUNING_METHODS}
  keys.add(key(base.replace(prune_method="lp", prune_widths="8,4")))
  assert len(keys) == len(configs.sweeps.PRUNING_METHODS) + 1
  # the default keeps the key it had before the method existed
  old = {"train": base.train.to_json(), "solver": base.verify.solver,
         "prune": {k: v for k, v in dataclasses.asdict(base.prune).items()
                   if k not in ("method", "widths")}}
  assert key(base) == sweep_lib.shared_dir(str(tmp_path), old, "pruned")
  originals = {sweep_lib.shared_dir(str(tmp_path), sweep_lib.shared_options(
      base.replace(prune_method=m), "original"), "original")
               for m in configs.sweeps.PRUNING_METHODS}
  assert len(originals) == 1   # one trained network for every method


def test_equal_width_plan_runs_the_reference_first_and_names_stay():
  sweep = configs.SWEEPS["pruning"]
  reference, others = sweep_lib.split_reference("pruning", sweep)
  assert reference == dict(prune_method="milp")
  assert [o["prune_method"] for o in others] == [
      "robust_milp", "lp", "magnitude", "random"]
  variants = sweep_lib.with_widths(others, (138, 70))
  assert variants[0].name == "prune_method_robust_milp"
  assert variants[0].overrides["prune_widths"] == (138, 70)
  config = configs.presets.quick(hidden=(300, 100)).replace(
      **variants[2].overrides)
  assert config.prune.widths == (138, 70) and config.prune.method == "magnitude"
  assert sweep_lib.split_reference("delta", [dict(delta=0.1)]) == (
      None, [dict(delta=0.1)])
  with pytest.raises(ValueError, match="reference"):
    sweep_lib.split_reference("pruning", [dict(prune_method="lp")])


def _row(method, robust, n=100, network="pruned", clean=0.9):
  p = stats.wilson_interval(robust, n)
  return {"variant": method, "method": method, "network": network,
          "hidden_widths": "8-4", "parameters": 100, "clean_accuracy": clean,
          "pgd_accuracy": 0.8, "delta": 0.1, "paper_delta": True,
          "images": n, "robust": robust, "robust_fraction": robust / n,
          "robust_ci_low": p.low, "robust_ci_high": p.high, "adversarial": 0,
          "undecided": n - robust, "unstable_neurons": 3.0,
          "seconds_per_image": 1.0}


def test_findings_claim_only_disjoint_intervals():
  rows = [_row("unpruned", 60, network="original"), _row("milp", 58),
          _row("magnitude", 20), _row("random", 55)]
  text = sweep_findings.findings_text(rows)
  assert "milp vs unpruned: -2.0 points, not supported" in text
  assert "milp vs magnitude: +38.0 points, supported" in text
  assert "random vs magnitude: +35.0 points, supported" in text
  assert "best method is not supported" in text   # milp and random overlap
  best = sweep_report.frontier([_row("a", 50, clean=0.9),
                                _row("b", 60, clean=0.8),
                                _row("c", 40, clean=0.85)])
  assert [r["method"] for r in best] == ["a", "b"]


def _csv_rows(path):
  with open(path) as f:
    return list(csv.DictReader(f))


def _check_aggregate_matches_variants(out, done):
  rows = _csv_rows(out / "aggregate.csv")
  assert len(rows) == 2 * len(done)   # 2 networks x 1 radius per variant
  table = (out / "aggregate.md").read_text()
  for variant, config, run_dir in done:
    result = io.read_json(os.path.join(run_dir, "variant_result.json"))
    state = io.read_json(os.path.join(run_dir, "pipeline.json"))
    records = report_files.read_curve(
        run_dir, report_files.read_records(run_dir), state["config"])
    for net, n in result["networks"].items():
      (band,) = curves.robustness_bands(records[net], image_indices=[0, 1])
      (r,) = n["radii"]
      assert (r["robust"]["count"], r["adversarial"]["count"],
              r["undecided"]["count"]) == (band.robust, band.adversarial,
                                           band.undecided)
      network = network_lib.load_network(os.path.join(run_dir, net,
                                                      "network.npz"))
      assert n["parameters"] == network.num_parameters
      (row,) = [x for x in rows if x["variant"] == variant.name
                and x["network"] == net]
      assert int(row["parameters"]) == n["parameters"]
      assert float(row["clean_accuracy"]) == n["clean_accuracy"]
      assert float(row["clean_accuracy"]) == state["evaluation"][net][
          "clean_accuracy"]
      for key in ("robust", "adversarial", "undecided"):
        assert int(row[key]) == r[key]["count"]
        assert float(row[f"{key}_ci_low"]) == r[key]["ci"][0]
        assert float(row[f"{key}_ci_high"]) == r[key]["ci"][1]
      assert float(row["unstable_neurons"]) == r["unstable_neurons"]
      assert float(row["seconds_per_image"]) == r["seconds_per_image"]
      assert f"| {variant.name} |" in table


def test_quick_pruning_sweep_on_local_ray_end_to_end_and_resumed(tmp_path):
  ablation = _ablation_module()
  base = configs.PipelineConfig.from_flat(TINY)
  sweep = configs.QUICK_SWEEPS["pruning"]
  out = tmp_path / "sweep"
  done = sweep_lib.run_sweep(base, "pruning", sweep, str(out), None,
                             sweep_lib.Engine("ray", cpus=1.0))
  assert [v.name for v, _, _ in done] == [
      ablation.variant_name(o) for o in sweep]
  test_images = data_lib.load_split("test").images
  ablation.aggregate(done, str(out), test_images)
  # equal widths: every method pruned to the milp variant's widths, from
  # one trained network
  widths = [io.read_json(os.path.join(d, "pipeline.json"))["stages"]["prune"][
      "widths_after"] for _, _, d in done]
  assert all(w == widths[0] for w in widths) and widths[0] != [12, 6]
  assert len({os.path.realpath(os.path.join(d, "original"))
              for _, _, d in done}) == 1
  assert len({os.path.realpath(os.path.join(d, "pruned"))
              for _, _, d in done}) == len(done)
  for name in ("aggregate.csv", "aggregate.md", *sweep_report.PLOTS):
    assert (out / name).stat().st_size > 0, name
  _check_aggregate_matches_variants(out, done)
  # resumption: every stage of every variant is skipped on a rerun
  before = {d: io.read_json(os.path.join(d, "pipeline.json"))["stages"]
            for _, _, d in done}
  mtimes = {d: os.path.getmtime(os.path.join(d, "variant_result.json"))
            for _, _, d in done}
  again = sweep_lib.run_sweep(base, "pruning", sweep, str(out), None)
  ablation.aggregate(again, str(out), test_images)
  for _, _, d in again:
    stages = io.read_json(os.path.join(d, "pipeline.json"))["stages"]
    for name in ("train", "prune", "accuracy", "verify"):
      assert stages[name]["seconds"] == before[d][name]["seconds"], (d, name)
    assert os.path.getmtime(os.path.join(d, "variant_result.json")) == mtimes[d]


def test_a_full_pipeline_rerun_reopens_the_stages_rq4_skipped(tmp_path):
  state = {"config": {}, "stages": {
      "train": {"complete": True, "seconds": 5.0},
      "critical": {"complete": True, **sweep_lib._SKIPPED},  # pylint: disable=protected-access
      "report": {"complete": True, **sweep_lib._SKIPPED}}}  # pylint: disable=protected-access
  io.atomic_write_json(tmp_path / "pipeline.json", state)
  sweep_lib._reopen_skipped(str(tmp_path))  # pylint: disable=protected-access
  stages = io.read_json(tmp_path / "pipeline.json")["stages"]
  assert stages["train"] == {"complete": True, "seconds": 5.0}
  assert stages["critical"] == {"complete": False}
  assert stages["report"] == {"complete": False}
