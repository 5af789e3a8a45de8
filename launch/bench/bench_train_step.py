"""Throughput of the jitted train steps against the machine's matmul rate.

    python launch/bench/bench_train_step.py [--hidden=300,100] [--batch_size=128]

Prints examples/s of the clean and the PGD-10 train step, the FLOPs of each
step (XLA's cost analysis, with an analytic matmul count beside it; XLA counts
a loop body once, so the attack loop is costed as one input-gradient
evaluation times the number of PGD steps), the
achieved FLOP/s, and the dense-matmul rate measured in the same run with a
large jitted matmul. It also times each matmul shape of the PGD step on its
own (inside a jitted loop) and prints the rate the step would reach if
everything but its matmuls were free: the step's ceiling on this machine
(small matmuls such as 128x300 @ 300x100 run far below the large matmul's
rate on a CPU). Runs unchanged on CPU, GPU and TPU.
"""

from __future__ import annotations

import json
import time

from absl import app
from absl import flags
import jax
import jax.numpy as jnp
import numpy as np

from robust_prune import attacks
from robust_prune import configs
from robust_prune import models
from robust_prune import train as train_lib

_DEFAULT = configs.TrainConfig()  # the defaults of the training binary
flags.DEFINE_list("hidden", [str(w) for w in _DEFAULT.hidden],
                  "Hidden widths.")
flags.DEFINE_integer("batch_size", _DEFAULT.batch_size, "Batch size.")
flags.DEFINE_integer("pgd_steps", _DEFAULT.pgd_steps,
                     "PGD steps of the adversarial step.")
flags.DEFINE_integer("matmul_size", 2048, "Side of the square matmul.")
flags.DEFINE_float("seconds", 5.0, "Timing budget per measurement.")
FLAGS = flags.FLAGS


def interleaved_median_seconds(fns: dict, seconds: float, rounds: int = 5):
  """Median seconds per call of each blocking fn, timed in interleaved rounds
  so that a change in machine load hits every measurement alike."""
  for fn in fns.values():
    fn()
    fn()
  times = {name: [] for name in fns}
  per_round = seconds / rounds / len(fns)
  for _ in range(rounds):
    for name, fn in fns.items():
      deadline = time.perf_counter() + per_round
      while True:
        start = time.perf_counter()
        fn()
        times[name].append(time.perf_counter() - start)
        if time.perf_counter() > deadline:
          break
  return {name: float(np.median(t)) for name, t in times.items()}


def analytic_step_flops(widths, batch: int, pgd_steps: int) -> float:
  """Matmul FLOPs: a forward pass costs 2*sum(fan_in*fan_out) per example;
  each PGD iteration is a forward and an input-gradient backward (2 passes);
  the update is a forward, a weight-gradient pass and the input gradients of
  all layers but the first (just under 3 passes)."""
  dims = [784, *widths, 10]
  layer = [2 * a * b for a, b in zip(dims[:-1], dims[1:])]
  forward = sum(layer)
  update = 2 * forward + (forward - layer[0])
  return batch * (pgd_steps * 2 * forward + update)


def step_dots(widths, batch: int, pgd_steps: int):
  """The matmuls of one train step as (kind, m, k, n, count): `forward` is
  x @ W, `input_grad` is g @ W^T (W stored (fan_in, fan_out)), `weight_grad`
  is x^T @ g; the same count as `analytic_step_flops`."""
  dims = [784, *widths, 10]
  dots = []
  for i, (fan_in, fan_out) in enumerate(zip(dims[:-1], dims[1:])):
    dots.append(("forward", batch, fan_in, fan_out, pgd_steps + 1))
    dots.append(("input_grad", batch, fan_out, fan_in,
                 pgd_steps + (1 if i > 0 else 0)))
    dots.append(("weight_grad", fan_in, batch, fan_out, 1))
  return [d for d in dots if d[-1] > 0]


def dot_seconds(kind: str, m: int, k: int, n: int, seconds: float,
                repeats: int = 100) -> float:
  """Median seconds of one such matmul, timed inside a jitted loop (no
  per-call dispatch), with operands laid out as the train step has them."""
  rng = np.random.default_rng(0)
  if kind == "forward":
    lhs, rhs, dims = (m, k), (k, n), (((1,), (0,)), ((), ()))
  elif kind == "input_grad":
    lhs, rhs, dims = (m, k), (n, k), (((1,), (1,)), ((), ()))
  else:
    lhs, rhs, dims = (k, m), (k, n), (((0,), (0,)), ((), ()))
  a = jnp.asarray(rng.normal(size=lhs).astype(np.float32))
  b = jnp.asarray(rng.normal(size=rhs).astype(np.float32) * 1e-3)

  @jax.jit
  def loop(a, b):
    def body(_, carry):
      a, c = carry
      # One element of `a` depends on the last product, so XLA can neither
      # hoist the matmul out of the loop nor skip an iteration; the update
      # is in place (no extra pass over `a`).
      a = a.at[0, 0].add(1e-30 * c[0, 0])
      return a, jax.lax.dot_general(a, b, dims)
    return jax.lax.fori_loop(0, repeats, body,
                             (a, jnp.zeros((m, n), a.dtype)))[1]

  median = interleaved_median_seconds(
      {"dot": lambda: loop(a, b).block_until_ready()}, seconds)["dot"]
  return median / repeats


