"""Wall-clock budgets (issue 13): --image_time_limit holds whatever the MILP
solver does, the branch and bound's searches take turns on the open targets
(closest to a proof first, time left by a decided one going to the rest),
no budget is today's behaviour, and witnesses are still re-checked."""

import logging
import time

import jax
import numpy as np
import pytest

from robust_prune import bab
from robust_prune.network import forward
from robust_prune.verify import cascade, engines, milp_stage, runner
from robust_prune.verify.config import Deadline, VerifyConfig
from testing import random_network

# a 4-class net and a radius where CROWN proves nothing: every target
# reaches the branch and bound or the MILP (PGD is off in these tests)
_NET = random_network(25, [12, 16, 12, 4])
_X = np.random.default_rng(1).uniform(0.3, 0.7, 12)
_LABEL = int(np.argmax(forward(_NET, _X)))


def _config(**kw):
  kw.setdefault("pgd_steps", 0)
  # the turns' own order and shares; the refinement is tested on its own
  kw.setdefault("bab_intermediate", "alpha")
  return VerifyConfig(delta=0.2, mode="certify", **kw)


def test_auto_refines_only_certify_runs_under_an_image_budget():
  def resolved(**kw):
    return VerifyConfig(delta=0.1, **kw).intermediate_bounds
  assert resolved(mode="certify", image_time_limit=60.0) == "refine"
  assert resolved(mode="certify") == "alpha"
  assert resolved(mode="certify", image_time_limit=3.0) == "alpha"
  assert resolved(mode="targeted", image_time_limit=60.0) == "alpha"
  assert resolved(mode="certify", image_time_limit=60.0,
                  bab_intermediate="crown") == "crown"
  assert resolved(mode="targeted", bab_intermediate="refine") == "refine"


@pytest.fixture(scope="module", autouse=True)
def compiled():
  """JIT compiles paid before any budget is measured (as a worker's
  warm-up does)."""
  cascade.warm_up(_NET, _X, _config(pgd_steps=5))


def test_the_warm_up_runs_every_step_it_compiles(caplog, monkeypatch):
  """A failing warm-up only logs a warning (the run compiles as it goes),
  so the warning is what shows that a step it calls is broken."""
  config = _config(pgd_steps=5, bab_intermediate="refine")
  cascade.warm_up(_NET, _X, config)
  assert "warm-up failed" not in caplog.text

  def broken(*args, **kwargs):
    raise ValueError("planted")
  monkeypatch.setattr(cascade.bab.refine, "warm_up", broken)
  cascade.warm_up(_NET, _X, config)
  assert "warm-up failed (ValueError: planted)" in caplog.text


def _bab_stub(monkeypatch, decide):
  """Replaces the branch and bound: decide(target, limit) -> BabResult;
  returns the (target, time limit) of every call."""
  calls = []

  def stub(network, lower, upper, label, target, config, layer_bounds=None):
    calls.append((target, config.time_limit))
    return decide(target, config.time_limit)
  monkeypatch.setattr(cascade.bab, "bab_margin", stub)
  return calls


class _TurnLog:
  """Replaces bab.MarginSearch: decide(target, turn_number, seconds) ->
  BabResult, or None to spend the turn (sleeping its seconds); `estimates`
  orders the turns. Logs every turn as (target, seconds)."""

  def __init__(self, monkeypatch, decide, estimates=None):
    self.turns, self.started, self.final_proofs, log = [], [], [], self

    class FakeSearch:
      def __init__(self, network, lower, upper, c, config, layers,
                   facets=None):
        self.target = int(np.argmin(c))   # c = e_label - e_target
        self.result, self.count = None, 0
        log.started.append(self.target)

      def estimate(self):
        return (estimates or {}).get(self.target, -1.0)

      def advance(self, seconds):
        log.turns.append((self.target, seconds))
        self.count += 1
        self.result = decide(self.target, self.count, seconds)
        if self.result is None:
          time.sleep(seconds)
        return self.result

      def stop(self, seconds=None):
        log.final_proofs.append(seconds)
        return self.result or _open(-0.01, 0.0)
    monkeypatch.setattr(cascade.bab_turns.bab, "MarginSearch", FakeSearch)


def _open(lower_bound, seconds=0.0):
  return bab.BabResult("unknown", lower_bound, None, None, 10, seconds,
                       "time_limit")


def test_the_crown_bound_leaves_every_target_open():
  records = cascade.verify_image(_NET, _X, _LABEL, 0, None,
                                 _config(bab_time_limit=0.0, time_limit=30))
  assert len(records) == 3
  assert {r.decided_by for r in records} == {"milp"}


