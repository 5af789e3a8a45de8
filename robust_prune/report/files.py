"""Reading the pipeline's folder and writing the report into it: every
output is built in memory first, then each written atomically, so a bad
input file leaves the previous report untouched (all files or none)."""

from __future__ import annotations

import csv
import io as io_lib
import json
import os
from typing import Mapping, Sequence

import numpy as np

from robust_prune import io
from robust_prune import network as network_lib
from robust_prune.analysis import distortion
from robust_prune.report import figures, rq12, science, tables
from robust_prune.report.markdown import render_markdown
from robust_prune.verify import records as records_lib


def csv_text(rows: Sequence[Mapping]) -> str:
  if not rows:
    return ""
  buffer = io_lib.StringIO(newline="")
  writer = csv.DictWriter(buffer, fieldnames=list(rows[0]))
  writer.writeheader()
  writer.writerows(rows)
  return buffer.getvalue()


def write_csv(rows: Sequence[Mapping], path: str):
  io.atomic_write(path, csv_text(rows))


def results_name(net: str, delta: float, paper_delta: float | None) -> str:
  """The results file of `net` at radius `delta`: verify_{net}.jsonl at the
  paper radius (the name folders from before the curve have), else
  verify_{net}_delta{delta:g}.jsonl."""
  if paper_delta is None or delta == paper_delta:
    return f"verify_{net}.jsonl"
  return f"verify_{net}_delta{delta:g}.jsonl"


def _read(path: str, what: str) -> list:
  if not os.path.exists(path):
    raise FileNotFoundError(f"missing {what} {path}; run the pipeline's "
                            f"verify stage first")
  return records_lib.read_results(path)


def read_records(out_dir: str) -> dict[str, list]:
  """{network: its verification records at the paper radius}, each file
  validated."""
  return {net: _read(os.path.join(out_dir, f"verify_{net}.jsonl"),
                     "verification results")
          for net in tables.NETWORKS}


def curve_radii(config: Mapping) -> tuple[float | None, list[float]]:
  """(paper radius, every radius of the curve) from the pipeline's stored
  options: a folder from before the curve has its paper radius only, and
  one without options none known (its records name their radius)."""
  paper = config.get("delta")
  radii = {float(d) for d in config.get("radii") or ()}
  if paper is not None:
    radii.add(float(paper))
  return (None if paper is None else float(paper)), sorted(radii)


def read_curve(out_dir: str, records_by_net: Mapping[str, list],
               config: Mapping) -> dict[str, list]:
  """{network: its records at every radius}; a record carries the radius
  of its file where it does not name one."""
  paper, radii = curve_radii(config)
  curve = {}
  for net in tables.NETWORKS:
    mine = [dict(r, delta=r.get("delta", paper)) for r in records_by_net[net]]
    for delta in radii:
      if delta != paper:
        mine += [dict(r, delta=r.get("delta", delta)) for r in _read(
            os.path.join(out_dir, results_name(net, delta, paper)),
            f"verification results at delta {delta:g}")]
    curve[net] = [r for r in mine if r["delta"] is not None]
  return curve


def _network_summary(network, records: Sequence[Mapping], evaluation: Mapping,
                     transfer: Mapping) -> dict:
  return {
      "hidden_widths": list(network.hidden_widths),
      "parameters": network.num_parameters,
      "clean_accuracy": evaluation.get("clean_accuracy"),
      "pgd_accuracy": evaluation.get("pgd_accuracy"),
      "counts": tables.status_counts(records),
      # which step settled each searched pair (crown, pgd, bab, milp)
      "decided_by": tables.decided_by_counts(records),
      "verified_robust_accuracy": tables.verified_robust_accuracy(records),
      "num_binaries": tables.describe([r.get("num_binaries") for r in records
                                       if r["status"] in tables.SEARCHED]),
      # Reverse testing: this network on the *other* network's examples.
      "reverse_accuracy": transfer.get("accuracy"),
      "reverse_examples": transfer.get("examples"),
      "reverse_correct": transfer.get("correct"),
      # with a 95% Wilson interval; and how many kept the attack's target
      # label on this network (the example transfers as a targeted one)
      "reverse_ci": science.reverse_ci(transfer),
      "reverse_to_target": transfer.get("to_target"),
  }


