"""VNN-COMP's files: the per-instance result file, `instances.csv`, and the
results CSV (`benchmark,onnx,vnnlib,prepare seconds,result,run seconds`, no
header, as the competition's and the published tools' files are).

The results CSV is appended one line per finished instance, flushed and
fsynced, so an interrupted run loses nothing and a rerun skips what is done.
"""

from __future__ import annotations

import csv
import dataclasses
import os

import numpy as np

RESULTS = ("sat", "unsat", "timeout", "unknown", "error")
# The published results' words for the two verdicts.
SAT_WORDS = ("sat", "violated")
UNSAT_WORDS = ("unsat", "holds")


def normalise(result: str) -> str:
  """sat / unsat, or the word lowercased (an unanswered instance)."""
  word = result.strip().lower()
  if word in SAT_WORDS:
    return "sat"
  if word in UNSAT_WORDS:
    return "unsat"
  return word


def result_text(result: str, x=None, y=None, message: str = "") -> str:
  """The result file: the verdict on the first line; for sat the
  counterexample `((X_0 v) ... (Y_0 v) ...)`; for error its message."""
  if result not in RESULTS:
    raise ValueError(f"unknown result {result!r}")
  lines = [result]
  if result == "sat":
    pairs = ([f"(X_{i} {float(v)!r})" for i, v in enumerate(np.ravel(x))]
             + [f"(Y_{j} {float(v)!r})" for j, v in enumerate(np.ravel(y))])
    pairs[0] = "(" + pairs[0]
    pairs[-1] += ")"
    lines += pairs
  elif message:
    lines.append(" ".join(str(message).split()))
  return "\n".join(lines) + "\n"


def read_counterexample(text: str):
  """(x, y) of a sat result file's assignment (for checks and tests)."""
  body = text.split("\n", 1)[1] if "\n" in text else ""
  tokens = body.replace("(", " ").replace(")", " ").split()
  xs, ys = {}, {}
  for name, value in zip(tokens[::2], tokens[1::2]):
    kind, index = name.split("_")
    (xs if kind == "X" else ys)[int(index)] = float(value)
  return (np.array([xs[i] for i in range(len(xs))]),
          np.array([ys[j] for j in range(len(ys))]))


@dataclasses.dataclass(frozen=True)
class Instance:
  onnx: str          # as written in instances.csv (relative to it)
  vnnlib: str
  timeout: float
  onnx_path: str     # resolved
  vnnlib_path: str


def read_instances(path: str) -> list[Instance]:
  """The rows of an instances.csv; ValueError naming the line if bad."""
  base = os.path.dirname(os.path.abspath(path))
  instances = []
  with open(path, newline="", encoding="utf-8") as f:
    for n, row in enumerate(csv.reader(f), 1):
      if not row or not "".join(row).strip():
        continue
      if len(row) != 3:
        raise ValueError(f"{path}:{n}: need onnx,vnnlib,timeout, got {row}")
      onnx, vnnlib, timeout = (c.strip() for c in row)
      try:
        seconds = float(timeout)
      except ValueError:
        raise ValueError(f"{path}:{n}: bad timeout {timeout!r}") from None
      if not seconds > 0 or not np.isfinite(seconds):
        raise ValueError(f"{path}:{n}: timeout must be positive, got {timeout}")
      instances.append(Instance(onnx, vnnlib, seconds,
                                os.path.join(base, onnx),
                                os.path.join(base, vnnlib)))
  return instances


def read_results(path: str) -> list[list[str]]:
  """Rows of a results CSV (empty if the file does not exist); a torn last
  line (a crash mid-write) is ignored, so its instance runs again."""
  if not os.path.exists(path):
    return []
  rows = []
  with open(path, newline="", encoding="utf-8") as f:
    for row in csv.reader(f):
      if len(row) == 6:
        try:
          float(row[3]), float(row[5])
        except ValueError:
          continue
        rows.append(row)
  return rows


def instance_key(onnx: str, vnnlib: str) -> tuple[str, str]:
  """Instances match by file names (the published files say ./benchmarks/..)."""
  return os.path.basename(onnx), os.path.basename(vnnlib)


def append_result(path: str, row) -> None:
  """Appends one results line durably (flush + fsync); a file left without
  its final newline (a crash) gets one first."""
  directory = os.path.dirname(os.path.abspath(path))
  os.makedirs(directory, exist_ok=True)
  needs_newline = False
  if os.path.exists(path) and os.path.getsize(path) > 0:
    with open(path, "rb") as f:
      f.seek(-1, os.SEEK_END)
      needs_newline = f.read(1) != b"\n"
  with open(path, "a", newline="", encoding="utf-8") as f:
    if needs_newline:
      f.write("\n")
    csv.writer(f, lineterminator="\n").writerow(row)
    f.flush()
    os.fsync(f.fileno())
