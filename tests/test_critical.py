"""RQ1/RQ2 pieces: one batch for both networks, critical sets and their
overlaps, the causal ablation's ranking and structural removal, and the
reverse-testing extension's witnesses."""

import math
import types

import numpy as np
import pytest

from testing import masked_forward, random_network

from robust_prune.network import Network, forward
from robust_prune.pruning import critical as critical_lib
from robust_prune.pruning.options import PruneOptions
from robust_prune.stages import ablation as ablation_lib


# ------------------------------------------------------------ shared batch
def _two_networks():
  """`original` (3 inputs, 3 hidden, 2 classes) decides by x0 > 0.5 with
  margin 20|x0 - 0.5|, but its neuron 2 (x1 > 0.5) pushes class 0 up by
  30 (x1 - 0.5); `pruned` keeps neurons 0 and 1 (original indices)."""
  w0 = np.array([[1, -1, 0], [0, 0, 1], [0, 0, 0]], np.float32)
  b0 = np.array([-0.5, 0.5, -0.5], np.float32)
  w1 = np.array([[-10, 10], [10, -10], [30, 0]], np.float32)
  b1 = np.zeros(2, np.float32)
  original = Network((w0, w1), (b0, b1))
  pruned = Network((w0[:, :2], w1[:2]), (b0[:2], b1))
  return original, pruned, [np.array([0, 1]), np.array([0])]


def _split():
  """Image 0: class 1 with x1 = 0.9 (the original misclassifies it: only
  `pruned` would pick it); image 1: near the boundary (margin 1 < 3);
  then clean examples of both classes."""
  images = np.array([[0.9, 0.9, 0.0], [0.55, 0.0, 0.0], [0.1, 0.2, 0.5],
                     [0.9, 0.1, 0.5], [0.95, 0.0, 0.2], [0.05, 0.3, 0.1]],
                    np.float32)
  labels = np.array([1, 1, 0, 1, 1, 0])
  return types.SimpleNamespace(images=images, labels=labels)


def test_one_batch_for_both_networks():
  original, pruned, _ = _two_networks()
  split = _split()
  kwargs = dict(epsilon=0.1, images_per_class=1, min_margin=3.0, steps=10,
                step_size=0.02)
  alone = critical_lib.select_robust_batch(pruned, split.images, split.labels,
                                           **kwargs)
  assert alone[3].tolist() == [2, 0]  # the pruned net alone takes image 0
  clean, adv, labels, indices = critical_lib.select_shared_batch(
      {"original": original, "pruned": pruned}, split.images, split.labels,
      **kwargs)
  assert indices.tolist() == [2, 3]   # 0 fails the original, 1 the margin
  np.testing.assert_array_equal(clean, split.images[[2, 3]])
  assert labels.tolist() == [0, 1]
  for name, network in (("original", original), ("pruned", pruned)):
    assert np.max(np.abs(adv[name] - clean)) <= 0.1 + 1e-6
    assert np.all((adv[name] >= 0) & (adv[name] <= 1))
    logits = forward(network, adv[name])
    assert np.all(logits[[0, 1], labels] - logits[[0, 1], 1 - labels] > 3)


def test_critical_analysis_scores_both_networks_on_the_same_images():
  original, pruned, kept = _two_networks()
  split = _split()
  config = types.SimpleNamespace(attack_epsilon=0.1, eval_pgd_steps=10,
                                 eval_pgd_step_size=0.02)
  options = PruneOptions(margin=3.0, time_limit=20.0, retrain="finetune",
                         critical=True)
  seen = []
  solve = critical_lib._solve  # pylint: disable=protected-access

  def recording(network, name, kind, images, labels):
    seen.append((name, kind, images.copy(), labels.tolist()))
    return solve(options, network, name, kind, images, labels)

  out = critical_lib.critical_analysis(original, pruned, kept, split, config,
                                       options, solve=recording)
  assert out["batch_indices"] == out["original"]["batch_indices"] == (
      out["pruned"]["batch_indices"]) == [2, 3]
  clean = {name: images for name, kind, images, _ in seen if kind == "clean"}
  np.testing.assert_array_equal(clean["original"], clean["pruned"])
  assert {(n, k) for n, k, _, _ in seen} == {
      (n, k) for n in ("original", "pruned") for k in ("clean", "adversarial")}
  # pruned critical neurons are named by original indices, within the kept
  for kind in ("clean", "adversarial"):
    for l, indices in enumerate(out["pruned"][kind]["critical"]):
      assert set(indices) <= set(kept[l].tolist())
    for l, row in enumerate(out[f"consistency_{kind}"]):
      a = set(out["original"][kind]["critical"][l])
      b = set(out["pruned"][kind]["critical"][l])
      assert row["num_both"] == len(a & b)
      assert row["population"] == original.hidden_widths[l]


