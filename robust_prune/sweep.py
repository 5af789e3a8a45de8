"""Running an ablation sweep (launch/ablations/run_ablation.py): one
`robust_prune.pipeline` run per variant in OUT/<variant>/, with what
variants have in common done once.

* Shared work: a variant's original/ and pruned/ folders are symlinks into
  OUT/shared/{original,pruned}/<hash of what decides them> (every training
  option; those, every pruning option and the solver), so a network trained
  once serves every pruning method, and a pruning serves every radius.
* Waves (engine ray): one variant per distinct training first, then one per
  distinct pruning, then the rest, so no two tasks race on a shared folder.
* Equal widths (`configs.sweeps.EQUAL_WIDTHS_REFERENCE`): the reference variant
  runs first; every other variant of the sweep then gets the widths the
  reference pruned to (its pipeline.json) as --prune_widths, under its own
  name (so a rerun finds it again whatever the widths).
* Stages: RQ4 reads train, prune, accuracy and verify; by default a
  variant runs those only (`Rq4Pipeline`: the RQ1-3 stages critical,
  transfer, ablation and the per-variant report are recorded in its
  pipeline.json as skipped, with the reason). `full_pipeline` runs them all.
* Resumption: every pipeline resumes stage by stage; a finished variant
  costs one read of its pipeline.json.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import time
from typing import Any, Mapping, Sequence

from robust_prune import configs
from robust_prune import io
from robust_prune import pipeline as pipeline_lib
from robust_prune.configs import sweeps as sweeps_config

KINDS = ("original", "pruned")
# PruneStage fields whose defaults are left out of the pruned folder's key,
# so sweeps from before the field keep their shared folders.
_NEW_PRUNE_DEFAULTS = {"method": "milp", "widths": ()}


@dataclasses.dataclass(frozen=True)
class Variant:
  """One pipeline run: its folder name and its changes of the base config
  (equal widths already filled in)."""
  name: str
  overrides: Mapping[str, Any]


def _text(value) -> str:
  if isinstance(value, (tuple, list)):
    return "-".join(map(str, value))
  return str(value)


def variant_name(overrides: Mapping[str, Any]) -> str:
  """`key_value` per changed option, joined by `__` (hidden_300-100)."""
  return "__".join(f"{k}_{_text(v)}" for k, v in overrides.items())


def value_text(overrides: Mapping[str, Any]) -> str:
  return ",".join(_text(v) for v in overrides.values())


def shared_options(config: configs.PipelineConfig, kind: str
                   ) -> dict[str, Any]:
  """What decides the original network (every training option) or the
  pruned one (those, the pruning options and the solver the pipeline
  prunes with): variants that agree on them share that stage's work."""
  options = {"train": config.train.to_json()}
  if kind == "pruned":
    prune = dataclasses.asdict(config.prune)
    for key, default in _NEW_PRUNE_DEFAULTS.items():
      if prune[key] == default:
        del prune[key]
    if "widths" in prune:
      prune["widths"] = list(prune["widths"])
    options["prune"] = prune
    options["solver"] = config.verify.solver
  return options


def shared_dir(out_dir: str, options: Mapping[str, Any], kind: str) -> str:
  key = json.dumps(options, sort_keys=True)
  return os.path.join(out_dir, "shared", kind,
                      hashlib.sha256(key.encode()).hexdigest()[:16])


def _link(target: str, link: str):
  os.makedirs(target, exist_ok=True)
  if not os.path.lexists(link):
    os.makedirs(os.path.dirname(link), exist_ok=True)
    os.symlink(os.path.abspath(target), link)


RQ4_SKIPS = ("critical", "transfer", "ablation", "report")
_SKIPPED = {"skipped": "not read by the sweep (RQ4): run the sweep with "
                       "--full_pipeline for the RQ1-3 stages"}


class Rq4Pipeline(pipeline_lib.Pipeline):
  """The pipeline with the stages RQ4 does not read (RQ4_SKIPS) recorded as
  skipped: each costs a verification child per network at the sweep's
  scale (minutes per variant), for results the aggregate never shows."""

  def critical(self):
    return dict(_SKIPPED)

  def transfer(self):
    return dict(_SKIPPED)

  def ablation(self):
    return dict(_SKIPPED)

  def report(self):
    return dict(_SKIPPED)


def run_variant(base: configs.PipelineConfig, variant: Variant, out_dir: str,
                manual_dir: str | None, full_pipeline: bool = False):
  """One variant's pipeline (resumed); (its config, its folder)."""
  config = base.replace(**variant.overrides)
  run_dir = os.path.join(out_dir, variant.name)
  for kind in KINDS:
    _link(shared_dir(out_dir, shared_options(config, kind), kind),
          os.path.join(run_dir, kind))
  print(f"=== variant {variant.name} -> {run_dir}", flush=True)
  if full_pipeline:
    _reopen_skipped(run_dir)
  kind = pipeline_lib.Pipeline if full_pipeline else Rq4Pipeline
  kind(config, run_dir, manual_dir=manual_dir).run()
  return config, run_dir


def _reopen_skipped(run_dir: str):
  """Stages an RQ4-only run recorded as skipped run in a full one (the
  sweep's lock keeps every other writer out of run_dir)."""
  path = os.path.join(run_dir, pipeline_lib.STATE)
  state = io.read_json(path)
  if not isinstance(state, dict):
    return
  stages = state.get("stages", {})
  skipped = [n for n, s in stages.items() if s.get("skipped")]
  for name in skipped:
    stages[name] = {"complete": False}
  if skipped:
    io.atomic_write_json(path, state)


