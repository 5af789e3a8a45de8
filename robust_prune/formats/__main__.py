"""Converts between network.npz and ONNX, and writes VNN-LIB robustness
properties for MNIST test images, so other tools can check our networks.

  python -m robust_prune.formats --network=NET.npz --onnx=NET.onnx
      exports network.npz as ONNX (Flatten, Gemm, Relu; float32).
  python -m robust_prune.formats --onnx=NET.onnx --network=NET.npz --import
      imports an ONNX ReLU MLP into network.npz (float32; refused when that
      would round a weight, e.g. folded normalisation, unless --round).
  python -m robust_prune.formats --network=NET.npz --onnx=NET.onnx \
      --properties=DIR --images=0,1,2 --epsilons=0.03,0.05 --timeout=120
      also writes DIR/prop_I_EPS.vnnlib (mnistfc's kind: the L-inf ball around
      MNIST test image I intersected with [0, 1]; a counterexample has another
      logit >= the label's) and DIR/instances.csv.
"""

import os

import numpy as np
from absl import flags

from robust_prune import cli
from robust_prune import io as io_lib
from robust_prune import network as network_lib
from robust_prune.formats import onnx_io, vnnlib

FLAGS = flags.FLAGS
flags.DEFINE_string("network", None, "network.npz (read, or written with "
                    "--import).")
flags.DEFINE_string("onnx", None, "The ONNX file (written, or read with "
                    "--import).")
flags.DEFINE_bool("import", False, "ONNX -> network.npz instead.")
flags.DEFINE_bool("round", False, "With --import: accept rounding float64 "
                  "weights to float32.")
flags.DEFINE_string("properties", None, "Folder for VNN-LIB properties and "
                    "instances.csv (optional).")
flags.DEFINE_list("images", ["0"], "MNIST test image indices.")
flags.DEFINE_list("epsilons", ["0.03", "0.05"], "L-inf radii.")
flags.DEFINE_float("timeout", 120.0, "Timeout per instance in instances.csv.")


def import_to_npz(onnx_path: str, npz_path: str, allow_rounding: bool):
  network = onnx_io.import_onnx(onnx_path)
  rounded = network.astype(np.float32)
  exact = all(np.array_equal(a, b.astype(np.float64)) for a, b in zip(
      network.weights + network.biases, rounded.weights + rounded.biases))
  if not exact and not allow_rounding:
    raise ValueError(f"{onnx_path}: its weights (after folding) are not all "
                     f"float32 numbers; network.npz would round them (pass "
                     f"--round to accept)")
  network_lib.save_network(rounded, npz_path)


def write_properties(network, onnx_name: str, folder: str, images, epsilons,
                     timeout: float):
  """prop_I_EPS.vnnlib per image and radius, and instances.csv."""
  from robust_prune import data  # pylint: disable=g-import-not-at-top
  test = data.load_split("test")
  os.makedirs(folder, exist_ok=True)
  rows = []
  for eps in epsilons:
    for i in images:
      if not 0 <= i < len(test.labels):
        raise ValueError(f"--images: {i} is not a test image index")
      text = vnnlib.robustness_property(
          test.images[i], int(test.labels[i]), float(eps),
          network.num_classes)
      name = f"prop_{i}_{eps}.vnnlib"
      io_lib.atomic_write(os.path.join(folder, name), text)
      rows.append(f"{onnx_name},{name},{timeout:g}")
  io_lib.atomic_write(os.path.join(folder, "instances.csv"),
                      "\n".join(rows) + "\n")


def main(argv):
  del argv
  if not FLAGS.network or not FLAGS.onnx:
    raise ValueError("--network and --onnx are required")
  if FLAGS["import"].value:
    import_to_npz(FLAGS.onnx, FLAGS.network, FLAGS.round)
    return
  network = network_lib.load_network(FLAGS.network)
  onnx_io.export_onnx(network, FLAGS.onnx)
  if FLAGS.properties:
    if network.input_dim != network_lib.MNIST_INPUTS:
      raise ValueError(f"{FLAGS.network}: properties are written for MNIST "
                       f"networks (784 inputs), not {network.input_dim}")
    if not FLAGS.timeout > 0:
      raise ValueError(f"--timeout must be positive, got {FLAGS.timeout}")
    onnx_name = os.path.relpath(os.path.abspath(FLAGS.onnx),
                                os.path.abspath(FLAGS.properties))
    write_properties(network, onnx_name, FLAGS.properties,
                     [int(i) for i in FLAGS.images],
                     [float(e) for e in FLAGS.epsilons], FLAGS.timeout)


if __name__ == "__main__":
  cli.run(main, cli.USER_ERRORS + (onnx_io.OnnxFormatError,))
