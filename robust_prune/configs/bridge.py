"""The one flag bridge: absl flags generated from dataclass fields.

A config is a frozen dataclass; each field becomes one flag whose name, type,
default and help come from the field (help from `field.metadata["help"]`,
enum choices from `metadata["choices"]`). A field whose type is itself a
dataclass is a nested config: its fields become flags too, renamed where the
outer field's `metadata["rename"]` says so (the pipeline's `--train_epsilon`
is `PipelineConfig.train.epsilon`). `config_from_flags` builds the dataclass
back and refuses non-finite floats up front, so every binary (train, prune,
pipeline, the ablations) reads one definition.

A tuple field (the hidden widths) is a list flag; it reaches its dataclass as
the comma-joined text, which the dataclass parses and checks.
"""

from __future__ import annotations

import dataclasses
import math
import typing
from typing import Any, Mapping, Sequence

from absl import flags

# The flags defined here belong to the binary that asked for them (its
# --helpshort lists them), not to this module.
flags.disclaim_key_flags()


def option(default: Any = dataclasses.MISSING, help: str = "", *,  # pylint: disable=redefined-builtin
           choices: Sequence[str] | None = None,
           default_factory: Any = dataclasses.MISSING, **metadata):
  """A dataclass field that carries its flag's help text (and choices)."""
  metadata = {"help": help, "choices": tuple(choices) if choices else None,
              **metadata}
  if default_factory is not dataclasses.MISSING:
    return dataclasses.field(default_factory=default_factory,
                             metadata=metadata)
  return dataclasses.field(default=default, metadata=metadata)


@dataclasses.dataclass(frozen=True)
class FlagSpec:
  """One flag: its name, where its value lives in the config (field names
  from the outermost dataclass in), and how to define it."""
  name: str
  path: tuple[str, ...]
  kind: type
  default: Any
  help: str
  choices: tuple[str, ...] | None = None


def _kind(annotation) -> type:
  if typing.get_origin(annotation) is tuple:
    return tuple
  if annotation in (bool, int, float, str):
    return annotation
  raise TypeError(f"no flag type for a field of type {annotation}")


def _default(field: dataclasses.Field) -> Any:
  if field.default_factory is not dataclasses.MISSING:
    return field.default_factory()
  return None if field.default is dataclasses.MISSING else field.default


def flag_specs(cls, *, rename: Mapping[str, str] | None = None,
               help: Mapping[str, str] | None = None,  # pylint: disable=redefined-builtin
               choices: Mapping[str, Sequence[str]] | None = None,
               exclude: Sequence[str] = (), _path: tuple[str, ...] = (),
               _defaults: Any = None) -> list[FlagSpec]:
  """The flags of dataclass `cls`. `rename`, `help` and `choices` (keyed by
  field name) serve dataclasses that carry no flag metadata of their own."""
  rename, help, choices = rename or {}, help or {}, choices or {}
  hints = typing.get_type_hints(cls)
  specs = []
  for field in dataclasses.fields(cls):
    if field.name in exclude or not field.init:
      continue
    default = (_default(field) if _defaults is None
               else getattr(_defaults, field.name))
    path = _path + (field.name,)
    if dataclasses.is_dataclass(hints[field.name]):
      specs += flag_specs(hints[field.name], rename=field.metadata.get("rename"),
                          _path=path, _defaults=default)
      continue
    specs.append(FlagSpec(
        name=rename.get(field.name, field.name), path=path,
        kind=_kind(hints[field.name]), default=default,
        help=help.get(field.name) or field.metadata.get("help") or field.name,
        choices=(tuple(choices[field.name]) if field.name in choices
                 else field.metadata.get("choices"))))
  names = [s.name for s in specs]
  if len(set(names)) != len(names):
    raise ValueError(f"{cls.__name__}: two fields map to one flag name")
  return specs


def define_flags(specs: Sequence[FlagSpec],
                 flag_values: flags.FlagValues = flags.FLAGS) -> None:
  for s in specs:
    if s.choices:
      flags.DEFINE_enum(s.name, s.default, list(s.choices), s.help,
                        flag_values=flag_values)
    elif s.kind is tuple:
      flags.DEFINE_list(s.name, [str(v) for v in s.default], s.help,
                        flag_values=flag_values)
    else:
      define = {bool: flags.DEFINE_bool, int: flags.DEFINE_integer,
                float: flags.DEFINE_float, str: flags.DEFINE_string}[s.kind]
      define(s.name, s.default, s.help, flag_values=flag_values)


def check_finite(name: str, value: Any) -> None:
  """NaN or inf in a float option is a ValueError naming it (a NaN compares
  False with every bound, so range checks alone let it through)."""
  if isinstance(value, float) and not math.isfinite(value):
    raise ValueError(f"{name} must be a finite number, got {value}")


def flag_value(spec: FlagSpec, flag_values: flags.FlagValues) -> Any:
  value = flag_values[spec.name].value
  if spec.kind is tuple:
    return ",".join(str(v) for v in value or ())
  check_finite(f"--{spec.name}", value)
  return value


def present_values(specs: Sequence[FlagSpec],
                   flag_values: flags.FlagValues = flags.FLAGS
                   ) -> dict[str, Any]:
  """{flag name: value} of the flags given explicitly on the command line."""
  return {s.name: flag_value(s, flag_values) for s in specs
          if s.name in flag_values and flag_values[s.name].present}


def build(cls, specs: Sequence[FlagSpec], values: Mapping[str, Any],
          base: Any = None):
  """An instance of `cls` from {flag name: value}; flags not named take
  their value from `base` (else the dataclass default)."""
  by_name = {s.name: s for s in specs}
  unknown = sorted(set(values) - set(by_name))
  if unknown:
    raise ValueError(f"unknown options {unknown}")
  nested: dict[str, Any] = {}
  for name, value in values.items():
    *outer, last = by_name[name].path
    node = nested
    for key in outer:
      node = node.setdefault(key, {})
    node[last] = value
  return _replace(cls, base if base is not None else cls(), nested)


def _replace(cls, base, nested: Mapping[str, Any]):
  changes = {}
  for key, value in nested.items():
    if isinstance(value, Mapping):
      inner = getattr(base, key)
      changes[key] = _replace(type(inner), inner, value)
    else:
      changes[key] = value
  return dataclasses.replace(base, **changes)


def config_from_flags(cls, specs: Sequence[FlagSpec],
                      flag_values: flags.FlagValues = flags.FLAGS, *,
                      preset: Mapping[str, Any] | None = None):
  """The config the flags describe; `preset` ({flag name: value}) replaces
  the defaults of flags not given explicitly (e.g. `--quick`)."""
  values = {s.name: flag_value(s, flag_values) for s in specs}
  for name, value in (preset or {}).items():
    if not flag_values[name].present:
      values[name] = value
  return build(cls, specs, values)


def to_flat(config: Any, specs: Sequence[FlagSpec]) -> dict[str, Any]:
  """{flag name: value}: the config as its command line sees it (JSON-able;
  tuples become lists)."""
  flat = {}
  for s in specs:
    value = config
    for key in s.path:
      value = getattr(value, key)
    flat[s.name] = list(value) if isinstance(value, tuple) else value
  return flat
