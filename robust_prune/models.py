"""Flax linen models, applied as `model.apply(params, x)`; `apply_fn` and
`flax_params` turn an exported Network into that pair (the one place that
does)."""

from __future__ import annotations

import functools
from typing import Any, Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from robust_prune import network as network_lib

DEFAULT_HIDDEN = (300, 100)  # LeNet-300-100, the pruning paper's FC model
NUM_CLASSES = 10


class MLP(nn.Module):
  """ReLU MLP on flattened 28x28 images; layers are Dense_0..Dense_L so the
  params map one-to-one onto `network.npz` (see network.py)."""

  hidden: Sequence[int] = DEFAULT_HIDDEN
  num_classes: int = NUM_CLASSES

  @nn.compact
  def __call__(self, x):
    x = jnp.reshape(x, (x.shape[0], -1))
    for width in self.hidden:
      x = nn.relu(nn.Dense(width)(x))
    return nn.Dense(self.num_classes)(x)


def parse_widths(text: str | Sequence[int]) -> tuple[int, ...]:
  """'300,100' -> (300, 100); rejects empty or non-positive widths."""
  if isinstance(text, str):
    parts = [p for p in text.replace(" ", "").split(",") if p]
    try:
      widths = tuple(int(p) for p in parts)
    except ValueError as e:
      raise ValueError(f"hidden widths must be integers like '300,100', got {text!r}") from e
  else:
    widths = tuple(int(w) for w in text)
  if not widths or any(w <= 0 for w in widths):
    raise ValueError(f"hidden widths must be positive, got {text!r}")
  return widths


@functools.lru_cache(maxsize=None)
def mlp(hidden: tuple[int, ...], num_classes: int = NUM_CLASSES) -> MLP:
  """One module per shape, so its `apply` is one static argument to jit
  (one compilation per shape, not per call)."""
  return MLP(hidden=tuple(hidden), num_classes=num_classes)


def apply_fn(network: network_lib.Network) -> Callable[..., jax.Array]:
  """`apply_fn(params, x)`: the logits of an MLP shaped like `network`, for
  `flax_params(network)` or other params."""
  return mlp(tuple(network.hidden_widths), network.num_classes).apply


def flax_params(network: network_lib.Network) -> Any:
  """The Network's weights as the params of `apply_fn(network)`."""
  return jax.tree.map(jnp.asarray, network_lib.params_from_network(network))
