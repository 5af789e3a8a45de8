"""Child processes die with their parent.

A pool worker or a pipeline's `evaluate` child that outlives a `kill -9` of its
parent blocks forever on a pipe (pool workers) or keeps appending to results
a rerun is writing too. On Linux the kernel's parent-death signal ends them
with the parent; elsewhere a watchdog thread notices the re-parenting.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
import threading
import time

_PR_SET_PDEATHSIG = 1
# Loaded once: die_with_parent may run in a fork's child (a preexec_fn),
# where the less work the better.
_LIBC = (ctypes.CDLL(None, use_errno=True)
         if sys.platform.startswith("linux") else None)


def die_with_parent(sig: int = signal.SIGKILL) -> None:
  """Makes this process receive `sig` when its parent exits. Call it first
  thing in a child (a pool initializer, a subprocess's preexec_fn)."""
  parent = os.getppid()
  if _LIBC is not None:
    _LIBC.prctl(_PR_SET_PDEATHSIG, int(sig), 0, 0, 0)
  else:
    threading.Thread(target=_watch_parent, args=(parent, sig),
                     daemon=True).start()
  if os.getppid() != parent:   # the parent died before prctl took effect
    os.kill(os.getpid(), sig)


def _watch_parent(parent: int, sig: int) -> None:
  while os.getppid() == parent:
    time.sleep(1.0)
  os.kill(os.getpid(), sig)
