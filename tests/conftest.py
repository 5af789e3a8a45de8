"""Test-wide setup: JAX on CPU, MNIST from the shared manual dir, a private cache."""

import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")
_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
os.environ.setdefault(
    "MNIST_MANUAL_DIR",
    os.path.normpath(os.path.join(_REPO, "..", "shared", "data", "mnist")))

import pytest  # pylint: disable=g-import-not-at-top,wrong-import-position

from robust_prune import data as data_lib  # pylint: disable=wrong-import-position


@pytest.fixture(scope="session")
def mnist_test():
  """The canonical MNIST test split (parsed once per session, then cached)."""
  return data_lib.load_split("test")


@pytest.fixture(scope="session")
def mnist_train():
  return data_lib.load_split("train")
