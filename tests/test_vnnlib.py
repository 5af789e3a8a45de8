"""VNN-LIB parsing, general linear objectives against exact minima on tiny
networks, the decision's verdicts (ties included), and the binaries end to
end."""

import dataclasses
import os
import subprocess
import sys
import time

import numpy as np
import pytest

from robust_prune import bab
from robust_prune.formats import decide, objective, onnx_io, results, vnnlib
from robust_prune.network import Network, forward
from testing import exact_min_spec, pre_activations, row_property

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _tiny_network(seed, widths=(2, 4, 4, 3)):
  rng = np.random.default_rng(seed)
  return Network(
      tuple(rng.normal(size=(a, b)).astype(np.float32)
            for a, b in zip(widths, widths[1:])),
      tuple(rng.normal(size=b).astype(np.float32) * 0.5 for b in widths[1:]))


def exact_minimum(network, lower, upper, c, d=0.0):
  """min over the box of c @ f(x) + d (testing.exact_min_spec)."""
  return exact_min_spec(network, lower, upper, c)[0] + d


BOX = (np.array([-1.0, -0.5]), np.array([0.5, 1.0]))
# Small batches: few compiled shapes, shared by every test here. Generous
# time limits: a search ends once decided (a loaded machine may spend
# seconds compiling).
SMALL_BAB = bab.BabConfig(time_limit=300, batch_size=16)
SMALL = decide.DecideConfig(bab_batch_size=16)


def test_parses_boxes_disjunctions_conjunctions_and_constants():
  text = """; a comment (with parentheses
  (declare-const X_0 Real)
  (declare-const X_1 Real) ; trailing comment
  (declare-const Y_0 Real)(declare-const Y_1 Real)(declare-const Y_2 Real)
  (assert (<= X_0 1e-1))
  (assert (>= X_0 -0.5))
  (assert (>= X_1 (- 2.5E-1)))
  (assert (<= X_1 0.75))
  (assert (or (and (>= Y_1 Y_0) (<= Y_2 3.5))
              (and (>= Y_2 Y_0))))
  (assert (<= Y_0 10))
  """
  prop = vnnlib.parse_vnnlib_text(text)
  assert (prop.num_inputs, prop.num_outputs) == (2, 3)
  assert len(prop.disjuncts) == 2 and len(prop.boxes()) == 1
  first, second = prop.disjuncts
  np.testing.assert_array_equal(first.lower, [-0.5, -0.25])
  np.testing.assert_array_equal(first.upper, [0.1, 0.75])
  rows = lambda d: sorted(zip(map(tuple, d.coeffs), d.consts))
  assert rows(first) == sorted([((-1.0, 1.0, 0.0), 0.0),
                                ((0.0, 0.0, -1.0), 3.5),
                                ((-1.0, 0.0, 0.0), 10.0)])
  assert rows(second) == sorted([((-1.0, 0.0, 1.0), 0.0),
                                 ((-1.0, 0.0, 0.0), 10.0)])
  x = np.array([0.0, 0.0])
  assert first.holds_at(x, [2.0, 2.0, 3.5])              # ties count
  assert not first.holds_at(x, [2.0, np.nextafter(2.0, 0), 3.5])
  assert not first.holds_at([0.2, 0.0], [2.0, 2.0, 3.5])   # outside the box
  assert second.holds_at(x, [-1.0, 5.0, -1.0]) and not first.holds_at(
      x, [-1.0, -5.0, -1.0])


def test_disjuncts_with_their_own_input_boxes_and_strict_rows():
  text = """(declare-const X_0 Real)(declare-const Y_0 Real)(declare-const Y_1 Real)
  (assert (or (and (>= X_0 0) (<= X_0 1) (> Y_0 Y_1))
              (and (>= X_0 2) (<= X_0 3) (= Y_1 Y_0))
              (and (>= X_0 5) (<= X_0 4) (>= Y_1 Y_0))))"""
  prop = vnnlib.parse_vnnlib_text(text)
  assert len(prop.disjuncts) == 2      # the third box is empty
  assert [list(m) for _, _, m in prop.boxes()] == [[0], [1]]
  strict, equal = prop.disjuncts
  assert not strict.holds_at([0.5], [1.0, 1.0]) and strict.holds_at([0.5],
                                                                    [1.5, 1.0])
  assert equal.holds_at([2.0], [1.0, 1.0]) and not equal.holds_at([2.0],
                                                                  [1.0, 1.5])


