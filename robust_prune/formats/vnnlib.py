"""VNN-LIB properties: an input box and a disjunction of conjunctions of
linear inequalities over the outputs, each of which describes a
counterexample.

`parse_vnnlib(path)` reads `(declare-const X_i Real)` / `(declare-const Y_j
Real)` and `(assert F)` where F nests `and`, `or`, `<=`, `>=`, `<`, `>`, `=`
over linear terms (variables, decimal or scientific constants, `+`, `-`,
`*` by a constant). All asserts together form one conjunction, which is
expanded into disjunctive normal form: a list of `Disjunct`s, each an input
box (from single-variable bounds on the X_i) and rows `coeffs @ y + consts >=
0` (`> 0` where strict). A point in a disjunct's box whose outputs satisfy
all its rows is a counterexample, ties under `>=` included; the property
holds (`unsat`) only when every disjunct is infeasible.
Malformed files, unknown variables and constraints outside this fragment
(e.g. one mixing inputs and outputs) end in one `VnnlibError` naming the file.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import os
import re

import numpy as np

MAX_DISJUNCTS = 100_000
_TOKEN = re.compile(r"\(|\)|[^\s()]+")
_VARIABLE = re.compile(r"([XY])_(\d+)\Z")


class VnnlibError(ValueError):
  """A VNN-LIB file outside the supported fragment, or malformed."""


@dataclasses.dataclass(frozen=True)
class Disjunct:
  """Inputs in [lower, upper] with coeffs @ y + consts >= 0 (> 0 where
  strict) for every row: one way to violate the property."""

  lower: np.ndarray
  upper: np.ndarray
  coeffs: np.ndarray       # (rows, num_outputs)
  consts: np.ndarray       # (rows,)
  strict: np.ndarray       # (rows,) bool

  def holds_at(self, x, y) -> bool:
    """Whether (x, y) is a counterexample of this disjunct (float64; ties
    under >= count)."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    if np.any(x < self.lower) or np.any(x > self.upper):
      return False
    values = self.coeffs @ y + self.consts
    return bool(np.all(np.where(self.strict, values > 0, values >= 0)))


@dataclasses.dataclass(frozen=True)
class Property:
  path: str
  num_inputs: int
  num_outputs: int
  disjuncts: tuple[Disjunct, ...]

  def boxes(self):
    """[(lower, upper, [disjunct indices])]: disjuncts sharing a box."""
    groups = {}
    for i, d in enumerate(self.disjuncts):
      key = (d.lower.tobytes(), d.upper.tobytes())
      groups.setdefault(key, (d.lower, d.upper, []))[2].append(i)
    return list(groups.values())


# A linear term: ({(kind, index): coefficient}, constant).
def _tokens(text: str):
  text = "\n".join(line.split(";", 1)[0] for line in text.splitlines())
  return _TOKEN.findall(text)


def _sexprs(tokens):
  """Nested lists of atoms from the token stream (ValueError if unbalanced)."""
  stack, top = [], []
  for tok in tokens:
    if tok == "(":
      stack.append(top)
      top = []
    elif tok == ")":
      if not stack:
        raise ValueError("unbalanced ')'")
      parent = stack.pop()
      parent.append(top)
      top = parent
    else:
      top.append(tok)
  if stack:
    raise ValueError("unbalanced '(': the file ends inside an expression")
  return top


