"""The branch and bound's share of an image budget in certify mode: one
resumable search per open target, taking turns (bab.turns) until the
image's deadline."""

from __future__ import annotations

import math

from robust_prune import bab
from robust_prune import bounds as bounds_lib
from robust_prune.verify.config import (BAB_OVERRUN_SECONDS, Deadline,
                                        ImageProblem, MIN_STEP_SECONDS)

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
    if (deadline.remaining() - BAB_OVERRUN_SECONDS
        - FINAL_PROOF_SECONDS * len(targets)) < MIN_STEP_SECONDS:
      break
    c = bounds_lib.margin_spec(p.label, [t], p.network.num_classes)[0]
    searches[t] = bab.MarginSearch(p.network, p.lower, p.upper, c,
                                   bab.BabConfig(time_limit=math.inf), layers)
  return bab.take_turns(searches, deadline.remaining,
                        overrun=BAB_OVERRUN_SECONDS,
                        final_proof=FINAL_PROOF_SECONDS,
                        min_step=MIN_STEP_SECONDS)
