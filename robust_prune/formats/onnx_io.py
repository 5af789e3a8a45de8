"""ReLU MLPs as ONNX graphs: `Network` -> ONNX (Flatten, Gemm, Relu) and back.

Import reads the sequential graphs VNN-COMP's fully connected benchmarks
use: Flatten/Reshape (which never reorder elements), Gemm (transA=0, any
transB/alpha/beta), MatMul with a constant, Add/Sub/Mul/Div with a constant
(input normalisation), Identity/Dropout, and Relu. The value flowing through
the graph is kept as an affine map `h @ A + c` of the last ReLU's output (the
input at first), composed in float64, so normalisation and consecutive linear
ops fold exactly up to float64 round-off (~1e-16 relative, far below the
verifier's safety margins) into one layer; each Relu closes a layer. A Relu on
the graph's output is kept exactly by an identity last layer (W = I, b = 0),
since a `Network` applies ReLU after every layer but the last.
Anything else ends in one `OnnxFormatError` naming the op.
"""

from __future__ import annotations

import os

import numpy as np

from robust_prune.network import Network

OPSET = 13
_FLOAT_TYPES = {1: np.float32, 11: np.float64}   # TensorProto FLOAT, DOUBLE


class OnnxFormatError(ValueError):
  """An ONNX file that is not a ReLU MLP this importer can read."""


def _onnx():
  try:
    import onnx  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise OnnxFormatError("the `onnx` package is not installed "
                          "(pip install onnx)") from e
  return onnx


def network_to_model(network: Network, dtype=np.float32, input_name="input",
                     output_name="output"):
  """The ONNX ModelProto of `network`: Flatten, then Gemm (transB=1, weights
  stored (fan_out, fan_in) as PyTorch exports them) and Relu per layer."""
  onnx = _onnx()
  helper, tp = onnx.helper, onnx.TensorProto
  elem = tp.FLOAT if np.dtype(dtype) == np.float32 else tp.DOUBLE
  nodes, inits = [], []
  nodes.append(helper.make_node("Flatten", [input_name], ["flat"], axis=1))
  current = "flat"
  for i, (w, b) in enumerate(zip(network.weights, network.biases)):
    inits.append(onnx.numpy_helper.from_array(
        np.ascontiguousarray(np.asarray(w, dtype).T), f"W_{i}"))
    inits.append(onnx.numpy_helper.from_array(np.asarray(b, dtype), f"b_{i}"))
    last = i == network.num_layers - 1
    gemm_out = output_name if last else f"gemm_{i}"
    nodes.append(helper.make_node("Gemm", [current, f"W_{i}", f"b_{i}"],
                                  [gemm_out], transB=1))
    if not last:
      nodes.append(helper.make_node("Relu", [gemm_out], [f"relu_{i}"]))
      current = f"relu_{i}"
  graph = helper.make_graph(
      nodes, "relu_mlp",
      [helper.make_tensor_value_info(input_name, elem, [1, network.input_dim])],
      [helper.make_tensor_value_info(output_name, elem,
                                     [1, network.num_classes])], inits)
  model = helper.make_model(graph, producer_name="robust_prune",
                            opset_imports=[helper.make_opsetid("", OPSET)])
  onnx.checker.check_model(model)
  return model


def export_onnx(network: Network, path: str | os.PathLike,
                dtype=np.float32) -> None:
  """Writes `network` as an ONNX file (atomically)."""
  from robust_prune import io as io_lib  # pylint: disable=g-import-not-at-top
  model = network_to_model(network, dtype)
  path = os.fspath(path)
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  io_lib.atomic_write(path, model.SerializeToString())


