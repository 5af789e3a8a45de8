"""The ranking methods of the prune stage (`PruneOptions.baseline`):

    milp         the importance MILP on the clean batch (the paper);
    robust_milp  the same MILP on the clean batch plus the PGD adversarial
                 version of every image in it (at the recipe's evaluation
                 attack), so neurons needed to keep those classified with the
                 margin survive;
    lp           the LP relaxation of the importance MILP (binaries relaxed
                 to [0, 1]; what the reference implementation's experiments
                 ran), solved once by HiGHS: its scores lie in [0, 1] and its
                 objective bounds the MILP's optimum from below. Measured
                 on the 300-100 PGD network (margin 3, 10 images): optimum
                 -3.943 with every layer-0 score 0 (the relaxation's
                 weakness, see importance.py), so at the threshold it keeps
                 1-32 neurons, and at equal widths its layer 0 is ranked by
                 the magnitude tie-break alone;
    magnitude    weight magnitude (`structure.neuron_magnitudes`);
    random       uniformly random.

Which neurons a method keeps (`keep_masks`): with `widths`, exactly
widths[l] neurons of layer l, the top-ranked by the method's criterion, so
methods compare at equal per-layer widths; without, the scored methods keep
scores >= threshold and magnitude/random remove as many per layer as the
MILP's threshold does (the historical baselines).
"""

from __future__ import annotations

import time
from typing import Any

from absl import logging
import numpy as np

from robust_prune import data as data_lib
from robust_prune import train as train_lib
from robust_prune.milp import backends
from robust_prune.milp import solvers
from robust_prune.network import Network
from robust_prune.pruning import batch as batch_lib
from robust_prune.pruning import critical as critical_lib
from robust_prune.pruning import importance as importance_lib
from robust_prune.pruning import structure
from robust_prune.pruning.options import SCORED_METHODS, PruneOptions

# The status of a rule-only round (magnitude/random at given widths): no
# MILP is solved, so there is nothing to prove or fail.
NO_MILP = "no_milp"


def score_batch(network: Network, train: data_lib.Split,
                options: PruneOptions, config: train_lib.TrainConfig):
  """(images, labels, clean indices) of the method's MILP batch: the first
  correct images per class; for robust_milp those that stay correct under
  PGD, followed by their adversarial versions (labels repeated)."""
  min_margin = options.margin if options.lam == 0 else 0.0
  if options.baseline != "robust_milp":
    return batch_lib.select_batch(
        network, train.images, train.labels,
        images_per_class=options.images_per_class, min_margin=min_margin)
  clean, adversarial, labels, indices = critical_lib.select_robust_batch(
      network, train.images, train.labels, epsilon=config.attack_epsilon,
      images_per_class=options.images_per_class, min_margin=min_margin,
      steps=config.eval_pgd_steps, step_size=config.eval_pgd_step_size,
      seed=options.seed)
  return (np.concatenate([clean, adversarial]),
          np.concatenate([labels, labels]), indices)


def compute_scores(network: Network, train: data_lib.Split,
                   options: PruneOptions,
                   config: train_lib.TrainConfig) -> dict[str, Any]:
  """The method's batch and scores: a JSON-able record (round_K/scores.json).
  magnitude/random at given widths need no MILP (status NO_MILP)."""
  method = options.baseline
  if method not in SCORED_METHODS and options.widths:
    return _rule_record(method, options)
  images, labels, indices = score_batch(network, train, options, config)
  solve = lp_relaxation_scores if method == "lp" else _milp_scores
  result = solve(network, images, labels, options)
  logging.info("importance %s (%s): %s, objective %s, bound %s, %.1f s",
               "LP" if method == "lp" else "MILP", result.solver,
               result.status, result.objective, result.bound,
               result.solve_seconds)
  record = {**result.to_json(), "batch_indices": indices.tolist(),
            "threshold": options.threshold}
  if method != "milp":  # the paper's records stay as they were
    record.update(method=method, batch_size=int(len(labels)))
  if method == "robust_milp":
    record["pgd_epsilon"] = config.attack_epsilon
  return record


def _milp_scores(network, images, labels, options: PruneOptions):
  return importance_lib.importance_scores(
      network, images, labels, margin=options.margin, lam=options.lam,
      solver=options.solver, time_limit=options.time_limit,
      mip_gap=options.mip_gap, descent=options.descent_start)