def image_indices(config: Mapping) -> list[int] | None:
  """The test images the verify stage ran on (None when not recorded)."""
  if config.get("num_images") is None:
    return None
  first = int(config.get("first_image", 0))
  return list(range(first, first + int(config["num_images"])))


def _pixels(images: np.ndarray | None, curve: Mapping[str, list]
            ) -> dict[int, np.ndarray] | None:
  """image_index -> pixels of the images the records name (witnesses are
  measured from them)."""
  if images is None:
    return None
  named = {int(r["image_index"]) for rs in curve.values() for r in rs}
  return {i: images[i] for i in named if 0 <= i < len(images)}


def build_summary(out_dir: str, images: np.ndarray | None = None) -> dict:
  """Everything the report shows, as one dict (also saved as summary.json);
  `images` (the test set) lets witnesses be measured from the pixels."""
  records_by_net = read_records(out_dir)
  transfer = io.read_json(os.path.join(out_dir, "transfer.json")) or {}
  pipeline = io.read_json(os.path.join(out_dir, "pipeline.json")) or {}
  config = pipeline.get("config", {})
  curve = read_curve(out_dir, records_by_net, config)
  pruning = io.read_json(os.path.join(out_dir, "pruned", "pruning.json")) or {}
  summary = {"networks": {}, "pipeline": pipeline, "pruning": pruning}
  for net in tables.NETWORKS:
    network = network_lib.load_network(os.path.join(out_dir, net, "network.npz"))
    summary["networks"][net] = _network_summary(
        network, records_by_net[net],
        pipeline.get("evaluation", {}).get(net, {}), transfer.get(net, {}))
  all_records = [r for net in tables.NETWORKS for r in records_by_net[net]]
  summary["by_label"] = tables.per_class_table(records_by_net, "label")
  summary["by_target"] = tables.per_class_table(records_by_net, "target")
  summary["statistics"] = tables.search_statistics(all_records)
  summary["statistics_coverage"] = tables.statistics_coverage(records_by_net)
  summary["confusion"] = {net: tables.confusion_counts(records_by_net[net]).tolist()
                          for net in tables.NETWORKS}
  indices, pixels = image_indices(config), _pixels(images, curve)
  summary["curve"] = science.curve_summary(curve, indices, pixels)
  intervals = {net: distortion.distortion_intervals(
      curve[net], images=pixels, image_indices=indices)
               for net in tables.NETWORKS}
  summary["distortion"] = {net: science.distortion_summary(intervals[net])
                           for net in tables.NETWORKS}
  summary["rq3"] = science.rq3(curve, intervals, transfer, indices,
                               curve_radii(config)[0],
                               summary["curve"]["bands"])
  summary["rq12"] = rq12.rq12_summary(
      io.read_json(os.path.join(out_dir, "critical.json")),
      io.read_json(os.path.join(out_dir, "ablation.json")), transfer)
  summary["records_by_net"] = records_by_net
  summary["intervals_by_net"] = intervals
  return summary