def import_onnx(path: str | os.PathLike) -> Network:
  """The float64 `Network` an ONNX ReLU MLP computes; OnnxFormatError naming
  the file and the problem otherwise."""
  onnx = _onnx()
  path = os.fspath(path)
  if not os.path.isfile(path):
    raise OnnxFormatError(f"ONNX file not found: {path}")
  try:
    model = onnx.load(path)
  except Exception as e:  # pylint: disable=broad-except
    raise OnnxFormatError(f"cannot read ONNX file {path}: {e}") from e
  try:
    return model_to_network(model)
  except OnnxFormatError as e:
    raise OnnxFormatError(f"{path}: {e}") from e


def _graph_input(graph, constants):
  """(name, number of elements) of the one graph input with no initializer
  (older exporters list every initializer among the inputs too)."""
  real = [i for i in graph.input if i.name not in constants]
  if len(real) != 1:
    raise OnnxFormatError(f"need exactly one graph input without an "
                          f"initializer, found {[i.name for i in real]}")
  tensor = real[0].type.tensor_type
  if tensor.elem_type not in _FLOAT_TYPES:
    raise OnnxFormatError(f"input {real[0].name!r} has element type "
                          f"{tensor.elem_type}; need float or double")
  dims = [d.dim_value if d.HasField("dim_value") else 1
          for d in tensor.shape.dim]
  size = int(np.prod([d for d in dims if d > 0])) if dims else 0
  if size < 1:
    raise OnnxFormatError(f"input {real[0].name!r} has no usable shape {dims}")
  return real[0].name, size


class _Affine:
  """The current tensor as `h @ a + c` of the last ReLU's output h (`a` None:
  the identity, kept implicit so a wide input costs no n x n matrix)."""

  def __init__(self, size: int):
    self.size = size
    self.a = None
    self.c = np.zeros(size)
    self.identity = True     # a = I, c = 0 exactly (nothing since the ReLU)

  def then(self, a=None, c=None):
    """Composes `v -> v @ a + c` after the current map (float64)."""
    if a is not None:
      self.a = a if self.a is None else self.a @ a
      self.c = self.c @ a
      self.size = a.shape[1]
    if c is not None:
      self.c = self.c + c
    self.identity = False

  def scale(self, s):
    """Composes `v -> v * s` (elementwise)."""
    self.a = np.diag(s) if self.a is None else self.a * s
    self.c = self.c * s
    self.identity = False

  def matrix(self):
    return np.eye(self.size) if self.a is None else self.a


def _vector(value, size: int, op: str) -> np.ndarray:
  """A constant operand broadcast to the flat vector of `size` elements."""
  value = np.asarray(value, np.float64)
  if value.size == 1:
    return np.full(size, float(value.reshape(-1)[0]))
  if value.size == size:
    return value.reshape(-1)
  raise OnnxFormatError(f"{op}: a constant of shape {value.shape} does not "
                        f"broadcast to {size} elements elementwise")


def _gemm(node, operands, attrs, affine: _Affine):
  if attrs.get("transA", 0):
    raise OnnxFormatError(f"Gemm {node.name!r}: transA=1 is not supported")
  b = np.asarray(operands[1], np.float64)
  if b.ndim != 2:
    raise OnnxFormatError(f"Gemm {node.name!r}: B must be a matrix")
  b = b.T if attrs.get("transB", 0) else b
  if b.shape[0] != affine.size:
    raise OnnxFormatError(f"Gemm {node.name!r}: B has {b.shape[0]} rows, "
                          f"the input has {affine.size} elements")
  c = None
  if len(operands) > 2 and operands[2] is not None:
    c = attrs.get("beta", 1.0) * _vector(operands[2], b.shape[1], "Gemm")
  affine.then(a=attrs.get("alpha", 1.0) * b, c=c)


