"""Shared test helpers: random networks, boxes, exact ground truth.

pytest puts the rootdir's tests/ folder on sys.path (rootdir conftest, no
__init__.py), so test modules import these as `from testing import ...`.
"""

import functools
import importlib.util
import itertools
import os
import signal

import numpy as np
import scipy.optimize

from robust_prune import bounds
from robust_prune.milp import model as model_lib
from robust_prune.milp import objective, solvers, standard_form
from robust_prune.network import Network, forward


def terminal_sigint():
  """A child's preexec_fn: SIGINT as a terminal's foreground job gets it.
  A suite started in the background (`pytest &`) passes on an ignored
  SIGINT, as shells do for background jobs."""
  signal.signal(signal.SIGINT, signal.SIG_DFL)


def random_network(seed, sizes, bias_scale=0.3):
  """float32 MLP with N(0, 1/fan_in) weights; `seed` is an int or a numpy
  Generator (drawn from in place)."""
  rng = np.random.default_rng(seed)
  return Network(
      tuple((rng.normal(size=(a, b)) / np.sqrt(a)).astype(np.float32)
            for a, b in zip(sizes[:-1], sizes[1:])),
      tuple((bias_scale * rng.normal(size=b)).astype(np.float32)
            for b in sizes[1:]))


def sample_box(rng, lower, upper, n):
  """Uniform points plus box vertices (where ReLU nets reach extremes)."""
  points = rng.uniform(lower, upper, size=(n, len(lower)))
  vertices = np.where(rng.random((n // 2, len(lower))) < 0.5, lower, upper)
  return np.concatenate([points, vertices])


def pre_activations(net, x):
  """Pre-activations of every hidden layer for a batch of inputs (float64)."""
  pre, h = [], x
  for w, b in zip(net.weights[:-1], net.biases[:-1]):
    y = h @ np.asarray(w, np.float64) + np.asarray(b, np.float64)
    pre.append(y)
    h = np.maximum(y, 0)
  return pre


def exact_min_spec(net, lower, upper, c, splits=None):
  """Ground truth by enumerating activation patterns: on each pattern's
  region c^T f is linear, so an LP gives its minimum there. Returns the
  minimum and a point attaining it (inf, None if the domain is empty).
  `splits` (one -1/0/+1 per hidden neuron, all layers concatenated)
  restricts the enumeration to a branch-and-bound domain."""
  widths = net.hidden_widths
  best, best_x = np.inf, None
  w = [np.asarray(m, np.float64) for m in net.weights]
  b = [np.asarray(v, np.float64) for v in net.biases]
  for pattern in itertools.product([0, 1], repeat=sum(widths)):
    if splits is not None and np.any(
        (np.asarray(splits) * (2 * np.array(pattern) - 1)) < 0):
      continue  # the pattern contradicts a split
    masks = np.split(np.array(pattern, np.float64), np.cumsum(widths)[:-1])
    # affine map x -> pre-activation of each layer under this pattern
    a_mat, a_off = np.eye(len(lower)), np.zeros(len(lower))
    rows, rhs = [], []
    for layer, mask in enumerate(masks):
      pa, po = a_mat @ w[layer], a_off @ w[layer] + b[layer]
      # active: pre >= 0  ->  -pa x <= po ; inactive: pre <= 0 -> pa x <= -po
      sign = np.where(mask > 0, -1.0, 1.0)
      rows.append((pa * sign).T)
      rhs.append(np.where(mask > 0, po, -po))
      a_mat, a_off = pa * mask, po * mask
    out_mat, out_off = a_mat @ w[-1], a_off @ w[-1] + b[-1]
    res = scipy.optimize.linprog(out_mat @ c, A_ub=np.vstack(rows),
                                 b_ub=np.concatenate(rhs),
                                 bounds=list(zip(lower, upper)), method="highs")
    if res.status == 0 and res.fun + out_off @ c < best:
      best, best_x = res.fun + out_off @ c, res.x
  return best, best_x


def exact_min_margin(net, lower, upper, label, target):
  """Exact minimum of logit[label] - logit[target] over the box."""
  c = objective.margin_vector(label, target, net.num_classes)
  return exact_min_spec(net, lower, upper, c)


def grid_min_margin(net, lower, upper, label, target, n=201):
  g = np.stack(np.meshgrid(np.linspace(lower[0], upper[0], n),
                           np.linspace(lower[1], upper[1], n)), -1).reshape(-1, 2)
  logits = forward(net, g)
  return float(np.min(logits[:, label] - logits[:, target]))


def hidden_pattern_signs(net, x):
  """+1/-1 per hidden neuron (all layers concatenated): the phase of each
  pre-activation at the inputs x (N, n_in)."""
  _, pre = forward(net, np.atleast_2d(x), return_hidden=True)
  return np.where(np.concatenate(pre, axis=1) >= 0, 1, -1).astype(np.int8)


def tiny_case(seed):
  net = random_network(seed, (2, 4, 4, 3))
  rng = np.random.default_rng(100 + seed)
  x = rng.uniform(0.2, 0.8, size=2)
  label = int(np.argmax(forward(net, x)))
  target = (label + 1 + seed % 2) % 3
  return net, x, label, target


def solve_targeted(net, x, delta, label, target, solver, method="crown",
                   all_binary=False, time_limit=30.0):
  lower, upper = bounds.input_box(x, delta)
  lb = bounds.layer_bounds(net, lower, upper,
                           "interval" if all_binary else method)
  m = model_lib.build_model(net, lower, upper, lb, all_binary=all_binary,
                            materialize=not all_binary)
  m.c.value = objective.margin_vector(label, target, net.num_classes)
  milp = standard_form.compile_model(m.problem)
  return m, milp, solvers.solve(milp, solver, time_limit=time_limit)


@functools.lru_cache(maxsize=None)
def ablation_module():
  """launch/ablations/run_ablation.py, loaded once per test session (it
  defines absl flags, which may be defined only once)."""
  repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  spec = importlib.util.spec_from_file_location(
      "run_ablation", os.path.join(repo, "launch", "ablations",
                                   "run_ablation.py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def masked_forward(network: Network, x, removed) -> np.ndarray:
  """The network's logits (float64) with the activations of the neurons
  removed[l] (indices per hidden layer) set to 0."""
  h = np.asarray(x, np.float64)
  for l, (w, b) in enumerate(zip(network.weights, network.biases)):
    h = h @ np.asarray(w, np.float64) + b
    if l < network.num_layers - 1:
      h = np.maximum(h, 0.0)
      h[..., list(removed[l])] = 0.0
  return h


def trained_network_path(tmp_path_factory, recipe, splits) -> str:
  """network.npz of `recipe` trained on splits (train, test) in a fresh
  folder, with its config.json beside it."""
  from robust_prune import train as train_lib  # pylint: disable=g-import-not-at-top
  workdir = str(tmp_path_factory.mktemp("original"))
  train_lib.train_and_evaluate(recipe, workdir, train=splits[0],
                               test=splits[1])
  return os.path.join(workdir, train_lib.NETWORK)


def row_property(c, threshold, lower=(-1.0, -0.5), upper=(0.5, 1.0)):
  """VNN-LIB text of a property over a 2-input box (by default the box of
  test_vnnlib's tiny networks) whose counterexample is c @ y <= threshold,
  written with +, * and constants."""
  lines = [f"(declare-const X_{i} Real)" for i in range(len(lower))]
  lines += [f"(declare-const Y_{j} Real)" for j in range(len(c))]
  for i, (lo, hi) in enumerate(zip(lower, upper)):
    lines += [f"(assert (>= X_{i} {float(lo)!r}))",
              f"(assert (<= X_{i} {float(hi)!r}))"]
  terms = " ".join(f"(* {float(v)!r} Y_{j})" for j, v in enumerate(c))
  lines.append(f"(assert (<= (+ {terms}) {float(threshold)!r}))")
  return "\n".join(lines) + "\n"
