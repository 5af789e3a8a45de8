"""The branch and bound's share of an image budget in certify mode: turns.

Every open target gets a resumable search (bab.MarginSearch); they take
turns of 1, 2, 4, ... seconds, the target whose open domains have the
highest bound (the closest to a proof) first in each round, and a search
keeps its domains between turns. So a hard target that comes first no
longer takes an equal share that an easier one needed, time left by a
decided target goes to those still open, and nothing is bounded twice.
The last open target gets all that is left.
"""

from __future__ import annotations

import math

from robust_prune import bab
from robust_prune import bounds as bounds_lib
from robust_prune.verify.config import (BAB_OVERRUN_SECONDS, Deadline,
                                        ImageProblem, MIN_STEP_SECONDS)

FIRST_TURN_SECONDS = 1.0
# the float64 re-proof of what stays open when time runs out (the bound a
# `timeout` record reports) is paid after the last turn, for about this long
# per target; rows not re-proved count with their parents' proven bound
FINAL_PROOF_SECONDS = 0.2


def decide_in_turns(p: ImageProblem, targets, layers: bounds_lib.LayerBounds,
                    deadline: Deadline) -> dict:
  """{target: BabResult} for the targets whose search started (the others
  had no time left); an undecided one carries its proven bound."""
  searches = {}
  for t in targets:
    if _time_for_turn(deadline, len(targets)) is None:
      break
    c = bounds_lib.margin_spec(p.label, [t], p.network.num_classes)[0]
    searches[t] = bab.MarginSearch(p.network, p.lower, p.upper, c,
                                   bab.BabConfig(time_limit=math.inf), layers)
  turn = FIRST_TURN_SECONDS
  while _take_turns(searches, turn, deadline):
    turn *= 2
  return {t: search.stop(FINAL_PROOF_SECONDS)
          for t, search in searches.items()}


def _take_turns(searches: dict, turn: float, deadline: Deadline) -> bool:
  """One round over the open searches, closest to a proof first; False once
  every search is decided or the budget is spent."""
  open_targets = sorted((t for t, s in searches.items() if s.result is None),
                        key=lambda t: -searches[t].estimate())
  for i, t in enumerate(open_targets):
    left = _time_for_turn(deadline, len(open_targets))
    if left is None:
      return False
    last = i == len(open_targets) - 1 and all(
        searches[u].result is not None for u in open_targets[:i])
    searches[t].advance(left if last else min(turn, left))
  return any(s.result is None for s in searches.values())


def _time_for_turn(deadline: Deadline, open_count: int) -> float | None:
  """Seconds a turn may take now (what remains less the usual overrun of a
  batch and the final re-proofs), or None when too little is left."""
  left = (deadline.remaining() - BAB_OVERRUN_SECONDS
          - FINAL_PROOF_SECONDS * open_count)
  return left if left >= MIN_STEP_SECONDS else None
