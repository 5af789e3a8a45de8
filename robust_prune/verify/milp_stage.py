"""The cascade's last step: the exact MILP (paper eq. 1-9) per target, and
the Verdict its solver outcome proves (from the solver's own proof flags and
a re-checked witness)."""

from __future__ import annotations

import atexit
import dataclasses
import os
import pickle
import select
import struct
import subprocess
import sys
import threading
import time

import numpy as np

from robust_prune import bab
from robust_prune.milp import model as model_lib
from robust_prune.milp import objective as objective_lib
from robust_prune.milp import solvers as solvers_lib
from robust_prune.milp import standard_form
from robust_prune.network import Network, forward
from robust_prune.verify.config import (CERTIFY_CUTOFF, MILP_MIN_SECONDS,
                                        MIN_DISTORTION_MARGIN,
                                        MIN_STEP_SECONDS, Deadline,
                                        ImageProblem, VerifyConfig)
from robust_prune.verify.records import Verdict
from robust_prune.verify.witness import check_witness

replace = dataclasses.replace


def finite(value) -> float | None:
  return None if value is None or not np.isfinite(value) else float(value)


def with_bound(v: Verdict, bound: float | None) -> Verdict:
  """best_bound := the larger of two proven lower bounds (None = unknown)."""
  if bound is not None and (v.best_bound is None or bound > v.best_bound):
    return replace(v, best_bound=bound)
  return v


def adversarial(v: Verdict, x_adv, margin, **fields) -> Verdict:
  """`v` settled by a re-checked witness (margin < 0 at x_adv)."""
  return replace(v, status="adversarial", x_adv=tuple(np.asarray(
      x_adv, np.float64).tolist()), witness_margin=float(margin), **fields)


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


def solve_milps(p: ImageProblem, targets, verdicts: dict,
                config: VerifyConfig, pgd: dict,
                deadline: Deadline | None = None) -> None:
  """One MILP per target (built once, its objective swapped per target);
  replaces each target's Verdict in `verdicts`. With an enabled `deadline`
  each solve gets an equal share of what remains and runs in a child
  process killed when its share is over; targets reached with too little
  left keep their Verdicts (the caller marks them)."""
  budget = deadline is not None and deadline.enabled
  if not targets or (budget and deadline.remaining() < MILP_MIN_SECONDS):
    return
  t0 = time.perf_counter()
  min_distortion = config.mode == "min_distortion"
  num_classes = p.network.num_classes
  model = model_lib.build_model(
      p.network, p.lower, p.upper, p.layer_bounds,
      all_binary=config.all_binary, center=p.image if min_distortion else None,
      margin_at_most=-MIN_DISTORTION_MARGIN if min_distortion else None)
  # compile with some target set so the parameter has a value
  model.c.value = objective_lib.margin_vector(p.label, targets[0], num_classes)
  milp = standard_form.compile_model(model.problem)
  build_seconds = time.perf_counter() - t0
  for i, t in enumerate(targets):
    if budget and deadline.share(len(targets) - i) < MIN_STEP_SECONDS:
      return
    v = replace(verdicts[t], build_seconds=build_seconds if i == 0 else 0.0,
                num_binaries=int(model.num_binaries), decided_by="milp")
    model.c.value = objective_lib.margin_vector(p.label, t, num_classes)
    if min_distortion and i > 0:
      # the target enters a constraint row, not just the cost: recompile
      t1 = time.perf_counter()
      milp = standard_form.compile_model(model.problem)
      v = replace(v, build_seconds=time.perf_counter() - t1)
    verdicts[t] = v
    start = None
    if t in pgd and not min_distortion:
      start = model_start(model, milp, p.network, pgd[t][1])
    try:
      outcome = _solve(milp, config, start, deadline, len(targets) - i)
    except Exception as e:  # pylint: disable=broad-except
      verdict = replace(v, status="error",
                        message=f"{type(e).__name__}: {e}")
    else:
      verdict = _verdict(p, v, outcome, milp, model, config, deadline)
    if verdict.status not in ("robust", "adversarial"):
      verdict = replace(verdict, decided_by=None)   # it settled none
    verdicts[t] = verdict


def _verdict(p: ImageProblem, v: Verdict, outcome, milp, model,
             config: VerifyConfig, deadline: Deadline | None) -> Verdict:
  """The Verdict one solve's outcome supports (`outcome` None: killed)."""
  if outcome is None:   # killed at the end of its share
    return replace(v, status="timeout", solver_status=KILLED,
                   message=deadline.ran_out_message())
  x = outcome.x[milp.columns(model.x)] if outcome.x is not None else None
  if config.mode == "min_distortion":
    return min_distortion_verdict(p, v, outcome, x, config)
  return margin_verdict(p, v, outcome, x, config.delta)


