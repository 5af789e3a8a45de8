"""One VNN-COMP instance (an ONNX network, a VNN-LIB property, a timeout),
shared by `python -m robust_prune.vnnlib_verify` and the runner."""

from __future__ import annotations

import dataclasses
import time

import numpy as np

from robust_prune.formats import decide as decide_lib
from robust_prune.formats import onnx_io, vnnlib

# Errors that mean the instance's files are unusable (an `error` result).
INPUT_ERRORS = (onnx_io.OnnxFormatError, vnnlib.VnnlibError, ValueError,
                FileNotFoundError)


@dataclasses.dataclass
class InstanceResult:
  result: str                     # sat | unsat | timeout | unknown | error
  prepare_seconds: float          # reading the network and the property
  run_seconds: float              # deciding
  x: np.ndarray | None = None
  y: np.ndarray | None = None
  message: str = ""


def check_timeout(timeout: float) -> float:
  timeout = float(timeout)
  if not (timeout > 0 and np.isfinite(timeout)):
    raise ValueError(f"--timeout must be a positive number of seconds, got "
                     f"{timeout}")
  return timeout


def run_instance(onnx_path: str, vnnlib_path: str, timeout: float, *,
                 started: float | None = None,
                 config: decide_lib.DecideConfig = decide_lib.DecideConfig(),
                 networks: dict | None = None) -> InstanceResult:
  """Decides the instance by `started + timeout` (time.monotonic(); default
  now): reading the files counts against the timeout too. A verdict that
  arrives after it is a timeout, as the competition would score it. Input
  errors raise (INPUT_ERRORS); `networks` caches imported networks by path."""
  started = time.monotonic() if started is None else started
  deadline = started + check_timeout(timeout)
  t0 = time.monotonic()
  if networks is not None and onnx_path in networks:
    network = networks[onnx_path]
  else:
    network = onnx_io.import_onnx(onnx_path)
    if networks is not None:
      networks[onnx_path] = network
  prop = vnnlib.parse_vnnlib(vnnlib_path)
  decide_lib.check_dimensions(network, prop)
  t1 = time.monotonic()
  verdict = decide_lib.decide(network, prop, deadline, config)
  t2 = time.monotonic()
  result, message = verdict.result, verdict.message
  if t2 > deadline and result in ("sat", "unsat"):
    result, message = "timeout", f"{verdict.result} after the deadline"
  return InstanceResult(result, t1 - t0, t2 - t1, verdict.x, verdict.y,
                        message)


def warm_up_network(onnx_path: str, vnnlib_path: str, networks: dict,
                    config: decide_lib.DecideConfig = decide_lib.DecideConfig()
                    ) -> float:
  """A network's first instance imports it into `networks` and compiles the
  decision's jitted steps at its property's shapes (decide.warm_up), before
  its timeout starts, as VNN-COMP's prepare step allows: the compile is
  paid once per network. Its seconds (0 once the network is cached); input
  errors raise (INPUT_ERRORS)."""
  if onnx_path in networks:
    return 0.0
  t0 = time.monotonic()
  network = onnx_io.import_onnx(onnx_path)
  prop = vnnlib.parse_vnnlib(vnnlib_path)
  decide_lib.check_dimensions(network, prop)
  networks[onnx_path] = network
  decide_lib.warm_up(network, prop, config)
  return time.monotonic() - t0
