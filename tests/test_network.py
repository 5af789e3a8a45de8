"""network.npz export: round trip, validation, and forward agreement."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from robust_prune import models
from robust_prune import network as network_lib


@pytest.fixture(scope="module")
def flax_mlp():
  model = models.MLP(hidden=(32, 16))
  params = model.init(jax.random.key(0), jnp.zeros((1, 784)))
  return model, params


def test_round_trip_and_three_forwards_agree(tmp_path, flax_mlp, mnist_test):
  model, params = flax_mlp
  net = network_lib.network_from_params(params)
  assert net.hidden_widths == (32, 16) and net.num_classes == 10
  path = tmp_path / "network.npz"
  network_lib.save_network(net, path)
  loaded = network_lib.load_network(path)
  with np.load(path) as f:
    assert sorted(f.files) == ["W_0", "W_1", "W_2", "b_0", "b_1", "b_2"]
    assert f["W_0"].shape == (784, 32) and f["W_0"].dtype == np.float32
  x = mnist_test.images[:64]
  numpy_logits = network_lib.forward(loaded, x)
  flax_logits = np.asarray(model.apply(params, jnp.asarray(x)))
  reloaded_params = network_lib.params_from_network(loaded)
  jax_logits = np.asarray(models.MLP(hidden=loaded.hidden_widths).apply(
      jax.tree.map(jnp.asarray, reloaded_params), jnp.asarray(x)))
  np.testing.assert_allclose(numpy_logits, flax_logits, atol=1e-5)
  np.testing.assert_allclose(jax_logits, flax_logits, atol=1e-5)
  # The hidden pre-activations are what the MILP encodes.
  _, hidden = network_lib.forward(loaded, x, return_hidden=True)
  assert [h.shape[1] for h in hidden] == [32, 16]


def _arrays(net):
  out = {}
  for i, (w, b) in enumerate(zip(net.weights, net.biases)):
    out[f"W_{i}"], out[f"b_{i}"] = w, b
  return out


@pytest.mark.parametrize("mutate, message", [
    (lambda a: a.pop("b_1"), "missing bias"),
    (lambda a: a.pop("W_0"), "W_0"),
    (lambda a: a.update(W_1=np.zeros((31, 16), np.float32)), "fan_in"),
    (lambda a: a.update(b_2=np.zeros(9, np.float32)), "b_2"),
    (lambda a: a.update(W_2=np.full((16, 10), np.nan, np.float32)), "non-finite"),
    (lambda a: a.update(b_3=np.zeros(10, np.float32)), "unknown keys"),
    (lambda a: a.update(mask_0=np.ones(32, np.float32)), "unknown keys"),
    (lambda a: a.update(W_2=a["W_2"] + 1j), "need real numbers"),
    (lambda a: a.update(b_0=np.array(["x"] * 32)), "need real numbers"),
    (lambda a: a.update(W_0=a["W_0"][:, :0], b_0=a["b_0"][:0],
                        W_1=a["W_1"][:0]), "at least one"),
])
def test_malformed_files_are_rejected(tmp_path, flax_mlp, mutate, message):
  arrays = _arrays(network_lib.network_from_params(flax_mlp[1]))
  mutate(arrays)
  path = tmp_path / "bad.npz"
  np.savez(path, **arrays)
  with pytest.raises(network_lib.NetworkFormatError, match=message):
    network_lib.load_network(path)


def test_unreadable_and_missing_files(tmp_path):
  (tmp_path / "junk.npz").write_bytes(b"not a zip")
  with pytest.raises(network_lib.NetworkFormatError, match="cannot read"):
    network_lib.load_network(tmp_path / "junk.npz")
  with pytest.raises(network_lib.NetworkFormatError, match="not found"):
    network_lib.load_network(tmp_path / "absent.npz")


@pytest.mark.parametrize("inputs, classes", [(5, 10), (784, 3)])
def test_non_mnist_shapes_are_rejected_where_mnist_is_fed(tmp_path, inputs,
                                                          classes):
  rng = np.random.default_rng(0)
  net = network_lib.Network(
      (rng.normal(size=(inputs, 8)).astype(np.float32),
       rng.normal(size=(8, classes)).astype(np.float32)),
      (np.zeros(8, np.float32), np.zeros(classes, np.float32)))
  path = tmp_path / "odd.npz"
  network_lib.save_network(net, path)
  assert network_lib.load_network(path).input_dim == inputs  # a valid file
  with pytest.raises(network_lib.NetworkFormatError,
                     match=f"maps {inputs} inputs to {classes} logits"):
    network_lib.load_mnist_network(path)


def test_apply_fn_of_a_network_matches_its_forward(flax_mlp, mnist_test):
  """models.apply_fn / flax_params: the one Network -> Flax conversion."""
  net = network_lib.network_from_params(flax_mlp[1])
  apply_fn = models.apply_fn(net)
  assert apply_fn is models.apply_fn(net) or apply_fn == models.apply_fn(net)
  x = mnist_test.images[:64]
  logits = np.asarray(apply_fn(models.flax_params(net), jnp.asarray(x)))
  np.testing.assert_allclose(logits, network_lib.forward(net, x), atol=1e-5)


def test_save_leaves_no_temporary_when_the_write_fails(tmp_path, flax_mlp,
                                                       monkeypatch):
  from robust_prune import io as io_lib  # pylint: disable=g-import-not-at-top
  net = network_lib.network_from_params(flax_mlp[1])

  def fail(*args):
    raise OSError(28, "No space left on device")
  monkeypatch.setattr(io_lib.os, "fsync", fail)
  with pytest.raises(OSError):
    network_lib.save_network(net, tmp_path / "network.npz")
  assert list(tmp_path.iterdir()) == []