@pytest.mark.parametrize("text, problem", [
    ("(declare-const X_0 Real)(declare-const Y_0 Real)(assert (<= X_0 1)",
     "unbalanced"),
    ("(declare-const X_0 Real)(declare-const Y_0 Real)(assert (<= X_0 1))"
     "(assert (>= X_0 0))(assert (>= Y_5 0))", "unknown variable Y_5"),
    ("(declare-const X_0 Real)(declare-const Y_0 Real)(assert (<= X_0 1))"
     "(assert (>= X_0 0))(assert (>= Y_0 1.2.3))", "bad number '1.2.3'"),
    ("(declare-const X_0 Real)(declare-const Y_0 Real)(assert (<= X_0 1))"
     "(assert (>= Y_0 0))", "X_0 needs a lower and an upper bound"),
    ("(declare-const X_0 Real)(declare-const Y_0 Real)(assert (<= X_0 1))"
     "(assert (>= X_0 0))(assert (>= Y_0 X_0))", "never mixed with outputs"),
    ("(declare-const X_0 Real)(declare-const Y_0 Real)(check-sat)",
     "unsupported command"),
    ("(declare-const X_0 Int)(declare-const Y_0 Real)", "bad declaration"),
    ("(declare-const X_1 Real)(declare-const Y_0 Real)", "X_0 is not declared"),
])
def test_malformed_files_are_one_clear_error(tmp_path, text, problem):
  path = tmp_path / "bad.vnnlib"
  path.write_text(text)
  with pytest.raises(vnnlib.VnnlibError) as error:
    vnnlib.parse_vnnlib(path)
  message = str(error.value)
  assert message.startswith(f"{path}: ") and problem in message
  assert "\n" not in message


@pytest.mark.parametrize("seed", [0, 1])
def test_linear_objective_bounds_match_exact_minimum(seed):
  network = _tiny_network(seed)
  rng = np.random.default_rng(100 + seed)
  c, d = rng.normal(size=3), float(rng.normal())
  exact = exact_minimum(network, *BOX, c, d)
  crown = objective.objective_lower_bounds(network, *BOX, c[None], [d])[0]
  assert crown <= exact
  lower, value, x, optimal = objective.linear_minimum(
      network, *BOX, c, d, SMALL_BAB)
  assert optimal
  assert lower <= exact + 1e-9 and exact <= value + 1e-9
  assert value - lower <= 1e-4
  assert np.all(x >= BOX[0]) and np.all(x <= BOX[1])
  np.testing.assert_allclose(c @ forward(network, x) + d, value, atol=1e-12)


@pytest.mark.parametrize("seed", [0, 3])
def test_property_verdicts_match_exact_minimum(seed):
  network = _tiny_network(seed)
  c = np.random.default_rng(200 + seed).normal(size=3)
  exact = exact_minimum(network, *BOX, c)
  for threshold, expected in ((exact - 0.05, "unsat"), (exact + 0.05, "sat")):
    prop = vnnlib.parse_vnnlib_text(row_property(c, threshold))
    verdict = decide.decide(network, prop, time.monotonic() + 300, SMALL)
    assert verdict.result == expected, (threshold, verdict)
    if expected == "sat":
      # the counterexample, re-checked: in the box and below the threshold
      assert np.all(verdict.x >= BOX[0]) and np.all(verdict.x <= BOX[1])
      np.testing.assert_array_equal(verdict.y, forward(network, verdict.x))
      assert c @ verdict.y <= threshold


