"""The paper end to end (absl binary; `launch/reproduce_paper.sh` calls it).

    python -m robust_prune.pipeline --out_dir=OUT [--delta=0.1]
        [--radii=0.02,0.05,0.1] [--quick]

Stages, each writing into OUT and skipped when its output is complete, so an
interrupted run resumes where it stopped:
  1. train      OUT/original/   PGD adversarial training of the original net
  2. prune      OUT/pruned/     MILP importance scores -> prune -> retrain
  3. accuracy   pipeline.json   clean and PGD-40 accuracy of both networks
  4. critical   OUT/critical.json   RQ1/RQ2: importance scores of both
                networks on one batch, clean and under PGD; critical sets
                and their Jaccard overlaps (robust_prune/stages/critical.py)
  5. verify     both networks at every radius of the curve (--radii and the
                paper radius --delta): OUT/verify_{original,pruned}.jsonl
                at the paper radius, verify_{net}_delta{r}.jsonl at the
                others; certify mode by default (CROWN, PGD, branch and
                bound, then MILP; --mode=targeted for the optima), first N
                test images x 9 targets, --image_time_limit seconds per
                image and radius
  6. transfer   OUT/transfer.json   each network on the other's examples
                at the paper radius, >= --transfer_examples per side (more
                test images when needed: robust_prune/stages/transfer.py)
  7. ablation   OUT/ablation.json   the original without its most
                accuracy-critical / robustness-critical / random neurons:
                clean, PGD and verified accuracy (stages/ablation_stage.py)
  8. report     OUT/report.md (+ CSV, PNG)

Every stage's options are checked before stage 1. OUT is locked for the run
(a second pipeline on it is refused), OUT/config.json holds the options, and
a rerun may change the options of stages that have not started yet.
"""

from __future__ import annotations

import os
import platform
import time
from typing import Any, Callable, Sequence

from absl import flags
from absl import logging

from robust_prune import cli
from robust_prune import configs
from robust_prune import data as data_lib
from robust_prune import io
from robust_prune import network as network_lib
from robust_prune import processes
from robust_prune import prune as prune_lib
from robust_prune import report as report_lib
from robust_prune import train as train_lib
from robust_prune.stages import ablation_stage
from robust_prune.stages.child import run_child
from robust_prune.stages import critical as critical_stage
from robust_prune.stages import transfer as transfer_stage
from robust_prune.configs import bridge
from robust_prune.configs import PipelineConfig
from robust_prune.verify import records as records_lib

STATE = "pipeline.json"
CONFIG = "config.json"
QUICK = configs.QUICK
VERIFIER = "robust_prune.evaluate"
ADDED_AFTER_CONFIG_JSON = ("radii", "image_time_limit",
                           "bab_intermediate", "bab_cut_rounds") + tuple(
    s.name for s in configs.PIPELINE_FLAGS if s.path[0] == "analysis")
STAGES = ("train", "prune", "accuracy", "critical", "verify", "transfer",
          "ablation", "report")


def check_options(config: PipelineConfig) -> None:
  """Every stage's options, before stage 1 runs (a bad verification flag
  used to surface only after training and pruning). The dataclasses check
  their own fields; the pruning options are checked as the prune stage
  will build them (solver installed, margin, ...)."""
  prune_lib.pipeline_prune_options(config)
  v, a = config.verify, config.analysis
  last = v.first_image + a.ablation_images - 1
  if last >= data_lib.SPLIT_SIZES["test"]:
    raise ValueError(
        f"--ablation_images={a.ablation_images} from --first_image="
        f"{v.first_image} ends at test image {last}: the test set has images "
        f"0..{data_lib.SPLIT_SIZES['test'] - 1}")


def _machine() -> str:
  return (f"{platform.node() or 'host'}: {os.cpu_count()} cores, "
          f"{platform.processor() or platform.machine()}")


