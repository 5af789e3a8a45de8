"""The verification record: one `Verdict` per (image, target), one JSON line.

  status       adversarial | robust | timeout | misclassified | error
  objective    targeted/certify: margin (e_y - e_t)^T z_out of the best point
               (the proven optimum when `optimal`: to the MIP gap for the
               MILP, to `optimality_tolerance` when decided_by is "bab");
               min_distortion: the smallest L-inf radius found
  best_bound   a proven lower bound on the objective (solver dual bound,
               branch-and-bound bound, or the CROWN margin bound)
  decided_by   crown | pgd | bab | milp | milp+bab: the cheapest step that
               settled it
  x_adv        (input-size floats) only when adversarial; always re-checked by
               a float64 forward pass: inside the box, target logit > label's.

The JSON keys are the field names. `objective`, `best_bound` and
`num_binaries` are always written (null when unknown); any other field is
written only when it has a value. Keys this version does not know are kept
(`extra`) and written back, so files from other versions still read.

A results file is JSON lines, appended and fsynced one record at a time.
Reading validates every line (types, ranges, finite values, the witness's
length) and names `file:line` on error; a final line cut off by a kill is
skipped by readers and dropped by `open_for_append` only once every other
line is known to be a record.
"""

from __future__ import annotations

import collections.abc
import dataclasses
import functools
import json
import math
import os
from typing import Any, Iterable, Mapping, Sequence

from robust_prune.network import MNIST_CLASSES, MNIST_INPUTS

MODES = ("targeted", "certify", "min_distortion")
STATUSES = ("adversarial", "robust", "timeout", "misclassified", "error")
DECIDERS = ("crown", "pgd", "bab", "milp", "milp+bab")
# Written even when null: what every reader may index without .get().
ALWAYS_WRITTEN = ("objective", "best_bound", "num_binaries")
# Every record this code writes starts with this key (a prefix of it is the
# only thing a kill mid-write can leave behind).
_FIRST_KEY = '{"image_index": '


class RecordError(ValueError):
  """A line or a file that is not verification records; names file:line."""


@dataclasses.dataclass(frozen=True)
class Verdict(collections.abc.Mapping):
  """One (image, target) result. Read-only; also a Mapping of its JSON
  fields (`v["status"]`, `v.get("x_adv")`, `dict(v)`), as records were dicts
  before."""

  image_index: int
  label: int
  target: int
  status: str = "error"
  delta: float | None = None
  mode: str | None = None
  objective: float | None = None
  best_bound: float | None = None
  optimal: bool = False
  build_seconds: float = 0.0
  bounds_seconds: float = 0.0
  solve_seconds: float = 0.0
  num_binaries: int | None = None
  solver: str | None = None
  bounds: str | None = None
  predicted: int | None = None
  unstable_per_layer: tuple[int, ...] | None = None
  decided_by: str | None = None
  bab_domains: int | None = None
  bab_seconds: float | None = None
  solver_status: str | None = None
  witness_margin: float | None = None
  witness_radius: float | None = None
  margin_lower_bound: float | None = None
  optimality_tolerance: float | None = None
  x_adv: tuple[float, ...] | None = None
  message: str | None = None
  image_seconds: float | None = None
  network_sha256: str | None = None
  extra: Mapping[str, Any] = dataclasses.field(default_factory=dict)

  # -- the JSON form
  def to_json(self) -> dict:
    """The record as written: field order, numpy scalars made plain."""
    out = {}
    for field in _FIELDS:
      value = getattr(self, field.name)
      if value is None and field.name not in ALWAYS_WRITTEN:
        continue
      out[field.name] = _plain(value)
    out.update(self.extra)
    return out

  @classmethod
  def from_json(cls, obj: Any, *, num_classes: int = MNIST_CLASSES,
                input_size: int = MNIST_INPUTS) -> "Verdict":
    """The Verdict of a decoded JSON line; ValueError/TypeError saying which
    field is wrong."""
    if not isinstance(obj, dict):
      raise TypeError(f"a record is a JSON object, not {type(obj).__name__}")
    missing = [k for k in ("image_index", "label", "target", "status")
               if k not in obj]
    if missing:
      raise KeyError(f"missing {', '.join(missing)}")
    known = {f.name for f in _FIELDS}
    values = {k: _CHECKS[k](k, v) for k, v in obj.items() if k in known}
    extra = {k: v for k, v in obj.items() if k not in known}
    verdict = cls(**values, extra=extra)
    verdict.validate(num_classes=num_classes, input_size=input_size)
    return verdict

  def validate(self, *, num_classes: int = MNIST_CLASSES,
               input_size: int = MNIST_INPUTS) -> "Verdict":
    """Checks what ties fields together (ValueError); returns self."""
    for name in ("label", "target"):
      if not 0 <= getattr(self, name) < num_classes:
        raise ValueError(f"{name} {getattr(self, name)} is not a class of "
                         f"0..{num_classes - 1}")
    if self.label == self.target:
      raise ValueError(f"target {self.target} is the label")
    if self.predicted is not None and not 0 <= self.predicted < num_classes:
      raise ValueError(f"predicted {self.predicted} is not a class")
    if self.status == "adversarial" and self.x_adv is None:
      raise ValueError("an adversarial record needs its witness x_adv")
    if self.x_adv is not None and len(self.x_adv) != input_size:
      raise ValueError(f"x_adv has {len(self.x_adv)} values, the input "
                       f"{input_size}")
    return self

  # -- the read-only Mapping of the JSON fields
  @functools.cached_property
  def _json(self) -> dict:
    return self.to_json()

  def __getitem__(self, key):
    return self._json[key]

  def __iter__(self):
    return iter(self._json)

  def __len__(self):
    return len(self._json)

  def __eq__(self, other):
    if isinstance(other, collections.abc.Mapping):
      return self.to_json() == dict(other)
    return NotImplemented

  __hash__ = None


