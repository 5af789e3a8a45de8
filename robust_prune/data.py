"""MNIST in canonical IDX order, fetched by tensorflow-datasets' download manager.

tfds' `DownloadManager` downloads the four archives with checksum verification
when online, or takes them from a *manual dir* when offline (these machines are
offline: tests and CI point `MNIST_MANUAL_DIR` at `../shared/data/mnist`).
We parse the IDX files ourselves: the prepared `tfds.load('mnist')` splits are
reordered, and "the first 100 test images" must be the canonical ones.
TensorFlow itself is never imported.
"""

from __future__ import annotations

import dataclasses
import gzip
import os
import struct
import tempfile
import zipfile

import numpy as np

MNIST_URL = "https://storage.googleapis.com/cvdf-datasets/mnist/"
# name -> (size in bytes, sha256): tfds' registered checksums for `mnist`.
MNIST_FILES = {
    "train-images-idx3-ubyte.gz": (
        9912422, "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609"),
    "train-labels-idx1-ubyte.gz": (
        28881, "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c"),
    "t10k-images-idx3-ubyte.gz": (
        1648877, "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6"),
    "t10k-labels-idx1-ubyte.gz": (
        4542, "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6"),
}
SPLIT_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
MANUAL_DIR_ENV = "MNIST_MANUAL_DIR"
CACHE_DIR_ENV = "ROBUST_PRUNE_CACHE"
NUM_PIXELS = 28 * 28
SPLIT_SIZES = {"train": 60000, "test": 10000}


class MnistDataError(RuntimeError):
  """MNIST could not be obtained: missing files, bad checksum, bad IDX."""


@dataclasses.dataclass(frozen=True)
class Split:
  images: np.ndarray  # (N, 784) float32 in [0, 1]
  labels: np.ndarray  # (N,) int32

  def __len__(self):
    return len(self.labels)


def default_cache_dir() -> str:
  return os.environ.get(CACHE_DIR_ENV) or os.path.join(
      os.path.expanduser("~"), ".cache", "robust_prune")


def resolve_manual_dir(manual_dir: str | None) -> str | None:
  """The flag wins over the environment variable; empty means "download"."""
  manual_dir = manual_dir or os.environ.get(MANUAL_DIR_ENV) or None
  return os.path.abspath(os.path.expanduser(manual_dir)) if manual_dir else None


# ----------------------------------------------------------------- IDX parsing
_IDX_DTYPES = {0x08: np.uint8}


def parse_idx(raw: bytes, source: str = "<bytes>") -> np.ndarray:
  """Parses an (uncompressed) IDX file: magic 0x0000TTDD, DD int32 dims."""
  if len(raw) < 4:
    raise MnistDataError(f"{source}: too short for an IDX header")
  zero, type_code, ndim = struct.unpack(">HBB", raw[:4])
  if zero != 0 or type_code not in _IDX_DTYPES or ndim == 0:
    raise MnistDataError(f"{source}: not an unsigned-byte IDX file "
                         f"(magic {raw[:4].hex()})")
  header = 4 + 4 * ndim
  if len(raw) < header:
    raise MnistDataError(f"{source}: truncated IDX header")
  shape = struct.unpack(f">{ndim}I", raw[4:header])
  count = int(np.prod(shape))
  if len(raw) - header != count:
    raise MnistDataError(f"{source}: IDX header says {shape} ({count} bytes) "
                         f"but the payload has {len(raw) - header} bytes")
  return np.frombuffer(raw, _IDX_DTYPES[type_code], count, header).reshape(shape)


def read_idx_gz(path: str) -> np.ndarray:
  try:
    with gzip.open(path, "rb") as f:
      raw = f.read()
  except (OSError, EOFError) as e:
    raise MnistDataError(f"{path}: cannot decompress: {e}") from e
  return parse_idx(raw, path)


def images_and_labels(images_path: str, labels_path: str) -> Split:
  images = read_idx_gz(images_path)
  labels = read_idx_gz(labels_path)
  if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
    raise MnistDataError(
        f"{images_path} / {labels_path}: expected (N, rows, cols) images and "
        f"(N,) labels, got {images.shape} and {labels.shape}")
  return Split(
      images=(images.reshape(len(images), -1).astype(np.float32) / 255.0),
      labels=labels.astype(np.int32))