@pytest.mark.parametrize("seed", [1, 2])
@pytest.mark.parametrize("intermediate", ["crown", "alpha", "refine"])
def test_branch_and_bound_verdicts_on_each_kind_of_hidden_bounds(
    seed, intermediate, monkeypatch):
  # thresholds CROWN alone cannot refute, so the branch and bound decides;
  # "refine" with no plain turns first refines before every search
  network = _tiny_network(seed)
  c = np.random.default_rng(200 + seed).normal(size=3)
  exact = exact_minimum(network, *BOX, c)
  refined, refine = [], bab.refine_layer_bounds

  def spy(*args, **kwargs):
    layers, stats = refine(*args, **kwargs)
    assert args[4].rounds == SMALL.refine_rounds   # the config's rounds
    refined.append(layers)
    return layers, stats
  monkeypatch.setattr(decide.bab_lib, "refine_layer_bounds", spy)
  config = dataclasses.replace(SMALL, intermediate=intermediate,
                               plain_first_fraction=0.0)
  prop = vnnlib.parse_vnnlib_text(row_property(c, exact - 0.02))
  verdict = decide.decide(network, prop, time.monotonic() + 300, config)
  assert verdict.result == "unsat" and verdict.refuted_by == {0: "bab"}
  assert len(refined) == (intermediate == "refine")
  for layers in refined:   # sound: every sampled activation inside
    x = np.random.default_rng(seed).uniform(*BOX, size=(2000, 2))
    for (lo, hi), y in zip(layers.hidden, pre_activations(network, x)):
      assert np.all(y >= lo - 1e-9) and np.all(y <= hi + 1e-9)


def test_searches_stopped_by_time_are_a_timeout_not_unknown(monkeypatch):
  # no search gets a turn (as when the time runs out): the property is open
  # because of time, which VNN-COMP scores as a timeout, whatever is left
  network = _tiny_network(1)
  c = np.random.default_rng(201).normal(size=3)
  prop = vnnlib.parse_vnnlib_text(
      row_property(c, exact_minimum(network, *BOX, c) - 0.02))
  monkeypatch.setattr(decide.bab_lib, "take_turns", lambda *a, **k: {})
  config = dataclasses.replace(SMALL, use_milp=False, intermediate="alpha")
  verdict = decide.decide(network, prop, time.monotonic() + 300, config)
  assert verdict.result == "timeout" and verdict.out_of_time


def test_a_tie_is_a_counterexample():
  # y0 = relu(x0) + relu(x1) and y1 = 0: Y_1 >= Y_0 holds only at the
  # corner x = 0, with equality
  network = Network((np.eye(2), np.array([[1.0, 0.0], [1.0, 0.0]])),
                    (np.zeros(2), np.zeros(2)))
  text = ("(declare-const X_0 Real)(declare-const X_1 Real)"
          "(declare-const Y_0 Real)(declare-const Y_1 Real)"
          "(assert (>= X_0 0))(assert (<= X_0 1))"
          "(assert (>= X_1 0))(assert (<= X_1 1))(assert (>= Y_1 Y_0))")
  verdict = decide.decide(network, vnnlib.parse_vnnlib_text(text),
                          time.monotonic() + 300, SMALL)
  assert verdict.result == "sat"
  np.testing.assert_array_equal(verdict.x, [0.0, 0.0])
  assert verdict.y[0] == verdict.y[1] == 0.0
  strict = text.replace("(>= Y_1 Y_0)", "(> Y_1 Y_0)")
  verdict = decide.decide(network, vnnlib.parse_vnnlib_text(strict),
                          time.monotonic() + 3, SMALL)
  assert verdict.result != "sat"      # no point has Y_1 > Y_0


# y0 = relu(x), y1 = relu(-x) on [-1, 1]: y0 >= 0.5 and y1 >= 0.5 are each
# feasible, together not
_RELU_PAIR = Network((np.array([[1.0, -1.0]]), np.eye(2)),
                     (np.zeros(2), np.zeros(2)))
