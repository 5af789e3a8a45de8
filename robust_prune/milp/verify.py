"""Verification records for one image: targeted, certify, min_distortion.

Every (image, target) pair yields one record (a plain dict, one JSON line):
  status       adversarial | robust | timeout | misclassified | error
  objective    targeted/certify: margin (e_y - e_t)^T z_out of the best point
               (the proven optimum when `optimal`: to the MIP gap for the
               MILP, to `optimality_tolerance` when decided_by is "bab");
               min_distortion: the smallest L-inf radius found
  best_bound   a proven lower bound on the objective (solver dual bound,
               branch-and-bound bound, or the CROWN margin bound)
  decided_by   crown | pgd | bab | milp: the cheapest step that settled it
  x_adv        (784 floats) only when adversarial; always re-checked by a
               float64 forward pass: inside the box, target logit > label logit.
An unproven value is never reported as optimal (`optimal` says which are),
and a witness failing the re-check is never counted adversarial.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Sequence

import numpy as np

from robust_prune import bounds as bounds_lib
from robust_prune.milp import model as model_lib
from robust_prune.milp import objective as objective_lib
from robust_prune.milp import solvers as solvers_lib
from robust_prune.milp import standard_form
from robust_prune.network import Network, forward

MODES = ("targeted", "certify", "min_distortion")
STATUSES = ("adversarial", "robust", "timeout", "misclassified", "error")
BOX_TOLERANCE = 1e-6      # a witness may leave the box by solver feasibility tol
# min_distortion asks for margin <= -MIN_DISTORTION_MARGIN so that the witness
# at the optimal radius is strictly adversarial under a float forward pass.
MIN_DISTORTION_MARGIN = 1e-4
# Certify mode's MILP asks for a point with margin below this: a solver's
# "nothing below the cutoff" holds only up to its tolerances (~1e-6), so a
# cutoff a little above 0 makes that answer a proof of margin >= 0.
CERTIFY_CUTOFF = 1e-5


@dataclasses.dataclass(frozen=True)
class VerifyConfig:
  delta: float
  mode: str = "targeted"
  solver: str = "HIGHS"
  time_limit: float = 60.0
  bounds: str = "crown"
  pgd_steps: int = 50        # certify pre-pass / targeted warm start (0: off)
  pgd_restarts: int = 2
  pgd_seed: int = 0
  all_binary: bool = False   # naive formulation (benchmarks only)
  warm_start: bool = True    # targeted: PGD point as MIP start
  bab_time_limit: float = 20.0  # certify/targeted: seconds of alpha/beta-CROWN
                                # branch and bound per target before the MILP
                                # (0: MILP only)


def check_witness(network: Network, x_adv, image, delta: float, label: int,
                  target: int):
  """(passed, margin, clipped x_adv): the float re-check of a witness."""
  lower, upper = bounds_lib.input_box(image, delta)
  x_adv = np.asarray(x_adv, np.float64)
  if x_adv.shape != lower.shape or not np.all(np.isfinite(x_adv)):
    return False, None, None
  if np.any(x_adv < lower - BOX_TOLERANCE) or np.any(x_adv > upper + BOX_TOLERANCE):
    return False, None, None
  x_adv = np.clip(x_adv, lower, upper)
  logits = forward(network, x_adv)
  margin = objective_lib.margin(logits, label, target)
  return bool(margin < 0), margin, x_adv


def _base_record(image_index, label, target, config: VerifyConfig):
  return {"image_index": int(image_index), "label": int(label),
          "target": int(target), "delta": float(config.delta),
          "mode": config.mode, "status": "error", "objective": None,
          "best_bound": None, "optimal": False, "build_seconds": 0.0,
          "bounds_seconds": 0.0, "solve_seconds": 0.0, "num_binaries": None,
          "solver": config.solver, "bounds": config.bounds}


def _keep_best_bound(record, bound):
  """best_bound := the larger of two proven lower bounds (None = unknown)."""
  earlier = record.get("best_bound")
  if bound is not None and (earlier is None or bound > earlier):
    record["best_bound"] = bound


def _finite(value):
  return None if value is None or not np.isfinite(value) else float(value)


def pgd_candidates(network: Network, image, label: int, targets, delta: float,
                   *, steps: int, restarts: int, seed: int) -> dict:
  """Best targeted-PGD point per target: {target: (margin, x)}; one batched
  jitted call (targets x restarts)."""
  if steps <= 0 or not targets:
    return {}
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  from robust_prune import attacks, models  # pylint: disable=g-import-not-at-top
  from robust_prune.network import params_from_network  # pylint: disable=g-import-not-at-top
  targets = list(targets)
  reps = len(targets) * restarts
  x = jnp.broadcast_to(jnp.asarray(image, jnp.float32), (reps, len(image)))
  tgt = jnp.asarray(np.repeat(targets, restarts), jnp.int32)
  labels = jnp.full((reps,), label, jnp.int32)
  apply_fn = models.MLP(hidden=network.hidden_widths,
                        num_classes=network.num_classes).apply
  x_adv = _jitted_pgd(attacks.pgd, apply_fn)(
      params_from_network(network), x, labels, tgt, jnp.float32(delta),
      jax.random.PRNGKey(seed), steps)
  x_adv = np.asarray(x_adv, np.float64)
  lower, upper = bounds_lib.input_box(image, delta)
  x_adv = np.clip(x_adv, lower, upper)
  logits = forward(network, x_adv)
  best = {}
  for i, t in enumerate(np.repeat(targets, restarts)):
    m = float(logits[i, label] - logits[i, t])
    if int(t) not in best or m < best[int(t)][0]:
      best[int(t)] = (m, x_adv[i])
  return best


_PGD_CACHE = {}


def _jitted_pgd(pgd_fn, apply_fn):
  import jax  # pylint: disable=g-import-not-at-top
  key = id(apply_fn.__self__) if hasattr(apply_fn, "__self__") else id(apply_fn)
  module = getattr(apply_fn, "__self__", None)
  hidden = getattr(module, "hidden", None)
  # The module's whole shape (not only its widths): apply_fn is closed over.
  cache_key = ((tuple(hidden), getattr(module, "num_classes", None))
               if hidden is not None else key)
  if cache_key not in _PGD_CACHE:
    def run(params, x, labels, target, delta, key, steps):
      return pgd_fn(apply_fn, params, x, labels, epsilon=delta, steps=steps,
                    step_size=delta / 4, key=key, target=target,
                    random_start=True)
    _PGD_CACHE[cache_key] = jax.jit(run, static_argnums=(6,))
  return _PGD_CACHE[cache_key]


def model_start(model: model_lib.VerificationModel,
                milp: standard_form.CompiledMilp, network: Network, x_point):
  """Full column assignment (a MIP start) of the MILP at input `x_point`:
  input, unstable post-activations and binaries from a forward pass."""
  _, hidden = forward(network, x_point, return_hidden=True)
  values = {model.x: x_point}
  pre_vars = model.pre_vars or [None] * len(model.layers)
  for layer, pre, pre_var in zip(model.layers, hidden, pre_vars):
    pre = pre[0] if pre.ndim == 2 else pre
    if pre_var is not None:
      # the materialised pre-activations (without them the start has NaNs
      # and no solver ever saw it)
      y, keep = pre_var
      values[y] = np.clip(pre[keep], y.bounds[0], y.bounds[1])
    if layer.z is not None:
      pre_u = pre[layer.phases.unstable]
      values[layer.z] = np.maximum(pre_u, 0)
      values[layer.v] = (pre_u > 0).astype(np.float64)
  start = milp.full_assignment(values)
  return start if np.all(np.isfinite(start)) else None


def _fill_from_outcome(record, outcome: solvers_lib.SolveOutcome, model,
                       milp, network, image, label, target, delta):
  """Status from the solver's own proof flags and a re-checked witness."""
  record["solver_status"] = outcome.solver_status
  record["solve_seconds"] = outcome.seconds
  record["objective"] = _finite(outcome.objective)
  # a bound proven before the MILP (CROWN, branch and bound) may be better
  _keep_best_bound(record, _finite(outcome.best_bound))
  record["optimal"] = bool(outcome.proven_optimal)
  witness_ok = False
  if outcome.x is not None and outcome.objective is not None and outcome.objective < 0:
    ok, margin, x_adv = check_witness(network, outcome.x[milp.columns(model.x)],
                                      image, delta, label, target)
    record["witness_margin"] = margin
    if ok:
      witness_ok = True
      record["x_adv"] = x_adv.tolist()
  if witness_ok:
    record["status"] = "adversarial"
  elif record["best_bound"] is not None and record["best_bound"] >= 0:
    # a proven bound: an optimum's bound is widened by the solver's gap, and
    # an infeasible certify MILP's is its cutoff (CERTIFY_CUTOFF > 0)
    record["status"] = "robust"
  elif outcome.proven_optimal and outcome.objective >= 0:
    record["status"] = "timeout"
    record["message"] = (f"the optimum {outcome.objective:.3g} is within the "
                         f"solver's gap of 0: no verdict either way")
  elif outcome.proven_optimal:
    record["status"] = "error"
    record["message"] = (f"optimum {outcome.objective:.3g} < 0 but its witness "
                         f"failed the float re-check (margin "
                         f"{record.get('witness_margin')})")
  elif outcome.hit_time_limit:
    record["status"] = "timeout"
  else:
    record["status"] = "error"
    record["message"] = f"solver stopped without a proof: {outcome.solver_status}"
  return record


