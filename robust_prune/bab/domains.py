"""Domains of the search (`DomainPool`: a batch of them; `OpenDomains`: the
search's open pool) and how they are split and batched.

A *domain* fixes the phase of some unstable hidden neurons (split +1:
y >= 0, split -1: y <= 0); per domain the pool keeps its splits, the
alpha/beta its bound was optimised with, its proven (float64) bound `lb`,
the float32 estimate `key` (>= lb) that orders the search, and per neuron
the branching score. Neurons of all hidden layers are concatenated in one
axis (`LayerSlices` cuts it back into layers).
"""

from __future__ import annotations

import dataclasses

import numpy as np


def padded_size(n: int, batch_size: int) -> int:
  """The batch shape `n` domains are padded to: a power of 4 from 4 up to
  `batch_size` (so a search with few open domains, e.g. near the root or on an
  easy problem, does not pay for a full batch, while the number of compiled
  shapes stays at a handful), or `n` itself beyond it."""
  size = 4
  while size < min(n, batch_size):
    size *= 4
  return max(min(size, batch_size), n)


def padded_sizes(batch_size: int) -> list[int]:
  """Every shape `padded_size` pads 1 to `batch_size` domains to (what a
  warm-up compiles)."""
  sizes = [padded_size(1, batch_size)]
  while sizes[-1] < batch_size:
    sizes.append(padded_size(sizes[-1] + 1, batch_size))
  return sizes


def pad_rows(a: np.ndarray, size: int) -> np.ndarray:
  """`a` with its first row repeated up to `size` rows (`a` itself, not a
  copy, when it has them: every caller hands the rows to the device)."""
  if len(a) == size:
    return a
  out = np.empty((size, *a.shape[1:]), a.dtype)
  out[:len(a)], out[len(a):] = a, a[:1]
  return out


@dataclasses.dataclass(frozen=True)
class LayerSlices:
  """Where each hidden layer's neurons sit in the concatenated axis."""
  offsets: tuple[int, ...]

  @classmethod
  def of(cls, widths) -> "LayerSlices":
    return cls(tuple(int(o) for o in np.cumsum([0, *widths])))

  @property
  def num_neurons(self) -> int:
    return self.offsets[-1]

  def per_layer(self, flat):
    """(D, n) -> one (D, n_j) view per hidden layer."""
    return [flat[:, a:b] for a, b in zip(self.offsets[:-1], self.offsets[1:])]


def branch(splits, alphas, betas, neuron):
  """Both children of each domain split on `neuron` (rows 2i, 2i + 1: +1
  then -1); they start from the parent's alpha and a zero beta on the new
  split."""
  splits = np.repeat(splits, 2, 0)
  rows = np.arange(len(splits))
  splits[rows, np.repeat(neuron, 2)] = np.tile(np.array([1, -1], np.int8),
                                               len(neuron))
  alphas = np.repeat(alphas, 2, 0)
  betas = np.repeat(betas, 2, 0)
  betas[rows, np.repeat(neuron, 2)] = 0.0
  return splits, alphas, betas


@dataclasses.dataclass
class DomainPool:
  splits: np.ndarray   # (D, n) int8 in {-1, 0, 1}
  alphas: np.ndarray   # (D, n) float32
  betas: np.ndarray    # (D, n) float32
  lb: np.ndarray       # (D,) proven (float64) lower bound
  key: np.ndarray      # (D,) float32 estimate >= lb; the search order
  scores: np.ndarray   # (D, n) branching scores, -inf: nothing to split

  def __len__(self) -> int:
    return len(self.lb)

  def take(self, rows) -> "DomainPool":
    """The domains at `rows` (indices or a boolean mask)."""
    return type(self)(*(getattr(self, f.name)[rows]
                        for f in dataclasses.fields(self)))

  def filter(self, keep: np.ndarray) -> "DomainPool":
    """The domains where the boolean `keep` is true."""
    return self.take(np.asarray(keep, bool))


class OpenDomains:
  """The search's open domains in arrays with spare capacity. Adding
  appends; taking the lowest moves the last rows into the holes. So a batch
  copies O(batch) rows rather than the whole pool twice (concatenate, then
  filter), which took a quarter of a 20 s search on 300-100 at delta 0.1
  (pools of ~2e4 domains of 400 neurons). Row order is not kept."""

  def __init__(self, first: DomainPool):
    self._size, self._type = 0, type(first)   # a DomainPool or a subclass
    self._arrays = {f.name: np.empty((max(2 * len(first), 1024),)
                                     + getattr(first, f.name).shape[1:],
                                     getattr(first, f.name).dtype)
                    for f in dataclasses.fields(first)}
    self.add(first)

  def __len__(self) -> int:
    return self._size

  def nbytes(self) -> int:
    """The bytes the open domains fill (spare capacity not counted)."""
    return self._size * sum(a.itemsize * int(np.prod(a.shape[1:]))
                            for a in self._arrays.values())

  def view(self) -> DomainPool:
    """The open domains as views (writing to them writes to the pool)."""
    return self._type(*(self._arrays[f.name][:self._size]
                        for f in dataclasses.fields(self._type)))

  def add(self, domains: DomainPool):
    end = self._size + len(domains)
    for name, array in self._arrays.items():
      if end > len(array):
        grown = np.empty((max(end, 2 * len(array)),) + array.shape[1:],
                         array.dtype)
        grown[:self._size] = array[:self._size]
        self._arrays[name] = array = grown
      array[self._size:end] = getattr(domains, name)
    self._size = end

  def pop_lowest(self, count: int) -> DomainPool:
    """Removes and returns the `count` domains of lowest key, in order."""
    live = self.view()
    if count >= len(live):
      lowest = np.argsort(live.key)
    else:
      lowest = np.argpartition(live.key, count)[:count]
      lowest = lowest[np.argsort(live.key[lowest])]
    taken = live.take(lowest)
    self._remove(lowest)
    return taken

  def keep(self, keep: np.ndarray):
    """Drops the domains where the boolean `keep` is false."""
    self._remove(np.flatnonzero(~np.asarray(keep, bool)))

  def _remove(self, rows: np.ndarray):
    """Fills the holes left by `rows` with the surviving rows at the end."""
    new_size = self._size - len(rows)
    gone = np.zeros(self._size, bool)
    gone[rows] = True
    holes = np.flatnonzero(gone[:new_size])
    movers = new_size + np.flatnonzero(~gone[new_size:])
    for array in self._arrays.values():
      array[holes] = array[movers]
    self._size = new_size