def _elementwise(op, node, operands, current_first, affine: _Affine):
  const = operands[1] if current_first else operands[0]
  if const is None:
    raise OnnxFormatError(f"{op} {node.name!r}: needs one constant operand")
  const = _vector(const, affine.size, op)
  if op == "Add":
    affine.then(c=const)
  elif op == "Sub":
    if current_first:
      affine.then(c=-const)
    else:
      affine.scale(-np.ones(affine.size))
      affine.then(c=const)
  elif op == "Mul":
    affine.scale(const)
  elif op == "Div":
    if not current_first:
      raise OnnxFormatError(f"Div {node.name!r}: a constant divided by the "
                            f"network's value is not affine")
    if np.any(const == 0):
      raise OnnxFormatError(f"Div {node.name!r}: division by zero")
    affine.scale(1.0 / const)


def _attributes(onnx, node) -> dict:
  return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


_SHAPE_OPS = ("Flatten", "Reshape", "Identity", "Dropout", "Squeeze",
              "Unsqueeze")


def model_to_network(model) -> Network:
  """The `Network` of an ONNX ModelProto (see the module docstring)."""
  onnx = _onnx()
  graph = model.graph
  constants = {t.name: onnx.numpy_helper.to_array(t) for t in graph.initializer}
  name, size = _graph_input(graph, constants)
  current, affine = name, _Affine(size)
  layers = []
  for node in graph.node:
    attrs = _attributes(onnx, node)
    if node.op_type == "Constant":
      constants[node.output[0]] = onnx.numpy_helper.to_array(attrs["value"])
      continue
    _step(node, attrs, constants, current, affine, layers)
    current = node.output[0]
    if node.op_type == "Relu":
      affine = _Affine(affine.size)
  outputs = [o.name for o in graph.output]
  if outputs != [current]:
    raise OnnxFormatError(f"the graph's outputs {outputs} are not the end of "
                          f"its one chain of ops ({current!r})")
  if not affine.identity or not layers:
    layers.append((affine.matrix(), affine.c))
  else:
    # the graph ends in a Relu: an identity layer keeps it (see docstring)
    layers.append((np.eye(affine.size), np.zeros(affine.size)))
  return Network(tuple(a for a, _ in layers), tuple(c for _, c in layers))


def _step(node, attrs, constants, current, affine: _Affine, layers: list):
  """Applies one node to the running affine map (or closes a layer)."""
  op = node.op_type
  inputs = list(node.input)
  if current not in inputs:
    raise OnnxFormatError(f"{op} node {node.name!r} does not read the "
                          f"previous op's output {current!r}: not one chain")
  if len(node.output) != 1 and op != "Dropout":
    raise OnnxFormatError(f"{op} node {node.name!r} has several outputs")
  others = [i for i in inputs if i != current and i]
  missing = [i for i in others if i not in constants]
  if missing and op not in ("Reshape",):
    raise OnnxFormatError(f"{op} node {node.name!r}: inputs {missing} are not "
                          f"constants")
  operands = [constants.get(i) if i != current else None for i in inputs]
  if op in _SHAPE_OPS:
    return   # row-major reshapes keep the flat vector as it is
  if op == "Relu":
    if affine.identity and layers:
      return   # relu of a relu's output: nothing to do
    layers.append((affine.matrix(), affine.c))
    return
  if op == "Gemm":
    if inputs[0] != current:
      raise OnnxFormatError(f"Gemm {node.name!r}: the network's value must be "
                            f"input A")
    _gemm(node, operands, attrs, affine)
  elif op == "MatMul":
    if inputs[0] != current or np.ndim(operands[1]) != 2:
      raise OnnxFormatError(f"MatMul {node.name!r}: need value @ constant "
                            f"matrix")
    _gemm(node, [None, operands[1]], {}, affine)
  elif op in ("Add", "Sub", "Mul", "Div") and len(inputs) == 2:
    _elementwise(op, node, operands, inputs[0] == current, affine)
  else:
    named = f" (node {node.name!r})" if node.name else ""
    raise OnnxFormatError(f"unsupported ONNX op {op}{named}; supported: "
                          f"Flatten, Reshape, Gemm, MatMul, Add, Sub, Mul, "
                          f"Div, Relu")
