"""The verification cascade for one image, cheapest step first:
CROWN margin bounds -> targeted PGD -> alpha/beta-CROWN branch and bound ->
MILP (robust_prune.verify.milp_stage), in three modes:

  targeted        the minimum margin per target (the paper), proven optimal
                  where the branch and bound or the MILP can;
  certify         a proven verdict per target: CROWN and PGD settle what they
                  can, the branch and bound most of the rest, the MILP the
                  remainder;
  min_distortion  the smallest adversarial radius <= delta per target.

With an image budget (VerifyConfig.image_time_limit) one `Deadline` covers
all targets of the image: CROWN and PGD run for all of them, the branch and
bound's searches take turns on the open targets (certify; verify.bab_turns)
or get an equal share each of what remains (targeted; a target decided
early leaves its time to the others), the MILP gets the rest in a child
process killed at the deadline, and a pair left open is a `timeout` with
its best proven bound.

Each step turns the `Verdict`s of the targets it settles into new ones
(dataclasses.replace); the rest go on to the next step. An unproven value is
never reported as optimal (`optimal` says which are), and a witness failing
the float64 re-check is never counted adversarial.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import time
from typing import Sequence

from absl import logging
import numpy as np

from robust_prune import bab
from robust_prune import bounds as bounds_lib
from robust_prune.network import Network, forward
from robust_prune.verify import bab_turns
from robust_prune.verify import milp_stage
from robust_prune.verify.config import (  # pylint: disable=unused-import
    BAB_OVERRUN_SECONDS, BOX_TOLERANCE, CERTIFY_CUTOFF, MIN_DISTORTION_MARGIN,
    MIN_STEP_SECONDS, MODES, STATUSES, Deadline, ImageProblem, VerifyConfig)
from robust_prune.verify.milp_stage import (adversarial, finite,  # pylint: disable=unused-import
                                            model_start, with_bound)
from robust_prune.verify.records import Verdict
from robust_prune.verify.witness import (check_witness,  # pylint: disable=unused-import
                                         pgd_candidates)

replace = dataclasses.replace


def start_verdict(image_index: int, label: int, target: int,
                  config: VerifyConfig) -> Verdict:
  """The record of a pair before any step ran: an `error` until decided."""
  return Verdict(image_index=int(image_index), label=int(label),
                 target=int(target), delta=float(config.delta),
                 mode=config.mode, status="error", solver=config.solver,
                 bounds=config.bounds)


def verify_image(network: Network, image, label: int, image_index: int,
                 targets: Sequence[int] | None,
                 config: VerifyConfig) -> list[Verdict]:
  """One Verdict per target (default: every class but the label). Never
  raises on a failing step: its pairs become `error` records."""
  if config.mode not in MODES:
    raise ValueError(f"unknown mode {config.mode!r}; use one of {MODES}")
  image = np.asarray(image, np.float64).reshape(-1)
  label = int(label)
  if targets is None:
    targets = [t for t in range(network.num_classes) if t != label]
  verdicts = {int(t): start_verdict(image_index, label, t, config)
              for t in targets}
  start = time.perf_counter()
  deadline = Deadline(config.image_time_limit)
  try:
    _run_cascade(network, image, label, verdicts, config, deadline)
    _mark_out_of_time(verdicts, deadline)
  except Exception as e:  # pylint: disable=broad-except
    # A failure is a recorded status, never a lost batch.
    for t, v in verdicts.items():
      if v.status == "error" and v.message is None:
        verdicts[t] = replace(v, message=f"{type(e).__name__}: {e}")
  seconds = time.perf_counter() - start
  return [replace(v, image_seconds=seconds) for v in verdicts.values()]


def _mark_out_of_time(verdicts: dict, deadline: Deadline) -> None:
  """With an image budget, the pairs no step reached are `timeout`s with
  the best bound proven before the budget ran out."""
  if not deadline.enabled:
    return
  for t, v in verdicts.items():
    if v.status == "error" and v.message is None:
      verdicts[t] = replace(v, status="timeout",
                            message=deadline.ran_out_message())


def _run_cascade(network, image, label, verdicts: dict, config: VerifyConfig,
                 deadline: Deadline):
  """Fills `verdicts` ({target: Verdict}) step by step; each step replaces
  the Verdicts it settles, so a step that raises keeps the earlier ones.
  CROWN and PGD run for all targets first; with an image budget the
  branch and bound then shares `deadline` among the open targets and the
  MILP gets what remains."""
  predicted = int(np.argmax(forward(network, image)))
  if predicted != label:
    for t, v in verdicts.items():
      verdicts[t] = replace(v, status="misclassified", predicted=predicted)
    return
  lower, upper = bounds_lib.input_box(image, config.delta)
  t0 = time.perf_counter()
  method = "interval" if config.all_binary else config.bounds
  layer_bounds = bounds_lib.layer_bounds(network, lower, upper, method)
  bounds_seconds = time.perf_counter() - t0
  unstable = tuple(int(n) for n in layer_bounds.unstable_counts())
  for t, v in verdicts.items():
    verdicts[t] = replace(v, bounds_seconds=bounds_seconds,
                          unstable_per_layer=unstable)
  problem = ImageProblem(network, image, label, lower, upper, layer_bounds)
  undecided = list(verdicts)
  pgd = {}
  if config.mode == "certify":
    undecided = _certify_by_crown(problem, undecided, verdicts)
    undecided = _certify_by_pgd(problem, undecided, verdicts, config)
    undecided = _certify_by_bab(problem, undecided, verdicts, config,
                                deadline)
  if config.mode == "targeted" and config.warm_start and config.pgd_steps > 0:
    pgd = pgd_candidates(network, image, label, undecided, config.delta,
                         steps=config.pgd_steps, restarts=config.pgd_restarts,
                         seed=config.pgd_seed)
  if config.mode == "targeted":
    undecided = _targeted_by_bab(problem, undecided, verdicts, config, pgd,
                                 deadline)
  milp_stage.solve_milps(problem, undecided, verdicts, config, pgd, deadline)


def bab_time_limit(config: VerifyConfig, deadline: Deadline | None,
                   open_left: int) -> float | None:
  """Seconds for the next target's branch and bound: bab_time_limit, or
  with an image budget an equal share of what remains among the `open_left`
  targets (less its usual overrun); None when too little is left to start."""
  if deadline is None or not deadline.enabled:
    return config.bab_time_limit
  share = deadline.share(open_left)
  if share < MIN_STEP_SECONDS:
    return None
  return share - min(BAB_OVERRUN_SECONDS, share / 4)


def _certify_by_crown(p: ImageProblem, targets, verdicts) -> list[int]:
  """CROWN margin bounds prove what they can; returns the rest."""
  t0 = time.perf_counter()
  margin_lb = bounds_lib.crown_margin_lower_bounds(
      p.network, p.lower[None], p.upper[None], [p.label])[0]
  seconds = time.perf_counter() - t0
  rest = []
  for t in targets:
    v = replace(verdicts[t], best_bound=finite(margin_lb[t]))
    if margin_lb[t] > 0:
      v = replace(v, status="robust", decided_by="crown", solve_seconds=seconds,
                  num_binaries=0)
    else:
      rest.append(t)
    verdicts[t] = v
  return rest


def _certify_by_pgd(p: ImageProblem, targets, verdicts,
                    config: VerifyConfig) -> list[int]:
  """Targeted PGD finds what witnesses it can; returns the rest."""
  if not targets or config.pgd_steps <= 0:
    return targets
  t0 = time.perf_counter()
  found = pgd_candidates(p.network, p.image, p.label, targets, config.delta,
                         steps=config.pgd_steps, restarts=config.pgd_restarts,
                         seed=config.pgd_seed)
  seconds = time.perf_counter() - t0
  rest = []
  for t in targets:
    margin, x_adv = found.get(t, (None, None))
    ok = False
    if margin is not None and margin < 0:
      ok, margin, x_adv = check_witness(p.network, x_adv, p.image, config.delta,
                                        p.label, t)
    if ok:
      verdicts[t] = adversarial(verdicts[t], x_adv, margin, decided_by="pgd",
                                objective=float(margin), solve_seconds=seconds,
                                num_binaries=0)
    else:
      rest.append(t)
  return rest


def bab_layer_bounds(p: ImageProblem, config: VerifyConfig,
                     deadline: Deadline | None = None, refine: bool = True):
  """The layer bounds the branch and bound keeps for every domain: the
  image's, intersected with alpha-CROWN's unless the intermediate bounds
  are "crown" (both are sound, so their intersection is); with "refine" (and
  `refine`) then tightened by proofs (`refined_layer_bounds`)."""
  if config.intermediate_bounds == "crown":
    return p.layer_bounds
  layers = p.layer_bounds.intersect(
      bounds_lib.alpha_crown_bounds(p.network, p.lower, p.upper))
  if config.intermediate_bounds == "refine" and refine:
    layers = refined_layer_bounds(p, config, layers, deadline)
  return layers


def refined_layer_bounds(p: ImageProblem, verify_config: VerifyConfig, layers,
                         deadline: Deadline | None):
  """`layers` with the later layers' bounds tightened by batched side
  searches (bab.refine), within a quarter of what the image budget has
  left."""
  config = verify_config.refine_config()
  if deadline is not None and deadline.enabled:
    config = dataclasses.replace(config, seconds=min(
        config.seconds, max(deadline.remaining(), 0.0) / 4))
  refined, stats = bab.refine_layer_bounds(p.network, p.lower, p.upper,
                                           layers, config)
  logging.debug("refined bounds: %s", stats)
  return refined


def _bab_shares(config: VerifyConfig, deadline: Deadline | None, targets,
                rest: list):
  """(target, branch-and-bound seconds) in order, each share computed when
  its turn comes (so time left by an early decision passes on); a target
  with no time left goes straight to `rest`."""
  for i, t in enumerate(targets):
    limit = bab_time_limit(config, deadline, len(targets) - i)
    if limit is None:
      rest.append(t)
    else:
      yield t, limit


def _bab_results(p: ImageProblem, targets, config: VerifyConfig,
                 deadline: Deadline | None, rest: list):
  """(target, BabResult) per target given to the branch and bound: with an
  image budget in turns (verify.bab_turns), else bab_time_limit each; a
  target that got no time goes to `rest`."""
  in_turns = deadline is not None and deadline.enabled
  layers = bab_layer_bounds(p, config, deadline, refine=not in_turns)
  if in_turns:   # refined bounds only once the plain ones leave targets open
    refine = (functools.partial(refined_layer_bounds, p, config)
              if config.intermediate_bounds == "refine" else None)
    results = bab_turns.decide_in_turns(p, targets, layers, deadline, refine,
                                        config.bab_config(math.inf),
                                        config.bab_final_proof)
    rest.extend(t for t in targets if t not in results)
    yield from results.items()
    return
  for t in targets:
    yield t, bab.bab_margin(p.network, p.lower, p.upper, p.label, t,
                            config.bab_config(config.bab_time_limit),
                            layer_bounds=layers)


def _certify_by_bab(p: ImageProblem, targets, verdicts,
                    config: VerifyConfig,
                    deadline: Deadline | None = None) -> list[int]:
  """Branch and bound on what CROWN and PGD left open; returns the targets
  it could not decide in its time budget (the MILP's)."""
  if config.bab_time_limit <= 0 or not targets:
    return targets
  rest = []
  for t, result in _bab_results(p, targets, config, deadline, rest):
    v = replace(verdicts[t], bab_domains=int(result.domains),
                bab_seconds=float(result.seconds))
    ok = False
    if result.status == "adversarial":
      ok, margin, x_adv = check_witness(p.network, result.x_adv, p.image,
                                        config.delta, p.label, t)
    if result.status == "robust":
      v = replace(v, status="robust", decided_by="bab",
                  best_bound=float(result.lower_bound),
                  solve_seconds=float(result.seconds), num_binaries=0)
    elif ok:
      v = adversarial(v, x_adv, margin, decided_by="bab",
                      objective=float(margin),
                      solve_seconds=float(result.seconds), num_binaries=0)
    else:
      v = with_bound(v, finite(result.lower_bound))
      rest.append(t)
    verdicts[t] = v
  return rest


def _targeted_by_bab(p: ImageProblem, targets, verdicts, config: VerifyConfig,
                     pgd: dict, deadline: Deadline | None = None
                     ) -> list[int]:
  """The targeted optimum by branch and bound (bab.bab_minimum, to within
  bab.OPTIMUM_TOLERANCE); returns the targets it could not settle, for the
  MILP, whose MIP start becomes the best point found."""
  if config.bab_time_limit <= 0 or config.all_binary or not targets:
    return targets
  rest = []
  layers = bab_layer_bounds(p, config, deadline)
  for t, limit in _bab_shares(config, deadline, targets, rest):
    start = pgd[t][1] if t in pgd else None
    result = bab.bab_minimum(p.network, p.lower, p.upper, p.label, t,
                             config.bab_config(limit),
                             layer_bounds=layers, start=start)
    v = replace(verdicts[t], bab_domains=int(result.domains),
                bab_seconds=float(result.seconds))
    if result.x_best is not None:
      pgd[t] = (result.objective, result.x_best)
    settled = _targeted_bab_verdict(p, v, result, config.delta)
    if settled is None:   # not settled, or an optimum within tolerance of 0
      verdicts[t] = with_bound(v, finite(result.lower_bound))
      rest.append(t)
    else:
      verdicts[t] = settled
  return rest


def _targeted_bab_verdict(p: ImageProblem, v: Verdict, result,
                          delta: float) -> Verdict | None:
  """The Verdict of a proven branch-and-bound optimum, None if it decides
  nothing (unproven, within tolerance of 0, or a witness failing the
  re-check)."""
  if not result.optimal or result.objective is None:
    return None
  settled = dict(decided_by="bab", objective=float(result.objective),
                 best_bound=float(result.lower_bound), optimal=True,
                 solve_seconds=float(result.seconds), num_binaries=0,
                 optimality_tolerance=float(bab.OPTIMUM_TOLERANCE))
  if result.objective < 0:
    ok, margin, x_adv = check_witness(p.network, result.x_best, p.image, delta,
                                      p.label, v.target)
    return adversarial(v, x_adv, margin, **settled) if ok else None
  if result.lower_bound > 0:
    return replace(v, status="robust", **settled)
  return None


def warm_up(network: Network, image, config: VerifyConfig) -> float:
  """Runs every jitted step once on `image` at the shapes a run meets
  (CROWN, PGD for all targets, the branch and bound's padded batches), so
  that the compile (or persistent-cache load) is paid here, once per
  process, and not from an image's budget; returns its seconds. A failure
  only costs the warm-up (the run compiles as it goes, as before)."""
  t0 = time.perf_counter()
  try:
    image = np.asarray(image, np.float64).reshape(-1)
    label = int(np.argmax(forward(network, image)))
    targets = [t for t in range(network.num_classes) if t != label]
    lower, upper = bounds_lib.input_box(image, config.delta)
    layers = bounds_lib.layer_bounds(network, lower, upper, config.bounds)
    bounds_lib.crown_margin_lower_bounds(network, lower[None], upper[None],
                                         [label])
    pgd_candidates(network, image, label, targets, config.delta,
                   steps=config.pgd_steps, restarts=config.pgd_restarts,
                   seed=config.pgd_seed)
    if config.bab_time_limit > 0:
      problem = ImageProblem(network, image, label, lower, upper, layers)
      layers = bab_layer_bounds(problem, config, refine=False)
      c = bounds_lib.margin_spec(label, targets[:1], network.num_classes)[0]
      bab.warm_up(network, lower, upper, layers, c,
                  config.bab_config(math.inf))
      if config.intermediate_bounds == "refine":
        bab.refine.warm_up(network, lower, upper, layers,
                           config.refine_config())
  except Exception as e:  # pylint: disable=broad-except
    logging.warning("warm-up failed (%s: %s); compiling as the run goes",
                    type(e).__name__, e)
  return time.perf_counter() - t0
