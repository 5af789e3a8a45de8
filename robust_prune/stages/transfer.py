"""The pipeline's `transfer` stage: reverse testing at the paper radius.

Each network's verified adversarial examples (the verify stage's records on
the first --num_images test images) are classified by the other network.
When a network has fewer than --transfer_examples of them, targeted PGD
(robust_prune.transfer.extend_examples; every witness re-checked) runs on
the next test images, at most --transfer_max_images of them, into
OUT/transfer_extra_{net}.jsonl; transfer.json says how many images and
examples each side used."""

from __future__ import annotations

import os
from typing import Any

from robust_prune import io
from robust_prune import network as network_lib
from robust_prune import transfer as transfer_lib
from robust_prune.verify import records as records_lib

NETWORKS = ("original", "pruned")
OTHER = {"original": "pruned", "pruned": "original"}
RESULT = "transfer.json"
# transfer.json's layout; an older file (no extension) is redone.
VERSION = 2


def extra_name(net: str) -> str:
  return f"transfer_extra_{net}.jsonl"


def examples_of(net: str, out_dir: str, test, config) -> tuple[list, dict]:
  """(records holding `net`'s examples, where they came from)."""
  v, a = config.verify, config.analysis
  verified = records_lib.read_results(os.path.join(out_dir,
                                                   f"verify_{net}.jsonl"))
  have = transfer_lib.count_examples(verified)
  path = os.path.join(out_dir, extra_name(net))
  network = network_lib.load_network(os.path.join(out_dir, net, "network.npz"))
  extension = transfer_lib.extend_examples(
      network, test.images, test.labels, path, have=have,
      wanted=a.transfer_examples, first=v.first_image + v.num_images,
      max_images=a.transfer_max_images,
      config=transfer_lib.extension_config(v.delta, solver=v.solver,
                                           bounds=v.bounds))
  extra = []
  if extension["images"]:
    extra = [r for r in records_lib.read_results(path)
             if r["image_index"] < extension["stop"]]
  source = {"verify_images": [v.first_image, v.first_image + v.num_images],
            "verify_examples": have, "wanted": a.transfer_examples,
            "extension_images": [extension["first"], extension["stop"]],
            "extension_examples": extension["examples"],
            "extension_file": extra_name(net) if extension["images"] else None,
            "examples": have + extension["examples"],
            "max_images": a.transfer_max_images}
  return verified + extra, source


def run_transfer(config, out_dir: str, test) -> dict[str, Any]:
  """transfer.json: {tested network: its accuracy on the other's examples,
  "examples_of": the other, "sources": where they came from}."""
  from robust_prune.verify import engines  # pylint: disable=g-import-not-at-top
  # The verify stage's children compiled these networks' CROWN and PGD:
  # loaded from the persistent cache, not compiled again.
  engines.set_up_process()
  result: dict[str, Any] = {"version": VERSION, "delta": config.verify.delta}
  found = {net: examples_of(net, out_dir, test, config) for net in NETWORKS}
  for net in NETWORKS:
    network = network_lib.load_network(os.path.join(out_dir, net,
                                                    "network.npz"))
    records, source = found[OTHER[net]]
    result[net] = {**transfer_lib.transfer_accuracy(network, records),
                   "examples_of": OTHER[net], "sources": source}
  io.atomic_write_json(os.path.join(out_dir, RESULT), result)
  return {"examples": {net: found[net][1]["examples"] for net in NETWORKS}}


def needs_rerun(out_dir: str, config) -> bool:
  """A finished transfer stage is redone when its file is from before the
  extension, or when a side has fewer examples than now wanted and could
  have more (it stopped short of --transfer_max_images)."""
  result = io.read_json(os.path.join(out_dir, RESULT))
  if not isinstance(result, dict) or result.get("version") != VERSION:
    return True
  a = config.analysis
  for net in NETWORKS:
    source = result.get(net, {}).get("sources", {})
    first, stop = source.get("extension_images", [0, 0])
    if (source.get("examples", 0) < a.transfer_examples
        and stop - first < a.transfer_max_images
        and stop < len_test()):
      return True
  return False


def len_test() -> int:
  from robust_prune import data as data_lib  # pylint: disable=g-import-not-at-top
  return data_lib.SPLIT_SIZES["test"]
