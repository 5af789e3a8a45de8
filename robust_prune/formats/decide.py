"""Decides a VNN-LIB property on a network within a wall-clock deadline.

`sat` needs a counterexample: an input in some disjunct's box whose outputs,
by a float64 forward pass of the network, satisfy every row of that
disjunct (ties under >= count). `unsat` needs every disjunct refuted; a
disjunct (a conjunction) is refuted when one of its rows is proven
impossible on the box (the row's objective -g_r proven > 0 by CROWN or by
the branch and bound on the folded network, see objective.py), or when the
MILP of the whole conjunction is infeasible. Nothing is ever guessed: what
is neither is `timeout` (the deadline passed) or `unknown`.

Order, cheapest first: PGD on every disjunct; CROWN on every row; branch and
bound per open disjunct (its most promising row), the searches taking turns
(bab.turns) on alpha-CROWN's hidden bounds and then, if disjuncts stay open,
on refined ones (as in certify mode); then the conjunction MILP per open
disjunct with an equal share of what is left, on the same hidden bounds.
The branch and bound gets `bab_share` of the time left when an open
disjunct has several rows (only the MILP sees them all), else all of it (a
single row's MILP poses the branch and bound's own problem; it still runs
if the searches stop early).
"""

from __future__ import annotations

import collections
import dataclasses
import time

from absl import logging
import numpy as np

from robust_prune import bab as bab_lib
from robust_prune import bounds as bounds_lib
from robust_prune.formats import attack, conjunction_milp, objective
from robust_prune.formats.vnnlib import Property
from robust_prune.network import Network, forward


@dataclasses.dataclass(frozen=True)
class DecideConfig:
  pgd_restarts: int = 8
  pgd_steps: int = 100
  bab_share: float = 0.6        # of the time left after CROWN, for BaB,
                                # when the MILP has a conjunction to solve
  solver: str = "HIGHS"
  reserve: float = 1.0          # seconds kept back to write the result,
  reserve_fraction: float = 0.02  # and this fraction of the time given
  min_step: float = 0.5         # no step starts with less than this left
  use_milp: bool = True
  bab_batch_size: int = bab_lib.BabConfig.batch_size
  # the hidden layers' bounds the branch and bound and the MILP keep:
  # "crown", "alpha" (alpha-CROWN's, intersected with CROWN's), or "refine"
  # (alpha's, then tightened by bab.refine once a first part of the branch
  # and bound's turns on alpha's leaves disjuncts open), as in certify mode
  intermediate: str = "refine"
  plain_first_fraction: float = 0.1   # of the branch and bound's time
  refine_seconds: float = 90.0        # cap, and a quarter of the time left
  # rounds of the refinement's side searches (each asks the sides proved in
  # the last one for half its step again): with VNN-COMP's minutes, 4
  # rounds fit in the cap and move the bounds about 40% of the way to the
  # attack's values, against 25% for one (bab.refine)
  refine_rounds: int = 4


@dataclasses.dataclass
class Verdict:
  result: str                   # sat | unsat | timeout | unknown
  x: np.ndarray | None = None   # the counterexample (sat)
  y: np.ndarray | None = None   # its outputs, float64 forward pass
  message: str = ""
  refuted_by: dict = dataclasses.field(default_factory=dict)  # disjunct: how
  out_of_time: bool = False     # a search stopped at its time, not a limit


@dataclasses.dataclass
class _Box:
  """Disjuncts sharing one input box, with their rows stacked into one
  folded network (row r of the stack is target r + 1)."""
  lower: np.ndarray
  upper: np.ndarray
  members: list                 # disjunct indices
  rows: dict                    # disjunct index -> global row indices
  layer_bounds: bounds_lib.LayerBounds = None
  folded: Network = None
  folded_bounds: bounds_lib.LayerBounds = None
  row_bounds: np.ndarray = None
  facets: object = None         # the root facets' maker (bab.layer_facets)