def verify_image(network: Network, image, label: int, image_index: int,
                 targets: Sequence[int] | None, config: VerifyConfig) -> list:
  """One record per target (default: every class but the label)."""
  if config.mode not in MODES:
    raise ValueError(f"unknown mode {config.mode!r}; use one of {MODES}")
  image = np.asarray(image, np.float64).reshape(-1)
  label = int(label)
  if targets is None:
    targets = [t for t in range(network.num_classes) if t != label]
  targets = [int(t) for t in targets]
  records = {t: _base_record(image_index, label, t, config) for t in targets}
  start_all = time.perf_counter()
  try:
    clean = forward(network, image)
    predicted = int(np.argmax(clean))
    if predicted != label:
      for r in records.values():
        r["status"] = "misclassified"
        r["predicted"] = predicted
      return list(records.values())
    lower, upper = bounds_lib.input_box(image, config.delta)
    t0 = time.perf_counter()
    method = "interval" if config.all_binary else config.bounds
    layer_bounds = bounds_lib.layer_bounds(network, lower, upper, method)
    bounds_seconds = time.perf_counter() - t0
    for r in records.values():
      r["bounds_seconds"] = bounds_seconds
      r["unstable_per_layer"] = list(layer_bounds.unstable_counts())
    undecided = list(targets)
    pgd = {}
    if config.mode == "certify":
      undecided = _certify_cheaply(network, image, label, lower, upper,
                                   undecided, records, config)
      undecided = _certify_by_bab(network, image, label, lower, upper,
                                  layer_bounds, undecided, records, config)
      if not undecided:
        return list(records.values())
    if config.mode == "targeted" and config.warm_start and config.pgd_steps > 0:
      pgd = pgd_candidates(network, image, label, undecided, config.delta,
                           steps=config.pgd_steps, restarts=config.pgd_restarts,
                           seed=config.pgd_seed)
    if config.mode == "targeted":
      undecided = _targeted_by_bab(network, image, label, lower, upper,
                                   layer_bounds, undecided, records, config,
                                   pgd)
    _solve_milps(network, image, label, lower, upper, layer_bounds, undecided,
                 records, config, pgd)
  except Exception as e:  # pylint: disable=broad-except
    # A failure is a recorded status, never a lost batch.
    for r in records.values():
      if r["status"] == "error" and "message" not in r:
        r["message"] = f"{type(e).__name__}: {e}"
  finally:
    total = time.perf_counter() - start_all
    for r in records.values():
      r["image_seconds"] = total
  return list(records.values())