KILLED = "killed at the image deadline"
# The child's solver is asked to stop this long before its share is over,
# so that it usually ends by itself with its incumbent and bound.
_CHILD_LEAD_SECONDS = 0.5


def _solve(milp, config: VerifyConfig, start, deadline: Deadline | None,
           open_left: int) -> solvers_lib.SolveOutcome | None:
  """The solver outcome for the MILP's current cost: in this process
  (config.time_limit), or with a deadline in the child (an equal share of
  what remains; None when the child had to be killed)."""
  options = dict(cutoff=CERTIFY_CUTOFF if config.mode == "certify" else None,
                 stop_at_first=config.mode == "certify", useful_below=0.0,
                 start=start)
  if deadline is None or not deadline.enabled:
    return solvers_lib.solve(milp, config.solver,
                             time_limit=config.time_limit, **options)
  share = deadline.share(open_left)
  return shared_solver_child().solve(
      milp.form(), *milp.cost_vector(), config.solver, wait=share,
      time_limit=max(share - _CHILD_LEAD_SECONDS, 0.1), **options)


def _outcome_fields(v: Verdict, outcome: solvers_lib.SolveOutcome) -> Verdict:
  return replace(v, solver_status=outcome.solver_status,
                 solve_seconds=float(outcome.seconds),
                 objective=finite(outcome.objective),
                 optimal=bool(outcome.proven_optimal))


def margin_verdict(p: ImageProblem, v: Verdict,
                   outcome: solvers_lib.SolveOutcome, x, delta: float
                   ) -> Verdict:
  """targeted/certify: the status the solver's proof flags and a re-checked
  witness (`x`, the solution's input columns) support."""
  v = _outcome_fields(v, outcome)
  # a bound proven before the MILP (CROWN, branch and bound) may be better
  v = with_bound(v, finite(outcome.best_bound))
  if x is not None and outcome.objective is not None and outcome.objective < 0:
    ok, margin, x_adv = check_witness(p.network, x, p.image, delta, p.label,
                                      v.target)
    if ok:
      return adversarial(v, x_adv, margin)
    v = replace(v, witness_margin=finite(margin))
  if v.best_bound is not None and v.best_bound >= 0:
    # a proven bound: an optimum's bound is widened by the solver's gap, and
    # an infeasible certify MILP's is its cutoff (CERTIFY_CUTOFF > 0)
    return replace(v, status="robust")
  if outcome.proven_optimal and outcome.objective >= 0:
    return replace(v, status="timeout", message=(
        f"the optimum {outcome.objective:.3g} is within the solver's gap of "
        f"0: no verdict either way"))
  if outcome.proven_optimal:
    return replace(v, status="error", message=(
        f"optimum {outcome.objective:.3g} < 0 but its witness failed the "
        f"float re-check (margin {v.witness_margin})"))
  if outcome.hit_time_limit:
    return replace(v, status="timeout")
  return replace(v, status="error", message=(
      f"solver stopped without a proof: {outcome.solver_status}"))


def min_distortion_verdict(p: ImageProblem, v: Verdict,
                           outcome: solvers_lib.SolveOutcome, x,
                           config: VerifyConfig) -> Verdict:
  """objective = smallest radius with margin <= -MIN_DISTORTION_MARGIN.
  Infeasible proves only that no input within delta has a margin that low;
  the record is robust once margin >= 0 is proven too (branch and bound)."""
  v = replace(_outcome_fields(v, outcome),
              best_bound=finite(outcome.best_bound))
  if outcome.proven_infeasible:
    return _min_distortion_by_bab(p, v, outcome, config)
  if x is not None:
    radius = float(np.max(np.abs(x - p.image)))
    ok, margin, x_adv = check_witness(p.network, x, p.image, config.delta,
                                      p.label, v.target)
    if ok:
      return adversarial(v, x_adv, margin, witness_radius=radius)
    v = replace(v, witness_margin=finite(margin))
  if outcome.hit_time_limit:
    return replace(v, status="timeout")
  return replace(v, status="error",
                 message=f"no proven result: {outcome.solver_status}")


