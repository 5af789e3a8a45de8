"""Binary entry points: bad input ends in one clear error line, not a traceback
(and not absl's full flag listing, which buries the message)."""

from __future__ import annotations

import os
import signal
import sys
from typing import Callable, Sequence

from absl import app
from absl import flags

from robust_prune import data as data_lib
from robust_prune import io
from robust_prune import network as network_lib

# Errors that mean "the input or the options are wrong", as opposed to bugs.
USER_ERRORS = (ValueError, FileNotFoundError, data_lib.MnistDataError,
               network_lib.NetworkFormatError)


class Interrupted(KeyboardInterrupt):
  """A signal asked the run to stop; results written so far stay."""

  def __init__(self, signum: int):
    super().__init__(signal.Signals(signum).name)
    self.signum = signum


def fail(prog: str, message) -> None:
  """`prog: error: message` on stderr, exit status 2 (a user error)."""
  print(f"{prog}: error: {message}", file=sys.stderr)
  sys.exit(2)


def describe_os_error(e: OSError) -> str:
  """`strerror: path` (a read-only folder, a full disk), no traceback."""
  where = f": {e.filename}" if e.filename else ""
  return f"{e.strerror or e}{where}"


def program_name() -> str:
  prog = os.path.basename(sys.argv[0]).removesuffix(".py")
  if prog in ("__main__", "-c"):
    spec = getattr(sys.modules["__main__"], "__spec__", None)
    prog = spec.name.removesuffix(".__main__") if spec else "robust_prune"
  return prog


def _raise_interrupted(signum, frame):
  raise Interrupted(signum)


def parse_flags_or_fail(argv: list[str]) -> list[str]:
  """absl's parser, but a bad flag value is one line and exit 2."""
  try:
    return flags.FLAGS(argv)
  except flags.Error as e:
    fail(program_name(), e)


def run(main: Callable[[Sequence[str]], None],
        errors: tuple[type[BaseException], ...] = USER_ERRORS):
  """`app.run(main)`, printing `prog: error: message` and exiting 2 on a
  user error or a file-system error (results already written stay on disk;
  every writer here appends or replaces files atomically). SIGTERM and
  Ctrl-C end the run with one line naming the signal, exit 128 + signal."""
  prog = program_name()

  def checked_main(argv):
    if len(argv) > 1:
      fail(prog, f"unexpected arguments {' '.join(argv[1:])}")
    signal.signal(signal.SIGTERM, _raise_interrupted)
    try:
      main(argv)
    except io.LockedError as e:
      fail(prog, e)
    except errors as e:
      fail(prog, e)
    except OSError as e:
      fail(prog, describe_os_error(e))
    except (KeyboardInterrupt, Interrupted) as e:
      signum = getattr(e, "signum", signal.SIGINT)
      print(f"{prog}: interrupted ({signal.Signals(signum).name}); results "
            f"written so far are kept, rerun to resume", file=sys.stderr)
      sys.exit(128 + signum)

  app.run(checked_main, flags_parser=parse_flags_or_fail)