def check_dimensions(network: Network, prop: Property):
  if (prop.num_inputs, prop.num_outputs) != (network.input_dim,
                                             network.num_classes):
    raise ValueError(
        f"{prop.path} declares {prop.num_inputs} inputs and "
        f"{prop.num_outputs} outputs; the network maps {network.input_dim} "
        f"inputs to {network.num_classes} outputs")


def counterexample(network: Network, prop: Property, candidates, which):
  """The first candidate that is a counterexample of its disjunct (float64),
  preferring its float32 rounding (what other tools' checkers feed the
  network) when that is one too; (x, y) or None."""
  candidates = np.atleast_2d(candidates)
  outputs = forward(network, candidates)
  for x, y, i in zip(candidates, outputs, which):
    d = prop.disjuncts[i]
    if d.holds_at(x, y):
      x32 = x.astype(np.float32).astype(np.float64)
      y32 = forward(network, x32)
      return (x32, y32) if d.holds_at(x32, y32) else (x, y)
  return None


def _prepare(network: Network, prop: Property, lower, upper, members) -> _Box:
  rows, stacked, consts = {}, [], []
  for i in members:
    d = prop.disjuncts[i]
    rows[i] = list(range(len(consts), len(consts) + len(d.consts)))
    stacked += list(-d.coeffs)      # objective of row r: -g_r
    consts += list(-d.consts)
  box = _Box(lower, upper, members, rows)
  box.layer_bounds = bounds_lib.crown_bounds(network, lower, upper)
  if consts:
    h_mag = objective.last_hidden_magnitude(network, lower, upper,
                                            box.layer_bounds)
    box.folded = objective.objective_network(network, np.array(stacked),
                                             np.array(consts), h_mag)
    box.folded_bounds = bounds_lib.crown_bounds(box.folded, lower, upper)
    box.row_bounds = bounds_lib.crown_margin_lower_bounds(
        box.folded, lower[None], upper[None], [0])[0][1:]
  return box


def decide(network: Network, prop: Property, deadline: float,
           config: DecideConfig = DecideConfig()) -> Verdict:
  """The verdict by `deadline` (a time.monotonic() value); see docstring."""
  check_dimensions(network, prop)
  now = time.monotonic()
  end = deadline - config.reserve - config.reserve_fraction * (deadline - now)
  verdict = Verdict("unknown")
  boxes = [_prepare(network, prop, lo, hi, members)
           for lo, hi, members in prop.boxes()]
  for box in boxes:
    found = _attack(network, prop, box, config)
    if found is not None:
      return Verdict("sat", *found, message="pgd")
  open_ = _open_after_crown(boxes, verdict)
  # time is kept back for the MILP only where it adds something: a single
  # row's MILP poses the branch and bound's own problem
  milp = config.use_milp and _milp_fits(network, _conjunctions(prop, open_),
                                        end, 1 - config.bab_share)
  for stage in ("bab", "milp"):
    if stage == "milp" and not (config.use_milp and _milp_fits(
        network, open_, end, 1.0)):
      break   # (re-checked: the branch and bound may have left time)
    share = config.bab_share if stage == "bab" and milp else 1.0
    open_, found = _stage(stage, network, prop, open_, end, share, verdict,
                          config)
    if found is not None:
      return Verdict("sat", *found, message=stage)
  if not open_:
    verdict.result = "unsat"
  elif verdict.out_of_time or time.monotonic() >= end - config.min_step:
    verdict.result = "timeout"
  steps = collections.Counter(verdict.refuted_by.values())
  verdict.message = (f"{len(open_)} of {len(prop.disjuncts)} disjuncts open"
                     + "".join(f"; {n} refuted by {step}"
                               for step, n in sorted(steps.items())))
  return verdict


