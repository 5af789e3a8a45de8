"""The exported ReLU network: the one format every MILP component reads.

`network.npz` holds `W_0..W_L` and `b_0..b_L` (float32). `W_i` has shape
(fan_in, fan_out) so a layer is `x @ W_i + b_i`; ReLU follows every layer but
the last; the input is the flattened 28x28 image in [0, 1].
"""

from __future__ import annotations

import dataclasses
import hashlib
import io as io_lib
import os
import re
import zipfile
from typing import Any, Mapping, Sequence

import numpy as np

from robust_prune import io


class NetworkFormatError(ValueError):
  """A network file that cannot be read as the exported format."""


@dataclasses.dataclass(frozen=True)
class Network:
  """An MLP as plain float arrays: layer i computes `x @ weights[i] + biases[i]`."""

  weights: tuple[np.ndarray, ...]
  biases: tuple[np.ndarray, ...]

  def __post_init__(self):
    _validate(self.weights, self.biases)

  @property
  def num_layers(self) -> int:
    return len(self.weights)

  @property
  def input_dim(self) -> int:
    return self.weights[0].shape[0]

  @property
  def num_classes(self) -> int:
    return self.weights[-1].shape[1]

  @property
  def hidden_widths(self) -> tuple[int, ...]:
    return tuple(w.shape[1] for w in self.weights[:-1])

  @property
  def num_parameters(self) -> int:
    return int(sum(w.size + b.size for w, b in zip(self.weights, self.biases)))

  def astype(self, dtype) -> "Network":
    return Network(tuple(w.astype(dtype) for w in self.weights),
                   tuple(b.astype(dtype) for b in self.biases))


def _validate(weights: Sequence[np.ndarray], biases: Sequence[np.ndarray]):
  if len(weights) == 0 or len(weights) != len(biases):
    raise NetworkFormatError(
        f"need as many weight matrices as bias vectors (>= 1), got "
        f"{len(weights)} and {len(biases)}")
  for i, (w, b) in enumerate(zip(weights, biases)):
    if w.ndim != 2 or b.ndim != 1 or w.shape[1] != b.shape[0]:
      raise NetworkFormatError(
          f"layer {i}: W_{i} must be (fan_in, fan_out) and b_{i} (fan_out,), "
          f"got {w.shape} and {b.shape}")
    if min(w.shape) < 1:
      raise NetworkFormatError(f"layer {i}: W_{i} has shape {w.shape}; every "
                               f"layer needs at least one input and output")
    if i > 0 and weights[i - 1].shape[1] != w.shape[0]:
      raise NetworkFormatError(
          f"layer {i}: W_{i} has fan_in {w.shape[0]} but layer {i - 1} has "
          f"{weights[i - 1].shape[1]} outputs")
    if not (np.all(np.isfinite(w)) and np.all(np.isfinite(b))):
      raise NetworkFormatError(f"layer {i}: non-finite weights or biases")


def save_network(network: Network, path: str | os.PathLike) -> None:
  """Writes `network.npz` atomically (a crash never leaves half a file, a
  full disk no temporary)."""
  arrays = {}
  for i, (w, b) in enumerate(zip(network.weights, network.biases)):
    arrays[f"W_{i}"] = np.asarray(w, np.float32)
    arrays[f"b_{i}"] = np.asarray(b, np.float32)
  buffer = io_lib.BytesIO()
  np.savez(buffer, **arrays)
  path = os.fspath(path)
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  io.atomic_write(path, buffer.getvalue())


def load_network(path: str | os.PathLike) -> Network:
  """Reads `network.npz`; a malformed file raises NetworkFormatError naming it."""
  path = os.fspath(path)
  if not os.path.isfile(path):
    raise NetworkFormatError(f"network file not found: {path}")
  try:
    with np.load(path, allow_pickle=False) as data:
      arrays = {k: data[k] for k in data.files}
  except (OSError, ValueError, zipfile.BadZipFile, EOFError) as e:
    raise NetworkFormatError(f"cannot read network file {path}: {e}") from e
  try:
    return network_from_arrays(arrays)
  except NetworkFormatError as e:
    raise NetworkFormatError(f"{path}: {e}") from e


