"""Critical neurons (the paper's research questions 1-2).

* Accuracy- vs robustness-critical: importance scores on a clean batch and
  on PGD adversarial versions of the same images; the critical set of a
  layer is its neurons scored >= threshold; overlap is Jaccard per layer.
* Consistency before/after pruning: the retrained pruned network's critical
  neurons, mapped back to original indices, against the original's.

`critical_analysis` runs both for the prune loop (critical.json).
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

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
                 names=("a", "b")) -> list[dict[str, Any]]:
  """Per layer: sizes, intersection, Jaccard and the indices only in one."""
  out = []
  for l, (x, y) in enumerate(zip(a, b)):
    out.append({
        "layer": l, f"num_{names[0]}": len(x), f"num_{names[1]}": len(y),
        "num_both": len(x & y), "jaccard": jaccard(x, y),
        f"only_{names[0]}": sorted(x - y), f"only_{names[1]}": sorted(y - x)})
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


def select_robust_batch(network: Network, images: np.ndarray,
                        labels: np.ndarray, *, epsilon: float,
                        images_per_class: int = 1, min_margin: float = 0.0,
                        candidates: int = 2000, seed: int = 0, **pgd_kwargs):
  """The first images per class (canonical order) that the network
  classifies correctly both clean and after PGD, so both batches are valid
  inputs of the score MILP. Returns (clean, adversarial, labels, indices)."""
  labels = np.asarray(labels)

  def robust(idx):
    adv = adversarial_images(network, images[idx], labels[idx],
                             epsilon=epsilon, seed=seed + int(idx[0]),
                             **pgd_kwargs)
    ok = ((margins(forward(network, images[idx]), labels[idx]) > min_margin)
          & (margins(forward(network, adv), labels[idx]) > min_margin))
    return ok, adv

  indices, adv = batch_lib.first_per_class(
      labels, network.num_classes, images_per_class, robust,
      chunk=candidates, shortfall=lambda short: (
          f"classes {short} have too few images that stay correctly "
          f"classified under PGD (eps {epsilon})"))
  return (images[indices], np.stack(adv), labels[indices].astype(np.int32),
          indices)


def critical_analysis(original: Network, pruned: Network, kept, train,
                      config, options) -> dict[str, Any]:
  """Clean vs PGD critical sets of the original and of the retrained pruned
  network (mapped to original indices), and their consistency. `config`: the
  training recipe (its evaluation attack); `options`: a PruneOptions."""
  out = {"epsilon": config.attack_epsilon, "threshold": options.threshold}
  sets = {}
  for name, network, kept_map in (("original", original, None),
                                  ("pruned", pruned, kept)):
    out[name] = _critical_entry(network, kept_map, train, config, options,
                                sets, name)
  for kind in ("clean", "adversarial"):
    out[f"consistency_{kind}"] = compare_sets(
        sets[("original", kind)], sets[("pruned", kind)],
        ("original", "pruned"))
  return out


def _critical_entry(network: Network, kept_map, train, config, options,
                    sets: dict, name: str) -> dict[str, Any]:
  """One network's clean and adversarial scores and critical sets (stored
  in `sets[(name, kind)]` too)."""
  clean, adv, labels, indices = select_robust_batch(
      network, train.images, train.labels, epsilon=config.attack_epsilon,
      images_per_class=options.images_per_class,
      min_margin=options.margin if options.lam == 0 else 0.0,
      steps=config.eval_pgd_steps, step_size=config.eval_pgd_step_size,
      seed=options.seed)
  entry = {"batch_indices": indices.tolist()}
  for kind, images in (("clean", clean), ("adversarial", adv)):
    r = importance_lib.importance_scores(
        network, images, labels, margin=options.margin, lam=options.lam,
        solver=options.solver, time_limit=options.time_limit,
        mip_gap=options.mip_gap, descent=options.descent_start)
    s = critical_sets(r.scores, options.threshold, kept_map)
    sets[(name, kind)] = s
    entry[kind] = {"status": r.status, "proven": r.proven,
                   "objective": r.objective, "bound": r.bound,
                   "solve_seconds": r.solve_seconds,
                   "critical": [sorted(x) for x in s],
                   "scores": [np.asarray(v).tolist() for v in r.scores]}
  entry["clean_vs_adversarial"] = compare_sets(
      sets[(name, "clean")], sets[(name, "adversarial")],
      ("clean", "adversarial"))
  return entry
