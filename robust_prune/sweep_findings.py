"""The sweep's generated RQ4 findings: sentences from the aggregate rows at
the paper radius that claim a difference only where the 95% Wilson
intervals of the proven robust fractions do not overlap ("not supported"
otherwise: overlapping intervals carry no claim; they are conservative for
paired data on the same images, so a "not supported" may hide a real
difference, never the reverse)."""

from __future__ import annotations

from typing import Mapping, Sequence

from robust_prune.sweep_report import paper_rows

RQ4 = ("RQ4: how do architecture, training and pruning method relate to "
       "verified robustness?")


def _pct(value) -> str:
  return "n/a" if value is None else f"{100 * value:.1f}%"


def _band(r: Mapping) -> str:
  return (f"{_pct(r['robust_fraction'])} proven robust ({r['robust']}/"
          f"{r['images']}; 95% CI [{_pct(r['robust_ci_low'])}, "
          f"{_pct(r['robust_ci_high'])}]), {r['adversarial']} adversarial, "
          f"{r['undecided']} undecided")


def overlap(a: Mapping, b: Mapping) -> bool:
  return not (a["robust_ci_high"] < b["robust_ci_low"]
              or b["robust_ci_high"] < a["robust_ci_low"])


def compare(a: Mapping, b: Mapping, a_name: str, b_name: str) -> str:
  diff = (a["robust_fraction"] or 0.0) - (b["robust_fraction"] or 0.0)
  if overlap(a, b):
    return (f"{a_name} vs {b_name}: {100 * diff:+.1f} points, not supported "
            f"(the intervals overlap)")
  word = "more" if diff > 0 else "less"
  return (f"{a_name} vs {b_name}: {100 * diff:+.1f} points, supported "
          f"({a_name} is {word} verifiably robust; the intervals are "
          f"disjoint)")


def _method_sentence(r: Mapping, unpruned: Mapping | None) -> str:
  text = (f"{r['method']} ({r['hidden_widths']}, {r['parameters']} "
          f"parameters")
  if unpruned is not None and unpruned["parameters"]:
    text += f", {100 * (1 - r['parameters'] / unpruned['parameters']):.0f}% fewer"
  text += (f"): clean {_pct(r['clean_accuracy'])}, PGD "
           f"{_pct(r['pgd_accuracy'])}, {_band(r)}")
  if r["unstable_neurons"] is not None:
    text += f"; {r['unstable_neurons']:.1f} unstable neurons per image"
  if r["seconds_per_image"] is not None:
    text += f", {r['seconds_per_image']:.2f} s of verification per image"
  return text + "."


def findings_text(rows: Sequence[Mapping]) -> str:
  """The paragraph (plain text, markdown-safe)."""
  paper = paper_rows(rows)
  if not paper:
    return "No verified results at the paper radius yet."
  delta = paper[0]["delta"]
  originals = [r for r in paper if r["network"] == "original"]
  pruned = [r for r in paper if r["network"] == "pruned"]
  unpruned = originals[0] if len(originals) == 1 else None
  lines = [f"{RQ4} At radius {delta:g}:"]
  for r in originals:
    lines.append(f"Unpruned {r['hidden_widths']} ({r['variant']}): "
                 f"{_band(r)}, {r['unstable_neurons']:.1f} unstable neurons "
                 f"per image.")
  lines += [_method_sentence(r, unpruned) for r in pruned]
  if unpruned is not None:
    lines += [compare(r, unpruned, r["method"], "unpruned") + "."
              for r in pruned]
  magnitude = [r for r in pruned if r["method"] == "magnitude"]
  if magnitude:
    lines += [compare(r, magnitude[0], r["method"], "magnitude") + "."
              for r in pruned if r["method"] not in ("magnitude",)]
  if pruned:
    best = max(pruned, key=lambda r: r["robust_fraction"] or 0.0)
    rivals = [r for r in pruned if r is not best]
    separated = rivals and not any(overlap(best, r) for r in rivals)
    lines.append(
        f"Highest proven robust accuracy: {best['method']} "
        f"({_pct(best['robust_fraction'])}); that it is the best method is "
        + ("supported." if separated else
           "not supported (its interval overlaps another method's)."))
  return " ".join(lines)
