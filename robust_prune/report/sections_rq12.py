"""report.md's sections on RQ1/RQ2 (critical neurons, the causal ablation)
and on where the reverse-testing examples came from (numbers from
summary.json, built by report.rq12)."""

from __future__ import annotations

from typing import Mapping


def _pct(value):
  return "n/a" if value is None else f"{100 * value:.2f}%"


def _ci(pair) -> str:
  return f"[{_pct(pair[0])}, {_pct(pair[1])}]"


def _p(value) -> str:
  return "n/a" if value is None else f"{value:.3g}"


def _overlap(o: Mapping, a: str, b: str) -> str:
  return (f"{o[f'num_{a}']} / {o[f'num_{b}']} / {o['num_both']} | "
          f"{o['jaccard']:.2f} (chance {o['expected_both']:.1f} shared; "
          f"p {_p(o['overlap_p'])})")


def critical(rq: Mapping) -> list[str]:
  c = rq["critical"]
  lines = ["## RQ1/RQ2: critical neurons", ""]
  if c is None:
    error = rq.get("errors", {}).get("critical")
    return lines + [f"Not decided: {error}." if error else
                    "Not run (no critical.json).", ""]
  lines += [
      f"Importance MILP scores (the pruning MILP, same options) on one "
      f"batch of training images shared by both networks, indices "
      f"{c['batch_indices']} (labels {c['batch_labels']}): the first per "
      f"class that both networks classify correctly clean and under their "
      f"own PGD attack (eps {c['epsilon']:g}), logit margin "
      f"{c['margin']}. Critical = score >= "
      f"{c['threshold']:g}; the pruned network's neurons are named by "
      f"their original indices. Counts are sizes of the two sets and of "
      f"their intersection; p is the one-sided hypergeometric test of an "
      f"overlap beyond chance.", "",
      "| MILP | status | proven | objective | bound | seconds |",
      "|---|---|---|---|---|---|"]
  for name, s in c["solves"].items():
    lines.append(f"| {name} | {s['status']} | {s['proven']} | "
                 f"{s['objective']} | {s['bound']} | "
                 f"{(s['solve_seconds'] or 0):.1f} |")
  lines += ["", "| layer | network (width) | clean / adversarial / both | "
            "Jaccard |", "|---|---|---|---|"]
  for row in c["layers"]:
    for net in ("original", "pruned"):
      lines.append(f"| {row['layer']} | {net} ({row[f'width_{net}']}) | "
                   + _overlap(row[net], "clean", "adversarial") + " |")
  lines += ["", "| layer | batch | original / pruned / both | Jaccard |",
            "|---|---|---|---|"]
  for row in c["layers"]:
    for kind in ("clean", "adversarial"):
      lines.append(f"| {row['layer']} | {kind} | " + _overlap(
          row[f"consistency_{kind}"], "original", "pruned") + " |")
  return lines + [""]


def _change(change: Mapping | None, key: str) -> str:
  if change is None:
    return "-"
  d = change[key]
  if d["difference"] is None:
    return "n/a"
  low, high = d["difference_ci"]
  return (f"{100 * d['difference']:+.2f} [{100 * low:+.2f}, "
          f"{100 * high:+.2f}], p {_p(d['mcnemar_p'])}")


def ablation(rq: Mapping) -> list[str]:
  a = rq["ablation"]
  lines = ["## RQ1: causal test (ablation of the original network)", ""]
  if a is None:
    error = rq.get("errors", {}).get("ablation")
    return lines + [f"Not decided: {error}." if error else
                    "Not run (no ablation.json).", ""]
  lines += [
      f"The original network without {a['removed_per_layer']} neurons per "
      f"layer ({100 * a['fraction']:g}%): the most accuracy-critical "
      f"(highest clean-batch score), the most robustness-critical (highest "
      f"PGD-batch score) or random ones (seed {a['seed']}). Ties: "
      f"{a['tie_break']}. Clean and PGD-40 (eps {a['pgd_epsilon']:g}) "
      f"accuracy on the test set; verified at delta {a['delta']:g} on test "
      f"images {a['images'][0]}..{a['images'][1] - 1} with "
      f"{a['image_time_limit']:g} s per image (the original too, under the "
      f"same budget). Change = this network minus the original in points, "
      f"Newcombe's paired 95% CI, exact McNemar p.", "",
      "| network | widths | clean (95% CI) | PGD-40 (95% CI) | verified "
      "robust / adversarial / undecided / misclassified | robust accuracy "
      "95% CI | clean change | PGD change | verified change |",
      "|---|---|---|---|---|---|---|---|---|"]
  for r in a["rows"]:
    v = r["verified"]
    lines.append(
        f"| {r['network']} | {r['hidden_widths']} | {_pct(r['clean']['value'])}"
        f" {_ci(r['clean']['ci'])} | {_pct(r['pgd']['value'])} "
        f"{_ci(r['pgd']['ci'])} | {v['robust']} / {v['adversarial']} / "
        f"{v['undecided']} / {v['misclassified']} of {v['images']} | "
        f"{_ci(v['robust_accuracy_ci'])} | {_change(r.get('change'), 'clean')}"
        f" | {_change(r.get('change'), 'pgd')} | "
        f"{_change(r.get('change'), 'verified')} |")
  return lines + [""]


def transfer_sources(rq: Mapping) -> list[str]:
  sources = rq["transfer_sources"]
  lines = ["## Reverse testing: the examples", ""]
  if not sources:
    return lines + ["Only the verify stage's examples (transfer.json from "
                    "before the extension).", ""]
  lines += ["Each network's verified adversarial examples at the paper "
            "radius: the verify stage's, then, when fewer than wanted, "
            "targeted PGD (the cascade's PGD step, every witness re-checked "
            "by a float64 forward pass inside the ball and [0, 1]) on the "
            "next test images in order.", "",
            "| examples of | wanted | from verify (images) | extra images "
            "used | from extra images | total |", "|---|---|---|---|---|---|"]
  for net, s in sources.items():
    first, stop = s["extension_images"]
    extra = f"{first}..{stop - 1} ({stop - first})" if stop > first else "none"
    lines.append(f"| {net} | {s['wanted']} | {s['verify_examples']} "
                 f"({s['verify_images'][0]}..{s['verify_images'][1] - 1}) | "
                 f"{extra} | {s['extension_examples']} | {s['examples']} |")
  used = [n for n, s in sources.items()
          if s["extension_images"][1] > s["extension_images"][0]]
  if used:
    lines += ["", f"Extra test images were used for: {', '.join(used)}."]
  short = [n for n, s in sources.items() if s["examples"] < s["wanted"]]
  if short:
    lines += ["", f"Fewer examples than wanted for: {', '.join(short)} "
              f"(the cap of extra images was reached)."]
  return lines + [""]


def findings(rq: Mapping) -> list[str]:
  lines = [rq["paragraphs"]["rq1"], "", rq["paragraphs"]["rq2"], ""]
  for q in ("rq1", "rq2"):
    if not rq["findings"][q]:
      lines.append(f"{q.upper()}: no results (stage not run).")
      continue
    verdicts = [f["verdict"] for f in rq["findings"][q]]
    lines.append(f"{q.upper()} verdicts: " + ", ".join(
        f"{verdicts.count(v)} {v}" for v in sorted(set(verdicts))) + ".")
  return lines + [""]
