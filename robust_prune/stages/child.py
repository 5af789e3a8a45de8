"""Running a binary as a child of the pipeline that dies with it."""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Sequence


# The child arms its parent-death signal itself, first thing after exec: a
# preexec_fn would run Python between fork and exec in this multithreaded
# (JAX) process, which can deadlock. If this process died before the signal
# was armed, the child sees another parent and exits at once.
_DIE_WITH_PARENT_THEN_RUN = (
    "import os, runpy, sys\n"
    "from robust_prune import processes\n"
    "processes.die_with_parent()\n"
    "if os.getppid() != int(sys.argv[1]):\n"
    "  os._exit(1)\n"
    "sys.argv = sys.argv[2:]\n"
    "runpy.run_module(sys.argv[0], run_name='__main__', alter_sys=True)\n")


def run_child(module: str, args: Sequence[str]) -> int:
  """Runs `python -m module args` to its end; its exit status. The child
  dies with this process (a kill -9 included), so a rerun never races an
  old child on the same results file; interrupted, it is stopped first."""
  child = subprocess.Popen([sys.executable, "-c", _DIE_WITH_PARENT_THEN_RUN,
                            str(os.getpid()), module, *args])
  try:
    return child.wait()
  finally:
    if child.poll() is None:
      child.terminate()   # it stops its own workers on SIGTERM
      child.wait(timeout=60)