# ----------------------------------------------------------------- sets
def test_jaccard_and_overlap_on_hand_sets():
  assert critical_lib.jaccard(frozenset({1, 2, 3}), frozenset({2, 3, 4})) == 0.5
  assert critical_lib.jaccard(frozenset(), frozenset()) == 1.0
  assert critical_lib.jaccard(frozenset({1}), frozenset({2})) == 0.0
  rows = critical_lib.compare_sets(
      [frozenset({1, 2, 3}), frozenset()], [frozenset({2, 3, 4}), frozenset({0})],
      ("clean", "adversarial"), populations=[10, 5])
  first, second = rows
  assert (first["num_clean"], first["num_adversarial"], first["num_both"]) == (
      3, 3, 2)
  assert first["only_clean"] == [1] and first["only_adversarial"] == [4]
  assert first["expected_both"] == pytest.approx(0.9)
  # P(X >= 2), X ~ Hypergeometric(10 items, 3 marked, 3 drawn)
  by_hand = sum(math.comb(3, k) * math.comb(7, 3 - k)
                for k in (2, 3)) / math.comb(10, 3)
  assert first["overlap_p"] == pytest.approx(by_hand)
  assert second["overlap_p"] is None and second["jaccard"] == 0.0


def test_critical_sets_map_pruned_neurons_to_original_indices():
  sets = critical_lib.critical_sets(
      [np.array([0.0, 1.0, 0.5]), np.array([0.002, 0.0])], 0.001,
      kept=[np.array([3, 7, 9]), np.array([4, 5])])
  assert sets == (frozenset({7, 9}), frozenset({4}))


# -------------------------------------------------------------- ablation
def test_ranking_breaks_ties_by_outgoing_norm_then_index():
  scores = [1.0, 1.0, 0.0, 1.0, 0.5]
  norms = [0.5, 2.0, 9.0, 2.0, 1.0]
  assert ablation_lib.most_critical(scores, norms, 2) == [1, 3]
  assert ablation_lib.most_critical(scores, norms, 3) == [0, 1, 3]
  assert ablation_lib.most_critical(scores, norms, 4) == [0, 1, 3, 4]
  # all tied: the larger norms, then the lower index
  assert ablation_lib.most_critical([0, 0, 0, 0], [1, 3, 3, 2], 2) == [1, 2]
  with pytest.raises(ValueError):
    ablation_lib.most_critical([1, 0], [1], 1)


def test_removal_counts_and_seeded_random_choice():
  assert ablation_lib.removal_counts((300, 100), 0.1) == (30, 10)
  assert ablation_lib.removal_counts((5, 15, 1), 0.1) == (1, 2, 0)
  first = ablation_lib.random_neurons((300, 100), (30, 10), seed=3)
  assert first == ablation_lib.random_neurons((300, 100), (30, 10), seed=3)
  assert [len(set(x)) for x in first] == [30, 10]
  assert first != ablation_lib.random_neurons((300, 100), (30, 10), seed=4)


def test_removed_network_is_the_masked_network_without_those_neurons():
  network = random_network(0, [12, 9, 7, 4])
  removed = [[0, 4, 8], [6]]
  smaller, kept = ablation_lib.remove_neurons(network, removed)
  assert smaller.hidden_widths == (6, 6)
  assert [k.tolist() for k in kept] == [[1, 2, 3, 5, 6, 7], [0, 1, 2, 3, 4, 5]]
  # exactly the named neurons are gone: the rest keep their weights
  np.testing.assert_array_equal(smaller.weights[0], network.weights[0][:, kept[0]])
  np.testing.assert_array_equal(smaller.weights[1],
                                network.weights[1][kept[0]][:, kept[1]])
  np.testing.assert_array_equal(smaller.weights[2], network.weights[2][kept[1]])
  x = np.random.default_rng(1).uniform(size=(50, 12))
  np.testing.assert_allclose(forward(smaller, x),
                             masked_forward(network, x, removed),
                             rtol=1e-5, atol=1e-5)
  # and removing them changes the outputs (the test can tell)
  assert not np.allclose(forward(network, x), forward(smaller, x), atol=1e-3)
  with pytest.raises(ValueError, match="cannot remove"):
    ablation_lib.remove_neurons(network, [[9], []])


def test_neurons_to_remove_uses_each_score_alone():
  network = random_network(2, [6, 10, 4, 3])
  clean = [np.r_[np.ones(3), np.zeros(7)], np.array([0, 1, 0, 1.0])]
  adversarial = [np.r_[np.zeros(7), np.ones(3)], np.array([1, 0, 0, 0.0])]
  removed = ablation_lib.neurons_to_remove(network, clean, adversarial, 0.25,
                                           seed=0)
  assert ablation_lib.removal_counts((10, 4), 0.25) == (3, 1)
  assert removed["accuracy"][0] == [0, 1, 2]
  assert removed["robustness"][0] == [7, 8, 9]
  assert removed["robustness"][1] == [0]
  norms = ablation_lib.outgoing_norms(network)[1]
  assert removed["accuracy"][1] == [1 if norms[1] >= norms[3] else 3]


