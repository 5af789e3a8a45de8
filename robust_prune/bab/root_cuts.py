"""The root's first-layer hull cuts (bounds.hull_cuts): rounds of facets
made at the root's minimising vertex, re-bounding the root after each
(GCP-CROWN's cuts, made by the hull of one ReLU over the box rather than
by a MIP solver). The search's slots hold `cut_rounds` rounds; with
`root_cut_rounds` more are made in a wider problem, and each first-layer
neuron keeps its `cut_rounds` strongest (largest multipliers), so the root
tightens at the search's cost per domain."""

from __future__ import annotations

import dataclasses

import numpy as np

from robust_prune.bounds import hull_cuts
from robust_prune.bab.problem import Incumbent, Problem


def cut_rounds(problem: Problem, incumbent: Incumbent, splits, evaluated):
  """Adds first-layer hull cuts at the root's minimising vertex and
  re-bounds the root, `cut_rounds` times (slots for all rounds from the
  start: one compiled shape), then the extra rounds if any
  (`kept_cuts`): (the problem with its cuts, the root's alpha/beta/gamma
  of the best proven bound; zero gammas reproduce the bound without cuts),
  or None once a vertex is a witness."""
  rounds = []
  betas = np.zeros((1, problem.slotted_multipliers), np.float32)
  betas[:, :evaluated.betas.shape[1]] = evaluated.betas
  best = dataclasses.replace(evaluated, betas=betas)
  best_lb = problem.proven(splits, evaluated.alphas, evaluated.betas)[0]
  for _ in range(problem.config.cut_rounds):
    step = facet_round(problem, incumbent, rounds, splits, evaluated, betas)
    if step is None:
      return None
    problem, evaluated = step
    betas = evaluated.betas
    lb = problem.proven(splits, evaluated.alphas, evaluated.betas)[0]
    if lb >= best_lb:
      best, best_lb = evaluated, lb
  if problem.config.root_cut_rounds > problem.config.cut_rounds:
    return kept_cuts(problem, incumbent, splits, rounds, evaluated, best,
                     best_lb)
  return problem, best


def facet_round(problem: Problem, incumbent: Incumbent, rounds: list, splits,
                evaluated, betas):
  """Appends to `rounds` the facets at `evaluated`'s minimising vertex and
  re-bounds the root on `problem`'s slots with all of them: (that problem,
  its root), or None once a vertex is a witness."""
  rounds.append(problem.facets_at(evaluated.vertex[0]))
  problem = problem.with_cuts(hull_cuts.concatenate(*rounds))
  evaluated = problem.evaluate(splits, evaluated.alphas, betas,
                               problem.config.root_steps)
  if incumbent.consider(evaluated.vertex):
    return None
  return problem, evaluated


def kept_cuts(slim: Problem, incumbent: Incumbent, splits, rounds: list,
              last, best, best_lb):
  """More rounds of root facets in a wider problem (from the last round
  `last` on `slim`, the search's slots), then each neuron's `cut_rounds`
  strongest facets (the largest gammas) in `slim`'s slots, re-bounded:
  (that problem, its root) if its proven bound is no worse than
  `best_lb`, else (slim, best); None once a vertex is a witness."""
  n = slim.slices.num_neurons
  wide = slim.widened(slim.config.root_cut_rounds)
  betas = np.zeros((1, wide.slotted_multipliers), np.float32)
  betas[:, :last.betas.shape[1]] = last.betas   # the same rows come first
  evaluated = last
  for _ in range(slim.config.root_cut_rounds - slim.config.cut_rounds):
    step = facet_round(wide, incumbent, rounds, splits, evaluated, betas)
    if step is None:
      return None
    wide, evaluated = step
    betas = evaluated.betas
  made = hull_cuts.concatenate(*rounds)
  if made.count == 0:
    return slim, best
  gammas = betas[0, n:n + made.count]
  kept = hull_cuts.strongest_rows(made, gammas, slim.config.cut_rounds)
  problem = slim.with_cuts(hull_cuts.take(made, kept))
  start = np.zeros((1, problem.multipliers), np.float32)
  start[:, :n] = betas[:, :n]
  start[0, n:n + len(kept)] = gammas[kept]
  evaluated = problem.evaluate(splits, evaluated.alphas, start,
                               slim.config.root_steps)
  if incumbent.consider(evaluated.vertex):
    return None
  if problem.proven(splits, evaluated.alphas, evaluated.betas)[0] < best_lb:
    return slim, best
  return problem, evaluated