class Pipeline:
  """Runs the stages in order; `pipeline.json` records what started and
  what finished. `splits` (train, test) spares a caller that holds MNIST
  another load."""

  def __init__(self, config: PipelineConfig, out_dir: str,
               manual_dir: str | None = None, *,
               splits: tuple[data_lib.Split, data_lib.Split] | None = None,
               engine: str = "local", ray_address: str | None = None):
    self.config = config
    self.out_dir = out_dir
    self.manual_dir = manual_dir
    # Where verification runs changes no result, so it is not configuration
    # (a rerun may move to a cluster).
    self.engine, self.ray_address = engine, ray_address
    self.state_path = os.path.join(out_dir, STATE)
    self.state: dict[str, Any] = {}
    self._splits = splits

  # -------------------------------------------------------------- bookkeeping
  def _load_state(self) -> dict[str, Any]:
    state = io.read_json(self.state_path)
    if state is None:
      return {"config": self.config.to_json(), "stages": {},
              "machine": _machine(), "evaluation": {}}
    if not isinstance(state, dict) or not isinstance(state.get("stages"),
                                                     dict):
      raise ValueError(f"{self.state_path} is not a pipeline state file; "
                       f"use a fresh output folder")
    return state

  def _guard_config(self) -> None:
    """OUT/config.json: the options of this folder's run. Options of a
    stage that has started are fixed; the others may change on a rerun."""
    path = os.path.join(self.out_dir, CONFIG)
    if not os.path.exists(path) and "config" in self.state:
      # A folder from before config.json: options added since then were
      # not flags yet, so they had their defaults (the curve's radii came
      # later still: a rerun sets them).
      defaults = {k: v for k, v in PipelineConfig().to_json().items()
                  if k not in ADDED_AFTER_CONFIG_JSON}
      io.atomic_write_json(path, {**defaults, **self.state["config"]})
    stored = io.read_json(path)
    new = self.config.to_json()
    fixed = {name for stage in self.state["stages"]
             for name in configs.options_of_stage(stage)}
    # An option added since config.json was written (the curve's --radii,
    # --image_time_limit) was never fixed by this folder's stages: a rerun
    # sets it.
    changed = ({k for k in io.config_diff(stored, new) if k in stored}
               if isinstance(stored, dict) else set(new))
    io.guard_config(path, new, replaceable=not changed & fixed)
    self.state["config"] = new

  def _save_state(self):
    io.atomic_write_json(self.state_path, self.state)

  def path(self, *parts) -> str:
    # Resolved, so that stages shared between runs through a symlink (the
    # ablations) see one path and recognise their finished work.
    return os.path.realpath(os.path.join(self.out_dir, *parts))

  @property
  def splits(self) -> tuple[data_lib.Split, data_lib.Split]:
    if self._splits is None:
      self._splits = data_lib.load_mnist(self.manual_dir)
    return self._splits

  def run_stage(self, name: str, fn: Callable[[], Any], number: int,
                total: int):
    done = self.state["stages"].get(name, {})
    if done.get("complete"):
      logging.info("[%d/%d] %s: already complete (%.0f s), skipped", number,
                   total, name, done.get("seconds", 0.0))
      print(f"[{number}/{total}] {name}: already complete, skipped", flush=True)
      return
    print(f"[{number}/{total}] {name}: running ...", flush=True)
    # Recorded before it runs: from now on its options are fixed.
    self.state["stages"][name] = {**done, "complete": False}
    self._save_state()
    start = time.perf_counter()
    details = fn() or {}
    seconds = done.get("seconds", 0.0) + time.perf_counter() - start
    self.state["stages"][name] = {"complete": True, "seconds": seconds,
                                  **details}
    self.state["total_seconds"] = sum(
        s.get("seconds", 0.0) for s in self.state["stages"].values())
    self._save_state()
    print(f"[{number}/{total}] {name}: done in {seconds:.0f} s "
          f"(pipeline total {self.state['total_seconds']:.0f} s)", flush=True)

  # -------------------------------------------------------------- stages
  def train(self):
    train, test = self.splits
    history = train_lib.train_and_evaluate(
        self.config.train, self.path("original"), train=train, test=test)
    return {"epochs": len(history)}

  def prune(self):
    return prune_lib.run_pruning_stage(
        self.path("original", "network.npz"), self.path("pruned"),
        prune_lib.pipeline_prune_options(self.config), splits=self.splits)

  def accuracy(self):
    _, test = self.splits
    train_config = self.config.train
    results = {}
    for net in report_lib.NETWORKS:
      network = network_lib.load_network(self.path(net, "network.npz"))
      clean, robust = train_lib.network_accuracy(
          network, test, epsilon=train_config.epsilon, pgd_steps=40,
          pgd_step_size=0.01, seed=train_config.seed)
      results[net] = {"clean_accuracy": clean, "pgd_accuracy": robust,
                      "pgd_epsilon": train_config.epsilon,
                      "hidden_widths": list(network.hidden_widths),
                      "parameters": network.num_parameters}
    self.state["evaluation"] = results
    return {}

  def results_path(self, net: str, delta: float) -> str:
    return self.path(report_lib.results_name(net, delta,
                                             self.config.verify.delta))

  def verify_args(self, net: str, delta: float | None = None) -> list[str]:
    """The flags of the `evaluate` run that verifies network `net` at radius
    `delta` (default: the paper radius); it appends and resumes on its own,
    and `python -m robust_prune.evaluate` with these flags is what a cluster
    job would run."""
    v = self.config.verify
    delta = v.delta if delta is None else delta
    return self.evaluate_args(self.path(net, "network.npz"),
                              self.results_path(net, delta), delta,
                              v.num_images, v.mode, v.image_time_limit)

  def evaluate_args(self, network: str, out: str, delta: float,
                    num_images: int, mode: str,
                    image_time_limit: float) -> list[str]:
    """The `evaluate` flags for one network and results file (the other
    options are the verify stage's)."""
    v = self.config.verify
    args = [
        f"--network={network}", f"--out={out}",
        f"--delta={delta}", f"--num_images={num_images}",
        f"--first_image={v.first_image}", f"--mode={mode}",
        f"--solver={v.solver}", f"--time_limit={v.time_limit}",
        f"--bounds={v.bounds}", f"--bab_time_limit={v.bab_time_limit}",
        f"--bab_intermediate={v.bab_intermediate}",
        f"--bab_cut_rounds={v.bab_cut_rounds}",
        f"--workers={v.workers or os.cpu_count()}"]
    if image_time_limit > 0:  # (0: not passed, the child's default)
      args.append(f"--image_time_limit={image_time_limit}")
    if self.manual_dir:
      args.append(f"--mnist_manual_dir={self.manual_dir}")
    if self.engine != "local":
      args.append(f"--engine={self.engine}")
      if self.ray_address:
        args.append(f"--ray_address={self.ray_address}")
    return args

  def _radii_in_order(self) -> list[float]:
    """The paper radius first (its tables need it), then the curve's."""
    v = self.config.verify
    return [v.delta] + [d for d in v.grid if d != v.delta]

  def verify(self):
    """Both networks on the same images at every radius of the grid, one
    results file per (network, radius)."""
    curve = {}
    for delta in self._radii_in_order():
      for net in report_lib.NETWORKS:
        args = self.verify_args(net, delta)
        print(f"  verifying {net} at delta {delta:g}: -m {VERIFIER} "
              f"{' '.join(args)}", flush=True)
        returncode = run_child(VERIFIER, args)
        out = self.results_path(net, delta)
        if returncode != 0:
          raise RuntimeError(f"verification of the {net} network at delta "
                             f"{delta:g} failed (exit {returncode}); results "
                             f"so far are kept in {out}, rerun to resume")
        curve.setdefault(net, {})[f"{delta:g}"] = report_lib.status_counts(
            records_lib.read_results(out))
    paper = f"{self.config.verify.delta:g}"
    return {"counts": {net: curve[net][paper] for net in curve},
            "curve_counts": curve, "radii": list(self.config.verify.grid)}

  def critical(self):
    return critical_stage.run_critical(self.config, self.path(),
                                       self.splits[0])

  def transfer(self):
    return transfer_stage.run_transfer(self.config, self.path(),
                                       self.splits[1])

  def ablation(self):
    return ablation_stage.run_ablation(self.config, self.path(),
                                       self.splits[1])

  def report(self):
    report_lib.write_report(self.out_dir, images=self.splits[1].images)
    return {}

  def _reopen_verify(self):
    """A finished verify stage runs again, and so do the stages that read
    its results, when its results hold `error` records (a solver crash,
    say: `evaluate` retries just those pairs and keeps every line written)
    or when a radius of the grid was not run (a folder from before the
    curve: it had the paper radius only)."""
    verify = self.state["stages"].get("verify", {})
    if not verify.get("complete"):
      return
    grid = self.config.verify.grid
    done = verify.get("radii", [self.config.verify.delta])
    missing = [d for d in grid if d not in done]
    errors = sum(r["status"] == "error"
                 for net in report_lib.NETWORKS for delta in grid
                 if delta not in missing
                 for r in records_lib.read_results(
                     self.results_path(net, delta)))
    if errors:
      print(f"verify: {errors} pairs ended in error; retrying them", flush=True)
    if missing:
      print(f"verify: radii {', '.join(f'{d:g}' for d in missing)} of the "
            f"curve not run yet; running them", flush=True)
    if errors or missing:
      for name in ("verify", "transfer", "report"):
        self.state["stages"].get(name, {})["complete"] = False

  def _reopen_later_stages(self):
    """A finished transfer stage from before the extension (or short of
    --transfer_examples with images left) runs again; the report runs
    again whenever a stage before it is to run (a folder from before the
    critical and ablation stages gets them, and a report with them)."""
    stages = self.state["stages"]
    transfer = stages.get("transfer", {})
    # A sweep's RQ4-only run records transfer as skipped: nothing to redo.
    if (transfer.get("complete") and not transfer.get("skipped")
        and transfer_stage.needs_rerun(self.path(), self.config)):
      print("transfer: fewer examples than --transfer_examples or a file "
            "from before the extension; running it again", flush=True)
      stages["transfer"]["complete"] = False
    if any(not stages.get(n, {}).get("complete") for n in STAGES[:-1]):
      stages.get("report", {})["complete"] = False

  def run(self) -> dict[str, Any]:
    check_options(self.config)
    stages = [(name, getattr(self, name)) for name in STAGES]
    with io.locked_workdir(self.out_dir, "pipeline"):
      self.state = self._load_state()
      self._guard_config()
      self._reopen_verify()
      self._reopen_later_stages()
      for number, (name, fn) in enumerate(stages, 1):
        self.run_stage(name, fn, number, len(stages))
    return self.state


