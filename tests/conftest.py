"""Test-wide setup: JAX on CPU, MNIST from the shared manual dir when present."""

import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")
_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_SHARED_MNIST = os.path.normpath(
    os.path.join(_REPO, "..", "shared", "data", "mnist"))
# The shared offline copy when it is there; else tfds downloads (online).
if "MNIST_MANUAL_DIR" not in os.environ and os.path.isdir(_SHARED_MNIST):
  os.environ["MNIST_MANUAL_DIR"] = _SHARED_MNIST

import pytest  # pylint: disable=g-import-not-at-top,wrong-import-position

from robust_prune import data as data_lib  # pylint: disable=wrong-import-position


@pytest.fixture(scope="session")
def mnist_test():
  """The canonical MNIST test split (parsed once per session, then cached)."""
  return data_lib.load_split("test")


@pytest.fixture(scope="session")
def mnist_train():
  return data_lib.load_split("train")