_RELU_PAIR_HEAD = ("(declare-const X_0 Real)(declare-const Y_0 Real)"
                   "(declare-const Y_1 Real)(assert (>= X_0 -1))"
                   "(assert (<= X_0 1))")
_BOTH_HALF = vnnlib.parse_vnnlib_text(
    _RELU_PAIR_HEAD + "(assert (and (>= Y_0 0.5) (>= Y_1 0.5)))")


def test_a_conjunction_is_refuted_by_its_milp_when_no_row_alone_is():
  # y0 >= 0.5 and y1 <= 0.1 together are feasible
  network, head, both = _RELU_PAIR, _RELU_PAIR_HEAD, _BOTH_HALF
  verdict = decide.decide(network, both, time.monotonic() + 300, SMALL)
  assert verdict.result == "unsat" and verdict.refuted_by == {0: "milp"}
  feasible = vnnlib.parse_vnnlib_text(
      head + "(assert (and (>= Y_0 0.5) (<= Y_1 0.1)))")
  verdict = decide.decide(network, feasible, time.monotonic() + 300, SMALL)
  assert verdict.result == "sat" and verdict.x[0] >= 0.5
  assert feasible.disjuncts[0].holds_at(verdict.x, forward(network, verdict.x))


def test_the_branch_and_bound_keeps_time_back_only_for_conjunctions(
    monkeypatch):
  # a single row's MILP poses the branch and bound's own problem, so the
  # searches get all the time; a conjunction's MILP sees every row
  shares = []

  def searches(network, prop, open_, end, share, verdict, config):
    shares.append(share)
    return open_, None   # nothing refuted: the MILP stage follows
  monkeypatch.setattr(decide, "_bab_in_turns", searches)
  network = _tiny_network(1)
  c = np.random.default_rng(201).normal(size=3)
  row = vnnlib.parse_vnnlib_text(
      row_property(c, exact_minimum(network, *BOX, c) - 0.02))
  verdict = decide.decide(network, row, time.monotonic() + 300, SMALL)
  assert shares == [1.0] and verdict.refuted_by == {0: "milp"}
  decide.decide(_RELU_PAIR, _BOTH_HALF, time.monotonic() + 300, SMALL)
  assert shares == [1.0, SMALL.bab_share]


def test_robustness_properties_for_mnist_images(tmp_path):
  from robust_prune import data  # pylint: disable=g-import-not-at-top
  from robust_prune.formats import __main__ as formats_main  # pylint: disable=g-import-not-at-top
  network = _tiny_network(5, widths=(784, 6, 10))
  formats_main.write_properties(network, "net.onnx", str(tmp_path), [0, 7],
                                [0.05], 30.0)
  assert (tmp_path / "instances.csv").read_text().splitlines() == [
      "net.onnx,prop_0_0.05.vnnlib,30", "net.onnx,prop_7_0.05.vnnlib,30"]
  test = data.load_split("test")
  prop = vnnlib.parse_vnnlib(tmp_path / "prop_7_0.05.vnnlib")
  image, label = test.images[7].astype(np.float64), int(test.labels[7])
  assert len(prop.disjuncts) == 9 and len(prop.boxes()) == 1
  np.testing.assert_array_equal(prop.disjuncts[0].lower,
                                np.clip(image - 0.05, 0, 1))
  np.testing.assert_array_equal(prop.disjuncts[0].upper,
                                np.clip(image + 0.05, 0, 1))
  for target, d in zip([j for j in range(10) if j != label], prop.disjuncts):
    expected = np.zeros(10)
    expected[target], expected[label] = 1.0, -1.0
    np.testing.assert_array_equal(d.coeffs, [expected])   # Y_t >= Y_label


def test_result_file_round_trips_a_counterexample():
  x, y = np.array([0.1, 1 / 3]), np.array([-2e-7, 5.0])
  text = results.result_text("sat", x, y)
  assert text.splitlines()[0] == "sat"
  assert text.splitlines()[1] == "((X_0 0.1)" and text.endswith("(Y_1 5.0))\n")
  back_x, back_y = results.read_counterexample(text)
  np.testing.assert_array_equal(back_x, x)
  np.testing.assert_array_equal(back_y, y)