def xla_flops(jitted, *args) -> float:
  cost = jitted.lower(*args).compile().cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  return float(cost.get("flops", float("nan")))


def main(argv):
  del argv
  hidden = models.parse_widths(",".join(FLAGS.hidden))
  batch = FLAGS.batch_size
  config = train_lib.TrainConfig(hidden=hidden, batch_size=batch)
  state = train_lib.create_train_state(config, jax.random.key(0),
                                       steps_total=10**6)
  rng = np.random.default_rng(0)
  images = jnp.asarray(rng.uniform(size=(batch, 784)).astype(np.float32))
  labels = jnp.asarray(rng.integers(0, 10, batch).astype(np.int32))
  key = jax.random.key(0)

  n = FLAGS.matmul_size
  a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32)
  b = jax.random.normal(jax.random.key(1), (n, n), jnp.float32)
  matmul = jax.jit(jnp.matmul)
  names = ("clean", f"pgd{FLAGS.pgd_steps}")
  step_args = {name: (state, images, labels, key, 0.1, steps, 0.01)
               for name, steps in zip(names, (0, FLAGS.pgd_steps))}
  medians = interleaved_median_seconds(
      {"matmul": lambda: matmul(a, b).block_until_ready(),
       **{name: (lambda args=args: jax.block_until_ready(
           train_lib.train_step(*args))) for name, args in step_args.items()}},
      3 * FLAGS.seconds)
  matmul_rate = 2 * n**3 / medians["matmul"]
  results = {"device": str(jax.devices()[0]), "hidden": list(hidden),
             "batch_size": batch,
             "matmul_gflops_per_s": matmul_rate / 1e9}
  update_flops = xla_flops(train_lib.train_step, state, images, labels, key,
                           0.1, 0, 0.01)
  gradient_flops = xla_flops(
      jax.jit(lambda p, x, y: attacks.input_gradient(state.apply_fn, p, x, y,
                                                     None)),
      state.params, images, labels)
  for name, steps in zip(names, (0, FLAGS.pgd_steps)):
    step_flops = update_flops + steps * gradient_flops
    seconds = medians[name]
    results[name] = {
        "examples_per_s": batch / seconds,
        "ms_per_step": seconds * 1e3,
        "xla_flops_per_step": step_flops,
        "analytic_matmul_flops_per_step": analytic_step_flops(hidden, batch,
                                                              steps),
        "gflops_per_s": step_flops / seconds / 1e9,
        "fraction_of_matmul_rate": step_flops / seconds / matmul_rate,
    }
  # What the machine gives these very matmuls, one by one: the rate the
  # step could reach if everything but its matmuls were free.
  dots = step_dots(hidden, batch, FLAGS.pgd_steps)
  dot_time = {d[:4]: dot_seconds(*d[:4], seconds=FLAGS.seconds / len(dots))
              for d in dots}
  total_seconds = sum(d[4] * dot_time[d[:4]] for d in dots)
  ceiling = sum(2 * d[1] * d[2] * d[3] * d[4] for d in dots) / total_seconds
  results["step_matmuls_alone"] = {
      "gflops_per_s": ceiling / 1e9,
      "fraction_of_matmul_rate": ceiling / matmul_rate,
      "shapes": [{"kind": kind, "m": m, "k": k, "n": n, "count": count,
                  "gflops_per_s": 2 * m * k * n / dot_time[(kind, m, k, n)]
                  / 1e9} for kind, m, k, n, count in dots]}
  print(json.dumps(results, indent=2))
  print(f"device {results['device']}: matmul {matmul_rate / 1e9:.1f} GFLOP/s "
        f"({FLAGS.matmul_size}^2 float32)")
  for name in names:
    r = results[name]
    print(f"{name:>6} step, batch {batch}: {r['examples_per_s']:9.0f} ex/s, "
          f"{r['xla_flops_per_step'] / 1e9:.3f} GFLOP/step (analytic matmul "
          f"{r['analytic_matmul_flops_per_step'] / 1e9:.3f}), "
          f"{r['gflops_per_s']:.1f} GFLOP/s = "
          f"{100 * r['fraction_of_matmul_rate']:.0f}% of matmul rate")
  c = results["step_matmuls_alone"]
  print(f"the pgd{FLAGS.pgd_steps} step's matmuls alone, timed one by one: "
        f"{c['gflops_per_s']:.1f} GFLOP/s = "
        f"{100 * c['fraction_of_matmul_rate']:.0f}% of matmul rate (the "
        f"step's ceiling here)")


if __name__ == "__main__":
  app.run(main)
