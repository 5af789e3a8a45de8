"""The one linear back-substitution (CROWN / DeepPoly, with beta-CROWN's
split multipliers) behind every bound of the project.

Given a linear objective `spec @ y_k + spec_bias` of the pre-activation y_k
of layer k = len(weights) - 1 (the logits when all layers are given), and
for each earlier hidden layer j a relaxation `low*y <= relu(y) <= up*y +
shift` (bounds.relaxation), it substitutes y_j = h_{j-1} W_j + b_j and the
relaxations layer by layer down to the input and minimises the resulting
affine function of x over the box: positive coefficients of h_j take the
lower line, negative ones the upper line. A split neuron (split s = +-1,
constraint s*y >= 0 on the domain) may add `-beta*s*y` with beta >= 0: the
objective only decreases on the domain, so the bound stays sound
(beta-CROWN, Wang et al. 2021). Likewise a cut h_0[n] <= v.x + c valid on
the box (bounds.hull_cuts) may add `-gamma*(v.x + c - h_0[n])` with gamma >= 0
(GCP-CROWN, Zhang et al. 2022).

One function serves the JAX search and bounds (xp = jax.numpy, any float
dtype, batched over leading axes) and the float64 proofs (xp = numpy with
`track_magnitude`: the same recursion on absolute values gives the sum of
the magnitudes of all terms, for `safety.roundoff_allowance`).
"""

from __future__ import annotations

from typing import NamedTuple, Sequence

import jax.numpy as jnp
import numpy as np

from robust_prune.bounds import hull_cuts


class Backsub(NamedTuple):
  bound: object         # (...,) lower bound of the objective over the box
  input_coeffs: object  # (..., n_in) the objective's coefficients on x
  constant: object      # (...,) their constant term
  hidden_coeffs: list   # per hidden layer j, coefficients on h_j (branching)
  magnitude: object     # (...,) sum of |terms| (None unless track_magnitude)


def minimising_vertex(input_coeffs, in_lower, in_upper, xp=jnp):
  """The box vertex where the back-substituted bound is attained."""
  return xp.where(input_coeffs > 0, _like(in_lower, input_coeffs),
                  _like(in_upper, input_coeffs))


def _like(a, lam):
  """Per-neuron arrays (..., n) broadcast over spec rows of lam (..., m, n)."""
  return a if a.ndim >= lam.ndim else a[..., None, :]


def _dot_last(a, v, xp):
  """sum(a * v, axis=-1). numpy materialises the product, so there a 1-D v
  goes through matmul; XLA fuses the product and the sum."""
  if xp is not jnp and v.ndim == 1:
    return a @ v
  return xp.sum(a * _like(v, a), axis=-1)


def _relax(lam, relaxation, beta, split, xp):
  """Coefficients on the pre-activation y_j from those on h_j = relu(y_j),
  and the constant the upper lines add."""
  low, up, shift = (_like(a, lam) for a in relaxation)
  pos, neg = xp.maximum(lam, 0), xp.minimum(lam, 0)
  added = xp.sum(neg * shift, axis=-1)
  lam = pos * low + neg * up
  if beta is not None:
    lam = lam - xp.maximum(_like(beta, lam), 0) * _like(split, lam)
  return lam, added


def _relax_magnitude(mag, relaxation, beta, split, xp):
  low, up, shift = (_like(a, mag) for a in relaxation)
  added = xp.sum(mag * xp.abs(shift), axis=-1)
  mag = mag * xp.maximum(xp.abs(low), xp.abs(up))
  if beta is not None:
    mag = mag + xp.maximum(_like(beta, mag), 0) * xp.abs(_like(split, mag))
  return mag, added


def _per_domain(cuts) -> bool:
  """Cuts shared by every domain (input rows (K, n_in), constants (K,)) or
  one set per domain ((D, K, n_in), (D, K)); the neuron rows are shared."""
  return cuts.input_coeffs.ndim == 3


def _cut_sets(cuts, gammas):
  """(cut set, its gammas) for one Cuts or a tuple of them (e.g. shared
  root cuts then per-domain ones), the gammas in the same order."""
  out, start = [], 0
  for one in hull_cuts.as_sets(cuts):
    count = one.constant.shape[-1]
    out.append((one, gammas[..., start:start + count]))
    start += count
  return out


def _cut_constants(gammas, cuts, xp, f=lambda a: a):
  """sum_k gamma_k f(c_k) per domain."""
  total = 0.0
  for one, g in _cut_sets(cuts, gammas):
    c = f(one.constant)
    total = total + (xp.sum(g * c, axis=-1) if _per_domain(one) else g @ c)
  return total


_DOMAINS_AT_ONCE = 8