def _binary(*args):
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  return subprocess.run([sys.executable, "-m", *args], cwd=_REPO, env=env,
                        capture_output=True, text=True, timeout=300,
                        check=False)


@pytest.fixture(scope="module")
def instance_files(tmp_path_factory):
  """A tiny ONNX network with a sat and an unsat property, plus bad files."""
  folder = tmp_path_factory.mktemp("instances")
  network = _tiny_network(0)
  onnx_io.export_onnx(network, folder / "tiny.onnx")
  c = np.array([1.0, -1.0, 0.5])
  exact = exact_minimum(network, *BOX, c)
  crown = objective.objective_lower_bounds(network, *BOX, c[None], [0.0])[0]
  assert crown <= exact
  # (the branch and bound is exercised in process above; here the cheap
  # steps decide, which keeps the subprocesses' compile time small)
  (folder / "sat.vnnlib").write_text(row_property(c, exact + 0.05))
  (folder / "unsat.vnnlib").write_text(row_property(c, crown - 0.05))
  (folder / "unknown.vnnlib").write_text(
      row_property(c, 0.0).replace("Y_2)", "Y_7)"))
  import onnx  # pylint: disable=g-import-not-at-top
  from onnx import TensorProto, helper  # pylint: disable=g-import-not-at-top
  graph = helper.make_graph(
      [helper.make_node("Conv", ["x", "w"], ["y"])], "conv",
      [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 2, 1])],
      [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 1, 2, 1])],
      [onnx.numpy_helper.from_array(np.ones((1, 1, 1, 1), np.float32), "w")])
  onnx.save(helper.make_model(graph), str(folder / "conv.onnx"))
  return folder, network, c


@pytest.mark.parametrize("spec, expected", [("sat", "sat"),
                                            ("unsat", "unsat")])
def test_verify_binary_end_to_end(instance_files, tmp_path, spec, expected):
  folder, network, c = instance_files
  out = tmp_path / "result.txt"
  proc = _binary("robust_prune.vnnlib_verify", f"--onnx={folder}/tiny.onnx",
                 f"--vnnlib={folder}/{spec}.vnnlib", "--timeout=600",
                 f"--out={out}", "--bab_batch_size=16")
  assert proc.returncode == 0, proc.stderr
  text = out.read_text()
  assert text.splitlines()[0] == expected
  if expected == "sat":
    x, y = results.read_counterexample(text)
    prop = vnnlib.parse_vnnlib(folder / "sat.vnnlib")
    np.testing.assert_array_equal(y, forward(network, x))
    assert prop.disjuncts[0].holds_at(x, y)


def test_verify_binary_keeps_its_compiles_for_the_next_run(
    instance_files, tmp_path, monkeypatch):
  """One process per instance, as VNN-COMP runs tools: what it compiled
  goes to the persistent cache, for the next instance to load."""
  folder, _, _ = instance_files
  cache = tmp_path / "cache"
  monkeypatch.setenv("ROBUST_PRUNE_CACHE", str(cache))
  proc = _binary("robust_prune.vnnlib_verify", f"--onnx={folder}/tiny.onnx",
                 f"--vnnlib={folder}/unsat.vnnlib", "--timeout=600",
                 f"--out={tmp_path}/result.txt", "--bab_batch_size=16")
  assert proc.returncode == 0, proc.stderr
  assert (tmp_path / "result.txt").read_text().splitlines()[0] == "unsat"
  assert len(list((cache / "jax").iterdir())) > 0


def test_verify_binary_bad_timeout_is_one_error_line(instance_files, tmp_path):
  folder, _, _ = instance_files
  out = tmp_path / "result.txt"
  proc = _binary("robust_prune.vnnlib_verify", f"--onnx={folder}/tiny.onnx",
                 f"--vnnlib={folder}/sat.vnnlib", "--timeout=0", f"--out={out}")
  assert proc.returncode == 2
  lines = proc.stderr.strip().splitlines()
  assert len(lines) == 1 and "error" in lines[0] and "--timeout" in lines[0]
  assert out.read_text().splitlines()[0] == "error"