def test_a_solve_that_never_ends_is_killed_at_the_image_budget(monkeypatch):
  # The child's solver sleeps far past any budget (as HiGHS's presolve
  # ignores its time limit); the image still ends within budget + 2 s.
  solve_line = "  try:\n    answer"
  assert solve_line in milp_stage._CHILD_CODE
  monkeypatch.setattr(milp_stage, "_CHILD_CODE", milp_stage._CHILD_CODE.replace(
      solve_line, "  __import__('time').sleep(600)\n" + solve_line))
  monkeypatch.setattr(milp_stage, "_SHARED", [])
  budget = 8.0
  t0 = time.perf_counter()
  records = cascade.verify_image(
      _NET, _X, _LABEL, 0, None,
      _config(bab_time_limit=0.0, image_time_limit=budget))
  elapsed = time.perf_counter() - t0
  child = milp_stage.shared_solver_child()
  child.kill()
  assert elapsed <= budget + 2.0
  assert {r.status for r in records} == {"timeout"}
  assert {r.decided_by for r in records} == {None}   # no step settled them
  killed = [r for r in records if r.solver_status == milp_stage.KILLED]
  assert killed   # the first solve was started, and killed
  for r in records:
    assert r.best_bound is not None and r.best_bound < 0   # CROWN's, proven
    assert "image budget" in r.message
    assert max(r.image_seconds, elapsed) <= budget + 2.0


def test_targets_take_turns_closest_to_a_proof_first(monkeypatch):
  # every search stays open; turns double each round, in the order of the
  # searches' estimates, and all of them end within the budget
  open_targets = [t for t in range(4) if t != _LABEL]
  estimates = {t: -float(i) for i, t in enumerate(reversed(open_targets))}
  log = _TurnLog(monkeypatch, lambda t, n, s: None, estimates)
  budget = 12.0
  t0 = time.perf_counter()
  records = cascade.verify_image(_NET, _X, _LABEL, 0, None,
                                 _config(image_time_limit=budget))
  elapsed = time.perf_counter() - t0
  order = sorted(open_targets, key=lambda t: -estimates[t])
  assert [t for t, _ in log.turns[:6]] == order + order
  assert [s for _, s in log.turns[:3]] == [1.0, 1.0, 1.0]
  assert [s for _, s in log.turns[3:6]] == [2.0, 2.0, 2.0]
  assert sum(s for _, s in log.turns) > budget - 3.0
  assert elapsed <= budget + 2.0
  for r in records:
    assert r.status == "timeout" and r.best_bound == -0.01
    assert "image budget" in r.message


def test_the_final_proof_is_kept_back_from_the_turns(monkeypatch):
  # each open search's re-proof gets --bab_final_proof seconds, and the
  # turns stop early enough to pay for all of them within the budget: 1.8 s
  # more per open target leaves the turns 3 x 1.8 s less
  budget, searched = 10.0, {}
  for final_proof in (VerifyConfig.bab_final_proof, 2.0):
    log = _TurnLog(monkeypatch, lambda t, n, s: None)
    t0 = time.perf_counter()
    records = cascade.verify_image(
        _NET, _X, _LABEL, 0, None,
        _config(image_time_limit=budget, bab_final_proof=final_proof))
    assert time.perf_counter() - t0 <= budget + 2.0
    assert log.final_proofs == [final_proof] * 3
    searched[final_proof] = sum(s for _, s in log.turns)
    assert searched[final_proof] <= budget - 3 * final_proof
    # (the stand-in's re-proofs take no time: the MILP gets the rest)
    assert not any(r.decided_by == "bab" for r in records)
  less = searched[VerifyConfig.bab_final_proof] - searched[2.0]
  assert less == pytest.approx(3 * (2.0 - VerifyConfig.bab_final_proof),
                               abs=1.5)


def test_the_final_proof_must_be_a_finite_number_of_seconds():
  for bad in (-1.0, float("inf"), float("nan")):
    with pytest.raises(ValueError, match="bab_final_proof"):
      _config(bab_final_proof=bad)


