"""Robustness curves over radii, their consistency, and minimum distortion.

Input: verification records, one per (image, target) and radius `delta`
(README "Reading verification results"), as plain Mappings, objects with
`to_json()`, or dataclasses; a list may hold several radii of ONE network.
When a (delta, image, target) appears more than once the last record wins
(a rerun after an error appends a new line).

Per image and radius the verdict is
  misclassified  the clean image is wrong (any record says so);
  adversarial    some target has a verified witness x_adv (proven non-robust);
  robust         every target (all classes but the label) is proven robust;
  undecided      anything else: a timeout, an error, a target not yet run,
                 or an image with no record at that radius.
Robust accuracy at delta then lies in [robust / n, (robust + undecided) / n]
(the MIPVerify-style band: the lower end is proven, the upper end is 1 minus
the proven non-robust fraction).

The same curves bound each image's minimum adversarial distortion
(Carlini & Wagner 2017): see distortion.py.
"""

from __future__ import annotations

import collections
import dataclasses
import math
from typing import Any, Iterable, Mapping

import numpy as np

from robust_prune.analysis import stats

ROBUST, ADVERSARIAL = "robust", "adversarial"
UNDECIDED, MISCLASSIFIED = "undecided", "misclassified"
VERDICTS = (ROBUST, ADVERSARIAL, UNDECIDED, MISCLASSIFIED)
# A witness may leave its box by the solver's feasibility tolerance.
RADIUS_TOLERANCE = 1e-6


def as_dict(record: Any) -> dict:
  """A record as a plain dict: a Mapping, an object with to_json(), or a
  dataclass."""
  if isinstance(record, Mapping):
    return dict(record)
  if hasattr(record, "to_json"):
    return dict(record.to_json())
  if dataclasses.is_dataclass(record):
    return dataclasses.asdict(record)
  raise TypeError(f"a record is a Mapping or has to_json(), not "
                  f"{type(record).__name__}")


def by_radius(records: Iterable[Any]) -> dict[float, dict[int, dict]]:
  """delta -> image_index -> {target: record} (the last record of a pair
  wins). Refuses records without a delta and records of two networks."""
  curve: dict[float, dict[int, dict]] = collections.defaultdict(
      lambda: collections.defaultdict(dict))
  networks = set()
  for raw in records:
    r = as_dict(raw)
    if r.get("delta") is None:
      raise ValueError(f"record of image {r.get('image_index')} target "
                       f"{r.get('target')} has no delta")
    if r.get("network_sha256"):
      networks.add(r["network_sha256"])
    curve[float(r["delta"])][int(r["image_index"])][int(r["target"])] = r
  if len(networks) > 1:
    raise ValueError(f"records of {len(networks)} networks mixed: "
                     f"{sorted(n[:12] for n in networks)}")
  return {d: dict(images) for d, images in sorted(curve.items())}


def image_verdict(targets: Mapping[int, Mapping],
                  num_classes: int | None = 10) -> str:
  """The verdict of one image at one radius from its {target: record}.
  With num_classes, robust needs all num_classes - 1 targets proven;
  with None, the targets present."""
  statuses = [r["status"] for r in targets.values()]
  if not statuses:
    return UNDECIDED
  if MISCLASSIFIED in statuses:
    return MISCLASSIFIED
  if ADVERSARIAL in statuses:
    return ADVERSARIAL
  label = next(iter(targets.values()))["label"]
  expected = (set(targets) if num_classes is None
              else set(range(num_classes)) - {int(label)})
  proven = {t for t, r in targets.items() if r["status"] == ROBUST}
  return ROBUST if expected <= proven else UNDECIDED


def image_verdicts(records: Iterable[Any], *,
                   image_indices: Iterable[int] | None = None,
                   num_classes: int | None = 10) -> dict[float, dict[int, str]]:
  """delta -> image_index -> verdict for every image of `image_indices`
  (default: every image with a record at any radius; an image without a
  record at some radius is undecided there)."""
  curve = by_radius(records)
  images = _image_set(curve, image_indices)
  return {delta: {i: image_verdict(per_image.get(i, {}), num_classes)
                  for i in images}
          for delta, per_image in curve.items()}