def warm_up(network: Network, prop: Property,
            config: DecideConfig = DecideConfig()) -> float:
  """Runs each jitted step of `decide` once at the shapes `prop` (and any
  property of its form) meets: the compile is then paid here, once per
  network, and not from an instance's timeout; returns its seconds. A
  failure only costs the warm-up (the run compiles as it goes)."""
  t0 = time.monotonic()
  try:
    lower, upper, members = next(iter(prop.boxes()))
    box = _prepare(network, prop, lower, upper, members)
    _attack(network, prop, box, config)
    if box.folded is not None:
      if config.intermediate != "crown":
        bounds_lib.alpha_crown_bounds(network, lower, upper)
      spec = bounds_lib.margin_spec(0, [1], box.folded.num_classes)[0]
      bab_lib.warm_up(box.folded, lower, upper, box.folded_bounds, spec,
                      _bab_config(config))
      if config.intermediate == "refine":
        bab_lib.refine.warm_up(network, lower, upper, box.layer_bounds)
  except Exception as e:  # pylint: disable=broad-except
    logging.warning("warm-up failed (%s: %s); compiling as the run goes",
                    type(e).__name__, e)
  return time.monotonic() - t0


def _bab_config(config: DecideConfig) -> bab_lib.BabConfig:
  return bab_lib.BabConfig(time_limit=float("inf"),
                           batch_size=config.bab_batch_size)


def _open_after_crown(boxes, verdict: Verdict) -> list:
  """(box, disjunct) pairs no row's CROWN bound refutes, easiest first (so
  the time the easy ones leave goes to the hard ones)."""
  open_ = []
  for box in boxes:
    for i in box.members:
      if any(box.row_bounds[r] > 0 for r in box.rows[i]):
        verdict.refuted_by[i] = "crown"
      else:
        open_.append((box, i))
  open_.sort(key=lambda bi: -max(bi[0].row_bounds[r]
                                 for r in bi[0].rows[bi[1]]))
  return open_


def _stage(stage, network, prop, open_, end, share, verdict, config):
  """Runs the branch and bound (in turns) or the MILP (each open disjunct
  with an equal part) on `share` of the time left: (still open,
  counterexample or None)."""
  if stage == "bab":
    return _bab_in_turns(network, prop, open_, end, share, verdict, config)
  still = []
  for n, (box, i) in enumerate(open_):
    budget = (end - time.monotonic()) * share / (len(open_) - n)
    if budget < config.min_step:
      still.append((box, i))
      continue
    outcome = _milp(network, prop, box, i, time.monotonic() + budget, config)
    if isinstance(outcome, tuple):
      return still, outcome
    if outcome:
      verdict.refuted_by[i] = stage
    else:
      still.append((box, i))
  return still, None


def _conjunctions(prop: Property, open_) -> list:
  """The open (box, disjunct) pairs whose disjunct has more than one row."""
  return [(box, i) for box, i in open_ if len(prop.disjuncts[i].consts) > 1]


def _milp_fits(network, open_, end: float, fraction: float) -> bool:
  """Whether each open disjunct's MILP is expected to build in half of its
  share of `fraction` of the time left (else the branch and bound gets all
  the time)."""
  if not open_:
    return False
  share = (end - time.monotonic()) * fraction / len(open_)
  return all(2 * conjunction_milp.expected_build_seconds(
      network, box.layer_bounds) <= share for box, _ in open_)


def _attack(network, prop, box: _Box, config: DecideConfig):
  if config.pgd_steps <= 0 or config.pgd_restarts <= 0:
    centre = (box.lower + box.upper) / 2
    return counterexample(network, prop,
                          np.repeat(centre[None], len(box.members), 0),
                          box.members)
  disjuncts = [prop.disjuncts[i] for i in box.members]
  x, which = attack.pgd_candidates(network, box.lower, box.upper, disjuncts,
                                   restarts=config.pgd_restarts,
                                   steps=config.pgd_steps)
  return counterexample(network, prop, x, np.asarray(box.members)[which])


