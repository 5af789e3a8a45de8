"""Resumable searches taking turns on one budget.

Several decision searches (bab.MarginSearch: the targets of one image, the
disjuncts of one VNN-LIB property) share a deadline. They take turns of 1,
2, 4, ... seconds, the search whose open domains have the highest bound
(the closest to a proof) first in each round, and each keeps its domains
between turns. So a hard search that comes first does not take the time an
easier one needed, time left by a decided search goes to those still open,
nothing is bounded twice, and the last open search gets all that is left.
"""

from __future__ import annotations

from typing import Callable

FIRST_TURN_SECONDS = 1.0


def take_turns(searches: dict, seconds_left: Callable[[], float], *,
               overrun: float, final_proof: float, min_step: float,
               stop: Callable[[object, object], bool] = lambda key, r: False
               ) -> dict:
  """{key: BabResult} for every search: decided, or stopped when too little
  time is left (re-proving its open domains for about `final_proof` s).
  A turn starts only with `min_step` s to spare after `overrun` (a batch
  in flight) and the final re-proofs; `stop(key, result)` True on a
  decided search ends all turns (e.g. a counterexample decides the
  whole question)."""
  turn = FIRST_TURN_SECONDS
  while _round(searches, turn, seconds_left, overrun, final_proof, min_step,
               stop):
    turn *= 2
  return {key: search.stop(final_proof) for key, search in searches.items()}


def _round(searches, turn, seconds_left, overrun, final_proof, min_step,
           stop) -> bool:
  """One round over the open searches, closest to a proof first; False when
  every search is decided, the time is spent or `stop` says so."""
  open_keys = sorted((k for k, s in searches.items() if s.result is None),
                     key=lambda k: -searches[k].estimate())
  for i, key in enumerate(open_keys):
    left = seconds_left() - overrun - final_proof * len(open_keys)
    if left < min_step:
      return False
    last = all(searches[k].result is not None for k in open_keys[:i]) and (
        i == len(open_keys) - 1)
    result = searches[key].advance(left if last else min(turn, left))
    if result is not None and stop(key, result):
      return False
  return any(s.result is None for s in searches.values())
