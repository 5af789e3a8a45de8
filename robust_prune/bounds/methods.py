"""Pre-activation bounds of one box by name (the `--bounds` flag)."""

from __future__ import annotations

from robust_prune.bounds.crown import crown_bounds
from robust_prune.bounds.interval import interval_bounds
from robust_prune.bounds.lp import lp_tighten
from robust_prune.network import Network

BOUND_METHODS = ("interval", "crown", "lp")


def layer_bounds(network: Network, lower, upper, method: str = "crown"):
  """Bounds of one box by `method` in BOUND_METHODS."""
  if method == "interval":
    return interval_bounds(network, lower, upper)
  if method == "crown":
    return crown_bounds(network, lower, upper)
  if method == "lp":
    return lp_tighten(network, lower, upper, crown_bounds(network, lower, upper))
  raise ValueError(f"unknown bounds method {method!r}; use one of {BOUND_METHODS}")
