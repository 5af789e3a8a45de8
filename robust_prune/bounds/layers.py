"""The bounds' data type (`LayerBounds`), the verification box, and the
float64 parameters the jitted bounds run on."""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp
import numpy as np

from robust_prune.network import Network


@dataclasses.dataclass(frozen=True)
class LayerBounds:
  """Pre-activation bounds of every layer (hidden layers, then the logits)
  for ONE input box; numpy float64."""

  lowers: tuple[np.ndarray, ...]
  uppers: tuple[np.ndarray, ...]

  @property
  def hidden(self):
    return list(zip(self.lowers[:-1], self.uppers[:-1]))

  def unstable_counts(self) -> tuple[int, ...]:
    return tuple(int(np.sum((l < 0) & (u > 0))) for l, u in self.hidden)

  @property
  def num_unstable(self) -> int:
    return int(sum(self.unstable_counts()))

  def intersect(self, other: "LayerBounds") -> "LayerBounds":
    """Both sound for the same box, so their intersection is."""
    return LayerBounds(
        tuple(np.maximum(a, b) for a, b in zip(self.lowers, other.lowers)),
        tuple(np.minimum(a, b) for a, b in zip(self.uppers, other.uppers)))

  def with_hidden_of(self, other: "LayerBounds") -> "LayerBounds":
    """These logits' bounds after `other`'s hidden layers (a network whose
    last layer was replaced keeps its hidden layers, and their bounds)."""
    return LayerBounds(other.lowers[:-1] + self.lowers[-1:],
                       other.uppers[:-1] + self.uppers[-1:])


def input_box(x, delta: float):
  """The verification box [max(0, x - delta), min(1, x + delta)]: the
  paper's eq. 8-9 (|z_1 - x|_inf <= delta) clipped to the pixel range."""
  x = np.asarray(x, np.float64)
  return np.clip(x - delta, 0.0, 1.0), np.clip(x + delta, 0.0, 1.0)


def float64_params(network: Network):
  """float64 weights and biases; call under `jax.enable_x64(True)`."""
  return (tuple(jnp.asarray(w, jnp.float64) for w in network.weights),
          tuple(jnp.asarray(b, jnp.float64) for b in network.biases))


def to_layer_bounds(lowers, uppers, batched: bool):
  """Device arrays per layer -> LayerBounds (or one per image if batched)."""
  lowers = [np.asarray(l, np.float64) for l in lowers]
  uppers = [np.asarray(u, np.float64) for u in uppers]
  if not batched:
    return LayerBounds(tuple(lowers), tuple(uppers))
  return [LayerBounds(tuple(l[i] for l in lowers), tuple(u[i] for u in uppers))
          for i in range(lowers[0].shape[0])]


def as_box(lower, upper):
  return np.asarray(lower, np.float64), np.asarray(upper, np.float64)