_FIELDS = tuple(f for f in dataclasses.fields(Verdict) if f.name != "extra")


def _plain(value):
  """JSON-ready: tuples as lists, numpy scalars as Python numbers."""
  if isinstance(value, tuple):
    return [_plain(v) for v in value]
  if hasattr(value, "item") and not isinstance(value, (list, dict)):
    return value.item()
  return value


# ------------------------------------------------------------ field checks
def _integer(minimum=0, optional=False):
  def check(name, value):
    if value is None and optional:
      return None
    if isinstance(value, bool) or not isinstance(value, int):
      raise TypeError(f"{name} {value!r} is not an integer")
    if value < minimum:
      raise ValueError(f"{name} {value} is below {minimum}")
    return value
  return check


def _number(*, optional=True, minimum=None, allow_inf=False):
  """A JSON number as float: finite (or +inf where a proven bound may be
  +inf), at least `minimum`; None where optional."""
  def check(name, value):
    if value is None and optional:
      return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
      raise TypeError(f"{name} {value!r} is not a number")
    value = float(value)
    if math.isnan(value) or value == -math.inf or (
        value == math.inf and not allow_inf):
      raise ValueError(f"{name} {value} is not finite")
    if minimum is not None and value < minimum:
      raise ValueError(f"{name} {value} is below {minimum}")
    return value
  return check


def _one_of(choices, optional=True):
  def check(name, value):
    if value is None and optional:
      return None
    if not isinstance(value, str) or value not in choices:
      raise ValueError(f"unknown {name} {value!r}; one of {choices}")
    return value
  return check


def _text(name, value):
  if value is not None and not isinstance(value, str):
    raise TypeError(f"{name} {value!r} is not a string")
  return value


def _boolean(name, value):
  if not isinstance(value, bool):
    raise TypeError(f"{name} {value!r} is not true or false")
  return value


def _sequence(element):
  def check(name, value):
    if value is None:
      return None
    if not isinstance(value, list):
      raise TypeError(f"{name} is not a list")
    return tuple(element(f"{name}[{i}]", v) for i, v in enumerate(value))
  return check


_SECONDS = _number(optional=False, minimum=0.0)
_CHECKS = {
    "image_index": _integer(), "label": _integer(), "target": _integer(),
    "status": _one_of(STATUSES, optional=False),
    "delta": _number(minimum=0.0), "mode": _one_of(MODES),
    "objective": _number(), "best_bound": _number(allow_inf=True),
    "optimal": _boolean, "build_seconds": _SECONDS,
    "bounds_seconds": _SECONDS, "solve_seconds": _SECONDS,
    "num_binaries": _integer(optional=True), "solver": _text,
    "bounds": _text, "predicted": _integer(optional=True),
    "unstable_per_layer": _sequence(_integer()),
    "decided_by": _one_of(DECIDERS), "bab_domains": _integer(optional=True),
    "bab_seconds": _number(minimum=0.0), "solver_status": _text,
    "witness_margin": _number(), "witness_radius": _number(minimum=0.0),
    "margin_lower_bound": _number(allow_inf=True),
    "optimality_tolerance": _number(minimum=0.0),
    "x_adv": _sequence(_number(optional=False)), "message": _text,
    "image_seconds": _number(minimum=0.0), "network_sha256": _text,
}
assert set(_CHECKS) == {f.name for f in _FIELDS}