# ------------------------------------------------------------------ binary
def define_flags(flag_values: flags.FlagValues = flags.FLAGS):
  flags.DEFINE_string("out_dir", None, "Output folder (resumed if it exists).",
                      flag_values=flag_values)
  bridge.define_flags(configs.PIPELINE_FLAGS, flag_values)
  flags.DEFINE_bool("quick", False, "Small network, short training, 5 images "
                    "(explicitly given flags still win).",
                    flag_values=flag_values)
  configs.define_data_flags(flag_values)
  flags.DEFINE_enum("engine", "local", ["local", "ray"], "Where the verify "
                    "stage solves its work units: this machine's process pool, "
                    "or Ray tasks (a local Ray, or --ray_address).",
                    flag_values=flag_values)
  flags.DEFINE_string("ray_address", None, "engine ray: 'auto' or host:port "
                      "of a running cluster (else $RAY_ADDRESS).",
                      flag_values=flag_values)


def config_from_flags(f: flags.FlagValues = flags.FLAGS) -> PipelineConfig:
  """The configuration the flags describe (with --quick, the quick preset
  for every flag not given); bad values are a ValueError naming the flag."""
  return bridge.config_from_flags(PipelineConfig, configs.PIPELINE_FLAGS, f,
                                  preset=QUICK if f.quick else None)


def main(argv):
  del argv
  f = flags.FLAGS
  config = config_from_flags(f)
  Pipeline(config, f.out_dir, manual_dir=f.mnist_manual_dir,
           engine=f.engine, ray_address=f.ray_address).run()
  print(f"report: {os.path.join(f.out_dir, 'report.md')}")


if __name__ == "__main__":
  define_flags()
  flags.mark_flag_as_required("out_dir")
  cli.run(main, cli.USER_ERRORS + (RuntimeError,))