def _certify_cheaply(network, image, label, lower, upper, targets, records,
                     config: VerifyConfig):
  """CROWN margin bounds and PGD decide what they can; returns the rest."""
  t0 = time.perf_counter()
  margin_lb = bounds_lib.crown_margin_lower_bounds(
      network, lower[None], upper[None], [label])[0]
  crown_seconds = time.perf_counter() - t0
  rest = []
  for t in targets:
    r = records[t]
    r["best_bound"] = _finite(margin_lb[t])
    if margin_lb[t] > 0:
      r.update(status="robust", decided_by="crown", solve_seconds=crown_seconds,
               num_binaries=0)
    else:
      rest.append(t)
  if rest and config.pgd_steps > 0:
    t0 = time.perf_counter()
    found = pgd_candidates(network, image, label, rest, config.delta,
                           steps=config.pgd_steps, restarts=config.pgd_restarts,
                           seed=config.pgd_seed)
    pgd_seconds = time.perf_counter() - t0
    still = []
    for t in rest:
      margin, x_adv = found.get(t, (None, None))
      ok = False
      if margin is not None and margin < 0:
        ok, margin, x_adv = check_witness(network, x_adv, image, config.delta,
                                          label, t)
      if ok:
        records[t].update(status="adversarial", decided_by="pgd",
                          objective=margin, witness_margin=margin,
                          x_adv=x_adv.tolist(), solve_seconds=pgd_seconds,
                          num_binaries=0)
      else:
        still.append(t)
    rest = still
  return rest