# ------------------------------------------------------------ files
def pair_key(record: Mapping) -> tuple[int, int]:
  return (int(record["image_index"]), int(record["target"]))


def latest_per_pair(records: Iterable[Mapping]) -> list:
  """One record per pair: the last one given, in first-appearance order."""
  latest = {}
  for r in records:
    latest[pair_key(r)] = r
  return list(latest.values())


def _is_cut_off(line: bytes) -> bool:
  """A final line without newline that a kill mid-write could have left:
  a prefix of one of our records, not a whole JSON value."""
  try:
    text = line.decode("ascii")
  except UnicodeDecodeError:
    return False
  if not (text.startswith(_FIRST_KEY) or _FIRST_KEY.startswith(text)):
    return False
  try:
    json.loads(text)
  except ValueError:
    return True
  return False


def scan(path: str, *, num_classes: int = MNIST_CLASSES,
         input_size: int = MNIST_INPUTS) -> tuple[list[Verdict], int | None]:
  """(every record of `path` in file order, byte offset of a cut-off final
  line or None). Raises RecordError naming file:line for any other line
  that is not a valid record; a missing file has no records."""
  try:
    with open(path, "rb") as f:
      data = f.read()
  except FileNotFoundError:
    return [], None
  lines = data.split(b"\n")
  cut_at = None
  if lines[-1] and _is_cut_off(lines[-1]):
    cut_at = len(data) - len(lines[-1])
    lines[-1] = b""
  records = []
  for number, raw in enumerate(lines, 1):
    if raw.strip():
      records.append(_parse_line(path, number, raw, num_classes, input_size))
  return records, cut_at


def _parse_line(path, number, raw: bytes, num_classes, input_size) -> Verdict:
  try:
    text = raw.decode("utf-8")
  except UnicodeDecodeError as e:
    raise RecordError(f"{path}:{number}: not a result record (not UTF-8 "
                      f"text: {e.reason} at byte {e.start})") from e
  try:
    return Verdict.from_json(json.loads(text), num_classes=num_classes,
                             input_size=input_size)
  except (ValueError, TypeError, KeyError, OverflowError) as e:
    raise RecordError(f"{path}:{number}: not a result record "
                      f"({type(e).__name__}: {e})") from e


def read_results(path: str, *, num_classes: int = MNIST_CLASSES,
                 input_size: int = MNIST_INPUTS) -> list[Verdict]:
  """The records of a results file, one per (image, target): a pair written
  twice (an `error` record retried by a rerun) keeps its latest record, in
  the place the pair first appeared. A line cut off by a kill (the last one,
  without a newline) is skipped; any other line that is not a valid record
  is a RecordError naming the file and line."""
  records, _ = scan(path, num_classes=num_classes, input_size=input_size)
  return latest_per_pair(records)


def finished_pairs(records: Iterable[Mapping]) -> set[tuple[int, int]]:
  """Pairs a rerun skips: the latest record of every pair but `error` ones
  (an error, e.g. a solver crash, is retried)."""
  return {pair_key(r) for r in latest_per_pair(records)
          if r["status"] != "error"}


class ResultsWriter:
  """Appends records to a results file, one fsynced line each."""

  def __init__(self, path: str, *, num_classes: int, input_size: int):
    self.path = path
    self._limits = {"num_classes": num_classes, "input_size": input_size}
    self._file = None

  def open(self, cut_at: int | None) -> "ResultsWriter":
    """Opens for appending; `cut_at` (from `scan`) drops a cut-off final
    line, and a final record without its newline gets one."""
    self._file = open(self.path, "ab")
    if cut_at is not None:
      self._file.truncate(cut_at)
    size = self._file.seek(0, os.SEEK_END)
    if size:
      with open(self.path, "rb") as f:
        f.seek(size - 1)
        if f.read(1) != b"\n":
          self._file.write(b"\n")
    return self

  def append(self, verdicts: Sequence[Verdict]) -> None:
    lines = []
    for v in verdicts:
      v.validate(**self._limits)   # never write what could not be read back
      lines.append(json.dumps(v.to_json()) + "\n")
    self._file.write("".join(lines).encode("ascii"))
    self._file.flush()
    os.fsync(self._file.fileno())

  def close(self) -> None:
    if self._file is not None:
      self._file.close()
      self._file = None

  def __enter__(self) -> "ResultsWriter":
    return self

  def __exit__(self, *exc) -> None:
    self.close()
