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
import hashlib
import io as io_lib
import os
import struct
import warnings
import zipfile

from absl import logging
import numpy as np

from robust_prune import io

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
# sha256 of the parsed uint8 images followed by the labels, per split: what a
# cache must hold to be used (the archives' checksums cover only the archives).
CONTENT_SHA256 = {
    "train": "edc0d1098aa497be14ace79ddd5171e5a3dcf9c4d196c015389203eb3ba1f59b",
    "test": "c3f9adf9c66efb572b1f9326c3a511b45910c7173b97be66ceceeeeaef6b802b",
}


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


def read_split_archives(images_path: str, labels_path: str
                        ) -> tuple[np.ndarray, np.ndarray]:
  """The uint8 images (N, rows, cols) and labels (N,) of two IDX archives."""
  images = read_idx_gz(images_path)
  labels = read_idx_gz(labels_path)
  if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
    raise MnistDataError(
        f"{images_path} / {labels_path}: expected (N, rows, cols) images and "
        f"(N,) labels, got {images.shape} and {labels.shape}")
  return images, labels


def images_and_labels(images_path: str, labels_path: str) -> Split:
  return _split_from_bytes(*read_split_archives(images_path, labels_path))


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
  # tfds' progress bars and per-file log lines would bury a one-line error.
  tfds.display_progress_bar(False)
  verbosity = logging.get_verbosity()
  logging.set_verbosity(logging.WARNING)
  try:
    paths = manager.download(urls)
  except download_manager.NonMatchingChecksumError as e:
    raise MnistDataError(_checksum_message(manual_dir) or
                         f"MNIST checksum mismatch: {e}") from e
  except Exception as e:  # network errors come in many types
    raise MnistDataError(
        f"could not download MNIST from {MNIST_URL} ({type(e).__name__}: {e}); "
        f"offline, point --mnist_manual_dir or ${MANUAL_DIR_ENV} at a folder "
        f"holding {', '.join(MNIST_FILES)}") from e
  finally:
    logging.set_verbosity(verbosity)
  return {name: os.fspath(path) for name, path in paths.items()}


def _checksum_message(manual_dir: str | None) -> str | None:
  """One line naming each manual-dir archive whose sha256 is not MNIST's."""
  if manual_dir is None:
    return None
  wrong = []
  for name, (size, sha) in MNIST_FILES.items():
    path = os.path.join(manual_dir, name)
    with open(path, "rb") as f:
      got = hashlib.sha256(f.read()).hexdigest()
    if got != sha:
      wrong.append(f"{path} has sha256 {got[:16]}... ({os.path.getsize(path)}"
                   f" bytes), expected {sha[:16]}... ({size} bytes)")
  return ("MNIST checksum mismatch: " + "; ".join(wrong)) if wrong else None


def _content_digest(images: np.ndarray, labels: np.ndarray) -> str:
  digest = hashlib.sha256(np.ascontiguousarray(images, np.uint8).tobytes())
  digest.update(np.ascontiguousarray(labels, np.uint8).tobytes())
  return digest.hexdigest()


def _split_from_bytes(images: np.ndarray, labels: np.ndarray) -> Split:
  return Split(
      images=images.reshape(len(images), -1).astype(np.float32) / 255.0,
      labels=labels.astype(np.int32))


def _read_cache(cache_path: str, split: str) -> Split | None:
  """The cached split, or None when the cache is missing or not exactly the
  canonical bytes (cut short, edited, shifted labels, odd pixels)."""
  try:
    with np.load(cache_path, allow_pickle=False) as data:
      images, labels = data["images"], data["labels"]
  except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
    return None
  if (images.dtype != np.uint8 or labels.dtype != np.uint8
      or images.shape != (SPLIT_SIZES[split], 28, 28)
      or labels.shape != (SPLIT_SIZES[split],)
      or _content_digest(images, labels) != CONTENT_SHA256[split]):
    return None
  return _split_from_bytes(images, labels)


def _write_cache(cache_path: str, images: np.ndarray, labels: np.ndarray):
  """Best effort: an unwritable or full cache folder is a warning (the data
  are in memory already), and no temporary is left behind."""
  try:
    os.makedirs(os.path.dirname(cache_path), exist_ok=True)
    buffer = io_lib.BytesIO()
    np.savez(buffer, images=images, labels=labels)
    io.atomic_write(cache_path, buffer.getvalue())
  except OSError as e:
    warnings.warn(f"MNIST cache not written ({cache_path}: {e.strerror or e}); "
                  f"set ${CACHE_DIR_ENV} to a writable folder to cache it",
                  stacklevel=3)


def load_split(split: str, manual_dir: str | None = None,
               cache_dir: str | None = None) -> Split:
  """MNIST `train` or `test` in canonical IDX order, cached as raw bytes.

  The cache is keyed by the archives' sha256 (tfds verifies that the archives
  read have exactly those) and is used only if its content has the canonical
  digest, so a damaged or edited cache is rebuilt, never trusted.
  """
  if split not in SPLIT_FILES:
    raise ValueError(f"unknown split {split!r}; use 'train' or 'test'")
  cache_dir = cache_dir or default_cache_dir()
  images_name, labels_name = SPLIT_FILES[split]
  key = MNIST_FILES[images_name][1][:16] + MNIST_FILES[labels_name][1][:16]
  cache_path = os.path.join(cache_dir, f"mnist_{split}_{key}_u8.npz")
  cached = _read_cache(cache_path, split)
  if cached is not None:
    return cached
  paths = fetch_archives(manual_dir,
                         download_dir=os.path.join(cache_dir, "downloads"))
  images, labels = read_split_archives(paths[images_name], paths[labels_name])
  if (images.shape != (SPLIT_SIZES[split], 28, 28)
      or labels.shape != (SPLIT_SIZES[split],)
      or _content_digest(images, labels) != CONTENT_SHA256[split]):
    raise MnistDataError(
        f"{paths[images_name]} / {paths[labels_name]}: not the canonical MNIST "
        f"{split} split (shapes {images.shape}, {labels.shape})")
  _write_cache(cache_path, images, labels)
  return _split_from_bytes(images, labels)


def load_mnist(manual_dir: str | None = None,
               cache_dir: str | None = None) -> tuple[Split, Split]:
  return (load_split("train", manual_dir, cache_dir),
          load_split("test", manual_dir, cache_dir))