def _certify_by_bab(network, image, label, lower, upper, layer_bounds, targets,
                    records, config: VerifyConfig):
  """Branch and bound (robust_prune.bab) on what CROWN and PGD left open;
  returns the targets it could not decide in its time budget (the MILP's)."""
  if config.bab_time_limit <= 0 or not targets:
    return targets
  from robust_prune import bab  # pylint: disable=g-import-not-at-top
  rest = []
  for t in targets:
    result = bab.bab_margin(network, lower, upper, label, t,
                            bab.BabConfig(time_limit=config.bab_time_limit),
                            layer_bounds=layer_bounds)
    r = records[t]
    r["bab_domains"], r["bab_seconds"] = result.domains, result.seconds
    if result.status == "robust":
      r.update(status="robust", decided_by="bab", best_bound=result.lower_bound,
               solve_seconds=result.seconds, num_binaries=0)
      continue
    if result.status == "adversarial":
      ok, margin, x_adv = check_witness(network, result.x_adv, image,
                                        config.delta, label, t)
      if ok:
        r.update(status="adversarial", decided_by="bab", objective=margin,
                 witness_margin=margin, x_adv=x_adv.tolist(),
                 solve_seconds=result.seconds, num_binaries=0)
        continue
    _keep_best_bound(r, _finite(result.lower_bound))
    rest.append(t)
  return rest


def _targeted_by_bab(network, image, label, lower, upper, layer_bounds,
                     targets, records, config: VerifyConfig, pgd: dict):
  """The targeted optimum by branch and bound (robust_prune.bab.bab_minimum,
  to within bab.OPTIMUM_TOLERANCE); returns the targets it could not settle,
  for the MILP, whose MIP start becomes the best point found."""
  if config.bab_time_limit <= 0 or config.all_binary or not targets:
    return targets
  from robust_prune import bab  # pylint: disable=g-import-not-at-top
  rest = []
  for t in targets:
    start = pgd[t][1] if t in pgd else None
    result = bab.bab_minimum(network, lower, upper, label, t,
                             bab.BabConfig(time_limit=config.bab_time_limit),
                             layer_bounds=layer_bounds, start=start)
    r = records[t]
    r["bab_domains"], r["bab_seconds"] = result.domains, result.seconds
    if result.x_best is not None:
      pgd[t] = (result.objective, result.x_best)
    verdict = None
    if result.optimal and result.objective is not None:
      if result.objective < 0:
        ok, margin, x_adv = check_witness(network, result.x_best, image,
                                          config.delta, label, t)
        if ok:
          verdict = "adversarial"
          r.update(x_adv=x_adv.tolist(), witness_margin=margin)
      elif result.lower_bound > 0:
        verdict = "robust"
    if verdict is None:
      _keep_best_bound(r, _finite(result.lower_bound))
      rest.append(t)   # not settled, or an optimum within tolerance of 0
      continue
    r.update(status=verdict, decided_by="bab", objective=result.objective,
             best_bound=result.lower_bound, optimal=True,
             solve_seconds=result.seconds, num_binaries=0,
             optimality_tolerance=bab.OPTIMUM_TOLERANCE)
  return rest


