"""The old name of the verification binary and its library: everything moved
to `robust_prune.verify` (records, cascade, runner, the binary).

  python -m robust_prune.evaluate ...   same flags as python -m robust_prune.verify

The names below stay importable from here for existing callers; new code
imports them from robust_prune.verify.records / .runner.
"""

from robust_prune.verify.records import (  # pylint: disable=unused-import
    RecordError, Verdict, latest_per_pair, pair_key, read_results)
from robust_prune.verify.runner import (  # pylint: disable=unused-import
    EvaluateError, WorkUnit, WorkerDiedError, plan_work_units, solve_unit,
    verify_images)

if __name__ == "__main__":
  from robust_prune.verify.__main__ import run  # pylint: disable=g-import-not-at-top
  run()
