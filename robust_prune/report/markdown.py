"""report.md: the paper's tables next to ours, one section per figure."""

from __future__ import annotations

import json
from typing import Mapping

from robust_prune.report import sections
from robust_prune.report import sections_rq12
from robust_prune.report.tables import PAPER


def _fmt(value, spec=".4f"):
  if value is None:
    return "n/a"
  return format(value, spec) if isinstance(value, float) else str(value)


def _pct(value):
  return "n/a" if value is None else f"{100 * value:.2f}%"


def _setup(summary: Mapping) -> list[str]:
  nets = summary["networks"]
  pipe = summary.get("pipeline", {})
  cfg = pipe.get("config", {})
  settled = "; ".join(
      f"{net} " + " / ".join(str(nets[net].get("decided_by", {}).get(k, 0))
                             for k in ("crown", "pgd", "bab", "milp"))
      for net in ("original", "pruned"))
  return ["## Setup", "",
          f"- paper radius (Figures 1-4, reverse testing): delta "
          f"{cfg.get('delta', 'n/a')}; robustness curve at delta "
          f"{', '.join(f'{d:g}' for d in summary['curve']['radii']) or 'n/a'}"
          f"; images: {cfg.get('num_images', 'n/a')} first MNIST test images "
          f"x 9 targets, the same at every radius",
          f"- verification mode: {cfg.get('mode', 'targeted')}"
          + (" (pairs certified by CROWN or the branch and bound carry a "
             "bound and PGD-found ones the PGD margin, not an optimum; "
             "Figure 4's objective statistics cover only pairs with a value)"
             if cfg.get("mode") == "certify" else ""),
          "- pairs settled by (CROWN bound / PGD witness / branch and bound "
          "/ MILP): " + settled,
          f"- solver: {cfg.get('solver', 'n/a')}, bounds: "
          f"{cfg.get('bounds', 'n/a')}, "
          + (f"{cfg['image_time_limit']:g} s per image and radius (all "
             f"targets)" if cfg.get("image_time_limit") else
             f"time limit {cfg.get('time_limit', 'n/a')} s per MILP, "
             f"{cfg.get('bab_time_limit', 'n/a')} s of branch and bound per "
             f"target"),
          f"- machine: {pipe.get('machine', 'n/a')}; total wall time "
          f"{_fmt(pipe.get('total_seconds'), '.0f')} s", ""]


def _ci(pair) -> str:
  return f"[{_pct(pair[0])}, {_pct(pair[1])}]"


def _reverse_ci(stats: Mapping) -> str:
  return _ci(stats["reverse_ci"]) if stats["reverse_ci"] else (
      "n/a (no examples)")


def _networks(o: Mapping, p: Mapping) -> list[str]:
  return ["## Networks", "",
          "| | original | pruned | paper original | paper pruned |",
          "|---|---|---|---|---|",
          f"| hidden widths | {o['hidden_widths']} | {p['hidden_widths']} | n/a | n/a |",
          f"| parameters | {o['parameters']} | {p['parameters']} | n/a | n/a |",
          f"| clean test accuracy | {_pct(o['clean_accuracy'])} | "
          f"{_pct(p['clean_accuracy'])} | 97.05% | 97.11% |",
          f"| PGD-40 accuracy | {_pct(o['pgd_accuracy'])} | "
          f"{_pct(p['pgd_accuracy'])} | n/a | n/a |",
          f"| verified robust accuracy at the paper radius (first "
          f"{o['verified_robust_accuracy']['images']} images) | "
          f"{_pct(o['verified_robust_accuracy']['value'])} | "
          f"{_pct(p['verified_robust_accuracy']['value'])} | n/a | n/a |", ""]


def _searches(c: Mapping) -> str:
  return (f"{c['searched']} ({c['robust']} / {c['timeout']} / "
          f"{c['misclassified']})")


def _figure1(o: Mapping, p: Mapping) -> list[str]:
  return ["## Figure 1: adversarial examples and reverse testing (paper "
          "radius)", "",
          "| | original | pruned | paper original | paper pruned |",
          "|---|---|---|---|---|",
          f"| adversarial examples | {o['counts']['adversarial']} | "
          f"{p['counts']['adversarial']} | 148 | 139 |",
          f"| searches (proven robust / time-out / misclassified skipped) | "
          f"{_searches(o['counts'])} | {_searches(p['counts'])} | 900 | 900 |",
          f"| reverse-testing accuracy (this network on the other's "
          f"examples) | {_pct(o['reverse_accuracy'])} ({o['reverse_correct']}/"
          f"{o['reverse_examples']}) | {_pct(p['reverse_accuracy'])} "
          f"({p['reverse_correct']}/{p['reverse_examples']}) | 14.39% | 22.30% |",
          f"| reverse-testing accuracy, 95% Wilson CI | "
          f"{_reverse_ci(o)} | {_reverse_ci(p)} | n/a | n/a |",
          f"| the other's examples that keep their target label on this "
          f"network | {o['reverse_to_target']}/{o['reverse_examples']} | "
          f"{p['reverse_to_target']}/{p['reverse_examples']} | n/a | n/a |",
          "", "![counts](fig1_counts.png)", "",
          "## Figure 2: examples and (target, label) counts", "",
          "![examples](fig2_examples.png)", "", "![heatmap](fig2_heatmap.png)",
          ""]