def variant_task(base, variant: Variant, out_dir: str, manual_dir,
                 full_pipeline: bool = False):
  """A Ray task: one variant's pipeline. A shared training or pruning folder
  held by another variant's run is waited for, then resumed (finished)."""
  while True:
    try:
      return run_variant(base, variant, out_dir, manual_dir, full_pipeline)
    except io.LockedError:
      time.sleep(5.0)


def phases(base: configs.PipelineConfig, sweep: Sequence[Mapping],
           out_dir: str, seen: dict | None = None) -> list[list]:
  """The variants (Variant or override dicts) of `sweep` in three waves: one per distinct
  training, then one per distinct pruning, then the rest, so shared work is
  done once, first. `seen` ({kind: shared folders}) holds work done by
  earlier waves; it is updated."""
  waves = [[], [], []]
  seen = seen if seen is not None else {kind: set() for kind in KINDS}
  for item in sweep:
    config = base.replace(**(item.overrides if isinstance(item, Variant)
                             else item))
    keys = {kind: shared_dir(out_dir, shared_options(config, kind), kind)
            for kind in KINDS}
    wave = (0 if keys["original"] not in seen["original"] else
            1 if keys["pruned"] not in seen["pruned"] else 2)
    for kind, key in keys.items():
      seen[kind].add(key)
    waves[wave].append(item)
  return [w for w in waves if w]


def pruned_widths(run_dir: str) -> tuple[int, ...]:
  """The widths a finished variant pruned to (its pipeline.json)."""
  state = io.read_json(os.path.join(run_dir, pipeline_lib.STATE)) or {}
  prune = state.get("stages", {}).get("prune", {})
  if not prune.get("complete") or not prune.get("widths_after"):
    raise RuntimeError(f"{run_dir} has no finished prune stage to take the "
                       f"equal widths from")
  return tuple(int(w) for w in prune["widths_after"])


def split_reference(sweep_name: str, sweep: Sequence[Mapping]):
  """(the equal-width reference variant or None, the other variants)."""
  reference = sweeps_config.EQUAL_WIDTHS_REFERENCE.get(sweep_name)
  if reference is None:
    return None, list(sweep)
  reference = dict(reference)
  if reference not in [dict(o) for o in sweep]:
    raise ValueError(f"sweep {sweep_name}: its equal-width reference "
                     f"{reference} is not one of its variants")
  return reference, [o for o in sweep if dict(o) != reference]


def with_widths(others: Sequence[Mapping], widths: tuple[int, ...]
                ) -> list[Variant]:
  """The variants named as defined, run at the reference's widths."""
  return [Variant(variant_name(o), {**o, "prune_widths": widths})
          for o in others]


@dataclasses.dataclass(frozen=True)
class Engine:
  """Where variants run: `local` one after another here, `ray` as Ray tasks
  (each asking for `cpus` CPUs and `gpus` GPUs) at `ray_address`."""
  name: str = "local"
  ray_address: str | None = None
  cpus: float = 2.0
  gpus: float = 0.0
  full_pipeline: bool = False  # also the RQ1-3 stages (see `Rq4Pipeline`)


def run_sweep(base: configs.PipelineConfig, sweep_name: str,
              sweep: Sequence[Mapping], out_dir: str,
              manual_dir: str | None, engine: Engine = Engine()
              ) -> list[tuple[Variant, configs.PipelineConfig, str]]:
  """(variant, config, run_dir) of every variant, in sweep order: the
  equal-width reference (if the sweep has one) and the variants that do
  not depend on it, then the others at its widths."""
  for overrides in sweep:  # every variant's options, before any work
    pipeline_lib.check_options(base.replace(**overrides))
  reference, others = split_reference(sweep_name, sweep)
  first = [Variant(variant_name(o), dict(o))
           for o in ([reference] if reference is not None else others)]
  if engine.name == "local":
    run = lambda variants, seen: [(v, *run_variant(
        base, v, out_dir, manual_dir, engine.full_pipeline))
                                  for v in variants]
    return _in_two_steps(run, first, others, reference)
  from robust_prune.verify import engines  # pylint: disable=g-import-not-at-top
  with engines.ray_session(engine.ray_address) as ray:
    task = ray.remote(num_cpus=engine.cpus, num_gpus=engine.gpus or None,
                      max_retries=1)(variant_task)

    def run(variants, seen):
      done = []
      for wave in phases(base, variants, out_dir, seen):
        refs = [task.remote(base, v, out_dir, manual_dir,
                            engine.full_pipeline) for v in wave]
        done += [(v, *ray.get(ref)) for v, ref in zip(wave, refs)]
      return done
    return _in_two_steps(run, first, others, reference)


def _in_two_steps(run, first, others, reference):
  seen = {kind: set() for kind in KINDS}
  done = run(first, seen)
  if reference is not None:
    widths = pruned_widths(done[0][2])
    print(f"equal widths: every method keeps {list(widths)} (the "
          f"{done[0][0].name} variant's pruned widths)", flush=True)
    done += run(with_widths(others, widths), seen)
  order = {variant_name(o): i for i, o in enumerate(
      ([reference] if reference is not None else []) + list(others))}
  return sorted(done, key=lambda d: order.get(d[0].name, len(order)))