def _rule_record(method: str, options: PruneOptions) -> dict[str, Any]:
  return {"method": method, "scores": None, "status": NO_MILP,
          "raw_status": f"{method} ranks neurons without a MILP",
          "solver": None, "proven": False, "objective": None, "bound": None,
          "solve_seconds": 0.0, "num_binaries": 0, "batch_indices": [],
          "threshold": options.threshold}


def lp_relaxation_scores(network: Network, images: np.ndarray,
                         labels: np.ndarray, options: PruneOptions
                         ) -> importance_lib.ImportanceResult:
  """The importance MILP of the batch with every binary relaxed to [0, 1],
  solved to optimality by HiGHS (status OPTIMAL: the LP's optimum, a lower
  bound of the MILP's; NO_SOLUTION with all-ones scores otherwise)."""
  images, labels = importance_lib.check_batch(
      network, images, labels, margin=options.margin,
      require_margin=options.lam == 0.0)
  begin = time.perf_counter()
  built = importance_lib.build_importance_milp(
      network, images, labels, margin=options.margin, lam=options.lam)
  form = built.model.form()
  highs = backends.highs_lp(built.model)
  x = backends.highs_lp_solve(highs, form.col_lower, form.col_upper,
                              options.time_limit)
  seconds = time.perf_counter() - begin - built.build_seconds
  if x is None:
    scores, status, objective, margin = (
        tuple(np.ones(w) for w in network.hidden_widths), solvers.NO_SOLUTION,
        None, None)
  else:
    scores = tuple(np.clip(x[v], 0.0, 1.0) for v in built.score_vars)
    status, objective = solvers.OPTIMAL, built.model.objective(x)
    margin = float(importance_lib.margins(importance_lib.scored_forward(
        network, images, scores), labels).min())
  return importance_lib.ImportanceResult(
      scores=scores, status=status,
      raw_status="LP relaxation " + ("optimal" if x is not None
                                     else "not solved to optimality"),
      solver="HIGHS_LP", objective=objective, bound=objective,
      solve_seconds=seconds, build_seconds=built.build_seconds,
      time_limit=float(options.time_limit), mip_gap=0.0,
      margin=float(options.margin), lam=float(options.lam),
      labels=tuple(int(y) for y in labels), num_binaries=built.num_binaries,
      num_vars=built.model.num_vars, num_rows=built.model.num_rows,
      min_batch_margin=margin)


def top_ranked_masks(ranks, widths) -> tuple[np.ndarray, ...]:
  """Keep masks of the widths[l] best neurons of each layer by
  ranks[l] = (primary, secondary) keys, higher is better; on a full tie the
  lower index is removed first (as `structure.magnitude_masks` does)."""
  masks = []
  for (primary, secondary), keep in zip(ranks, widths):
    primary = np.asarray(primary, np.float64)
    width = len(primary)
    order = np.lexsort((np.arange(width), np.asarray(secondary, np.float64),
                        primary))
    m = np.ones(width, bool)
    m[order[:width - int(keep)]] = False
    masks.append(m)
  return tuple(masks)


def keep_masks(record: dict[str, Any], network: Network,
               options: PruneOptions, seed: int) -> tuple[np.ndarray, ...]:
  """The neurons the method keeps (see the module docstring). Scored
  methods at given widths rank by score, then by weight magnitude."""
  widths = options.widths
  method = options.baseline
  if method in SCORED_METHODS:
    scores = [np.asarray(s, np.float64) for s in record["scores"]]
    if not options.widths:
      return structure.keep_masks_from_scores(scores, options.threshold)
    magnitudes = [structure.neuron_magnitudes(network, l)
                  for l in range(len(scores))]
    return top_ranked_masks(zip(scores, magnitudes), widths)
  if options.widths:
    removed = tuple(w - k for w, k in zip(network.hidden_widths, widths))
  else:
    removed = structure.removed_counts(structure.keep_masks_from_scores(
        [np.asarray(s) for s in record["scores"]], options.threshold))
  if method == "random":
    return structure.random_masks(network.hidden_widths, removed, seed=seed)
  return structure.magnitude_masks(network, removed)
