"""ONNX <-> Network: round trip, onnxruntime agreement, the ops VNN-COMP's
MLPs use (normalisation, MatMul + Add, Gemm's transB/alpha/beta, a trailing
Relu, initializers among the inputs) and one clear error for the rest."""

import os

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from robust_prune.formats import onnx_io
from robust_prune.network import Network, forward

_MNISTFC = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(
    __file__))), "..", "shared", "vnncomp2021", "mnistfc")


def _random_network(widths, seed=0):
  rng = np.random.default_rng(seed)
  return Network(
      tuple((rng.normal(size=(a, b)) / np.sqrt(a)).astype(np.float32)
            for a, b in zip(widths, widths[1:])),
      tuple((rng.normal(size=b) * 0.1).astype(np.float32) for b in widths[1:]))


def _ort_outputs(model_or_path, x, input_shape):
  data = (model_or_path.SerializeToString()
          if isinstance(model_or_path, onnx.ModelProto) else model_or_path)
  session = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
  name = [i.name for i in session.get_inputs()][0]
  return np.concatenate([
      session.run(None, {name: row.reshape(input_shape).astype(np.float32)})[0]
      .reshape(1, -1) for row in x])


def test_export_then_import_is_identity_and_agrees_with_onnxruntime(tmp_path):
  network = _random_network([6, 9, 7, 4])
  path = tmp_path / "net.onnx"
  onnx_io.export_onnx(network, path)
  back = onnx_io.import_onnx(path)
  assert back.num_layers == network.num_layers
  for a, b in zip(network.weights + network.biases, back.weights + back.biases):
    assert a.shape == b.shape
    np.testing.assert_array_equal(a.astype(np.float64), b)
  x = np.random.default_rng(1).uniform(-1, 1, size=(16, 6))
  np.testing.assert_allclose(_ort_outputs(str(path), x, (1, 6)),
                             forward(network, x), atol=1e-5, rtol=0)
  np.testing.assert_array_equal(forward(back, x), forward(network, x))


@pytest.mark.skipif(not os.path.isdir(_MNISTFC), reason="no shared mnistfc")
def test_mnistfc_network_agrees_with_onnxruntime():
  path = os.path.join(_MNISTFC, "mnist-net_256x2.onnx")
  network = onnx_io.import_onnx(path)
  assert (network.input_dim, network.hidden_widths,
          network.num_classes) == (784, (256, 256), 10)
  x = np.random.default_rng(0).uniform(0, 1, size=(8, 784))
  np.testing.assert_allclose(_ort_outputs(path, x, (1, 784, 1)),
                             forward(network, x), atol=1e-5, rtol=0)


def _const(name, array):
  return numpy_helper.from_array(np.asarray(array, np.float32), name)


def _handmade_graph(rng):
  """Sub/Div normalisation on a (1, 1, 2, 3) input, Reshape, MatMul + Add,
  Relu, Mul, Sub from a constant, Gemm transB=0 with alpha/beta, and a
  trailing Relu; the initializers are listed among the graph inputs too."""
  inits = [_const("mean", rng.uniform(0, 1, (1, 1, 2, 3))),
           _const("std", rng.uniform(0.5, 2, (1, 1, 2, 3))),
           numpy_helper.from_array(np.array([1, 6], np.int64), "shape"),
           _const("W0", rng.normal(size=(6, 5))), _const("b0", rng.normal(size=5)),
           _const("scale", rng.uniform(0.5, 2, 5)),
           _const("shift", rng.normal(size=(1, 5))),
           _const("W1", rng.normal(size=(5, 4))), _const("b1", rng.normal(size=4))]
  nodes = [helper.make_node("Sub", ["x", "mean"], ["centred"]),
           helper.make_node("Div", ["centred", "std"], ["normed"]),
           helper.make_node("Reshape", ["normed", "shape"], ["flat"]),
           helper.make_node("MatMul", ["flat", "W0"], ["mm"]),
           helper.make_node("Add", ["b0", "mm"], ["h0"]),
           helper.make_node("Relu", ["h0"], ["r0"]),
           helper.make_node("Mul", ["r0", "scale"], ["scaled"]),
           helper.make_node("Sub", ["shift", "scaled"], ["flipped"]),
           helper.make_node("Gemm", ["flipped", "W1", "b1"], ["h1"], transB=0,
                            alpha=0.5, beta=2.0),
           helper.make_node("Relu", ["h1"], ["y"])]
  inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 2, 3])]
  inputs += [helper.make_tensor_value_info(t.name, t.data_type, list(t.dims))
             for t in inits]
  graph = helper.make_graph(
      nodes, "handmade", inputs,
      [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])], inits)
  return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


