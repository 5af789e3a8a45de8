"""The one atomic write, workdir lock and config guard; children that die
with their parent."""

import json
import os
import subprocess
import sys
import textwrap
import time

import pytest

from robust_prune import io


def test_atomic_write_replaces_whole_and_leaves_no_temporary(tmp_path):
  path = tmp_path / "a.json"
  io.atomic_write_json(path, {"x": 1})
  io.atomic_write_json(path, {"x": 2})
  assert json.loads(path.read_text()) == {"x": 2}
  assert sorted(os.listdir(tmp_path)) == ["a.json"]


def test_atomic_write_gives_umask_mode_not_0600(tmp_path):
  old = os.umask(0o022)
  try:
    io.atomic_write(tmp_path / "f", b"data")
  finally:
    os.umask(old)
  assert os.stat(tmp_path / "f").st_mode & 0o777 == 0o644


def test_failed_write_keeps_the_old_file_and_removes_the_temporary(
    tmp_path, monkeypatch):
  path = tmp_path / "f"
  path.write_bytes(b"old")

  def full_disk(fd):
    raise OSError(28, "No space left on device")
  monkeypatch.setattr(os, "fsync", full_disk)
  with pytest.raises(OSError):
    io.atomic_write(path, b"new")
  assert path.read_bytes() == b"old"
  assert os.listdir(tmp_path) == ["f"]


def test_second_lock_is_refused_and_freed_on_release(tmp_path):
  with io.WorkdirLock(tmp_path, "train run"):
    with pytest.raises(io.LockedError, match="in use by another train run"):
      io.WorkdirLock(tmp_path, "train run").acquire()
  with io.WorkdirLock(tmp_path):
    pass


def _hold_lock_in_child(path):
  code = textwrap.dedent(f"""
      import sys, time
      from robust_prune import io
      io.WorkdirLock({str(path)!r}).acquire()
      print("locked", flush=True)
      time.sleep(60)
  """)
  proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE,
                          text=True)
  assert proc.stdout.readline().strip() == "locked"
  return proc


def test_lock_held_by_another_process_dies_with_it(tmp_path):
  out = tmp_path / "results.jsonl"
  proc = _hold_lock_in_child(out)
  try:
    with pytest.raises(io.LockedError, match=f"pid {proc.pid}"):
      io.WorkdirLock(out).acquire()
  finally:
    proc.kill()
    proc.wait()
  io.WorkdirLock(out).acquire().release()   # no stale lock after kill -9


def test_guard_config_refuses_another_config_unless_replaceable(tmp_path):
  path = tmp_path / "config.json"
  io.guard_config(path, {"hidden": (32, 16), "epochs": 3})
  io.guard_config(path, {"hidden": [32, 16], "epochs": 3})   # same, as stored
  with pytest.raises(io.ConfigMismatchError, match="hidden"):
    io.guard_config(path, {"hidden": [16, 8], "epochs": 3})
  assert json.loads(path.read_text())["hidden"] == [32, 16]
  io.guard_config(path, {"hidden": [16, 8], "epochs": 3}, replaceable=True)
  assert json.loads(path.read_text())["hidden"] == [16, 8]


def test_read_json_names_a_bad_file(tmp_path):
  assert io.read_json(tmp_path / "missing.json") is None
  (tmp_path / "bad.json").write_text("{not json")
  with pytest.raises(ValueError, match="bad.json"):
    io.read_json(tmp_path / "bad.json")


def test_child_dies_with_its_parent(tmp_path):
  """A grandchild that called die_with_parent() is gone once its parent is
  killed with SIGKILL (issue 17: orphaned pool workers)."""
  pid_file = tmp_path / "grandchild.pid"
  parent = textwrap.dedent(f"""
      import subprocess, sys, time
      child = subprocess.Popen([sys.executable, "-c",
          "from robust_prune import processes; processes.die_with_parent();"
          "import os, time; open({str(pid_file)!r}, 'w').write(str(os.getpid()));"
          "time.sleep(120)"])
      time.sleep(120)
  """)
  proc = subprocess.Popen([sys.executable, "-c", parent])
  deadline = time.time() + 60
  while not (pid_file.exists() and pid_file.read_text()):
    assert time.time() < deadline
    time.sleep(0.1)
  grandchild = int(pid_file.read_text())
  proc.kill()
  proc.wait()
  deadline = time.time() + 10
  while time.time() < deadline:
    try:
      os.kill(grandchild, 0)
    except ProcessLookupError:
      return
    time.sleep(0.1)
  os.kill(grandchild, 9)
  pytest.fail("the grandchild outlived its killed parent")