def test_the_batch_size_pool_cap_and_proofs_reach_every_search(monkeypatch):
  # --bab_batch_size, --bab_pool_gib and --bab_proofs (a GPU's settings)
  # reach the real searches (and the refinement's proofs), which decide
  # what the default searches decide (at the root here: tests/test_bab.py
  # has searches that prove by XLA)
  configs = []

  class Recorded(bab.MarginSearch):
    def __init__(self, network, lower, upper, c, config, layers,
                 facets=None):
      configs.append(config)
      super().__init__(network, lower, upper, c, config, layers, facets)

  default = cascade.verify_image(_NET, _X, _LABEL, 0, None,
                                 _config(image_time_limit=20.0))
  monkeypatch.setattr(cascade.bab_turns.bab, "MarginSearch", Recorded)
  small = cascade.verify_image(
      _NET, _X, _LABEL, 0, None,
      _config(image_time_limit=20.0, bab_batch_size=4, bab_pool_gib=0.25,
              bab_proofs="xla"))
  assert configs and all(c.batch_size == 4 for c in configs)
  assert all(c.max_pool_bytes == 2**28 and c.proofs == "xla"
             for c in configs)
  assert _config(bab_proofs="xla").refine_config().proofs == "xla"
  assert [r.status for r in small] == [r.status for r in default]
  assert all(r.status in ("robust", "adversarial") for r in small)


def test_batch_size_pool_cap_and_proofs_must_be_valid():
  for bad in (dict(bab_batch_size=0), dict(bab_pool_gib=0.0),
              dict(bab_pool_gib=float("nan")), dict(bab_proofs="gpu")):
    with pytest.raises(ValueError, match=next(iter(bad))):
      _config(**bad)


def test_a_target_decided_early_leaves_its_time_to_the_others(monkeypatch):
  # the first target decides on its first turn; the other two share the
  # rest, and once one of them decides the last gets all that is left
  first, second, last = [t for t in range(4) if t != _LABEL]

  def decide(target, turn_number, seconds):
    if target == first:
      return bab.BabResult("robust", 0.5, None, None, 1, 0.1, "proved")
    if target == second and turn_number == 2:
      return bab.BabResult("robust", 0.2, None, None, 9, 2.0, "proved")
    return None
  log = _TurnLog(monkeypatch, decide)
  budget = 8.0
  t0 = time.perf_counter()
  records = cascade.verify_image(_NET, _X, _LABEL, 0, None,
                                 _config(image_time_limit=budget))
  elapsed = time.perf_counter() - t0
  assert [t for t, _ in log.turns] == [first, second, last, second, last]
  *_, (_, final_turn) = log.turns
  assert final_turn > 2.0 and final_turn > budget - 2.0 - 3.0
  assert elapsed <= budget + 2.0
  by_target = {r.target: r for r in records}
  assert by_target[first].status == by_target[second].status == "robust"
  assert by_target[second].bab_domains == 9
  assert by_target[last].status == "timeout"
  assert by_target[last].best_bound == -0.01


def test_refined_bounds_only_once_the_plain_turns_leave_targets_open(
    monkeypatch):
  # --bab_intermediate=refine under a budget: the searches first take turns
  # on the plain bounds for a tenth of it; the refinement runs only if
  # targets stay open, and only those are searched again
  first, second, last = [t for t in range(4) if t != _LABEL]
  refined = []

  def fake_refine(p, verify_config, layers, deadline):
    assert verify_config is config
    refined.append(deadline.remaining())
    return layers
  monkeypatch.setattr(cascade, "refined_layer_bounds", fake_refine)
  proved = bab.BabResult("robust", 0.5, None, None, 1, 0.1, "proved")
  config = _config(image_time_limit=20.0, bab_intermediate="refine")
  _TurnLog(monkeypatch, lambda t, n, s: proved)
  records = cascade.verify_image(_NET, _X, _LABEL, 0, None, config)
  assert not refined
  assert {r.status for r in records} == {"robust"}

  log = _TurnLog(monkeypatch, lambda t, n, s: None if t == last else proved)
  t0 = time.perf_counter()
  records = cascade.verify_image(_NET, _X, _LABEL, 0, None, config)
  elapsed = time.perf_counter() - t0
  assert len(refined) == 1 and 20.0 * 0.9 - 1.0 < refined[0] < 20.0 - 0.5
  targets = [t for t, _ in log.turns]
  assert targets.count(first) == targets.count(second) == 1
  assert targets[-1] == last and sum(s for _, s in log.turns) > 20.0 - 4.0
  assert elapsed <= 20.0 + 2.0
  by_target = {r.target: r for r in records}
  assert by_target[first].status == by_target[second].status == "robust"
  assert by_target[last].status == "timeout"