def _image_set(curve, image_indices) -> list[int]:
  if image_indices is not None:
    return sorted({int(i) for i in image_indices})
  return sorted({i for per_image in curve.values() for i in per_image})


# ------------------------------------------------------------------ bands
@dataclasses.dataclass(frozen=True)
class Band:
  """Counts of images at one radius; they add up to `images`."""
  delta: float
  images: int
  robust: int
  adversarial: int
  undecided: int
  misclassified: int

  @property
  def lower_bound(self) -> float:
    """Proven robust accuracy (verified robust / images)."""
    return self.robust / self.images if self.images else math.nan

  @property
  def upper_bound(self) -> float:
    """1 - proven non-robust fraction (adversarial or misclassified)."""
    return ((self.robust + self.undecided) / self.images if self.images
            else math.nan)

  @property
  def undecided_fraction(self) -> float:
    return self.undecided / self.images if self.images else math.nan

  def robust_accuracy_interval(self, confidence: float = 0.95):
    """(low, high): Wilson low of the proven-robust count and Wilson high of
    the not-proven-non-robust count, an interval for the population's robust
    accuracy that holds whatever the undecided images turn out to be."""
    low = stats.wilson_interval(self.robust, self.images, confidence).low
    high = stats.wilson_interval(self.robust + self.undecided, self.images,
                                 confidence).high
    return low, high


def robustness_bands(records: Iterable[Any], *,
                     image_indices: Iterable[int] | None = None,
                     num_classes: int | None = 10) -> list[Band]:
  """One Band per radius, sorted by delta, over the same set of images."""
  verdicts = image_verdicts(records, image_indices=image_indices,
                            num_classes=num_classes)
  bands = []
  for delta, per_image in verdicts.items():
    counts = collections.Counter(per_image.values())
    bands.append(Band(delta, len(per_image), counts[ROBUST],
                      counts[ADVERSARIAL], counts[UNDECIDED],
                      counts[MISCLASSIFIED]))
  return bands


# ------------------------------------------------------------ consistency
@dataclasses.dataclass(frozen=True)
class Violation:
  """Two results that cannot both be true."""
  kind: str          # see check_consistency
  image_index: int
  target: int | None
  delta: float       # the radius of the first result
  other_delta: float  # the radius of the result it contradicts
  message: str


def check_consistency(records: Iterable[Any], *,
                      images: Mapping[int, Any] | None = None,
                      tolerance: float = RADIUS_TOLERANCE) -> list[Violation]:
  """Every contradiction in a curve of one network ([] when consistent).

  kinds:
    adversarial_below_robust  a pair adversarial at delta and robust at a
                              larger delta (robust at D implies robust at
                              every smaller radius; adversarial at d stays
                              adversarial at every larger one);
    witness_inside_robust     a witness of distortion r (found at some
                              delta) while the pair is robust at a radius
                              >= r + tolerance: the witness lies in that box;
    witness_outside_box       a witness farther than its delta + tolerance
                              from the image;
    misclassified_changed     an image misclassified at one radius and not
                              at another (the clean prediction has no radius);
    label_changed             an image with two labels.
  A timeout is no claim and contradicts nothing. `images` (image_index ->
  pixels) lets witnesses be measured; without it a record's
  `witness_radius`, else its delta, is the witness distortion.
  """
  curve = by_radius(records)
  violations = []
  pairs = _pair_histories(curve)
  for (image, target), history in sorted(pairs.items()):
    pixels = None if images is None else images.get(image)
    violations += _pair_violations(image, target, history, pixels, tolerance)
  violations += _image_violations(curve)
  return violations


def _pair_histories(curve) -> dict[tuple[int, int], list[tuple[float, dict]]]:
  pairs = collections.defaultdict(list)
  for delta, per_image in curve.items():
    for image, targets in per_image.items():
      for target, r in targets.items():
        pairs[(image, target)].append((delta, r))
  return pairs