# ----------------------------------------------------------------- fetching
def fetch_archives(manual_dir: str | None = None,
                   download_dir: str | None = None) -> dict[str, str]:
  """Paths of the four verified archives, via tfds' DownloadManager.

  With a manual dir the files must be there (no network is tried); without one
  they are downloaded. Either way tfds checks size and sha256.
  """
  manual_dir = resolve_manual_dir(manual_dir)
  if manual_dir is not None:
    missing = [n for n in MNIST_FILES
               if not os.path.isfile(os.path.join(manual_dir, n))]
    if missing:
      raise MnistDataError(
          f"MNIST files missing from the manual dir {manual_dir}: "
          f"{', '.join(missing)} (it must hold all four of "
          f"{', '.join(MNIST_FILES)}; set --mnist_manual_dir or "
          f"${MANUAL_DIR_ENV}, or leave both unset to download)")
  # Imported here: tfds is slow to import and only this function needs it.
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  from tensorflow_datasets.core.download import checksums  # pylint: disable=g-import-not-at-top
  from tensorflow_datasets.core.download import download_manager  # pylint: disable=g-import-not-at-top
  urls = {name: MNIST_URL + name for name in MNIST_FILES}
  url_infos = {
      MNIST_URL + name: checksums.UrlInfo(size=size, checksum=sha, filename=name)
      for name, (size, sha) in MNIST_FILES.items()}
  download_dir = download_dir or os.path.join(default_cache_dir(), "downloads")
  manager = tfds.download.DownloadManager(
      download_dir=download_dir, manual_dir=manual_dir, url_infos=url_infos)
  try:
    paths = manager.download(urls)
  except download_manager.NonMatchingChecksumError as e:
    raise MnistDataError(f"MNIST checksum mismatch: {e}") from e
  except Exception as e:  # network errors come in many types
    raise MnistDataError(
        f"could not download MNIST from {MNIST_URL} ({type(e).__name__}: {e}); "
        f"offline, point --mnist_manual_dir or ${MANUAL_DIR_ENV} at a folder "
        f"holding {', '.join(MNIST_FILES)}") from e
  return {name: os.fspath(path) for name, path in paths.items()}


def load_split(split: str, manual_dir: str | None = None,
               cache_dir: str | None = None) -> Split:
  """MNIST `train` or `test` in canonical IDX order, cached as parsed arrays.

  The cache key is the archives' sha256, so a cache never outlives its source.
  """
  if split not in SPLIT_FILES:
    raise ValueError(f"unknown split {split!r}; use 'train' or 'test'")
  cache_dir = cache_dir or default_cache_dir()
  images_name, labels_name = SPLIT_FILES[split]
  key = MNIST_FILES[images_name][1][:16] + MNIST_FILES[labels_name][1][:16]
  cache_path = os.path.join(cache_dir, f"mnist_{split}_{key}.npz")
  if os.path.isfile(cache_path):
    try:
      with np.load(cache_path) as data:
        cached = Split(data["images"], data["labels"])
      if (cached.images.shape == (SPLIT_SIZES[split], NUM_PIXELS)
          and cached.labels.shape == (SPLIT_SIZES[split],)):
        return cached
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
      pass  # a broken cache (e.g. cut short by a full disk) is rebuilt below
  paths = fetch_archives(manual_dir,
                         download_dir=os.path.join(cache_dir, "downloads"))
  result = images_and_labels(paths[images_name], paths[labels_name])
  os.makedirs(cache_dir, exist_ok=True)
  fd, tmp = tempfile.mkstemp(dir=cache_dir, suffix=".npz.tmp")
  with os.fdopen(fd, "wb") as f:
    np.savez(f, images=result.images, labels=result.labels)
  os.replace(tmp, cache_path)
  return result


def load_mnist(manual_dir: str | None = None,
               cache_dir: str | None = None) -> tuple[Split, Split]:
  return (load_split("train", manual_dir, cache_dir),
          load_split("test", manual_dir, cache_dir))
