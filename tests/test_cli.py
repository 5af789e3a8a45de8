"""Binary entry points: one error line and exit 2 for bad flags and
file-system errors; a signal ends a run with one line naming it."""

import signal
import subprocess
import sys
import textwrap
import time

import pytest

from testing import terminal_sigint

_BINARY = textwrap.dedent("""
    import os, sys, time
    from absl import flags
    from robust_prune import cli, io
    flags.DEFINE_float("rate", 1.0, "a float flag")
    flags.DEFINE_string("out", "", "where to write")
    def main(argv):
      if flags.FLAGS.out == "sleep":
        print("ready", flush=True)
        time.sleep(60)
      io.atomic_write(flags.FLAGS.out, b"x")
    cli.run(main)
""")


def _run(*args, **kwargs):
  return subprocess.run([sys.executable, "-c", _BINARY, *args],
                        capture_output=True, text=True, timeout=120, **kwargs)


def test_a_malformed_flag_value_is_one_line_and_exit_2():
  result = _run("--rate=fast")
  assert result.returncode == 2
  lines = result.stderr.strip().splitlines()
  assert len(lines) == 1 and "error" in lines[0] and "rate" in lines[0]


def test_a_read_only_output_is_one_line_and_exit_2(tmp_path):
  result = _run(f"--out={tmp_path}/missing/dir/file")
  assert result.returncode == 2
  lines = result.stderr.strip().splitlines()
  assert len(lines) == 1 and "No such file or directory" in lines[0]


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_is_one_line_naming_it(sig):
  proc = subprocess.Popen([sys.executable, "-c", _BINARY, "--out=sleep"],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True, preexec_fn=terminal_sigint)
  assert proc.stdout.readline().strip() == "ready"
  time.sleep(0.2)
  proc.send_signal(sig)
  _, err = proc.communicate(timeout=60)
  assert proc.returncode == 128 + sig
  lines = err.strip().splitlines()
  assert len(lines) == 1 and signal.Signals(sig).name in lines[0]
