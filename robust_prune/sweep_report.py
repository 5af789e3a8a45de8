"""A sweep's aggregate (OUT/aggregate.{csv,md,png}, OUT/aggregate_*.png),
from its variants' results (`sweep_results`): one row per variant, network
and radius, the plots RQ4 asks for, and a findings paragraph that claims
only what the 95% intervals carry.

Plots (verified robust accuracy = the proven lower end, robust / images,
at the paper radius): against parameters, one line per pruning method (the
unpruned network a separate point); against unstable neurons; verification
seconds per image against parameters; clean accuracy against verified
robust accuracy with the accuracy/robustness frontier.
"""

from __future__ import annotations

import os
from typing import Any, Mapping, Sequence

from robust_prune import io
from robust_prune.report import figures
from robust_prune.report import files as report_files

PLOTS = ("aggregate_vra_vs_parameters.png", "aggregate_vra_vs_unstable.png",
         "aggregate_time_vs_parameters.png", "aggregate_frontier.png")
TABLE = ("variant", "method", "network", "hidden_widths", "parameters",
         "clean_accuracy", "pgd_accuracy", "delta", "images", "robust",
         "robust_ci_low", "robust_ci_high", "adversarial", "adversarial_ci_low",
         "adversarial_ci_high", "undecided", "undecided_ci_low",
         "undecided_ci_high", "unstable_neurons", "seconds_per_image",
         "median_distortion_low", "median_distortion_high")


def aggregate_rows(results: Sequence[Mapping]) -> list[dict[str, Any]]:
  """One row per (variant, network, radius) of the variants' results."""
  rows = []
  for result in results:
    for net, n in result["networks"].items():
      for r in n["radii"]:
        median = n["median_distortion"] or [None, None]
        row = {"variant": result["variant"],
               "method": "unpruned" if net == "original" else result["method"],
               "network": net,
               "hidden_widths": "-".join(map(str, n["hidden_widths"])),
               "parameters": n["parameters"],
               "clean_accuracy": n["clean_accuracy"],
               "pgd_accuracy": n["pgd_accuracy"], "delta": r["delta"],
               "paper_delta": r["delta"] == result["paper_delta"],
               "images": r["images"]}
        for band in ("robust", "adversarial", "undecided"):
          row[band] = r[band]["count"]
          row[f"{band}_fraction"] = r[band]["fraction"]
          row[f"{band}_ci_low"], row[f"{band}_ci_high"] = r[band]["ci"]
        row.update(misclassified=r["misclassified"],
                   unstable_neurons=r["unstable_neurons"],
                   seconds_per_image=r["seconds_per_image"],
                   median_distortion_low=median[0],
                   median_distortion_high=median[1])
        rows.append(row)
  return rows


def _fmt(value) -> str:
  if value is None:
    return "n/a"
  if isinstance(value, float):
    return f"{value:.4g}"
  return str(value)


def markdown_table(rows: Sequence[Mapping]) -> str:
  lines = ["| " + " | ".join(TABLE) + " |", "|" + "---|" * len(TABLE)]
  lines += ["| " + " | ".join(_fmt(r[c]) for c in TABLE) + " |"
            for r in rows]
  return "\n".join(lines) + "\n"


def paper_rows(rows: Sequence[Mapping]) -> list[Mapping]:
  """The rows at each variant's paper radius; the unpruned network once
  per distinct original (variants sharing it give the same numbers)."""
  out, seen = [], set()
  for r in rows:
    if not r["paper_delta"]:
      continue
    if r["network"] == "original":
      key = (r["hidden_widths"], r["clean_accuracy"], r["robust"])
      if key in seen:
        continue
      seen.add(key)
    out.append(r)
  return out


def _lines(ax, rows, x_key, y_key):
  """One line per method (sorted by x), points with their Wilson bars when
  the y axis is the proven robust fraction."""
  for method in sorted({r["method"] for r in rows}):
    mine = sorted((r for r in rows if r["method"] == method),
                  key=lambda r: r[x_key] or 0)
    xs = [r[x_key] for r in mine]
    ys = [r[y_key] for r in mine]
    if y_key == "robust_fraction":
      err = [[y - r["robust_ci_low"] for y, r in zip(ys, mine)],
             [r["robust_ci_high"] - y for y, r in zip(ys, mine)]]
      ax.errorbar(xs, ys, yerr=err, marker="o", capsize=3, label=method)
    else:
      ax.plot(xs, ys, marker="o", label=method)
  ax.legend(fontsize=7)


def plots(rows: Sequence[Mapping]) -> dict[str, bytes]:
  """{file name: PNG} of the four plots (see the module docstring)."""
  plt = figures.pyplot()
  paper = [r for r in paper_rows(rows) if r["robust_fraction"] is not None]
  specs = (("parameters", "robust_fraction", "parameters",
            "verified robust accuracy (proven)"),
           ("unstable_neurons", "robust_fraction",
            "unstable neurons (CROWN, mean per image)",
            "verified robust accuracy (proven)"),
           ("parameters", "seconds_per_image", "parameters",
            "verification seconds per image"))
  out = {}
  for name, (x_key, y_key, x_label, y_label) in zip(PLOTS, specs):
    fig, ax = plt.subplots(figsize=(6, 4))
    _lines(ax, [r for r in paper if r[y_key] is not None], x_key, y_key)
    ax.set(xlabel=x_label, ylabel=y_label)
    out[name] = figures.png_bytes(plt, fig)
  out[PLOTS[3]] = _frontier(plt, paper)
  return out


def _frontier(plt, rows) -> bytes:
  """Clean accuracy vs verified robust accuracy; the frontier joins the
  points no other point beats on both."""
  fig, ax = plt.subplots(figsize=(6, 4))
  for method in sorted({r["method"] for r in rows}):
    mine = [r for r in rows if r["method"] == method]
    ax.scatter([r["robust_fraction"] for r in mine],
               [r["clean_accuracy"] or 0 for r in mine], label=method)
  best = frontier(rows)
  ax.plot([r["robust_fraction"] for r in best],
          [r["clean_accuracy"] for r in best], "k--", lw=1, label="frontier")
  ax.set(xlabel="verified robust accuracy (proven)", ylabel="clean accuracy")
  ax.legend(fontsize=7)
  return figures.png_bytes(plt, fig)


def frontier(rows: Sequence[Mapping]) -> list[Mapping]:
  """The rows no other row beats on both clean accuracy and verified
  robust accuracy, by increasing robust accuracy."""
  usable = [r for r in rows if r["clean_accuracy"] is not None
            and r["robust_fraction"] is not None]
  best = [r for r in usable if not any(
      o["clean_accuracy"] >= r["clean_accuracy"]
      and o["robust_fraction"] >= r["robust_fraction"]
      and (o["clean_accuracy"], o["robust_fraction"])
      != (r["clean_accuracy"], r["robust_fraction"]) for o in usable)]
  return sorted(best, key=lambda r: r["robust_fraction"])


def write_aggregate(rows: Sequence[Mapping], findings_text: str,
                    out_dir: str) -> None:
  """aggregate.csv, aggregate.md (table and findings) and the plots, every
  file rendered before the first is written."""
  files: dict[str, Any] = {
      "aggregate.csv": report_files.csv_text(rows),
      "aggregate.md": ("# Sweep aggregate\n\n" + markdown_table(rows)
                       + "\n## Findings\n\n" + findings_text + "\n"),
      **plots(rows)}
  for name, content in files.items():
    io.atomic_write(os.path.join(out_dir, name), content)