class _Parser:
  def __init__(self):
    self.declared = {"X": set(), "Y": set()}

  def declare(self, expr):
    if len(expr) != 3 or not isinstance(expr[1], str) or expr[2] != "Real":
      raise ValueError(f"bad declaration {_show(expr)}: need "
                       f"(declare-const X_i Real)")
    m = _VARIABLE.match(expr[1])
    if not m:
      raise ValueError(f"variable {expr[1]!r}: VNN-LIB names inputs X_i and "
                       f"outputs Y_j")
    self.declared[m.group(1)].add(int(m.group(2)))

  def term(self, expr):
    if isinstance(expr, str):
      m = _VARIABLE.match(expr)
      if m:
        key = (m.group(1), int(m.group(2)))
        if key[1] not in self.declared[key[0]]:
          raise ValueError(f"unknown variable {expr} (not declared)")
        return {key: 1.0}, 0.0
      try:
        value = float(expr)
      except ValueError:
        raise ValueError(f"unknown variable or bad number {expr!r}") from None
      if not math.isfinite(value):
        raise ValueError(f"constant {expr!r} is not finite")
      return {}, value
    if not expr or not isinstance(expr[0], str):
      raise ValueError(f"bad term {_show(expr)}")
    op, args = expr[0], [self.term(a) for a in expr[1:]]
    if op == "+" and args:
      return _combine(args, [1.0] * len(args))
    if op == "-" and len(args) == 1:
      return _combine(args, [-1.0])
    if op == "-" and args:
      return _combine(args, [1.0] + [-1.0] * (len(args) - 1))
    if op == "*" and len(args) >= 2:
      constant = [a for a in args if not a[0]]
      variable = [a for a in args if a[0]]
      if len(variable) > 1:
        raise ValueError(f"nonlinear term {_show(expr)}")
      factor = math.prod(c for _, c in constant)
      return _combine(variable or [({}, 1.0)], [factor])
    raise ValueError(f"unsupported term {_show(expr)}")

  def formula(self, expr):
    """DNF: a list of conjunctions, each a list of (term, strict) atoms
    meaning term >= 0 (> 0 if strict)."""
    if isinstance(expr, str) or not expr or not isinstance(expr[0], str):
      raise ValueError(f"bad formula {_show(expr)}")
    op, args = expr[0], expr[1:]
    if op == "and":
      parts = [self.formula(a) for a in args]
      count = math.prod(len(p) for p in parts)
      if count > MAX_DISJUNCTS:
        raise ValueError(f"more than {MAX_DISJUNCTS} disjuncts in normal form")
      return [sum(combo, []) for combo in itertools.product(*parts)]
    if op == "or":
      return [conj for a in args for conj in self.formula(a)]
    if op in ("<=", ">=", "<", ">", "=") and len(args) >= 2:
      terms = [self.term(a) for a in args]
      atoms = []
      for lhs, rhs in zip(terms, terms[1:]):
        diff = _combine([lhs, rhs], [1.0, -1.0])   # lhs - rhs
        neg = _combine([diff], [-1.0])
        atoms += {"<=": [(neg, False)], ">=": [(diff, False)],
                  "<": [(neg, True)], ">": [(diff, True)],
                  "=": [(diff, False), (neg, False)]}[op]
      return [atoms]
    raise ValueError(f"unsupported formula {_show(expr)}")


def _combine(terms, factors):
  coeffs, const = {}, 0.0
  for (c, k), f in zip(terms, factors):
    for key, value in c.items():
      coeffs[key] = coeffs.get(key, 0.0) + f * value
    const += f * k
  return {k: v for k, v in coeffs.items() if v != 0.0}, const


def _show(expr) -> str:
  if isinstance(expr, str):
    return expr
  text = "(" + " ".join(_show(e) for e in expr) + ")"
  return text if len(text) < 80 else text[:77] + "..."


def _count(declared: set, kind: str) -> int:
  n = max(declared, default=-1) + 1
  missing = sorted(set(range(n)) - declared)
  if missing:
    raise ValueError(f"{kind}_{missing[0]} is not declared but {kind}_{n - 1} "
                     f"is: variables must be numbered from 0")
  return n


def _input_bound(atom, lower, upper):
  """Tightens the box by a single-input atom a * X_i + b >= 0."""
  (coeffs, const), strict = atom
  ((_, i), a), = coeffs.items()
  if strict:
    raise ValueError(f"strict bound on X_{i}: input constraints must be <= "
                     f"or >=")
  bound = -const / a + 0.0   # never -0.0
  if abs(a) != 1.0:   # the division rounds: widen outward (the box is sound)
    bound = np.nextafter(bound, -np.inf if a > 0 else np.inf)
  if a > 0:
    lower[i] = max(lower[i], bound)
  else:
    upper[i] = min(upper[i], bound)


