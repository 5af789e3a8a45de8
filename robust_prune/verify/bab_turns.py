"""The branch and bound's share of an image budget in certify mode: one
resumable search per open target, taking turns (bab.turns) until the
image's deadline. With refined intermediate bounds (bab.refine), the
searches first take turns on the plain ones for a tenth of the budget (at
most 3 s): the refinement costs seconds, which pays on hard images only. An
image with a root far from a proof refines at once, bounding no further
plain root."""

from __future__ import annotations

import dataclasses
import math

from robust_prune import bab
from robust_prune import bounds as bounds_lib
from robust_prune.verify.config import (BAB_OVERRUN_SECONDS, Deadline,
                                        FINAL_PROOF_SECONDS, ImageProblem,
                                        MIN_STEP_SECONDS)

# with refinement: the share of the remaining budget searched on the plain
# bounds first, at most PLAIN_FIRST_MAX_SECONDS (on the 300-100 net, every
# pair that delta 0.05 leaves to the branch and bound and most that the plain
# bounds decide at 0.1 take under ~3 s; a hard image refines no later)
PLAIN_FIRST_FRACTION = 0.1
PLAIN_FIRST_MAX_SECONDS = 3.0
# ... unless a search's root bound is below this: on the 300-100 net at delta
# 0.1 (images 0-39), every image the plain turns decided had all its roots
# above -3.6, every image with a root below -5.1 needed the refinement
REFINE_AT_ONCE_BELOW = -4.5


def decide_in_turns(p: ImageProblem, targets, layers: bounds_lib.LayerBounds,
                    deadline: Deadline, refine=None,
                    config: bab.BabConfig = bab.BabConfig(),
                    final_proof: float = FINAL_PROOF_SECONDS) -> dict:
  """{target: BabResult} for the targets whose search started (the others
  had no time left); an undecided one carries its proven bound. The
  searches run with `config` (its time limit is the deadline's).
  `refine(layers, deadline)`, if given, returns tighter layer bounds: it is
  called once the plain bounds' turns leave targets open, and their
  searches start again on its bounds for the rest of the budget. The
  float64 re-proof of what stays open when time runs out (the bound a
  `timeout` record reports) is paid after the last turn, for about
  `final_proof` s per target; rows not re-proved count with their
  parents' proven bound."""
  # the root's facet maker, shared by every search of the image's box
  facets = bab.layer_facets(p.network, p.lower, p.upper)
  if refine is None:
    return _turns(p, targets, layers, deadline, final_proof, config, facets)
  first = Deadline(min(deadline.remaining() * PLAIN_FIRST_FRACTION,
                       PLAIN_FIRST_MAX_SECONDS))
  # the first root far from a proof ends the plain phase: the targets not
  # started yet are searched on the refined bounds only. The plain phase's
  # roots make only the search's own rounds of cuts (no root_cut_rounds):
  # extra root rounds cost ~0.5 s a target, which the easy targets it
  # decides do not recover.
  plain = dataclasses.replace(config, root_cut_rounds=0)
  searches = _start(p, targets, layers, first, 0.0, plain, facets,
                    stop_below=REFINE_AT_ONCE_BELOW)
  if min(_estimates(searches), default=0.0) < REFINE_AT_ONCE_BELOW:
    results = {t: search.stop(0.0) for t, search in searches.items()}
  else:
    results = _take_turns(searches, first, 0.0)
  still_open = [t for t, r in results.items() if r.status == "unknown"]
  still_open += [t for t in targets if t not in results]
  if still_open and deadline.remaining() > BAB_OVERRUN_SECONDS:
    refined = refine(layers, deadline)
    results.update(_turns(p, still_open, refined, deadline, final_proof,
                          config, facets))
  return results


def _turns(p: ImageProblem, targets, layers, deadline: Deadline,
           final_proof: float, config: bab.BabConfig, facets) -> dict:
  return _take_turns(_start(p, targets, layers, deadline, final_proof,
                            config, facets), deadline, final_proof)


def _estimates(searches: dict):
  return [s.estimate() for s in searches.values() if s.result is None]


def _start(p: ImageProblem, targets, layers, deadline: Deadline,
           final_proof: float, config: bab.BabConfig, facets,
           stop_below: float = -math.inf) -> dict:
  """{target: MarginSearch} (root bounded, with the root facet maker
  `facets`) while time is left to start, and until a root's bound is
  below `stop_below`."""
  searches = {}
  for t in targets:
    if (deadline.remaining() - BAB_OVERRUN_SECONDS
        - final_proof * len(targets)) < MIN_STEP_SECONDS:
      break
    c = bounds_lib.margin_spec(p.label, [t], p.network.num_classes)[0]
    searches[t] = bab.MarginSearch(
        p.network, p.lower, p.upper, c,
        dataclasses.replace(config, time_limit=math.inf), layers, facets)
    if searches[t].result is None and searches[t].estimate() < stop_below:
      break
  return searches


def _take_turns(searches: dict, deadline: Deadline, final_proof: float):
  return bab.take_turns(searches, deadline.remaining,
                        overrun=BAB_OVERRUN_SECONDS,
                        final_proof=final_proof,
                        min_step=MIN_STEP_SECONDS)
