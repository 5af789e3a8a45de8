"""Which neuron each domain is split on. A brancher is any function

    brancher(parents: DomainPool, one_pass_bound) -> (P,) neuron indices

where `one_pass_bound(splits, alphas, betas)` bounds domains without
optimising (the search passes it in); a chosen neuron whose score is -inf
marks a leaf (nothing left to split). `make_brancher(config)` picks one.
"""

from __future__ import annotations

import functools
from typing import Callable

import numpy as np

from robust_prune.bounds import relaxation
from robust_prune.bab.config import BabConfig
from robust_prune.bab.domains import branch, DomainPool

Brancher = Callable[[DomainPool, Callable], np.ndarray]


def intercept_scores(coeffs, layer_bounds, splits) -> np.ndarray:
  """BaBSR-style score per domain and (concatenated) neuron: how much the
  upper-chord intercept of an unsplit unstable neuron lowers the bound (plus
  a small tie-break by coefficient and interval); -inf where nothing to
  split."""
  scores = []
  for j, lam in enumerate(coeffs):
    l, u = layer_bounds.lowers[j], layer_bounds.uppers[j]
    unstable = (l < 0) & (u > 0)
    _, _, shift = relaxation.relu_relaxation(l, u, xp=np)
    lam = np.asarray(lam, np.float64)
    score = np.maximum(-lam, 0) * shift + 1e-6 * np.abs(lam) * np.minimum(u, -l)
    scores.append(np.where(unstable & (splits[j] == 0), score, -np.inf))
  return np.concatenate(scores, axis=1)


def babsr(parents: DomainPool, one_pass_bound) -> np.ndarray:
  """The neuron of highest intercept score (Bunel et al. 2020)."""
  del one_pass_bound
  return np.argmax(parents.scores, axis=1)


def filtered_smart_branching(parents: DomainPool, one_pass_bound, *,
                             candidates: int) -> np.ndarray:
  """Of the top `candidates` neurons by intercept score, the one whose two
  children's one-pass bounds (the parent's alpha/beta) sum highest (De
  Palma et al. 2021)."""
  scores = parents.scores
  k = min(candidates, scores.shape[1])
  if k <= 1:
    return babsr(parents, one_pass_bound)
  top = np.argsort(-scores, axis=1)[:, :k]                  # (P, k)
  p = len(top)
  kids = branch(np.repeat(parents.splits, k, 0),
                np.repeat(parents.alphas, k, 0),
                np.repeat(parents.betas, k, 0), top.reshape(-1))
  gain = one_pass_bound(*kids).reshape(p, k, 2).sum(axis=2)
  gain = np.where(np.isfinite(np.take_along_axis(scores, top, 1)), gain,
                  -np.inf)
  return top[np.arange(p), np.argmax(gain, axis=1)]


def make_brancher(config: BabConfig) -> Brancher:
  if config.branching == "babsr" or config.candidates <= 1:
    return babsr
  return functools.partial(filtered_smart_branching,
                           candidates=config.candidates)
