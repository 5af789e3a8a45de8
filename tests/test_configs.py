"""The configs and the one flag bridge: every binary's flags come from the
dataclass fields, keep their historical names and defaults, and refuse bad
values (NaN, inf, negatives, out-of-range images) before any work."""

import dataclasses
import math
import os
import subprocess
import sys

from absl import flags
import pytest

from robust_prune import configs
from robust_prune import pipeline as pipeline_lib
from robust_prune import prune as prune_lib
from robust_prune import train as train_lib
from robust_prune.configs import bridge
from testing import ablation_module

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _parse(define, *argv):
  values = flags.FlagValues()
  define(values)
  values(["prog", *argv])
  return values


def _pipeline_flags(*argv):
  return _parse(pipeline_lib.define_flags, "--out_dir=x", *argv)


def _train_flags(*argv):
  return _parse(train_lib.define_train_flags, *argv)


# ------------------------------------------------ names and defaults kept
OLD_TRAIN_DEFAULTS = dict(
    hidden=["300", "100"], epochs=20, batch_size=128, learning_rate=1e-3,
    epsilon=0.1, epsilon_warmup_epochs=2, pgd_steps=10, pgd_step_size=0.025,
    seed=0, max_train_examples=0, eval_epsilon=-1.0, eval_pgd_steps=40,
    eval_pgd_step_size=0.01, eval_pgd_examples=1000)
# The paper radius moved from 0.05 to the training epsilon 0.1 (issue 15);
# 0.05 stays on the robustness curve (--radii).
OLD_PIPELINE_DEFAULTS = dict(
    delta=0.1, num_images=100, first_image=0, hidden=["300", "100"],
    train_epsilon=0.1, epochs=20, max_train_examples=0, seed=0,
    learning_rate=1e-3, epsilon_warmup_epochs=2, threshold=0.001,
    images_per_class=1, retrain="finetune", solver="HIGHS", mode="certify",
    bounds="crown", time_limit=120.0, bab_time_limit=20.0,
    prune_time_limit=60.0, prune_margin=3.0, prune_lambda=0.0, workers=0,
    quick=False, mnist_manual_dir=None)
OLD_PRUNE_DEFAULTS = dict(
    threshold=0.001, images_per_class=1, solver="HIGHS", time_limit=60.0,
    descent_start=False, mip_gap=1e-4, margin=3.0, retrain="scratch",
    rounds=1, baseline="milp", max_accuracy_drop=0.01, critical=False,
    prune_seed=0, **{"lambda": 0.0})


@pytest.mark.parametrize("define, defaults", [
    (train_lib.define_train_flags, OLD_TRAIN_DEFAULTS),
    (pipeline_lib.define_flags, OLD_PIPELINE_DEFAULTS),
    (prune_lib.define_prune_flags, OLD_PRUNE_DEFAULTS)])
def test_every_old_flag_keeps_its_name_and_default(define, defaults):
  values = _parse(define)
  for name, default in defaults.items():
    assert values[name].default == default, name


def test_flags_build_the_dataclass_back():
  assert train_lib.config_from_flags(_train_flags()) == configs.TrainConfig()
  config = train_lib.config_from_flags(_train_flags(
      "--hidden=64,32", "--epsilon=0", "--learning_rate=0.01"))
  assert config == configs.TrainConfig(hidden=(64, 32), epsilon=0.0,
                                       learning_rate=0.01)
  assert pipeline_lib.config_from_flags(_pipeline_flags()) == configs.PAPER


def test_pipeline_flags_reach_the_nested_stages():
  config = pipeline_lib.config_from_flags(_pipeline_flags(
      "--train_epsilon=0.2", "--prune_margin=2", "--prune_lambda=0.5",
      "--prune_time_limit=7", "--time_limit=9", "--learning_rate=0.01",
      "--epsilon_warmup_epochs=1", "--hidden=8"))
  assert config.train.epsilon == 0.2 and config.train.hidden == (8,)
  assert config.train.learning_rate == 0.01
  assert config.train.epsilon_warmup_epochs == 1
  assert (config.prune.margin, config.prune.lam, config.prune.time_limit) == (
      2.0, 0.5, 7.0)
  assert config.verify.time_limit == 9.0
  # pipeline.json keeps the flat flag names the report reads.
  flat = config.to_json()
  assert flat["train_epsilon"] == 0.2 and flat["prune_margin"] == 2.0
  assert flat["hidden"] == [8]
  assert configs.PipelineConfig.from_flat(flat) == config


def test_quick_preset_and_explicit_flags():
  config = pipeline_lib.config_from_flags(_pipeline_flags("--quick",
                                                          "--epochs=5"))
  assert config.train.epochs == 5  # an explicit flag wins over the preset
  assert config.train.hidden == (32, 16)
  assert config.verify.num_images == 5
  assert config == configs.presets.quick(epochs=5)


def test_prune_flags_with_their_renames():
  values = _parse(lambda fv: (prune_lib.define_prune_flags(fv),
                              train_lib.define_train_flags(fv)),
                  "--lambda=0.5", "--prune_seed=3", "--solver=highs",
                  "--margin=2", "--epochs=4", "--hidden=5")
  options = prune_lib.options_from_flags(values)
  assert (options.lam, options.seed, options.solver, options.margin) == (
      0.5, 3, "HIGHS", 2.0)
  # Only the training flags given explicitly override the recipe.
  assert prune_lib.train_overrides_from_flags(values) == {"epochs": 4}