def test_paired_counts():
  t = ablation_lib.paired_counts([1, 1, 0, 0, 1], [1, 0, 1, 0, 1])
  assert t == {"both": 2, "only_first": 1, "only_second": 1, "neither": 1}


# ------------------------------------------------ reverse-testing examples
def test_transfer_extension_finds_enough_checked_examples(tmp_path):
  from robust_prune import transfer as transfer_lib
  from robust_prune.verify import records as records_lib
  rng = np.random.default_rng(0)
  network = random_network(5, [784, 12, 10])
  images = rng.uniform(0, 1, size=(60, 784)).astype(np.float32)
  labels = np.argmax(forward(network, images), -1)
  labels[3] = (labels[3] + 1) % 10   # one misclassified image
  path = str(tmp_path / "extra.jsonl")
  config = transfer_lib.extension_config(0.1, solver="HIGHS", bounds="crown")
  got = transfer_lib.extend_examples(network, images, labels, path, have=4,
                                     wanted=30, first=10, max_images=40,
                                     config=config, chunk=5)
  records = records_lib.read_results(path)
  assert got["first"] == 10 and got["images"] == got["stop"] - 10
  assert got["examples"] + 4 >= 30
  # a prefix of images, chunk by chunk, stopped at the first chunk enough
  assert {r["image_index"] for r in records} == set(range(10, got["stop"]))
  assert transfer_lib.count_examples(records, below=got["stop"] - 5) + 4 < 30
  found = [r for r in records if r["status"] == "adversarial"]
  assert len(found) == got["examples"]
  for r in found:  # the witness, re-checked by a float64 forward pass
    x = np.asarray(r["x_adv"], np.float64)
    image = images[r["image_index"]].astype(np.float64)
    assert np.all(np.abs(x - image) <= 0.1 + 1e-6)
    assert np.all((x >= 0) & (x <= 1))
    logits = forward(network.astype(np.float64), x)
    assert logits[r["target"]] > logits[r["label"]]
  assert {r["status"] for r in records} <= {"adversarial", "robust",
                                           "timeout"}
  # a rerun stops where this one did and appends nothing
  size = (tmp_path / "extra.jsonl").stat().st_size
  again = transfer_lib.extend_examples(network, images, labels, path, have=4,
                                       wanted=30, first=10, max_images=40,
                                       config=config, chunk=5)
  assert again == got and (tmp_path / "extra.jsonl").stat().st_size == size
  # the cap on images holds when the examples never suffice
  capped = transfer_lib.extend_examples(
      network, images, labels, str(tmp_path / "capped.jsonl"), have=0,
      wanted=10 ** 6, first=50, max_images=40, config=config, chunk=5)
  assert capped["stop"] == 60 and capped["images"] == 10


def test_critical_stage_keeps_each_solve_and_reuses_it(tmp_path, monkeypatch):
  """An interrupted critical stage repeats no MILP: each solve is stored
  with what it was solved on, and reused only for the same inputs."""
  from robust_prune.stages import critical as critical_stage
  original, _, _ = _two_networks()
  split = _split()
  options = PruneOptions(margin=3.0, time_limit=10.0, retrain="finetune")
  calls = []
  real = critical_lib._solve  # pylint: disable=protected-access

  def counting(*args):
    calls.append(args[2:4])
    return real(*args)

  monkeypatch.setattr(critical_lib, "_solve", counting)
  path = str(tmp_path / "critical_scores.json")
  images, labels = split.images[[2, 3]], split.labels[[2, 3]]
  first = critical_stage._CachedSolves(path, options)(  # pylint: disable=protected-access
      original, "original", "clean", images, labels)
  again = critical_stage._CachedSolves(path, options)(  # pylint: disable=protected-access
      original, "original", "clean", images, labels)
  assert calls == [("original", "clean")]
  np.testing.assert_array_equal(np.concatenate(first.scores),
                                np.concatenate(again.scores))
  assert again.status == first.status
  moved = images.copy()
  moved[0, 2] += 0.01   # other images: solved anew
  critical_stage._CachedSolves(path, options)(  # pylint: disable=protected-access
      original, "original", "clean", moved, labels)
  assert calls == [("original", "clean")] * 2


def test_critical_stage_is_not_decided_after_scratch_retraining(tmp_path):
  """Scratch retraining re-initialises the pruned network, so its neurons
  cannot be compared with the original's: a recorded status, no analysis."""
  import json  # pylint: disable=g-import-not-at-top
  from robust_prune import configs  # pylint: disable=g-import-not-at-top
  from robust_prune.stages import critical as critical_stage  # pylint: disable=g-import-not-at-top
  config = configs.presets.quick(retrain="scratch")
  details = critical_stage.run_critical(config, str(tmp_path), train=None)
  assert "from scratch" in details["error"]
  with open(tmp_path / critical_stage.RESULT) as f:
    assert "from scratch" in json.load(f)["error"]
