"""The pipeline's `ablation` stage: the original network without its k most
accuracy-critical, k most robustness-critical or k random neurons per layer
(stages/ablation.py says how they are ranked), each measured like the
original: clean and PGD-40 accuracy on the test set, and verified robust
accuracy at the paper radius on --ablation_images test images with the
certify cascade (robust_prune.verify's runner, in this process with one
worker: the three ablated networks share one shape, so its jitted steps
compile once, where an `evaluate` child per network would compile them in
every worker) and --ablation_image_time_limit seconds per image (the
original is verified again under that same budget, so the four networks
are compared alike). With a budget under 5 s per image the MILP never
starts: CROWN, PGD and the branch and bound decide.

  OUT/ablation/{variant}/network.npz   the smaller networks (+ removed.json)
  OUT/ablation/{name}/correct.npz      per test image: clean / PGD correct
  OUT/ablation/verify_{name}.jsonl     their verification records
  OUT/ablation.json                    the table the report shows

Every file is kept as it is made: a rerun redoes only what is missing.
"""

from __future__ import annotations

import io as io_lib
import os
from typing import Any, Callable

import numpy as np

from robust_prune import io
from robust_prune import network as network_lib
from robust_prune.analysis import curves
from robust_prune.stages import ablation as ablation_lib

RESULT = "ablation.json"
FOLDER = "ablation"
NAMES = ("original",) + ablation_lib.VARIANTS


def _ablated_networks(config, out_dir: str) -> dict[str, tuple[str, Any]]:
  """{name: (network.npz path, removed per layer or None)}, the ablated
  networks written where missing."""
  critical = io.read_json(os.path.join(out_dir, "critical.json"))
  if isinstance(critical, dict) and "error" in critical:
    return None
  if not isinstance(critical, dict) or "original" not in critical:
    raise RuntimeError("critical.json is missing; run the critical stage")
  original_path = os.path.join(out_dir, "original", "network.npz")
  original = network_lib.load_network(original_path)
  removed = ablation_lib.neurons_to_remove(
      original, critical["original"]["clean"]["scores"],
      critical["original"]["adversarial"]["scores"],
      config.analysis.ablation_fraction, seed=config.train.seed)
  paths = {"original": (original_path, None)}
  for variant, gone in removed.items():
    path = os.path.join(out_dir, FOLDER, variant, "network.npz")
    network, kept = ablation_lib.remove_neurons(original, gone)
    if (not os.path.exists(path) or network_lib.network_digest(
        network_lib.load_network(path)) != network_lib.network_digest(network)):
      network_lib.save_network(network, path)
    io.atomic_write_json(os.path.join(os.path.dirname(path), "removed.json"),
                         {"removed": gone, "kept": [k.tolist() for k in kept],
                          "tie_break": ablation_lib.TIE_BREAK})
    paths[variant] = (path, gone)
  return paths


def _correct(name: str, path: str, out_dir: str, test, config):
  """(clean, PGD) correctness per test image, cached with the network's
  digest."""
  network = network_lib.load_network(path)
  digest = network_lib.network_digest(network)
  cache = os.path.join(out_dir, FOLDER, name, "correct.npz")
  if os.path.exists(cache):
    with np.load(cache) as stored:
      if str(stored["network_sha256"]) == digest:
        return stored["clean"], stored["pgd"]
  train = config.train
  clean, pgd = ablation_lib.per_image_correct(
      network, test.images, test.labels, epsilon=train.epsilon, steps=40,
      step_size=0.01, seed=train.seed)
  buffer = io_lib.BytesIO()
  np.savez(buffer, clean=clean, pgd=pgd, network_sha256=np.array(digest))
  os.makedirs(os.path.dirname(cache), exist_ok=True)
  io.atomic_write(cache, buffer.getvalue())
  return clean, pgd


def verify_name(name: str) -> str:
  return os.path.join(FOLDER, f"verify_{name}.jsonl")