def test_a_root_far_from_a_proof_refines_at_once(monkeypatch):
  # a search's root bound below REFINE_AT_ONCE_BELOW: no plain turns, the
  # refinement gets (almost) the whole budget and every target is searched
  # again on its bounds; just above it, the plain turns come first
  first, second, last = [t for t in range(4) if t != _LABEL]
  at_refine = []
  proved = bab.BabResult("robust", 0.5, None, None, 1, 0.1, "proved")
  config = _config(image_time_limit=20.0, bab_intermediate="refine")
  below = cascade.bab_turns.REFINE_AT_ONCE_BELOW
  for root in (below - 0.01, below + 0.01):
    log = _TurnLog(monkeypatch, lambda t, n, s: None if t == last else proved,
                   {first: -0.1, second: -0.2, last: root})

    def fake_refine(p, verify_config, layers, deadline, log=log):
      at_refine.append((deadline.remaining(), list(log.turns)))
      return layers
    monkeypatch.setattr(cascade, "refined_layer_bounds", fake_refine)
    records = cascade.verify_image(_NET, _X, _LABEL, 0, None, config)
    by_target = {r.target: r for r in records}
    assert by_target[first].status == by_target[second].status == "robust"
    assert by_target[last].status == "timeout"
  (left_at_once, turns_at_once), (left_plain, turns_plain) = at_refine
  assert not turns_at_once and left_at_once > 20.0 - 0.5
  assert {t for t, _ in turns_plain} == {first, second, last}
  assert left_plain < 20.0 - 1.0


def test_the_first_root_far_from_a_proof_bounds_no_other_plain_root(
    monkeypatch):
  # its plain root below REFINE_AT_ONCE_BELOW: the other targets' plain
  # roots are not bounded (their searches start on the refined bounds)
  first, second, last = [t for t in range(4) if t != _LABEL]
  proved = bab.BabResult("robust", 0.5, None, None, 1, 0.1, "proved")
  below = cascade.bab_turns.REFINE_AT_ONCE_BELOW
  log = _TurnLog(monkeypatch, lambda t, n, s: proved, {first: below - 0.01})
  started_at_refine = []

  def fake_refine(p, verify_config, layers, deadline):
    started_at_refine.append(list(log.started))
    return layers
  monkeypatch.setattr(cascade, "refined_layer_bounds", fake_refine)
  records = cascade.verify_image(
      _NET, _X, _LABEL, 0, None,
      _config(image_time_limit=20.0, bab_intermediate="refine"))
  assert started_at_refine == [[first]]
  assert sorted(log.started) == sorted([first, first, second, last])
  assert {r.status for r in records} == {"robust"}


def test_without_a_budget_every_target_gets_bab_time_limit(monkeypatch):
  calls = _bab_stub(monkeypatch, lambda target, limit: _open(-1.0))
  monkeypatch.setattr(milp_stage, "_SHARED", [])
  records = cascade.verify_image(_NET, _X, _LABEL, 0, None,
                                 _config(bab_time_limit=7.0, time_limit=30))
  assert [limit for _, limit in calls] == [7.0, 7.0, 7.0]
  assert not milp_stage._SHARED   # the MILP ran here, no child
  assert {r.status for r in records} <= {"robust", "adversarial"}


_TIMING = ("build_seconds", "bounds_seconds", "solve_seconds", "bab_seconds",
           "image_seconds")


def _untimed(records):
  return sorted(({k: v for k, v in r.items() if k not in _TIMING}
                 for r in records), key=lambda r: (r["image_index"],
                                                   r["target"]))


def _verdicts(records):
  return sorted((r.image_index, r.target, r.status, r.decided_by)
                for r in records)


def test_a_generous_budget_gives_the_verdicts_of_no_budget(tmp_path):
  # real computations: the branch and bound for some targets, the MILP (in
  # the child, with a budget) for the rest
  rng = np.random.default_rng(3)
  images = rng.uniform(0.2, 0.8, (3, 12)).astype(np.float32)
  labels = np.argmax(forward(_NET, images), axis=1)
  kw = dict(delta=0.2, mode="certify", bab_time_limit=0.0, workers=1,
            time_limit=30.0, pgd_steps=0)
  plain = runner.verify_images(_NET, images, labels, [0, 1, 2], **kw)
  flagged = runner.verify_images(_NET, images, labels, [0, 1, 2], **kw,
                                 image_time_limit=0.0)
  budget = runner.verify_images(_NET, images, labels, [0, 1, 2], **kw,
                                image_time_limit=60.0)
  assert _untimed(plain) == _untimed(flagged)
  assert _verdicts(budget) == _verdicts(plain)
  assert {r.status for r in plain} <= {"robust", "adversarial"}
  assert "milp" in {r.decided_by for r in budget}
  for a, b in zip(sorted(plain, key=lambda r: (r.image_index, r.target)),
                  sorted(budget, key=lambda r: (r.image_index, r.target))):
    if a.status == "adversarial":
      assert b.witness_margin < 0
    else:
      assert b.best_bound >= 0