def _figure3(summary: Mapping) -> list[str]:
  lines = []
  for key, title in (("by_label", "original class"), ("by_target", "target class")):
    col = "label" if key == "by_label" else "target"
    lines += [f"## Figure 3: per {title}", "",
              f"| {col} | searches | original | pruned | total | success rate |",
              "|---|---|---|---|---|---|"]
    for row in summary[key]:
      lines.append(f"| {row[col]} | {row['count']} | {row['original_adversarial']} "
                   f"| {row['pruned_adversarial']} | {row['total_adversarial']} | "
                   f"{_fmt(row['success_rate'])} |")
    lines.append("")
  return lines


def _coverage(summary: Mapping) -> str:
  """Exactly which pairs Figure 4's columns hold."""
  cfg = summary.get("pipeline", {}).get("config", {})
  parts = []
  for net, c in summary["statistics_coverage"].items():
    parts.append(
        f"{net}: successful = the {c['successful']} pairs proven adversarial "
        f"(a verified witness; {c['successful_with_objective']} with an "
        f"objective value), unsuccessful = the {c['unsuccessful']} pairs "
        f"proven robust ({c['unsuccessful_with_objective']} with an objective "
        f"value); left out: {c['timeout']} time-outs, {c['misclassified']} "
        f"pairs of misclassified images, {c['error']} errors")
  return (f"Covers the (image, target) pairs searched at the paper radius "
          f"delta {cfg.get('delta', 'n/a')} on both networks, pooled. "
          + "; ".join(parts) + ". Objective statistics are over the pairs "
          "with a value; seconds over all pairs of the column.")


def _figure4(stats: Mapping, coverage: str) -> list[str]:
  lines = ["## Figure 4: MILP statistics (both networks)", "", coverage, "",
           "| | successful: objective | successful: seconds | unsuccessful: "
           "objective | unsuccessful: seconds |", "|---|---|---|---|---|"]
  for stat in ("count", "mean", "std", "min", "25%", "50%", "75%", "max"):
    cells = [_fmt(stats[g][q].get(stat), ".4g") for g in ("successful", "unsuccessful")
             for q in ("objective", "seconds")]
    lines.append(f"| {stat} | " + " | ".join(cells) + " |")
  return lines + [
      "", f"Paper: {PAPER['searches']} searches; mean seconds "
      f"{PAPER['found_time_mean']} (found) / {PAPER['not_found_time_mean']}"
      f" (not found); max {PAPER['found_time_max']} / "
      f"{PAPER['not_found_time_max']}.", ""]


def _pruning(pruning: Mapping) -> list[str]:
  if not pruning:
    return []
  lines = ["## Pruning", "", "```json",
           json.dumps({k: v for k, v in pruning.items()
                       if not isinstance(v, (list, dict)) or k in
                       ("widths_before", "widths_after")}, indent=2),
           "```", ""]
  for s in pruning.get("solver_status", []):
    proof = ("proven optimal" if s.get("proven")
             else "NOT proven optimal (time limit: best point found)"
             if s.get("status") == "time_limit" else "no usable solution")
    lines.append(
        f"- importance MILP, round {s['round']} ({s['solver']}): "
        f"{s['status']}, {proof}; objective {_fmt(s.get('objective'), '.4f')},"
        f" bound {_fmt(s.get('bound'), '.4f')}, "
        f"{_fmt(s.get('solve_seconds'), '.1f')} s")
  if pruning.get("solver_status"):
    lines.append("")
  return lines


def render_markdown(summary: Mapping) -> str:
  o, p = summary["networks"]["original"], summary["networks"]["pruned"]
  lines = ["# Reproduction report", "",
           "Generated by `python -m robust_prune.report` from the result files "
           "in this folder.", ""]
  lines += _setup(summary) + _networks(o, p)
  lines += sections.curve(summary["curve"])
  lines += sections.rq3(summary["rq3"]) + sections.distortion(summary)
  lines += sections_rq12.critical(summary["rq12"])
  lines += sections_rq12.ablation(summary["rq12"])
  lines += sections.findings(summary["rq3"])
  lines += sections_rq12.findings(summary["rq12"])
  lines += _figure1(o, p) + sections_rq12.transfer_sources(summary["rq12"])
  lines += _figure3(summary) + _figure4(summary["statistics"],
                                        _coverage(summary))
  lines += _pruning(summary.get("pruning") or {})
  return "\n".join(lines)