def verify_in_process(config, test) -> Callable[[str, str], None]:
  """verify(network path, results path): the certify cascade on the
  stage's images, resumable (the runner skips finished pairs)."""
  from robust_prune.verify import engines, runner  # pylint: disable=g-import-not-at-top
  from robust_prune.verify.config import VerifyConfig  # pylint: disable=g-import-not-at-top
  v, a = config.verify, config.analysis
  verify_config = VerifyConfig(
      delta=v.delta, mode="certify", solver=v.solver, time_limit=v.time_limit,
      bounds=v.bounds, bab_time_limit=v.bab_time_limit,
      image_time_limit=a.ablation_image_time_limit,
      bab_intermediate=v.bab_intermediate, bab_cut_rounds=v.bab_cut_rounds)
  indices = list(range(v.first_image, v.first_image + a.ablation_images))
  engines.set_up_process()

  def verify(path: str, out: str) -> None:
    print(f"  verifying {path} at delta {v.delta:g} on {len(indices)} images "
          f"({a.ablation_image_time_limit:g} s each) -> {out}", flush=True)
    runner.verify_images(network_lib.load_network(path),
                         test.images[indices], test.labels[indices], indices,
                         v.delta, out_path=out, workers=1,
                         config=verify_config, log_every=60.0)
  return verify


def run_ablation(config, out_dir: str, test,
                 verify: Callable[[str, str], None] | None = None
                 ) -> dict[str, Any]:
  """ablation.json; `verify(network path, results path)` runs the certify
  cascade on the stage's images (default: verify_in_process)."""
  from robust_prune.verify import records as records_lib  # pylint: disable=g-import-not-at-top
  verify = verify or verify_in_process(config, test)
  paths = _ablated_networks(config, out_dir)
  if paths is None:
    error = ("no critical-neuron scores to rank by (the critical stage "
             "found no batch)")
    io.atomic_write_json(os.path.join(out_dir, RESULT), {"error": error})
    return {"error": error}
  v, a = config.verify, config.analysis
  images = list(range(v.first_image, v.first_image + a.ablation_images))
  correct, networks = {}, {}
  for name in NAMES:
    path, gone = paths[name]
    correct[name] = _correct(name, path, out_dir, test, config)
    verify(path, os.path.join(out_dir, verify_name(name)))
    records = records_lib.read_results(os.path.join(out_dir,
                                                    verify_name(name)))
    verdicts = curves.image_verdicts(records, image_indices=images)
    network = network_lib.load_network(path)
    networks[name] = {
        "removed": gone, "hidden_widths": list(network.hidden_widths),
        "parameters": network.num_parameters,
        "clean": _count(correct[name][0]), "pgd": _count(correct[name][1]),
        "verified": {str(i): verdict for i, verdict in
                     verdicts.get(v.delta, {i: curves.UNDECIDED
                                            for i in images}).items()},
        "results_file": verify_name(name)}
  result = {"fraction": a.ablation_fraction, "seed": config.train.seed,
            "removed_per_layer": list(ablation_lib.removal_counts(
                networks["original"]["hidden_widths"], a.ablation_fraction)),
            "tie_break": ablation_lib.TIE_BREAK, "delta": v.delta,
            "images": [images[0], images[-1] + 1],
            "image_time_limit": a.ablation_image_time_limit,
            "pgd_epsilon": config.train.epsilon, "networks": networks,
            "paired": _paired(correct)}
  io.atomic_write_json(os.path.join(out_dir, RESULT), result)
  return {"removed_per_layer": result["removed_per_layer"]}


def _count(correct: np.ndarray) -> dict[str, int]:
  return {"correct": int(np.sum(correct)), "n": int(len(correct))}


def _paired(correct) -> dict[str, dict]:
  """Each ablated network against the original, and the critical ablations
  against the random one, on the same test images (first, second)."""
  pairs = [(variant, "original") for variant in ablation_lib.VARIANTS]
  pairs += [("accuracy", "random"), ("robustness", "random"),
            ("accuracy", "robustness")]
  return {f"{a}_vs_{b}": {
      "first": a, "second": b,
      "clean": ablation_lib.paired_counts(correct[a][0], correct[b][0]),
      "pgd": ablation_lib.paired_counts(correct[a][1], correct[b][1])}
          for a, b in pairs}
