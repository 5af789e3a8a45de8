"""Files every binary writes: one atomic write, one workdir lock, one config
guard.

* `atomic_write` replaces a file whole or not at all (a crash, a full disk or
  a kill never leaves half a file or a stray temporary), with the mode an
  ordinary `open(..., "w")` would give (umask applied, not mkstemp's 0600).
* `WorkdirLock` is an advisory `flock` on `<path>.lock`: a second run on the
  same folder or results file is refused with one line, and the lock dies
  with its holder (kill -9 included), so no stale lock is ever left to clear.
* `guard_config` is "this folder belongs to one configuration": a rerun with
  another configuration is refused, naming what differs.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import tempfile
from typing import Any, Iterator, Mapping


class LockedError(ValueError):
  """Another live process holds the lock."""


class ConfigMismatchError(ValueError):
  """A folder already holds a run with another configuration."""


def _umask() -> int:
  mask = os.umask(0)
  os.umask(mask)
  return mask


def atomic_write(path: str | os.PathLike, data: bytes | str) -> None:
  """Writes `data` to `path` through a temporary in the same folder, fsynced
  and renamed over it; the temporary is removed on any failure."""
  path = os.fspath(path)
  payload = data.encode() if isinstance(data, str) else data
  directory = os.path.dirname(os.path.abspath(path))
  fd, tmp = tempfile.mkstemp(dir=directory, prefix=".", suffix=".tmp")
  try:
    with os.fdopen(fd, "wb") as f:
      f.write(payload)
      f.flush()
      os.fsync(f.fileno())
    os.chmod(tmp, 0o666 & ~_umask())
    os.replace(tmp, path)
  except BaseException:
    with contextlib.suppress(OSError):
      os.remove(tmp)
    raise


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
  atomic_write(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def read_json(path: str | os.PathLike) -> Any | None:
  """The JSON in `path`, None when there is no such file; a file that is not
  JSON is a ValueError naming it."""
  path = os.fspath(path)
  try:
    with open(path, encoding="utf-8") as f:
      return json.load(f)
  except FileNotFoundError:
    return None
  except (json.JSONDecodeError, UnicodeDecodeError) as e:
    raise ValueError(f"{path}: not a JSON file ({e})") from e


def lock_path(path: str | os.PathLike) -> str:
  """The lock file of a folder (`DIR/.lock`) or of a file (`FILE.lock`)."""
  path = os.path.abspath(os.fspath(path))
  if os.path.isdir(path):
    return os.path.join(path, ".lock")
  return path + ".lock"


class WorkdirLock:
  """Exclusive advisory lock on a folder or results file for one run.

  Use as a context manager, or `acquire()` once for the process's life (the
  kernel drops a `flock` when its holder exits, however it exits)."""

  def __init__(self, path: str | os.PathLike, what: str = "run"):
    self.path = os.fspath(path)
    self.what = what
    self._fd: int | None = None

  def acquire(self) -> "WorkdirLock":
    if self._fd is not None:
      return self
    target = lock_path(self.path)
    os.makedirs(os.path.dirname(target), exist_ok=True)
    fd = os.open(target, os.O_RDWR | os.O_CREAT, 0o666)
    try:
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
      holder = os.pread(fd, 64, 0).decode(errors="replace").strip()
      os.close(fd)
      if e.errno in (errno.EAGAIN, errno.EACCES):
        raise LockedError(
            f"{self.path} is in use by another {self.what} (pid "
            f"{holder or 'unknown'}); wait for it to finish or stop it") from e
      raise
    os.ftruncate(fd, 0)
    os.pwrite(fd, str(os.getpid()).encode(), 0)
    self._fd = fd
    return self

  def release(self) -> None:
    if self._fd is not None:
      os.close(self._fd)   # closing drops the flock
      self._fd = None

  def __enter__(self) -> "WorkdirLock":
    return self.acquire()

  def __exit__(self, *exc) -> None:
    self.release()


def config_diff(old: Mapping[str, Any], new: Mapping[str, Any]) -> dict:
  """{key: (old value, new value)} for every key whose value differs."""
  keys = sorted(set(old) | set(new))
  return {k: (old.get(k), new.get(k)) for k in keys if old.get(k) != new.get(k)}


def guard_config(path: str | os.PathLike, config: Mapping[str, Any], *,
                 replaceable: bool = False) -> None:
  """Writes `config` to `path` unless it already holds another one.

  `replaceable`: nothing has been computed under the stored configuration
  yet (e.g. no epoch checkpointed), so a corrected rerun may replace it."""
  path = os.fspath(path)
  config = json.loads(json.dumps(dict(config)))   # tuples -> lists, as stored
  existing = read_json(path)
  if existing == config:
    return
  if existing is not None and not replaceable:
    if not isinstance(existing, dict):
      raise ConfigMismatchError(f"{path} is not a configuration file")
    raise ConfigMismatchError(
        f"{os.path.dirname(os.path.abspath(path))} holds a run with another "
        f"configuration {config_diff(existing, config)} (old, new); use a "
        f"fresh folder")
  atomic_write_json(path, config)


@contextlib.contextmanager
def locked_workdir(workdir: str | os.PathLike, what: str = "run"
                   ) -> Iterator[str]:
  """Creates `workdir` if needed and holds its lock for the block."""
  workdir = os.fspath(workdir)
  os.makedirs(workdir, exist_ok=True)
  with WorkdirLock(workdir, what):
    yield workdir
