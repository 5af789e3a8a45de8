"""The sweep on Ray: shared training and pruning come first, once (issue 16)."""

from robust_prune import configs
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
