"""Resumable searches taking turns on one budget.

Several decision searches (bab.MarginSearch: the targets of one image, the
disjuncts of one VNN-LIB property) share a deadline, and each keeps its
domains between turns. In a round they take turns of 1, 2, 4, ... seconds,
the search whose open domains have the highest bound (the closest to a
proof) first. After the first round, the search that would close soonest
at the pace its bound rose in its last turn goes alone, on a turn of its
own that doubles each time; rounds resume while no bound rises. So a hard
search that comes first does not take the time an easier one needed, a
target about to close is not held back by hopeless ones, time left by a
decided search goes to those still open, nothing is bounded twice, and the
last open search gets all that is left.
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
  whole question).

  After a first round, the search that will close soonest at the rate its
  estimate rose in its last turn goes next, on its own turn (doubling each
  time it goes); while no search rises, all take a round of doubling
  turns, closest to a proof first. So a target about to close is not
  held back by hopeless ones sharing its image."""
  pace = _Pace(searches)
  turn = FIRST_TURN_SECONDS
  while True:
    chosen = pace.soonest() if turn > FIRST_TURN_SECONDS else None
    if chosen is None:
      going = _round(pace, turn, seconds_left, overrun, final_proof,
                     min_step, stop)
      turn *= 2
    else:
      going = _turn(pace, chosen, seconds_left, overrun, final_proof,
                    min_step, stop)
      pace.turn[chosen] *= 2
    if not going:
      break
  return {key: search.stop(final_proof) for key, search in searches.items()}


class _Pace:
  """Per search: how fast its estimate rose in its last turn, and the
  length of its next turn when it goes alone."""

  def __init__(self, searches):
    self.searches = searches
    self.rate = {key: 0.0 for key in searches}
    self.turn = {key: 2 * FIRST_TURN_SECONDS for key in searches}

  def any_open(self) -> bool:
    return any(s.result is None for s in self.searches.values())

  def open_keys(self):
    return sorted((k for k, s in self.searches.items() if s.result is None),
                  key=lambda k: -self.searches[k].estimate())

  def advance(self, key, seconds, clock_left):
    search = self.searches[key]
    before, left_before = search.estimate(), clock_left()
    result = search.advance(seconds)
    spent = left_before - clock_left()
    if result is None and spent > 0:
      self.rate[key] = max(search.estimate() - before, 0.0) / spent
    return result

  def soonest(self):
    """The open search with the least time to a proof at its rate (None
    when none is rising, or only one is open: it gets a round)."""
    keys = self.open_keys()
    ahead = {k: -min(self.searches[k].estimate(), 0.0) / self.rate[k]
             for k in keys if self.rate[k] > 0}
    if len(keys) < 2 or not ahead:
      return None
    return min(ahead, key=ahead.get)


def _turn(pace, key, seconds_left, overrun, final_proof, min_step,
          stop) -> bool:
  """One search's turn alone; False when the time is spent or `stop`
  says so."""
  left = seconds_left() - overrun - final_proof * len(pace.open_keys())
  if left < min_step:
    return False
  result = pace.advance(key, min(pace.turn[key], left), seconds_left)
  if result is not None and stop(key, result):
    return False
  return pace.any_open()


def _round(pace, turn, seconds_left, overrun, final_proof, min_step,
           stop) -> bool:
  """One round over the open searches, closest to a proof first; False when
  every search is decided, the time is spent or `stop` says so."""
  open_keys = pace.open_keys()
  for i, key in enumerate(open_keys):
    left = seconds_left() - overrun - final_proof * len(open_keys)
    if left < min_step:
      return False
    last = all(pace.searches[k].result is not None
               for k in open_keys[:i]) and i == len(open_keys) - 1
    result = pace.advance(key, left if last else min(turn, left),
                          seconds_left)
    if result is not None and stop(key, result):
      return False
  return pace.any_open()