def _bab_in_turns(network, prop, open_, end, share, verdict, config):
  """The branch and bound on each open disjunct's most promising row, the
  searches taking turns (bab.turns) on `share` of the time left, first on
  `config.intermediate` bounds without refinement, then (if "refine" and
  disjuncts stay open) on refined ones: (still open, counterexample or
  None)."""
  stage_end = time.monotonic() + share * (end - time.monotonic())
  if config.intermediate != "crown":
    for box in _boxes(open_):
      _tighten(box, bounds_lib.alpha_crown_bounds(network, box.lower,
                                                  box.upper))
  if config.intermediate != "refine":
    return _turns(network, prop, open_, stage_end, verdict, config)
  first_end = time.monotonic() + config.plain_first_fraction * (
      stage_end - time.monotonic())
  open_, found = _turns(network, prop, open_, first_end, verdict, config)
  if found is not None or not open_:
    return open_, found
  for box in _boxes(open_):
    cap = min(config.refine_seconds, (stage_end - time.monotonic()) / 4)
    if cap > config.min_step:
      _tighten(box, bab_lib.refine_layer_bounds(
          network, box.lower, box.upper, box.layer_bounds,
          bab_lib.RefineConfig(seconds=cap, rounds=config.refine_rounds))[0])
  return _turns(network, prop, open_, stage_end, verdict, config)


def _boxes(open_) -> list:
  """The distinct boxes of (box, disjunct) pairs."""
  return list({id(box): box for box, _ in open_}.values())


def _tighten(box: _Box, layers: bounds_lib.LayerBounds):
  """The box's hidden bounds (kept by the branch and bound and the MILP)
  intersected with `layers`' (sound for the same box)."""
  box.layer_bounds = box.layer_bounds.intersect(layers)
  box.folded_bounds = box.folded_bounds.with_hidden_of(box.layer_bounds)


def _turns(network, prop, open_, stage_end, verdict, config):
  """One search per open disjunct (on its box's folded network and bounds),
  taking turns until `stage_end`: (still open, counterexample or None)."""
  seconds_left = lambda: stage_end - time.monotonic()
  searches, found = {}, []

  def witness(n, result) -> bool:
    if result.x_adv is not None:
      box, i = open_[n]
      x_y = counterexample(network, prop, result.x_adv[None], [i])
      if x_y is not None:
        found.append(x_y)
    return bool(found)
  for n, (box, i) in enumerate(open_):
    if seconds_left() < config.min_step:
      break
    row = max(box.rows[i], key=lambda r: box.row_bounds[r])
    if box.facets is None:   # one plan (~25 ms) per box, not per search
      box.facets = bab_lib.layer_facets(box.folded, box.lower, box.upper)
    searches[n] = bab_lib.MarginSearch(
        box.folded, box.lower, box.upper, bounds_lib.margin_spec(
            0, [row + 1], box.folded.num_classes)[0],
        _bab_config(config), box.folded_bounds, box.facets)
    if searches[n].result is not None and witness(n, searches[n].result):
      return [], found[0]
  results = bab_lib.take_turns(searches, seconds_left, overrun=1.0,
                               final_proof=0.0, min_step=config.min_step,
                               stop=witness)
  if found:
    return [], found[0]
  still, stopped = [], False
  for n, (box, i) in enumerate(open_):
    if n in results and results[n].status == "robust":
      verdict.refuted_by[i] = "bab"
    else:
      still.append((box, i))
      stopped |= n not in results or results[n].reason == "time_limit"
  verdict.out_of_time = stopped
  return still, None


def _milp(network, prop, box: _Box, i: int, step_end: float, config):
  """True if the conjunction MILP refutes disjunct i, (x, y) for a
  counterexample, else False; done by `step_end`."""
  d = prop.disjuncts[i]
  outcome = conjunction_milp.solve_conjunction(
      network, box.lower, box.upper, box.layer_bounds, d.coeffs, d.consts,
      deadline=step_end, solver=config.solver)
  if outcome.refuted:
    return True
  if outcome.x is not None:
    found = counterexample(network, prop, outcome.x[None], [i])
    if found is not None:
      return found
  return False
