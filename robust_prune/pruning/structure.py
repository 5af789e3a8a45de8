"""Structural pruning: keep masks from scores, physical removal, baselines."""

from __future__ import annotations

from typing import Sequence

import numpy as np

from robust_prune.network import Network

DEFAULT_THRESHOLD = 1e-3  # the paper's cut-off


def check_threshold(threshold: float) -> float:
  if not 0.0 <= threshold <= 1.0:
    raise ValueError(f"threshold must lie in [0, 1], got {threshold}")
  return float(threshold)


def keep_masks_from_scores(scores: Sequence[np.ndarray],
                           threshold: float = DEFAULT_THRESHOLD
                           ) -> tuple[np.ndarray, ...]:
  """Keep neurons scored >= threshold; a layer that would be emptied keeps
  its best-scored neuron (lowest index on ties)."""
  threshold = check_threshold(threshold)
  masks = []
  for s in scores:
    s = np.asarray(s, np.float64)
    keep = s >= threshold
    if not keep.any():
      keep[int(np.argmax(s))] = True
    masks.append(keep)
  return tuple(masks)


def _check_masks(network: Network, keep_masks: Sequence[np.ndarray]):
  if len(keep_masks) != network.num_layers - 1:
    raise ValueError(f"need one mask per hidden layer "
                     f"({network.num_layers - 1}), got {len(keep_masks)}")
  out = []
  for l, (m, width) in enumerate(zip(keep_masks, network.hidden_widths)):
    m = np.asarray(m, bool)
    if m.shape != (width,):
      raise ValueError(f"mask {l} has shape {m.shape}, layer has {width}")
    if not m.any():
      raise ValueError(f"mask {l} would empty hidden layer {l}")
    out.append(m)
  return out


def prune_network(network: Network, keep_masks: Sequence[np.ndarray]):
  """Deletes the hidden neurons not kept: their column (and bias) in the layer
  and their row in the next. Returns (smaller network, surviving original
  indices per hidden layer)."""
  masks = _check_masks(network, keep_masks)
  weights, biases = list(network.weights), list(network.biases)
  for l, m in enumerate(masks):
    weights[l] = weights[l][:, m]
    biases[l] = biases[l][m]
    weights[l + 1] = weights[l + 1][m, :]
  kept = tuple(np.flatnonzero(m) for m in masks)
  return Network(tuple(np.ascontiguousarray(w) for w in weights),
                 tuple(np.ascontiguousarray(b) for b in biases)), kept


def masked_network(network: Network, keep_masks: Sequence[np.ndarray]):
  """Same shapes, removed neurons zeroed (incoming weights, bias, outgoing
  weights): what the pruned network must compute (the reference that
  `prune_network` is checked against)."""
  masks = _check_masks(network, keep_masks)
  weights, biases = list(network.weights), list(network.biases)
  for l, m in enumerate(masks):
    f = m.astype(np.float32)
    weights[l] = weights[l] * f[None, :]
    biases[l] = biases[l] * f
    weights[l + 1] = weights[l + 1] * f[:, None]
  return Network(tuple(weights), tuple(biases))


def compose_kept(outer: Sequence[np.ndarray], inner: Sequence[np.ndarray]):
  """Original indices after pruning twice: `inner` indexes into the network
  whose neurons are the original ones `outer`."""
  return tuple(np.asarray(o)[np.asarray(i)] for o, i in zip(outer, inner))


# ----------------------------------------------------------------- baselines
def removed_counts(keep_masks: Sequence[np.ndarray]) -> tuple[int, ...]:
  return tuple(int((~np.asarray(m, bool)).sum()) for m in keep_masks)


def random_masks(widths: Sequence[int], removed: Sequence[int], *,
                 seed: int = 0) -> tuple[np.ndarray, ...]:
  """Remove `removed[l]` uniformly random neurons from each layer."""
  rng = np.random.default_rng(seed)
  masks = []
  for width, r in zip(widths, removed):
    _check_count(width, r)
    m = np.ones(width, bool)
    m[rng.choice(width, size=r, replace=False)] = False
    masks.append(m)
  return tuple(masks)


def magnitude_masks(network: Network,
                    removed: Sequence[int]) -> tuple[np.ndarray, ...]:
  """Remove from each layer the `removed[l]` neurons with the smallest L1
  norm of incoming weights plus bias times outgoing weights (a neuron's
  weight magnitude); ties broken by index."""
  masks = []
  for l, r in enumerate(removed):
    width = network.hidden_widths[l]
    _check_count(width, r)
    m = np.ones(width, bool)
    m[np.argsort(neuron_magnitudes(network, l), kind="stable")[:r]] = False
    masks.append(m)
  return tuple(masks)


def neuron_magnitudes(network: Network, layer: int) -> np.ndarray:
  """Per neuron of hidden layer `layer`: the L1 norm of its incoming weights
  plus bias, times that of its outgoing weights."""
  incoming = (np.abs(network.weights[layer]).sum(0)
              + np.abs(network.biases[layer])).astype(np.float64)
  outgoing = np.abs(network.weights[layer + 1]).sum(1).astype(np.float64)
  return incoming * outgoing


def _check_count(width: int, removed: int):
  if not 0 <= removed < width:
    raise ValueError(f"cannot remove {removed} of {width} neurons "
                     f"(a layer is never emptied)")
