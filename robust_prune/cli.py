"""Binary entry points: bad input ends in one clear error line, not a traceback
(and not absl's full flag listing, which buries the message)."""

from __future__ import annotations

import os
import sys
from typing import Callable, Sequence

from absl import app

from robust_prune import data as data_lib
from robust_prune import network as network_lib

# Errors that mean "the input or the options are wrong", as opposed to bugs.
USER_ERRORS = (ValueError, FileNotFoundError, data_lib.MnistDataError,
               network_lib.NetworkFormatError)


def fail(prog: str, message) -> None:
  """`prog: error: message` on stderr, exit status 2 (a user error)."""
  print(f"{prog}: error: {message}", file=sys.stderr)
  sys.exit(2)


def run(main: Callable[[Sequence[str]], None],
        errors: tuple[type[BaseException], ...] = USER_ERRORS):
  """`app.run(main)`, printing `prog: error: message` and exiting 2 on a
  user error (results already written stay on disk; every writer here
  appends or replaces files atomically)."""
  prog = os.path.basename(sys.argv[0]).removesuffix(".py")
  if prog == "__main__":
    prog = (sys.modules["__main__"].__spec__.name
            if getattr(sys.modules["__main__"], "__spec__", None) else "robust_prune")

  def checked_main(argv):
    if len(argv) > 1:
      fail(prog, f"unexpected arguments {' '.join(argv[1:])}")
    try:
      main(argv)
    except errors as e:
      fail(prog, e)

  app.run(checked_main)