# ------------------------------------------- issue 17 #6 and #7: refused
@pytest.mark.parametrize("argv", [
    ["--epsilon=nan"], ["--learning_rate=nan"], ["--pgd_step_size=inf"],
    ["--max_train_examples=-5"], ["--pgd_steps=-1"],
    ["--eval_pgd_step_size=-inf"]])
def test_bad_training_flags_are_refused(argv):
  name = argv[0].split("=")[0].lstrip("-")
  with pytest.raises(ValueError, match=name):
    train_lib.config_from_flags(_train_flags(*argv))


@pytest.mark.parametrize("argv, message", [
    (["--quick", "--delta=nan"], "delta"),
    (["--delta=inf"], "delta"),
    (["--prune_margin=nan"], "prune_margin"),
    (["--num_images=0"], "num_images"),
    (["--num_images=20000"], "out of range"),
    (["--first_image=-1"], "out of range"),
    (["--first_image=9999", "--num_images=2"], "out of range"),
    (["--time_limit=0"], "time_limit"),
    (["--bab_time_limit=-1"], "bab_time_limit"),
    (["--workers=-1"], "workers"),
    (["--train_epsilon=nan"], "epsilon")])
def test_bad_pipeline_flags_are_refused_before_any_stage(argv, message):
  with pytest.raises(ValueError, match=message):
    pipeline_lib.config_from_flags(_pipeline_flags(*argv))


def test_bad_prune_flag_is_refused():
  values = _parse(prune_lib.define_prune_flags, "--margin=nan")
  with pytest.raises(ValueError, match="margin"):
    prune_lib.options_from_flags(values)


def _run_binary(module, *argv, cwd=REPO):
  env = {**os.environ, "JAX_PLATFORMS": "cpu"}
  return subprocess.run([sys.executable, "-m", module, *argv], cwd=cwd,
                        env=env, capture_output=True, text=True, timeout=300)


def test_train_binary_refuses_nan_epsilon_with_one_line(tmp_path):
  """`train --epsilon=nan` used to train *standard* and store NaN."""
  workdir = tmp_path / "run"
  done = _run_binary("robust_prune.train", f"--workdir={workdir}",
                     "--epsilon=nan", "--epochs=1",
                     "--max_train_examples=1000")
  assert done.returncode == 2, done.stderr
  assert "epsilon" in done.stderr and "Traceback" not in done.stderr
  assert not (workdir / "config.json").exists()


def test_pipeline_binary_refuses_bad_verification_flags_before_training(
    tmp_path):
  """--num_images=0 used to surface after training and pruning (stage 4),
  and the corrected rerun was then refused as another configuration."""
  out = tmp_path / "out"
  done = _run_binary("robust_prune.pipeline", f"--out_dir={out}", "--quick",
                     "--num_images=0")
  assert done.returncode == 2, done.stderr
  assert "num_images" in done.stderr
  assert not (out / "original").exists()


# ---------------------------------------------------------------- ablations
def _ablation_module():
  return ablation_module()


def test_ablation_shares_training_only_under_every_equal_training_option(
    tmp_path):
  """The ablation copied the training fields by hand and missed
  learning_rate and epsilon_warmup_epochs: variants differing there shared
  one trained network."""
  ablation = _ablation_module()
  base = configs.presets.quick()
  same = {kind: ablation._shared_dir(str(tmp_path), ablation.shared_options(
      base.replace(delta=0.1), kind), kind) for kind in ("original", "pruned")}
  for kind in ("original", "pruned"):
    assert same[kind] == ablation._shared_dir(
        str(tmp_path), ablation.shared_options(base, kind), kind)
  for change in (dict(learning_rate=0.01), dict(epsilon_warmup_epochs=1),
                 dict(batch_size=64), dict(pgd_steps=5)):
    other = base.replace(**change)
    assert ablation._shared_dir(str(tmp_path), ablation.shared_options(
        other, "original"), "original") != same["original"], change
  pruned_only = base.replace(prune_margin=1.0)
  assert ablation._shared_dir(str(tmp_path), ablation.shared_options(
      pruned_only, "original"), "original") == same["original"]
  assert ablation._shared_dir(str(tmp_path), ablation.shared_options(
      pruned_only, "pruned"), "pruned") != same["pruned"]
  for sweep in configs.SWEEPS.values():
    for overrides in sweep:
      base.replace(**overrides)  # every variant is a valid configuration


def test_every_float_field_of_every_config_is_checked_finite():
  for cls in (configs.TrainConfig, configs.PruneStage, configs.VerifyStage):
    for field in dataclasses.fields(cls):
      if field.type in ("float", float):
        with pytest.raises(ValueError, match=field.name):
          cls(**{field.name: math.nan})


@pytest.mark.parametrize("module, flag, extra", [
    ("robust_prune.train", "--workdir", []),
    ("robust_prune.prune", "--workdir", ["--network=absent.npz"]),
    ("robust_prune.pipeline", "--out_dir", ["--quick"])])
def test_unwritable_output_folder_is_one_line_exit_2(tmp_path, module, flag,
                                                     extra):
  """A folder that cannot be created (here: below a file; a read-only
  folder alike) used to end in an OSError traceback, exit 1."""
  blocker = tmp_path / "a_file"
  blocker.write_text("")
  done = _run_binary(module, f"{flag}={blocker / 'out'}", *extra)
  assert done.returncode == 2, done.stderr
  assert "Traceback" not in done.stderr
  assert len(done.stderr.strip().splitlines()) == 1, done.stderr
