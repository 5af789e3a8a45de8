"""Verification of a network on images: CROWN -> PGD -> branch and bound ->
MILP per (image, target), resumable results files.

  records.py    the Verdict record, its JSON line, results-file read/append
  config.py     VerifyConfig (what a run asks) and the cascade's tolerances
  witness.py    the float64 witness re-check and batched targeted PGD
  cascade.py    one image: the steps in order (verify_image)
  milp_stage.py the MILP step and the Verdict a solver outcome proves
  runner.py     many images: work units, process pool, lock and resume
  __main__.py   the binary, `python -m robust_prune.verify`

Importing this package loads only `records` (no JAX), for readers of
results files.
"""

from robust_prune.verify.records import (MODES, STATUSES, RecordError,
                                         Verdict, latest_per_pair, pair_key,
                                         read_results)