def network_from_arrays(arrays: Mapping[str, np.ndarray]) -> Network:
  indices = sorted(int(m.group(1)) for k in arrays
                   if (m := re.fullmatch(r"W_(\d+)", k)))
  if not indices:
    raise NetworkFormatError(
        f"no W_0..W_L keys (found keys: {sorted(arrays)})")
  expected = list(range(len(indices)))
  if indices != expected:
    raise NetworkFormatError(f"weight keys must be W_0..W_{len(indices) - 1}, "
                             f"found W_{indices}")
  missing = [f"b_{i}" for i in expected if f"b_{i}" not in arrays]
  if missing:
    raise NetworkFormatError(f"missing bias keys {missing}")
  keys = [f"{k}_{i}" for i in expected for k in "Wb"]
  unknown = sorted(set(arrays) - set(keys))
  if unknown:  # e.g. a mask or a layer beyond the last weight matrix
    raise NetworkFormatError(f"unknown keys {unknown} (a network holds only "
                             f"W_0..W_{expected[-1]} and b_0..b_{expected[-1]})")
  for key in keys:
    dtype = np.asarray(arrays[key]).dtype
    if not (np.issubdtype(dtype, np.floating)
            or np.issubdtype(dtype, np.integer)):
      raise NetworkFormatError(f"{key} has dtype {dtype}; need real numbers")
  return Network(
      tuple(np.asarray(arrays[f"W_{i}"], np.float32) for i in expected),
      tuple(np.asarray(arrays[f"b_{i}"], np.float32) for i in expected))


def network_digest(network: Network) -> str:
  """A short sha256 of the weights (shapes included): which network a file
  of results or a pruning workdir belongs to."""
  digest = hashlib.sha256()
  for array in (*network.weights, *network.biases):
    a = np.ascontiguousarray(array, np.float32)
    digest.update(str(a.shape).encode())
    digest.update(a.tobytes())
  return digest.hexdigest()[:16]


MNIST_INPUTS = 784
MNIST_CLASSES = 10


def load_mnist_network(path: str | os.PathLike) -> Network:
  """`load_network`, and the network must read a flattened 28x28 image and
  give 10 logits (what every binary here feeds it and reads from it)."""
  network = load_network(path)
  if (network.input_dim, network.num_classes) != (MNIST_INPUTS, MNIST_CLASSES):
    raise NetworkFormatError(
        f"{os.fspath(path)}: maps {network.input_dim} inputs to "
        f"{network.num_classes} logits; an MNIST network maps "
        f"{MNIST_INPUTS} to {MNIST_CLASSES}")
  return network


def forward(network: Network, x: np.ndarray, *, return_hidden: bool = False):
  """Float forward pass in numpy (float64 accumulation): logits, optionally
  the list of hidden pre-activations."""
  h = np.asarray(x, np.float64).reshape(-1, network.input_dim)
  pre_activations = []
  for i, (w, b) in enumerate(zip(network.weights, network.biases)):
    h = h @ w.astype(np.float64) + b.astype(np.float64)
    if i < network.num_layers - 1:
      pre_activations.append(h)
      h = np.maximum(h, 0.0)
  logits = h if np.ndim(x) > 1 else h[0]
  if return_hidden:
    return logits, pre_activations
  return logits


# Flax <-> Network. The MLP in models.py names its layers Dense_0..Dense_L, and
# flax kernels are already (fan_in, fan_out).
def network_from_params(params: Mapping[str, Any]) -> Network:
  p = params["params"] if "params" in params else params
  names = sorted(p, key=lambda n: int(n.rsplit("_", 1)[1]))
  return Network(tuple(np.asarray(p[n]["kernel"], np.float32) for n in names),
                 tuple(np.asarray(p[n]["bias"], np.float32) for n in names))


def params_from_network(network: Network) -> dict:
  return {"params": {
      f"Dense_{i}": {"kernel": np.asarray(w, np.float32),
                     "bias": np.asarray(b, np.float32)}
      for i, (w, b) in enumerate(zip(network.weights, network.biases))}}