def _pair_violations(image, target, history, pixels, tolerance):
  robust = [d for d, r in history if r["status"] == ROBUST]
  found = []
  for delta, r in history:
    if r["status"] != ADVERSARIAL:
      continue
    for above in (d for d in robust if d > delta):
      found.append(Violation(
          "adversarial_below_robust", image, target, delta, above,
          f"image {image} target {target}: adversarial at {delta:g} but "
          f"robust at {above:g}"))
    radius = witness_distortion(r, pixels)
    if radius > delta + tolerance:
      found.append(Violation(
          "witness_outside_box", image, target, delta, delta,
          f"image {image} target {target}: witness at distortion "
          f"{radius:.6g} outside its radius {delta:g}"))
    for inside in (d for d in robust if radius + tolerance <= d <= delta):
      found.append(Violation(
          "witness_inside_robust", image, target, delta, inside,
          f"image {image} target {target}: witness of distortion "
          f"{radius:.6g} (found at {delta:g}) but robust at {inside:g}"))
  return found


def _image_violations(curve) -> list[Violation]:
  seen = collections.defaultdict(dict)  # image -> delta -> (misclassified, labels)
  for delta, per_image in curve.items():
    for image, targets in per_image.items():
      statuses = {r["status"] for r in targets.values()}
      labels = {int(r["label"]) for r in targets.values()}
      seen[image][delta] = (MISCLASSIFIED in statuses, labels)
  found = []
  for image, per_delta in sorted(seen.items()):
    deltas = sorted(per_delta)
    wrong = [d for d in deltas if per_delta[d][0]]
    right = [d for d in deltas if not per_delta[d][0]]
    if wrong and right:
      found.append(Violation(
          "misclassified_changed", image, None, wrong[0], right[0],
          f"image {image}: misclassified at {wrong[0]:g}, not at "
          f"{right[0]:g}"))
    labels = set().union(*(per_delta[d][1] for d in deltas))
    if len(labels) > 1:
      found.append(Violation(
          "label_changed", image, None, deltas[0], deltas[-1],
          f"image {image}: labels {sorted(labels)}"))
  return found


def witness_distortion(record: Mapping, pixels=None) -> float:
  """L-inf distance of an adversarial record's witness from its image:
  measured from `pixels` when given, else the record's witness_radius,
  else its delta (a verified witness lies in its box)."""
  if pixels is not None and record.get("x_adv") is not None:
    x_adv = np.asarray(record["x_adv"], np.float64).reshape(-1)
    image = np.asarray(pixels, np.float64).reshape(-1)
    return float(np.max(np.abs(x_adv - image)))
  if record.get("witness_radius") is not None:
    return float(record["witness_radius"])
  return float(record["delta"])


# --------------------------------------------------- paired image verdicts
@dataclasses.dataclass(frozen=True)
class PairedVerdicts:
  """Two networks' verdicts at one radius on the images both were run on:
  `joint` counts (first verdict, second verdict) pairs."""
  joint: tuple[tuple[str, str, int], ...]
  unmatched: int  # images with a verdict on only one network (left out)

  def count(self, first: str | None = None, second: str | None = None) -> int:
    return sum(k for a, b, k in self.joint
               if first in (None, a) and second in (None, b))

  @property
  def images(self) -> int:
    return self.count()

  def binary(self, *, undecided_first_robust: bool = False,
             undecided_second_robust: bool = False) -> tuple[int, int, int, int]:
    """(both, only_first, only_second, neither) robust, reading undecided
    images as robust or not as asked (default: not, i.e. verified
    robustness)."""
    def robust(verdict, undecided_robust):
      return verdict == ROBUST or (undecided_robust and verdict == UNDECIDED)
    table = [0, 0, 0, 0]
    for a, b, k in self.joint:
      first = robust(a, undecided_first_robust)
      second = robust(b, undecided_second_robust)
      table[(0 if first else 2) + (0 if second else 1)] += k
    return tuple(table)


def paired_verdicts(first: Mapping[int, str],
                    second: Mapping[int, str]) -> PairedVerdicts:
  """Pairs two {image_index: verdict} maps (one radius of image_verdicts)."""
  common = set(first) & set(second)
  joint = collections.Counter((first[i], second[i]) for i in common)
  return PairedVerdicts(
      tuple(sorted((a, b, k) for (a, b), k in joint.items())),
      len(set(first) ^ set(second)))
