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
from robust_prune.report import figures, tables
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


def read_records(out_dir: str) -> dict[str, list]:
  """{network: its verification records}, each file validated."""
  records_by_net = {}
  for net in tables.NETWORKS:
    path = os.path.join(out_dir, f"verify_{net}.jsonl")
    if not os.path.exists(path):
      raise FileNotFoundError(f"missing verification results {path}; run the "
                              f"pipeline's verify stage first")
    records_by_net[net] = records_lib.read_results(path)
  return records_by_net


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
  }


def build_summary(out_dir: str) -> dict:
  """Everything the report shows, as one dict (also saved as summary.json)."""
  records_by_net = read_records(out_dir)
  transfer = io.read_json(os.path.join(out_dir, "transfer.json")) or {}
  pipeline = io.read_json(os.path.join(out_dir, "pipeline.json")) or {}
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
  summary["confusion"] = {net: tables.confusion_counts(records_by_net[net]).tolist()
                          for net in tables.NETWORKS}
  summary["records_by_net"] = records_by_net
  return summary


def render_files(summary: Mapping, records_by_net: Mapping[str, Sequence],
                 images: np.ndarray) -> dict[str, bytes | str]:
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
      "fig1_counts.png": figures.plot_counts_and_transfer(summary),
      "fig2_heatmap.png": figures.plot_heatmaps(
          {n: np.asarray(c) for n, c in summary["confusion"].items()}),
      "fig2_examples.png": figures.plot_example_grid(examples, images),
      "report.md": render_markdown(summary),
  }


def write_report(out_dir: str, images: np.ndarray | None = None) -> str:
  """Writes report.md, CSVs and PNGs into out_dir; returns the report path.
  Every file is rendered before the first is written."""
  summary = build_summary(out_dir)
  records_by_net = summary.pop("records_by_net")
  if images is None:
    from robust_prune import data as data_lib  # pylint: disable=g-import-not-at-top
    images = data_lib.load_split("test").images
  files = render_files(summary, records_by_net, images)
  for name, content in files.items():
    io.atomic_write(os.path.join(out_dir, name), content)
  return os.path.join(out_dir, "report.md")
