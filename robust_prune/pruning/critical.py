"""Critical neurons (the paper's research questions 1-2).

* Accuracy- vs robustness-critical: importance scores on a clean batch and
  on PGD adversarial versions of the same images; the critical set of a
  layer is its neurons scored >= threshold; overlap is Jaccard per layer.
* Consistency before/after pruning: the retrained pruned network's critical
  neurons, mapped back to original indices, against the original's.

`critical_analysis` runs both on one batch of images shared by the two
networks, for the prune loop and the pipeline's critical stage
(critical.json).
"""

from __future__ import annotations

import functools
import math
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from robust_prune.analysis import stats
from robust_prune.network import Network, forward
from robust_prune.pruning import batch as batch_lib
from robust_prune.pruning import importance as importance_lib
from robust_prune.pruning.batch import margins


def critical_sets(scores: Sequence[np.ndarray], threshold: float,
                  kept: Sequence[np.ndarray] | None = None
                  ) -> tuple[frozenset, ...]:
  """Per layer, the (original) indices of neurons scored >= threshold.
  `kept[l]` maps a pruned network's neuron i to original index kept[l][i]."""
  sets = []
  for l, s in enumerate(scores):
    idx = np.flatnonzero(np.asarray(s) >= threshold)
    if kept is not None:
      idx = np.asarray(kept[l])[idx]
    sets.append(frozenset(int(i) for i in idx))
  return tuple(sets)


def jaccard(a: frozenset, b: frozenset) -> float:
  """|a & b| / |a | b|; 1.0 for two empty sets."""
  union = len(a | b)
  return 1.0 if union == 0 else len(a & b) / union


def compare_sets(a: Sequence[frozenset], b: Sequence[frozenset],
                 names=("a", "b"),
                 populations: Sequence[int] | None = None
                 ) -> list[dict[str, Any]]:
  """Per layer: sizes, intersection, Jaccard and the indices only in one;
  with `populations` (neurons per layer), the overlap against chance (the
  intersection two random sets of these sizes would have, and the one-sided
  hypergeometric p-value of one at least as large; None for an empty set)."""
  out = []
  for l, (x, y) in enumerate(zip(a, b)):
    row = {
        "layer": l, f"num_{names[0]}": len(x), f"num_{names[1]}": len(y),
        "num_both": len(x & y), "jaccard": jaccard(x, y),
        f"only_{names[0]}": sorted(x - y), f"only_{names[1]}": sorted(y - x)}
    if populations is not None:
      overlap = stats.overlap_test(x, y, int(populations[l]))
      row.update(population=int(populations[l]),
                 expected_both=overlap.expected_intersection,
                 overlap_p=(None if math.isnan(overlap.p_value)
                            else overlap.p_value))
    out.append(row)
  return out


def adversarial_images(network: Network, images: np.ndarray,
                       labels: np.ndarray, *, epsilon: float, steps: int = 40,
                       step_size: float = 0.01, seed: int = 0) -> np.ndarray:
  """PGD (untargeted, random start) adversarial versions of `images`."""
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  from robust_prune import attacks, models  # pylint: disable=g-import-not-at-top
  adv = attacks.pgd(models.apply_fn(network), models.flax_params(network), jnp.asarray(images, jnp.float32),
                    jnp.asarray(labels, jnp.int32), epsilon=epsilon,
                    steps=steps, step_size=step_size,
                    key=jax.random.key(seed))
  return np.asarray(adv, np.float32)


