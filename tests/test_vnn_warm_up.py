"""The VNN-LIB decision's warm-up (issue 13): after it, deciding a property
of the same form compiles nothing, so an instance's timeout is not spent
compiling; the runner pays it once per network."""

import dataclasses
import logging
import time

import jax
import numpy as np
import pytest

from robust_prune.formats import decide, instance, onnx_io, vnnlib
from robust_prune.network import Network
from testing import exact_min_spec, row_property

BOX = (np.array([-1.0, -0.5]), np.array([0.5, 1.0]))   # row_property's
SMALL = decide.DecideConfig(bab_batch_size=16)


def _network(seed=7, widths=(2, 5, 6, 3)):
  """Widths no other test uses: its shapes are compiled here first."""
  rng = np.random.default_rng(seed)
  return Network(
      tuple(rng.normal(size=(a, b)).astype(np.float32)
            for a, b in zip(widths, widths[1:])),
      tuple(rng.normal(size=b).astype(np.float32) * 0.5 for b in widths[1:]))


def _compiles(caplog, run) -> list:
  caplog.clear()
  with caplog.at_level(logging.WARNING), jax.log_compiles(True):
    run()
  return [r.getMessage() for r in caplog.records
          if r.getMessage().startswith("Compiling")]


def test_after_the_warm_up_deciding_compiles_nothing(caplog):
  network = _network()
  c = np.random.default_rng(3).normal(size=3)
  exact = exact_min_spec(network, *BOX, c)[0]
  # refined before every search, so every jitted step of decide runs
  config = dataclasses.replace(SMALL, plain_first_fraction=0.0)
  warm = vnnlib.parse_vnnlib_text(row_property(c, exact - 0.5))
  assert _compiles(caplog, lambda: decide.warm_up(network, warm, config))
  assert "warm-up failed" not in caplog.text
  prop = vnnlib.parse_vnnlib_text(row_property(c, exact - 0.02))
  verdicts = []
  compiled = _compiles(caplog, lambda: verdicts.append(decide.decide(
      network, prop, time.monotonic() + 300, config)))
  assert verdicts[0].result == "unsat"
  assert verdicts[0].refuted_by == {0: "bab"}
  assert not compiled, compiled[:3]


def test_a_failing_warm_up_step_is_a_warning(caplog, monkeypatch):
  network = _network()
  prop = vnnlib.parse_vnnlib_text(row_property(np.ones(3), 0.0))

  def broken(*args, **kwargs):
    raise ValueError("planted")
  monkeypatch.setattr(decide.bab_lib, "warm_up", broken)
  with caplog.at_level(logging.WARNING):
    assert decide.warm_up(network, prop, SMALL) >= 0
  assert "warm-up failed (ValueError: planted)" in caplog.text


def test_the_runner_warms_up_each_network_once(tmp_path, monkeypatch):
  network = _network()
  onnx_io.export_onnx(network, tmp_path / "net.onnx")
  (tmp_path / "p.vnnlib").write_text(row_property(np.ones(3), 0.0))
  (tmp_path / "wide.vnnlib").write_text(
      row_property(np.ones(4), 0.0, np.zeros(2), np.ones(2)))
  calls = []
  monkeypatch.setattr(decide, "warm_up", lambda *a: calls.append(a) or 1.0)
  networks = {}
  path = str(tmp_path / "net.onnx")
  with pytest.raises(ValueError, match="outputs"):   # 4 outputs declared
    instance.warm_up_network(path, str(tmp_path / "wide.vnnlib"), networks)
  assert not networks and not calls
  assert instance.warm_up_network(path, str(tmp_path / "p.vnnlib"),
                                  networks) > 0
  assert instance.warm_up_network(path, str(tmp_path / "p.vnnlib"),
                                  networks) == 0.0
  assert len(calls) == 1 and list(networks) == [path]