def _disjunct(atoms, num_inputs, num_outputs, box):
  """The Disjunct of one conjunction of atoms (None if trivially empty)."""
  lower, upper = box[0].copy(), box[1].copy()
  rows = []
  for atom in atoms:
    (coeffs, const), strict = atom
    kinds = {k for k, _ in coeffs}
    if not kinds:
      if not (const > 0 if strict else const >= 0):
        return None   # a false constant comparison
    elif kinds == {"X"} and len(coeffs) == 1:
      _input_bound(atom, lower, upper)
    elif kinds == {"Y"}:
      row = np.zeros(num_outputs)
      for (_, j), value in coeffs.items():
        row[j] = value
      rows.append((row, const, strict))
    else:
      raise ValueError("unsupported constraint: inputs may only be bounded one "
                       "at a time, never mixed with outputs")
  unbounded = np.flatnonzero(~np.isfinite(lower) | ~np.isfinite(upper))
  if unbounded.size:
    raise ValueError(f"X_{unbounded[0]} needs a lower and an upper bound")
  if np.any(lower > upper):
    return None
  return Disjunct(lower, upper,
                  np.array([r for r, _, _ in rows]).reshape(-1, num_outputs),
                  np.array([c for _, c, _ in rows], np.float64),
                  np.array([s for _, _, s in rows], bool))


def parse_vnnlib_text(text: str, path: str = "<text>") -> Property:
  """`Property` of VNN-LIB source text; VnnlibError naming `path`."""
  try:
    return _parse(text, path)
  except (ValueError, RecursionError) as e:
    raise VnnlibError(f"{path}: {e}") from None


def parse_vnnlib(path: str | os.PathLike) -> Property:
  path = os.fspath(path)
  try:
    with open(path, encoding="utf-8") as f:
      text = f.read()
  except (OSError, UnicodeDecodeError) as e:
    raise VnnlibError(f"cannot read VNN-LIB file {path}: {e}") from e
  return parse_vnnlib_text(text, path)


def _parse(text: str, path: str) -> Property:
  parser = _Parser()
  common, others = [], []
  for cmd in _sexprs(_tokens(text)):
    if isinstance(cmd, str) or not cmd or not isinstance(cmd[0], str):
      raise ValueError(f"bad top-level expression {_show(cmd)}")
    if cmd[0] == "declare-const":
      parser.declare(cmd)
    elif cmd[0] == "assert" and len(cmd) == 2:
      dnf = parser.formula(cmd[1])
      (common if len(dnf) == 1 else others).append(dnf)
    else:
      raise ValueError(f"unsupported command {_show(cmd)}")
  n, m = _count(parser.declared["X"], "X"), _count(parser.declared["Y"], "Y")
  if n == 0 or m == 0:
    raise ValueError("declares no inputs X_i or no outputs Y_j")
  shared = [atom for dnf in common for atom in dnf[0]]
  inputs = [a for a in shared if {k for k, _ in a[0][0]} == {"X"}
            and len(a[0][0]) == 1]
  box = (np.full(n, -np.inf), np.full(n, np.inf))
  for atom in inputs:   # the common input bounds once, not per disjunct
    _input_bound(atom, *box)
  rest = [a for a in shared if not any(a is b for b in inputs)]
  if math.prod(len(d) for d in others) > MAX_DISJUNCTS:
    raise ValueError(f"more than {MAX_DISJUNCTS} disjuncts in normal form")
  disjuncts = []
  for combo in itertools.product(*others):
    d = _disjunct(rest + sum(combo, []), n, m, box)
    if d is not None:
      disjuncts.append(d)
  return Property(path, n, m, tuple(disjuncts))


def robustness_property(image, label: int, epsilon: float,
                        num_outputs: int = 10, lower: float = 0.0,
                        upper: float = 1.0) -> str:
  """The VNN-LIB text of mnistfc's `prop_I_EPS` kind: inputs in the L-inf
  ball of radius `epsilon` around `image` intersected with [lower, upper];
  a counterexample has some other output >= the label's."""
  image = np.asarray(image, np.float64).reshape(-1)
  lo = np.clip(image - epsilon, lower, upper)
  hi = np.clip(image + epsilon, lower, upper)
  lines = [f"; robustness of label {label}, eps {epsilon}"]
  lines += [f"(declare-const X_{i} Real)" for i in range(len(image))]
  lines += [f"(declare-const Y_{j} Real)" for j in range(num_outputs)]
  for i in range(len(image)):
    lines += [f"(assert (<= X_{i} {float(hi[i])!r}))",
              f"(assert (>= X_{i} {float(lo[i])!r}))"]
  lines.append("(assert (or")
  lines += [f"    (and (>= Y_{j} Y_{label}))" for j in range(num_outputs)
            if j != label]
  lines.append("))")
  return "\n".join(lines) + "\n"