def _min_distortion_by_bab(p: ImageProblem, v: Verdict, outcome,
                           config: VerifyConfig) -> Verdict:
  """The MILP's infeasibility and the branch and bound decide together."""
  result = bab.bab_margin(
      p.network, p.lower, p.upper, p.label, v.target,
      config.bab_config(max(config.bab_time_limit, 1.0)),
      layer_bounds=p.layer_bounds)
  v = replace(v, margin_lower_bound=finite(result.lower_bound),
              solve_seconds=float(outcome.seconds + result.seconds),
              bab_seconds=float(result.seconds),
              bab_domains=int(result.domains))
  if result.status == "robust":
    return replace(v, status="robust", decided_by="milp+bab")
  if result.status == "adversarial":
    ok, margin, x_adv = check_witness(p.network, result.x_adv, p.image,
                                      config.delta, p.label, v.target)
    if ok:  # a margin in (-MIN_DISTORTION_MARGIN, 0): radius not minimised
      radius = float(np.max(np.abs(x_adv - p.image)))
      return adversarial(v, x_adv, margin, decided_by="milp+bab",
                         optimal=False, objective=radius,
                         witness_radius=radius)
  return replace(v, status="timeout", message=(
      f"no input within delta has margin <= -{MIN_DISTORTION_MARGIN}, but "
      f"margin >= 0 is not proven ({result.reason})"))


# --------------------------------------------------- the killable solver
# The child imports the solver layer only (no JAX, no __main__ of the
# parent, which multiprocessing's spawn would re-import: ~3-5 s of JAX and
# cvxpy per start), dies with its parent, and answers one pickled
# (form|None, c, offset, solver, options) per request on its fd 3 with a
# length-prefixed pickled ("ok", SolveOutcome) or ("error", text).
_CHILD_CODE = """
import os, pickle, struct, sys
from robust_prune import processes
processes.die_with_parent()
from robust_prune.milp import solvers

class Fixed:
  def __init__(self, form):
    self._form, self.native, self.cost = form, {}, None
  def form(self):
    return self._form
  def cost_vector(self):
    return self.cost

out, model = os.fdopen(int(sys.argv[1]), "wb"), None
while True:
  try:
    form, c, offset, solver, options = pickle.load(sys.stdin.buffer)
  except EOFError:
    break
  if form is not None:
    model = Fixed(form)
  model.cost = (c, offset)
  try:
    answer = ("ok", solvers.solve(model, solver, **options))
  except Exception as e:
    answer = ("error", f"{type(e).__name__}: {e}")
  data = pickle.dumps(answer, protocol=pickle.HIGHEST_PROTOCOL)
  out.write(struct.pack("<Q", len(data)) + data)
  out.flush()
"""


class SolverChild:
  """A MILP solver in a child process, so that a solve (HiGHS's presolve
  ignores its time limit: ~17 s on 1229 binaries) can be stopped at a
  deadline. The standard form is sent once per model and kept there for
  the following re-costed solves; a killed child is replaced at once, so
  that the next image finds one started."""

  def __init__(self):
    self._proc = self._answers = None
    self._sent = None   # the form the child holds

  def start(self) -> None:
    if self._proc is not None and self._proc.poll() is None:
      return
    read, write = os.pipe()
    self._proc = subprocess.Popen(
        [sys.executable, "-c", _CHILD_CODE, str(write)],
        stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, pass_fds=(write,),
        env=dict(os.environ, JAX_PLATFORMS="cpu"))
    os.close(write)
    self._answers, self._sent = os.fdopen(read, "rb"), None

  def kill(self) -> None:
    if self._proc is not None:
      self._proc.kill()
      self._proc.wait()
      self._answers.close()
    self._proc = self._answers = self._sent = None

  def solve(self, form, c, offset, solver: str, *, wait: float,
            **options) -> solvers_lib.SolveOutcome | None:
    """solvers.solve(form with cost c, offset) in the child; None if no
    answer came within `wait` seconds (the child is then killed and
    restarted)."""
    self.start()
    request = (None if self._sent is form else form, c, offset, solver,
               options)
    self._sent = form
    writer = threading.Thread(target=self._send, args=(self._proc, request),
                              daemon=True)
    writer.start()   # the child may still be importing: never block here
    ready, _, _ = select.select([self._answers], [], [], max(wait, 0.0))
    if not ready:
      self.kill()
      self.start()
      return None
    header = self._answers.read(8)
    if len(header) < 8:
      code = self._proc.poll()
      self.kill()
      raise RuntimeError(f"the solver's child process died (exit {code})")
    kind, answer = pickle.loads(self._answers.read(
        struct.unpack("<Q", header)[0]))
    if kind != "ok":
      raise RuntimeError(answer)
    return answer

  @staticmethod
  def _send(proc, request) -> None:
    try:
      pickle.dump(request, proc.stdin, protocol=pickle.HIGHEST_PROTOCOL)
      proc.stdin.flush()
    except (BrokenPipeError, ValueError, OSError):
      pass   # killed meanwhile: the reader has its answer (None)


_SHARED = []


def shared_solver_child() -> SolverChild:
  """This process's solver child (started on first use)."""
  if not _SHARED:
    _SHARED.append(SolverChild())
    atexit.register(_SHARED[0].kill)
  return _SHARED[0]