def _solve_milps(network, image, label, lower, upper, layer_bounds, targets,
                 records, config: VerifyConfig, pgd: dict):
  if not targets:
    return
  t0 = time.perf_counter()
  min_distortion = config.mode == "min_distortion"
  model = model_lib.build_model(
      network, lower, upper, layer_bounds, all_binary=config.all_binary,
      center=image if min_distortion else None,
      margin_at_most=-MIN_DISTORTION_MARGIN if min_distortion else None)
  # compile with some target set so the parameter has a value
  model.c.value = objective_lib.margin_vector(label, targets[0], network.num_classes)
  milp = standard_form.compile_model(model.problem)
  build_seconds = time.perf_counter() - t0
  for i, t in enumerate(targets):
    r = records[t]
    r["build_seconds"] = build_seconds if i == 0 else 0.0
    r["num_binaries"] = model.num_binaries
    r["decided_by"] = "milp"
    model.c.value = objective_lib.margin_vector(label, t, network.num_classes)
    if min_distortion and i > 0:
      # the target enters a constraint row, not just the cost: recompile
      t1 = time.perf_counter()
      milp = standard_form.compile_model(model.problem)
      r["build_seconds"] = time.perf_counter() - t1
    start = None
    if t in pgd and not min_distortion:
      start = model_start(model, milp, network, pgd[t][1])
    try:
      outcome = solvers_lib.solve(
          milp, config.solver, time_limit=config.time_limit,
          cutoff=CERTIFY_CUTOFF if config.mode == "certify" else None,
          stop_at_first=config.mode == "certify", useful_below=0.0,
          start=start)
    except Exception as e:  # pylint: disable=broad-except
      r["status"], r["message"] = "error", f"{type(e).__name__}: {e}"
      continue
    if min_distortion:
      _fill_min_distortion(r, outcome, model, milp, network, image, label, t,
                           config, lower, upper, layer_bounds)
    else:
      _fill_from_outcome(r, outcome, model, milp, network, image, label, t,
                         config.delta)


def _fill_min_distortion(record, outcome, model, milp, network, image, label,
                         target, config: VerifyConfig, lower, upper,
                         layer_bounds):
  """objective = smallest radius with margin <= -MIN_DISTORTION_MARGIN.
  Infeasible proves only that no input within delta has a margin that low;
  the record is robust once margin >= 0 is proven too (branch and bound)."""
  delta = config.delta
  record["solver_status"] = outcome.solver_status
  record["solve_seconds"] = outcome.seconds
  record["objective"] = _finite(outcome.objective)
  record["best_bound"] = _finite(outcome.best_bound)
  record["optimal"] = bool(outcome.proven_optimal)
  if outcome.proven_infeasible:
    from robust_prune import bab  # pylint: disable=g-import-not-at-top
    result = bab.bab_margin(
        network, lower, upper, label, target,
        bab.BabConfig(time_limit=max(config.bab_time_limit, 1.0)),
        layer_bounds=layer_bounds)
    record["margin_lower_bound"] = _finite(result.lower_bound)
    # The MILP's infeasibility and the branch and bound decide together.
    record["solve_seconds"] = outcome.seconds + result.seconds
    record["bab_seconds"] = result.seconds
    record["bab_domains"] = result.domains
    if result.status == "robust":
      record.update(status="robust", decided_by="milp+bab")
      return record
    if result.status == "adversarial":
      ok, margin, x_adv = check_witness(network, result.x_adv, image, delta,
                                        label, target)
      if ok:  # a margin in (-MIN_DISTORTION_MARGIN, 0): radius not minimised
        radius = float(np.max(np.abs(x_adv - image)))
        record.update(status="adversarial", decided_by="milp+bab",
                      x_adv=x_adv.tolist(),
                      witness_margin=margin, optimal=False, objective=radius,
                      witness_radius=radius)
        return record
    record["status"] = "timeout"
    record["message"] = (f"no input within delta has margin <= "
                         f"-{MIN_DISTORTION_MARGIN}, but margin >= 0 is not "
                         f"proven ({result.reason})")
    return record
  if outcome.x is not None:
    x = outcome.x[milp.columns(model.x)]
    radius = float(np.max(np.abs(x - image)))
    ok, margin, x_adv = check_witness(network, x, image, delta, label, target)
    record["witness_margin"] = margin
    if ok:
      record.update(status="adversarial", x_adv=x_adv.tolist(),
                    witness_radius=radius)
      return record
  record["status"] = "timeout" if outcome.hit_time_limit else "error"
  if record["status"] == "error":
    record["message"] = f"no proven result: {outcome.solver_status}"
  return record