def _per_domain_inputs(g, v, xp, f):
  """sum_k g_k f(v_k) for each domain's own rows v (D, K, n_in): a batched
  (1, K) x (K, n_in) product (numpy's einsum of this form is a slow loop;
  XLA's fused multiply-and-sum was slower). numpy takes a few domains at a
  time: f(v) and its float64 copy of a whole batch (~15M entries) would
  fill fresh pages, ~40x the product's cost."""
  if xp is jnp or g.ndim != 2:
    return xp.matmul(g[..., None, :], f(v))[..., 0, :]
  out = np.empty((len(g), v.shape[-1]), np.result_type(g, v))
  for i in range(0, len(g), _DOMAINS_AT_ONCE):
    rows = slice(i, i + _DOMAINS_AT_ONCE)
    out[rows] = np.matmul(g[rows, None, :], f(v[rows]))[:, 0, :]
  return out


def _cut_inputs(gammas, cuts, xp, f=lambda a: a):
  """sum_k gamma_k f(v_k) per domain."""
  total = 0.0
  for one, g in _cut_sets(cuts, gammas):
    total = total + (_per_domain_inputs(g, one.input_coeffs, xp, f)
                     if _per_domain(one) else g @ f(one.input_coeffs))
  return total


def _cut_neurons(gammas, cuts, f=lambda a: a):
  """sum_k gamma_k f(e_{n_k}): the cuts' coefficients on h_0."""
  total = 0.0
  for one, g in _cut_sets(cuts, gammas):
    total = total + g @ f(one.neurons)
  return total


def _add_cuts(lam, const, mag, mag_const, cuts, gammas, xp):
  """The coefficients on h_0 and the constant after subtracting
  gamma * (v.x + c - h_0[n]) for every cut (the x terms follow at the end)."""
  gammas = xp.maximum(gammas, 0)
  lam = lam + _cut_neurons(gammas, cuts)
  const = const - _cut_constants(gammas, cuts, xp)
  if mag is not None:
    mag = mag + _cut_neurons(gammas, cuts, xp.abs)
    mag_const = mag_const + _cut_constants(gammas, cuts, xp, xp.abs)
  return lam, const, mag, mag_const


def backsubstitute(spec, weights: Sequence, biases: Sequence,
                   relaxations: Sequence, in_lower, in_upper, *,
                   spec_bias=None, betas=None, splits=None, cuts=None,
                   gammas=None, track_magnitude: bool = False,
                   xp=jnp) -> Backsub:
  """Lower bound of `spec @ y_k + spec_bias` over the box [in_lower, in_upper].

  spec (..., n_k) or (..., m, n_k); relaxations[j] = (low, up, shift) of
  hidden layer j < k (bounds.relaxation.relu_relaxation), each broadcasting
  against the coefficients (per neuron, per domain or per spec row);
  betas/splits (optional) per hidden layer, like the relaxations; cuts
  (bounds.hull_cuts.Cuts, on the first hidden layer; shared, or one set per
  domain, or a tuple of such sets) with their multipliers gammas (..., K),
  the sets' in order (optional)."""
  use_cuts = cuts is not None and gammas is not None
  lam = spec
  const = (xp.zeros(spec.shape[:-1], spec.dtype) if spec_bias is None
           else spec_bias)
  mag = xp.abs(spec) if track_magnitude else None
  mag_const = xp.abs(const) if track_magnitude else None
  hidden_coeffs = [None] * (len(weights) - 1)
  for j in range(len(weights) - 1, -1, -1):
    if j < len(weights) - 1:
      if j == 0 and use_cuts:
        lam, const, mag, mag_const = _add_cuts(lam, const, mag, mag_const,
                                               cuts, gammas, xp)
      hidden_coeffs[j] = lam
      beta = None if betas is None else betas[j]
      split = None if splits is None else splits[j]
      lam, added = _relax(lam, relaxations[j], beta, split, xp)
      const = const + added
      if track_magnitude:
        mag, added = _relax_magnitude(mag, relaxations[j], beta, split, xp)
        mag_const = mag_const + added
    const = const + lam @ biases[j]
    lam = lam @ weights[j].T
    if track_magnitude:
      mag_const = mag_const + mag @ xp.abs(biases[j])
      if j > 0:
        mag = mag @ xp.abs(weights[j].T)
  if use_cuts:
    lam = lam - _cut_inputs(xp.maximum(gammas, 0), cuts, xp)
  bound = (const + _dot_last(xp.maximum(lam, 0), in_lower, xp)
           + _dot_last(xp.minimum(lam, 0), in_upper, xp))
  magnitude = None
  if track_magnitude:
    # the input layer's |W| contracted with the input magnitudes first:
    # the same sum, without a second (..., n_0) x (n_0, n_in) product
    magnitude = mag_const + _dot_last(
        mag, xp.maximum(xp.abs(in_lower), xp.abs(in_upper))
        @ xp.abs(weights[0]), xp)
    if use_cuts:
      magnitude = magnitude + _dot_last(
          _cut_inputs(xp.abs(gammas), cuts, xp, xp.abs),
          xp.maximum(xp.abs(in_lower), xp.abs(in_upper)), xp)
  return Backsub(bound, lam, const, hidden_coeffs, magnitude)