def test_turns_give_the_verdicts_of_the_branch_and_bound_without_a_budget():
  # real searches taking turns under a budget decide every pair as one
  # search per target (bab_time_limit each, no budget) does
  rng = np.random.default_rng(4)
  images = rng.uniform(0.2, 0.8, (4, 12)).astype(np.float32)
  labels = np.argmax(forward(_NET, images), axis=1)
  kw = dict(delta=0.2, mode="certify", bab_time_limit=30.0, workers=1,
            time_limit=30.0, pgd_steps=0)
  plain = runner.verify_images(_NET, images, labels, [0, 1, 2, 3], **kw)
  turns = runner.verify_images(_NET, images, labels, [0, 1, 2, 3], **kw,
                               image_time_limit=60.0)
  assert _verdicts(turns) == _verdicts(plain)
  assert {r.decided_by for r in turns} == {"bab"}
  for r in turns:
    assert r.bab_domains >= 1
    if r.status == "adversarial":
      assert r.witness_margin < 0
    else:
      assert r.status == "robust" and r.best_bound > 0


def test_a_bab_witness_is_rechecked_under_a_budget(monkeypatch):
  lower = np.clip(_X - 0.2, 0, 1)

  def decide(target, turn_number, seconds):
    # a "witness" whose float64 margin is not negative (the corner of the
    # box, checked below), and a bound that decides nothing
    return bab.BabResult("adversarial", -0.5, lower.copy(), -1.0, 5, 0.0,
                         "witness")
  margins = forward(_NET, lower)
  _TurnLog(monkeypatch, decide)
  records = cascade.verify_image(_NET, _X, _LABEL, 0, None,
                                 _config(image_time_limit=3.0))
  for r in records:
    genuine = margins[_LABEL] - margins[r.target] < 0
    assert (r.status == "adversarial") == genuine
    if genuine:
      assert r.witness_margin < 0 and r.decided_by == "bab"
    else:
      assert r.status == "timeout"


def test_the_deadline_shares_what_remains():
  now = [100.0]
  deadline = Deadline(10.0, clock=lambda: now[0])
  assert deadline.enabled and deadline.share(4) == 2.5
  now[0] += 6.0
  assert deadline.share(2) == 2.0
  now[0] += 10.0
  assert deadline.share(1) == 0.0 and deadline.remaining() < 0
  assert not Deadline(0.0).enabled


def test_warm_up_reports_its_seconds():
  seconds = engines.prepare_process(
      _NET, _X, _config(bab_time_limit=0.0, image_time_limit=10.0))
  assert seconds is not None and seconds > 0
  assert engines.prepare_process(_NET, _X, _config()) is None


def test_after_the_warm_up_certify_compiles_nothing(caplog, monkeypatch):
  """The refinement's warm-up covers what certify runs (its cut bounds;
  with 0 rounds no side search), so an image's budget pays no compile."""
  net = random_network(30, [12, 15, 11, 4])   # widths no other test uses
  label = int(np.argmax(forward(net, _X)))
  config = _config(bab_intermediate="refine", image_time_limit=30.0)
  # every search refines at once: each jitted step of the image runs
  monkeypatch.setattr(cascade.bab_turns, "REFINE_AT_ONCE_BELOW", np.inf)
  refined = []
  honest = cascade.refined_layer_bounds
  monkeypatch.setattr(cascade, "refined_layer_bounds",
                      lambda *a: refined.append(1) or honest(*a))

  def compiles(run):
    caplog.clear()
    with caplog.at_level(logging.WARNING), jax.log_compiles(True):
      run()
    return [r.getMessage() for r in caplog.records
            if r.getMessage().startswith("Compiling")]
  assert compiles(lambda: cascade.warm_up(net, _X, config))
  assert "warm-up failed" not in caplog.text
  records = []
  compiled = compiles(lambda: records.extend(
      cascade.verify_image(net, _X, label, 0, None, config)))
  assert refined and {r.decided_by for r in records} & {"bab"}
  assert not compiled, compiled[:3]
