"""The pure training step: Adam on PGD adversarial examples (Madry et al.),
one step or a chunk of steps in one device call.

`TrainState` is flax's: params, Adam state, step count and the model's apply
function. Nothing here touches files or the host between steps.
"""

from __future__ import annotations

from flax.training import train_state
import jax
import jax.numpy as jnp
import optax

from robust_prune import attacks
from robust_prune import data as data_lib
from robust_prune import models
from robust_prune import network as network_lib
from robust_prune.configs.train import TrainConfig

TrainState = train_state.TrainState


def create_train_state(config: TrainConfig, rng: jax.Array, *,
                       init_network: network_lib.Network | None = None,
                       steps_total: int = 1) -> TrainState:
  """Fresh Adam state; `init_network` replaces the random initial weights
  (fine-tuning or lottery-ticket rewinding of a pruned architecture)."""
  model = models.MLP(hidden=tuple(config.hidden))
  if init_network is not None:
    if init_network.hidden_widths != tuple(config.hidden):
      raise ValueError(f"init network widths {init_network.hidden_widths} != "
                       f"config widths {tuple(config.hidden)}")
    params = models.flax_params(init_network)
  else:
    params = model.init(rng, jnp.zeros((1, data_lib.NUM_PIXELS), jnp.float32))
  schedule = optax.cosine_decay_schedule(config.learning_rate,
                                         max(steps_total, 1))
  return TrainState.create(apply_fn=model.apply, params=params,
                           tx=optax.adam(schedule))


def initial_network(config: TrainConfig) -> network_lib.Network:
  """The weights training starts from at `config.seed` (for rewinding)."""
  init_rng, _ = jax.random.split(jax.random.key(config.seed))
  state = create_train_state(config, init_rng)
  return network_lib.network_from_params(state.params)


def cross_entropy(logits, labels):
  return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()


def _dense_layers(params) -> list[tuple[jax.Array, jax.Array]]:
  """(kernel, bias) of Dense_0..Dense_L, in order."""
  layers = params["params"]
  return [(layers[f"Dense_{i}"]["kernel"], layers[f"Dense_{i}"]["bias"])
          for i in range(len(layers))]


def relu_stability_loss(params, images, epsilon):
  """Xiao et al. (ICLR 2019), the ReLU-stability regulariser: for interval
  bounds [l, u] of every hidden pre-activation over the L-inf ball of radius
  `epsilon` (clipped to [0, 1]), sum_neurons -tanh(1 + l u), averaged over the
  batch. It pushes neurons to be stably active or inactive on the ball, so
  fewer need a branch or a binary in verification."""
  lower = jnp.clip(images - epsilon, 0.0, 1.0)
  upper = jnp.clip(images + epsilon, 0.0, 1.0)
  loss = 0.0
  for kernel, bias in _dense_layers(params)[:-1]:
    center, radius = (upper + lower) / 2, (upper - lower) / 2
    mid, spread = center @ kernel + bias, radius @ jnp.abs(kernel)
    l, u = mid - spread, mid + spread
    loss = loss + jnp.sum(-jnp.tanh(1.0 + l * u), axis=-1).mean()
    lower, upper = jax.nn.relu(l), jax.nn.relu(u)
  return loss


def l1_penalty(params):
  """The L1 weight decay Xiao et al. pair with the stability regulariser
  (weights only, not biases)."""
  return sum(jnp.sum(jnp.abs(kernel)) for kernel, _ in _dense_layers(params))


@jax.jit(static_argnames=("pgd_steps", "rs_weight", "l1_weight"))
def train_step(state: TrainState, images, labels, key, epsilon,
               pgd_steps: int, pgd_step_size, rs_weight: float = 0.0,
               l1_weight: float = 0.0):
  """One optimizer step on PGD adversarial examples (clean when pgd_steps=0).

  Madry et al.: the inner maximisation sees the current parameters but no
  gradient flows through it into the update. `rs_weight` and `l1_weight`
  (static: 0 adds nothing to the step) add the verification-friendly
  regularisers of Xiao et al. 2019, bounds taken around the clean images.
  """
  clean = images
  if pgd_steps > 0:
    images = jax.lax.stop_gradient(attacks.pgd(
        state.apply_fn, state.params, images, labels, epsilon=epsilon,
        steps=pgd_steps, step_size=pgd_step_size, key=key))

  def loss_fn(params):
    logits = state.apply_fn(params, images)
    loss = cross_entropy(logits, labels)
    if rs_weight:
      loss = loss + rs_weight * relu_stability_loss(params, clean, epsilon)
    if l1_weight:
      loss = loss + l1_weight * l1_penalty(params)
    return loss, logits

  (loss, logits), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
  accuracy = jnp.mean(jnp.argmax(logits, -1) == labels)
  return state.apply_gradients(grads=grads), {"loss": loss, "accuracy": accuracy}


@jax.jit(static_argnames=("pgd_steps", "rs_weight", "l1_weight"))
def train_steps(state: TrainState, images, labels, batch_indices,
                attack_key, first_step, epsilon, pgd_steps: int,
                pgd_step_size, rs_weight: float = 0.0, l1_weight: float = 0.0):
  """`len(batch_indices)` train steps in one device call (`lax.scan`): step i
  trains on images[batch_indices[i]] with the attack key
  fold_in(attack_key, first_step + i). The data stay on the device and the
  host dispatches once per chunk, not per step (on a GPU the per-step host
  round trips cost more than the step). Returns the state and the metrics
  summed over the steps."""
  def body(state, xs):
    i, idx = xs
    return train_step(state, images[idx], labels[idx],
                      jax.random.fold_in(attack_key, first_step + i), epsilon,
                      pgd_steps, pgd_step_size, rs_weight, l1_weight)
  steps = jnp.arange(batch_indices.shape[0])
  state, metrics = jax.lax.scan(body, state, (steps, batch_indices))
  return state, jax.tree.map(jnp.sum, metrics)
