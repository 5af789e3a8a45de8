"""One sweep variant's results (OUT/<variant>/variant_result.json), from its
finished pipeline folder: per network (original, pruned) its parameters,
clean and PGD accuracy, median minimum distortion, and per radius of its
curve the verified robust accuracy band (proven robust / adversarial /
undecided images, each with a 95% Wilson interval), the mean number of
unstable neurons under CROWN bounds and the verification seconds per image.

The file is recomputed only when the variant's verification records or
accuracies change (their digest is stored in it).
"""

from __future__ import annotations

import hashlib
import json
import os
from typing import Any, Mapping

import numpy as np

from robust_prune import bounds
from robust_prune import configs
from robust_prune import io
from robust_prune import network as network_lib
from robust_prune import pipeline as pipeline_lib
from robust_prune.analysis import curves
from robust_prune.analysis import distortion
from robust_prune.analysis import stats
from robust_prune.report import files as report_files
from robust_prune.report import science
from robust_prune.report import tables

RESULT = "variant_result.json"
NETWORKS = tables.NETWORKS


def image_seconds(records) -> dict[tuple[float, int], float]:
  """(delta, image) -> verification seconds of that image: its records'
  `image_seconds` (certify mode), else the sum of their stage seconds."""
  grouped: dict[tuple[float, int], list] = {}
  for r in records:
    grouped.setdefault((float(r["delta"]), int(r["image_index"])),
                       []).append(r)
  out = {}
  for key, rs in grouped.items():
    timed = [r["image_seconds"] for r in rs if r.get("image_seconds")]
    out[key] = (max(timed) if timed else float(sum(
        r.get("build_seconds", 0.0) + r.get("bounds_seconds", 0.0)
        + r.get("solve_seconds", 0.0) + (r.get("bab_seconds") or 0.0)
        for r in rs)))
  return out


def unstable_neurons(network, images: np.ndarray, delta: float):
  """(mean unstable neurons per image, mean per hidden layer): CROWN bounds
  with lower < 0 < upper over each image's delta-box."""
  lower, upper = bounds.input_box(np.asarray(images).reshape(len(images), -1),
                                  delta)
  per_image = np.array([b.unstable_counts() for b in bounds.crown_bounds(
      network, lower, upper)], np.float64)
  return float(per_image.sum(axis=1).mean()), per_image.mean(axis=0).tolist()


def _proportion(successes: int, n: int) -> dict[str, Any]:
  p = stats.wilson_interval(successes, n)
  return {"count": successes, "fraction": science.finite(p.estimate),
          "ci": [p.low, p.high]}


def radius_rows(curve_records, network, test_images, indices) -> list[dict]:
  """One row per radius: the band's counts with Wilson intervals, unstable
  neurons and seconds per image."""
  seconds = image_seconds(curve_records)
  rows = []
  for band in curves.robustness_bands(curve_records, image_indices=indices):
    n = band.images
    timed = [s for (d, _), s in seconds.items() if d == band.delta]
    unstable, per_layer = unstable_neurons(
        network, test_images[np.asarray(indices)], band.delta)
    rows.append({
        "delta": band.delta, "images": n,
        "robust": _proportion(band.robust, n),
        "adversarial": _proportion(band.adversarial, n),
        "undecided": _proportion(band.undecided, n),
        "misclassified": band.misclassified,
        # robust accuracy lies in [robust, robust + undecided] / n
        "possibly_robust": _proportion(band.robust + band.undecided, n),
        "unstable_neurons": unstable, "unstable_per_layer": per_layer,
        "seconds_per_image": float(np.mean(timed)) if timed else None,
        "seconds_per_image_max": float(np.max(timed)) if timed else None})
  return rows


def network_result(run_dir: str, net: str, evaluation: Mapping,
                   curve_records, test_images, indices) -> dict[str, Any]:
  network = network_lib.load_network(os.path.join(run_dir, net,
                                                  "network.npz"))
  pixels = {i: test_images[i] for i in indices}
  median = science.distortion_summary(distortion.distortion_intervals(
      curve_records, images=pixels, image_indices=indices))
  return {
      "hidden_widths": list(network.hidden_widths),
      "parameters": network.num_parameters,
      "clean_accuracy": evaluation.get("clean_accuracy"),
      "pgd_accuracy": evaluation.get("pgd_accuracy"),
      "pgd_epsilon": evaluation.get("pgd_epsilon"),
      # the median minimum L-inf distortion lies between these (proven ends)
      "median_distortion": median["median_bounds"],
      "median_distortion_ci": median["median_ci"],
      "radii": radius_rows(curve_records, network, test_images, indices)}


def _records(run_dir: str, config_json: Mapping) -> dict[str, list]:
  return report_files.read_curve(run_dir, report_files.read_records(run_dir),
                                 config_json)


def _digest(curve: Mapping[str, list], evaluation: Mapping) -> str:
  text = json.dumps({"curve": curve, "evaluation": evaluation},
                    sort_keys=True, default=str)
  return hashlib.sha256(text.encode()).hexdigest()


def variant_result(name: str, overrides: Mapping[str, Any],
                   config: configs.PipelineConfig, run_dir: str,
                   test_images: np.ndarray) -> dict[str, Any]:
  """The variant's results (see the module docstring), from
  run_dir/variant_result.json when it is current, else computed and
  written there."""
  state = io.read_json(os.path.join(run_dir, pipeline_lib.STATE)) or {}
  config_json = state.get("config") or config.to_json()
  evaluation = state.get("evaluation", {})
  curve = {net: [dict(r) for r in rs]
           for net, rs in _records(run_dir, config_json).items()}
  digest = _digest(curve, evaluation)
  path = os.path.join(run_dir, RESULT)
  cached = io.read_json(path)
  if isinstance(cached, dict) and cached.get("digest") == digest:
    return cached
  indices = report_files.image_indices(config_json)
  result = {
      "variant": name, "overrides": {k: _plain(v) for k, v in
                                     overrides.items()},
      "method": config.prune.method, "paper_delta": config.verify.delta,
      "prune_widths": list(config.prune.widths), "digest": digest,
      "networks": {net: network_result(run_dir, net, evaluation.get(net, {}),
                                       curve[net], test_images, indices)
                   for net in NETWORKS}}
  io.atomic_write_json(path, result)
  return result


def _plain(value):
  return list(value) if isinstance(value, tuple) else value