def select_shared_batch(networks: Mapping[str, Network], images: np.ndarray,
                        labels: np.ndarray, *, epsilon: float,
                        images_per_class: int = 1, min_margin: float = 0.0,
                        candidates: int = 2000, seed: int = 0, **pgd_kwargs):
  """The first images per class (canonical order) that EVERY network of
  `networks` classifies correctly with a margin > min_margin, clean and
  after its own PGD attack, so one batch of images serves each network's
  clean and adversarial importance MILPs. Returns (clean images,
  {name: that network's PGD versions}, labels, indices)."""
  labels = np.asarray(labels)
  names = list(networks)

  def robust_on_all(idx):
    ok = np.ones(len(idx), bool)
    adv = {}
    for name in names:
      network = networks[name]
      adv[name] = adversarial_images(network, images[idx], labels[idx],
                                     epsilon=epsilon, seed=seed + int(idx[0]),
                                     **pgd_kwargs)
      ok &= margins(forward(network, images[idx]), labels[idx]) > min_margin
      ok &= margins(forward(network, adv[name]), labels[idx]) > min_margin
    return ok, [{n: adv[n][j] for n in names} for j in range(len(idx))]

  indices, payload = batch_lib.first_per_class(
      labels, next(iter(networks.values())).num_classes, images_per_class,
      robust_on_all, chunk=candidates, shortfall=lambda short: (
          f"classes {short} have too few images that every network "
          f"({', '.join(names)}) classifies correctly clean and under PGD "
          f"(eps {epsilon}, margin > {min_margin})"))
  adversarial = {n: np.stack([p[n] for p in payload]) for n in names}
  return (images[indices], adversarial, labels[indices].astype(np.int32),
          indices)


def select_robust_batch(network: Network, images: np.ndarray,
                        labels: np.ndarray, **kwargs):
  """select_shared_batch for one network: (clean, adversarial, labels,
  indices)."""
  clean, adv, labels, indices = select_shared_batch(
      {"network": network}, images, labels, **kwargs)
  return clean, adv["network"], labels, indices


KINDS = ("clean", "adversarial")


def critical_analysis(original: Network, pruned: Network, kept, train,
                      config, options, *,
                      solve: Callable | None = None) -> dict[str, Any]:
  """Clean vs PGD critical sets of the original and of the retrained pruned
  network (mapped to original indices), and their consistency, all on ONE
  batch of images (the first per class that both networks classify
  correctly clean and under their own PGD attack): a change between the
  networks is then not a change of batch. `config`: the training recipe
  (its evaluation attack); `options`: a PruneOptions; `solve(network, name,
  kind, images, labels)` -> ImportanceResult replaces the plain solve (the
  pipeline caches each solve with it)."""
  networks = {"original": original, "pruned": pruned}
  clean, adv, labels, indices = select_shared_batch(
      networks, train.images, train.labels, epsilon=config.attack_epsilon,
      images_per_class=options.images_per_class,
      min_margin=options.margin if options.lam == 0 else 0.0,
      steps=config.eval_pgd_steps, step_size=config.eval_pgd_step_size,
      seed=options.seed)
  solve = solve or functools.partial(_solve, options)
  out = {"epsilon": config.attack_epsilon, "threshold": options.threshold,
         "batch_indices": indices.tolist(), "batch_labels": labels.tolist(),
         "original_widths": list(original.hidden_widths)}
  sets = {}
  for name, kept_map in (("original", None), ("pruned", kept)):
    network = networks[name]
    batches = {"clean": clean, "adversarial": adv[name]}
    entry = {"batch_indices": indices.tolist(),
             "hidden_widths": list(network.hidden_widths)}
    for kind in KINDS:
      r = solve(network, name, kind, batches[kind], labels)
      sets[(name, kind)] = critical_sets(r.scores, options.threshold, kept_map)
      entry[kind] = _scores_entry(r, sets[(name, kind)])
    entry["clean_vs_adversarial"] = compare_sets(
        sets[(name, "clean")], sets[(name, "adversarial")],
        ("clean", "adversarial"), network.hidden_widths)
    out[name] = entry
  out["pruned"]["kept_original_indices"] = [np.asarray(k).tolist()
                                            for k in kept]
  for kind in KINDS:
    out[f"consistency_{kind}"] = compare_sets(
        sets[("original", kind)], sets[("pruned", kind)],
        ("original", "pruned"), original.hidden_widths)
  return out


def _solve(options, network, name, kind, images, labels):
  del name, kind
  return importance_lib.importance_scores(
      network, images, labels, margin=options.margin, lam=options.lam,
      solver=options.solver, time_limit=options.time_limit,
      mip_gap=options.mip_gap, descent=options.descent_start)


def _scores_entry(r, critical) -> dict[str, Any]:
  return {"status": r.status, "proven": r.proven, "objective": r.objective,
          "bound": r.bound, "solve_seconds": r.solve_seconds,
          "critical": [sorted(x) for x in critical],
          "scores": [np.asarray(v).tolist() for v in r.scores]}