def test_handmade_graph_matches_onnxruntime():
  model = _handmade_graph(np.random.default_rng(3))
  onnx.checker.check_model(model)
  network = onnx_io.model_to_network(model)
  # two affine layers, then the identity layer that keeps the final Relu
  assert network.num_layers == 3 and network.input_dim == 6
  np.testing.assert_array_equal(network.weights[-1], np.eye(4))
  np.testing.assert_array_equal(network.biases[-1], np.zeros(4))
  x = np.random.default_rng(4).uniform(-2, 2, size=(32, 6))
  expected = _ort_outputs(model, x, (1, 1, 2, 3))
  assert np.any(expected == 0) and np.all(expected >= 0)   # the Relu bites
  np.testing.assert_allclose(expected, forward(network, x), atol=1e-5, rtol=0)


def test_unsupported_op_is_one_clear_error(tmp_path):
  w = _const("w", np.ones((1, 1, 3, 3)))
  graph = helper.make_graph(
      [helper.make_node("Conv", ["x", "w"], ["c"], name="conv1"),
       helper.make_node("Flatten", ["c"], ["y"])], "conv",
      [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 5, 5])],
      [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 9])], [w])
  path = tmp_path / "conv.onnx"
  onnx.save(helper.make_model(graph), str(path))
  with pytest.raises(onnx_io.OnnxFormatError,
                     match=r"conv\.onnx: unsupported ONNX op Conv"):
    onnx_io.import_onnx(path)


def test_two_real_inputs_and_missing_file_are_clear_errors(tmp_path):
  graph = helper.make_graph(
      [helper.make_node("Add", ["a", "b"], ["y"])], "two",
      [helper.make_tensor_value_info(n, TensorProto.FLOAT, [1, 2])
       for n in "ab"],
      [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2])])
  with pytest.raises(onnx_io.OnnxFormatError, match="exactly one graph input"):
    onnx_io.model_to_network(helper.make_model(graph))
  with pytest.raises(onnx_io.OnnxFormatError, match="not found"):
    onnx_io.import_onnx(tmp_path / "absent.onnx")


def test_import_to_npz_refuses_to_round_unless_asked(tmp_path):
  from robust_prune.formats import __main__ as formats_main  # pylint: disable=g-import-not-at-top
  from robust_prune.network import load_network  # pylint: disable=g-import-not-at-top
  network = _random_network([5, 4, 3], seed=2)
  onnx_io.export_onnx(network, tmp_path / "plain.onnx")
  formats_main.import_to_npz(str(tmp_path / "plain.onnx"),
                             str(tmp_path / "plain.npz"), False)
  back = load_network(tmp_path / "plain.npz")
  for a, b in zip(network.weights + network.biases, back.weights + back.biases):
    np.testing.assert_array_equal(a, b)
  # folded normalisation gives float64 weights: saving them would round
  onnx.save(_handmade_graph(np.random.default_rng(3)), str(tmp_path / "n.onnx"))
  with pytest.raises(ValueError, match="--round"):
    formats_main.import_to_npz(str(tmp_path / "n.onnx"),
                               str(tmp_path / "n.npz"), False)
  assert not (tmp_path / "n.npz").exists()
  formats_main.import_to_npz(str(tmp_path / "n.onnx"), str(tmp_path / "n.npz"),
                             True)
  assert load_network(tmp_path / "n.npz").num_layers == 3
