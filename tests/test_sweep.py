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