def render_files(summary: Mapping, records_by_net: Mapping[str, Sequence],
                 images: np.ndarray, intervals_by_net: Mapping[str, Mapping]
                 ) -> dict[str, bytes | str]:
  """{file name: content} of every report file, nothing written yet."""
  nets = summary["networks"]
  examples = [{**r, "network": net} for net in tables.NETWORKS
              for r in records_by_net[net]]
  return {
      "summary.json": json.dumps(summary, indent=2),
      "fig3_by_label.csv": csv_text(summary["by_label"]),
      "fig3_by_target.csv": csv_text(summary["by_target"]),
      "fig4_statistics.csv": csv_text(
          tables.statistics_rows(summary["statistics"])),
      "fig1_networks.csv": csv_text(
          [tables.network_row(n, s) for n, s in nets.items()]),
      "curve_bands.csv": csv_text(
          [{"network": net, **tables.flat_row(row)}
           for net, rows in summary["curve"]["bands"].items()
           for row in rows]),
      "fig5_curve.png": figures.plot_curve(summary["curve"]),
      "distortion.csv": csv_text(science.interval_rows(intervals_by_net)),
      "fig6_distortion_cdf.png": figures.plot_distortion_cdf(
          {net: distortion.cdf_band(iv.values())
           for net, iv in intervals_by_net.items()}),
      "fig1_counts.png": figures.plot_counts_and_transfer(summary),
      "fig2_heatmap.png": figures.plot_heatmaps(
          {n: np.asarray(c) for n, c in summary["confusion"].items()}),
      "fig2_examples.png": figures.plot_example_grid(examples, images),
      "report.md": render_markdown(summary),
      # only for folders whose critical and ablation stages ran
      **{name: csv_text(rows) for name, rows in (
          ("critical.csv", critical_csv_rows(summary["rq12"])),
          ("ablation.csv", ablation_csv_rows(summary["rq12"]))) if rows},
  }


def critical_csv_rows(rq: Mapping) -> list[dict]:
  """critical.csv: per layer and comparison, the two set sizes, their
  intersection, Jaccard and the overlap test."""
  rows = []
  for layer in (rq["critical"] or {}).get("layers", []):
    for what, names in (("original", ("clean", "adversarial")),
                        ("pruned", ("clean", "adversarial")),
                        ("consistency_clean", ("original", "pruned")),
                        ("consistency_adversarial", ("original", "pruned"))):
      o = layer[what]
      rows.append({"layer": layer["layer"], "comparison": what,
                   "first": names[0], "second": names[1],
                   "num_first": o[f"num_{names[0]}"],
                   "num_second": o[f"num_{names[1]}"],
                   "num_both": o["num_both"], "jaccard": o["jaccard"],
                   "population": o["population"],
                   "expected_both": o["expected_both"],
                   "overlap_p": o["overlap_p"]})
  return rows


def ablation_csv_rows(rq: Mapping) -> list[dict]:
  """ablation.csv: one row per network of the causal test."""
  rows = []
  for r in (rq["ablation"] or {}).get("rows", []):
    v = r["verified"]
    row = {"network": r["network"],
           "hidden_widths": "-".join(map(str, r["hidden_widths"])),
           "removed": "-".join(map(str, r["removed"])),
           "clean_correct": r["clean"]["correct"],
           "test_images": r["clean"]["n"],
           "pgd_correct": r["pgd"]["correct"],
           **{f"verified_{k}": v[k] for k in ("images", "robust",
                                              "adversarial", "undecided",
                                              "misclassified")}}
    for key in ("clean", "pgd", "verified"):
      change = (r.get("change") or {}).get(key) or {}
      row[f"{key}_change"] = change.get("difference")
      row[f"{key}_mcnemar_p"] = change.get("mcnemar_p")
    rows.append(row)
  return rows


def write_report(out_dir: str, images: np.ndarray | None = None) -> str:
  """Writes report.md, CSVs and PNGs into out_dir; returns the report path.
  Every file is rendered before the first is written."""
  if images is None:
    from robust_prune import data as data_lib  # pylint: disable=g-import-not-at-top
    images = data_lib.load_split("test").images
  summary = build_summary(out_dir, images)
  records_by_net = summary.pop("records_by_net")
  intervals_by_net = summary.pop("intervals_by_net")
  files = render_files(summary, records_by_net, images, intervals_by_net)
  for name, content in files.items():
    io.atomic_write(os.path.join(out_dir, name), content)
  return os.path.join(out_dir, "report.md")
