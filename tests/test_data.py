"""MNIST: IDX parsing, tfds manual-dir fetching, errors, canonical order."""

import gzip
import os
import shutil
import struct
import tempfile

import numpy as np
import pytest

from robust_prune import data as data_lib


def _write_idx_gz(path, array):
  header = struct.pack(">HBB", 0, 0x08, array.ndim)
  header += struct.pack(f">{array.ndim}I", *array.shape)
  with gzip.open(path, "wb") as f:
    f.write(header + array.astype(np.uint8).tobytes())


def test_parse_idx_round_trip(tmp_path):
  rng = np.random.default_rng(0)
  images = rng.integers(0, 256, (5, 28, 28), dtype=np.uint8)
  labels = np.array([3, 1, 4, 1, 5], np.uint8)
  _write_idx_gz(tmp_path / "img.gz", images)
  _write_idx_gz(tmp_path / "lbl.gz", labels)
  split = data_lib.images_and_labels(str(tmp_path / "img.gz"),
                                     str(tmp_path / "lbl.gz"))
  assert split.images.shape == (5, 784) and split.images.dtype == np.float32
  np.testing.assert_array_equal(split.images,
                                images.reshape(5, -1).astype(np.float32) / 255)
  np.testing.assert_array_equal(split.labels, [3, 1, 4, 1, 5])
  assert split.labels.dtype == np.int32


@pytest.mark.parametrize("raw, message", [
    (b"\x00\x00", "too short"),
    (b"\x00\x00\x0d\x01" + struct.pack(">I", 3) + b"abc", "unsigned-byte"),
    (b"\x00\x00\x08\x02" + struct.pack(">I", 2), "truncated"),
    (b"\x00\x00\x08\x01" + struct.pack(">I", 5) + b"abc", "payload has 3"),
])
def test_parse_idx_rejects_malformed(raw, message):
  with pytest.raises(data_lib.MnistDataError, match=message):
    data_lib.parse_idx(raw, "x.idx")


def test_image_label_count_mismatch(tmp_path):
  _write_idx_gz(tmp_path / "img.gz", np.zeros((3, 28, 28)))
  _write_idx_gz(tmp_path / "lbl.gz", np.zeros(2))
  with pytest.raises(data_lib.MnistDataError, match="expected"):
    data_lib.images_and_labels(str(tmp_path / "img.gz"), str(tmp_path / "lbl.gz"))


def test_missing_files_name_all_four_and_the_folder(tmp_path):
  with pytest.raises(data_lib.MnistDataError) as e:
    data_lib.fetch_archives(str(tmp_path), download_dir=str(tmp_path / "dl"))
  message = str(e.value)
  assert str(tmp_path) in message
  for name in data_lib.MNIST_FILES:
    assert name in message


def _manual_dir_with_damaged(tmp_path, damaged: str):
  """A copy of the MNIST manual dir whose archive `damaged` has extra bytes."""
  manual = tmp_path / "manual"
  manual.mkdir()
  shared = os.environ["MNIST_MANUAL_DIR"]
  for name in data_lib.MNIST_FILES:
    shutil.copy(os.path.join(shared, name), manual / name)
  with open(manual / damaged, "ab") as f:
    f.write(b"corrupt")
  return manual


def test_corrupt_archive_fails_checksum_with_its_path(tmp_path):
  manual = _manual_dir_with_damaged(tmp_path, "t10k-labels-idx1-ubyte.gz")
  with pytest.raises(data_lib.MnistDataError, match="checksum") as e:
    data_lib.load_split("test", str(manual), cache_dir=str(tmp_path / "cache"))
  assert "t10k-labels-idx1-ubyte.gz" in str(e.value)
  # one line naming only the damaged file (tfds printed ~12 lines)
  assert "\n" not in str(e.value)
  assert "t10k-images" not in str(e.value)


def test_a_checksum_error_prints_nothing_but_its_line(tmp_path, capfd):
  manual = _manual_dir_with_damaged(tmp_path, "t10k-images-idx3-ubyte.gz")
  capfd.readouterr()
  with pytest.raises(data_lib.MnistDataError):
    data_lib.load_split("test", str(manual), cache_dir=str(tmp_path / "cache"))
  out, err = capfd.readouterr()
  assert "Dl Size" not in out + err and "Skipping download" not in err


def test_canonical_test_order(mnist_test):
  assert mnist_test.images.shape == (10000, 784)
  assert mnist_test.images.min() == 0.0 and mnist_test.images.max() == 1.0
  assert mnist_test.labels[0] == 7 and mnist_test.labels[1] == 2
  np.testing.assert_array_equal(np.bincount(mnist_test.labels[:100], minlength=10),
                                [8, 14, 8, 11, 14, 7, 10, 15, 2, 11])


def test_cache_returns_identical_arrays(tmp_path):
  first = data_lib.load_split("test", cache_dir=str(tmp_path))
  assert any(p.suffix == ".npz" for p in tmp_path.iterdir())
  second = data_lib.load_split("test", cache_dir=str(tmp_path))
  np.testing.assert_array_equal(first.images, second.images)
  np.testing.assert_array_equal(first.labels, second.labels)


@pytest.mark.parametrize("damage", ["truncated", "wrong_shape",
                                    "labels_shifted", "nan_pixels",
                                    "pixels_7", "float_copy"])
def test_a_damaged_cache_is_rebuilt(tmp_path, damage):
  first = data_lib.load_split("test", cache_dir=str(tmp_path))
  (cache,) = [p for p in tmp_path.iterdir() if p.suffix == ".npz"]
  if damage == "truncated":  # e.g. a full disk cut the write short
    cache.write_bytes(cache.read_bytes()[:len(cache.read_bytes()) // 2])
  else:
    with np.load(cache) as data:
      images, labels = data["images"], data["labels"]
    if damage == "wrong_shape":
      images, labels = images[:5], labels[:5]
    elif damage == "labels_shifted":   # issue 17: every image "misclassified"
      labels = np.roll(labels, 1)
    elif damage == "nan_pixels":
      images = images.astype(np.float32)
      images[0, 0, 0] = np.nan
    elif damage == "pixels_7":
      images = images.astype(np.float32) / 255.0
      images[0, 0, 0] = 7.0
    else:   # right values, but not the raw bytes the cache holds
      images = images.astype(np.float32)
    with open(cache, "wb") as f:
      np.savez(f, images=images, labels=labels)
  again = data_lib.load_split("test", cache_dir=str(tmp_path))
  assert again.images.shape == (10000, 784)
  np.testing.assert_array_equal(again.labels, first.labels)


def test_an_unwritable_cache_is_a_warning(tmp_path, monkeypatch):
  def read_only(*args, **kwargs):
    raise PermissionError(13, "Permission denied")
  monkeypatch.setattr(tempfile, "mkstemp", read_only)
  with pytest.warns(UserWarning, match="Permission denied"):
    split = data_lib.load_split("test", cache_dir=str(tmp_path))
  assert split.labels[0] == 7


def test_a_full_cache_disk_is_a_warning_and_leaves_no_temporary(
    tmp_path, monkeypatch):
  def full_disk(fd):
    raise OSError(28, "No space left on device")
  monkeypatch.setattr(os, "fsync", full_disk)
  with pytest.warns(UserWarning, match="No space left"):
    split = data_lib.load_split("test", cache_dir=str(tmp_path))
  assert split.labels[1] == 2
  assert not [p.name for p in tmp_path.iterdir() if p.is_file()]