def test_verify_binary_flag_defaults_are_decide_configs():
  """The binary defines its flags before JAX is imported (so bad ones fail
  fast), hence apart from DecideConfig: their defaults must stay its."""
  code = ("from absl import flags\n"
          "from robust_prune import vnnlib_verify\n"
          "flags.FLAGS(['vnnlib_verify'])\n"
          "from robust_prune.formats import decide\n"
          "made, default = vnnlib_verify.config_from_flags(), "
          "decide.DecideConfig()\n"
          "assert made == default, (made, default)\n")
  proc = subprocess.run([sys.executable, "-c", code], cwd=_REPO,
                        env=dict(os.environ, JAX_PLATFORMS="cpu"),
                        capture_output=True, text=True, timeout=300,
                        check=False)
  assert proc.returncode == 0, proc.stderr


def test_the_benchmark_refuses_instances_whose_files_are_missing(
    instance_files, tmp_path):
  # paths that do not resolve from the CSV's folder: one line, and no run
  # that would record every instance as `error`
  folder, _, _ = instance_files
  csv_path = tmp_path / "instances.csv"
  csv_path.write_text("tiny.onnx,unsat.vnnlib,600\n")
  out = tmp_path / "results.csv"
  proc = subprocess.run(
      [sys.executable, os.path.join("launch", "bench", "bench_vnncomp.py"),
       f"--instances={csv_path}", f"--out={out}"], cwd=_REPO,
      env=dict(os.environ, JAX_PLATFORMS="cpu"), capture_output=True,
      text=True, timeout=300, check=False)
  assert proc.returncode != 0
  assert "Traceback" not in proc.stderr
  assert proc.stderr.strip().splitlines() == [
      f"{csv_path}: 2 instance files not found, e.g. {tmp_path}/tiny.onnx "
      f"(paths are read relative to the CSV's folder)"]
  assert not out.exists()
  assert (folder / "tiny.onnx").exists()   # the files exist, elsewhere


def test_runner_writes_results_resumably_and_records_bad_inputs(
    instance_files, tmp_path):
  folder, _, _ = instance_files
  csv_path = folder / "instances.csv"
  csv_path.write_text("tiny.onnx,unsat.vnnlib,600\ntiny.onnx,sat.vnnlib,600\n"
                      "conv.onnx,sat.vnnlib,600\ntiny.onnx,unknown.vnnlib,600")
  out = tmp_path / "results.csv"
  finished = "bench,tiny.onnx,unsat.vnnlib,0.1,unsat,1.5\n"
  out.write_text(finished)       # done before an interruption: not rerun
  proc = _binary("robust_prune.vnncomp_run", f"--instances={csv_path}",
                 f"--out={out}", "--benchmark=bench",
                 f"--result_dir={tmp_path}/files", "--bab_batch_size=16")
  assert proc.returncode == 0, proc.stderr
  rows = results.read_results(str(out))
  assert out.read_text().startswith(finished)
  assert [(r[1], r[2], r[4]) for r in rows] == [
      ("tiny.onnx", "unsat.vnnlib", "unsat"), ("tiny.onnx", "sat.vnnlib", "sat"),
      ("conv.onnx", "sat.vnnlib", "error"),
      ("tiny.onnx", "unknown.vnnlib", "error")]
  assert all(r[0] == "bench" and float(r[3]) + float(r[5]) < 600 for r in rows)
  errors = {f: (tmp_path / "files" / f).read_text().splitlines()
            for f in ("conv__sat.txt", "tiny__unknown.txt")}
  assert errors["conv__sat.txt"][0] == "error" and "Conv" in errors[
      "conv__sat.txt"][1]
  assert "unknown variable Y_7" in errors["tiny__unknown.txt"][1]
