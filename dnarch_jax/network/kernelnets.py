"""Kernel nets: small networks mapping kernel positions ``[*K, D]`` to kernel values ``[*K, C]``.

MAGNet (the default, every CCNN run uses it) and SIREN, with CCNN's initialisations (METHOD.md §2).
The output layer's "Chang" scaling ``sqrt(1 / F)`` (F = kernel positions at the initial crop) is a
constructor argument computed from the initial architecture: nothing is learned from a batch.

A kernel net may be asked for some of the output channels it owns (``out_channels``, a
``dnarch_jax.method.channels`` selection): the output layer computes only those, so a network with
a cropped width evaluates only the kept channels. Both check their inputs with chex assertions
naming the argument (shapes and the static selection: nothing per step).
"""

from __future__ import annotations

import math

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp

from dnarch_jax.config import ModelConfig
from dnarch_jax.method.channels import Channels, count, select

# kaiming-uniform with linear gain: U(+-sqrt(3 / fan_in)).
_kaiming_uniform = nn.initializers.variance_scaling(1.0, "fan_in", "uniform")


def _check_inputs(net: str, p_KxD, out_channels: Channels, features: int) -> None:
  """Positions with their coordinates last, and a selection of channels the net owns: a prefix
  longer than ``features`` would otherwise be cut to ``features`` channels without a word."""
  chex.assert_shape(
    p_KxD, (..., None), custom_message=f"{net}: p_KxD must be [*K, D] (coordinates last)"
  )
  last = out_channels - 1 if isinstance(out_channels, int) else max(out_channels, default=-1)
  chex.assert_scalar_in(
    int(count(out_channels)),
    1,
    features,
    custom_message=f"{net}: out_channels must select 1 to features={features} channels",
  )
  chex.assert_scalar_in(
    int(last),
    0,
    features - 1,
    custom_message=f"{net}: out_channels must index channels below features={features}",
  )


def _scaled(init, scale: float):
  return lambda key, shape, dtype=jnp.float32: init(key, shape, dtype) * scale


def sample_gamma(key, alpha: float, shape, candidates: int = 16):
  """Gamma(alpha, 1) samples by Marsaglia-Tsang with a fixed number of candidates, no loop.

  ``jax.random.gamma``'s rejection loop costs seconds of XLA:CPU compile time per call, and a
  DNArch network initialises 4 Gabor filters per layer. For alpha >= 1 a candidate is accepted
  with probability > 0.95, so 16 candidates all fail with probability < 1e-20; alpha < 1 uses
  ``Gamma(alpha) = Gamma(alpha + 1) * U^(1/alpha)``.
  """
  boost = alpha < 1.0
  a = alpha + 1.0 if boost else alpha
  d = a - 1.0 / 3.0
  c = 1.0 / math.sqrt(9.0 * d)
  k_normal, k_accept, k_boost = jax.random.split(key, 3)
  x = jax.random.normal(k_normal, (candidates, *shape))
  u = jax.random.uniform(k_accept, (candidates, *shape), minval=1e-12)
  v = (1.0 + c * x) ** 3
  safe_v = jnp.where(v > 0, v, 1.0)
  accept = (v > 0) & (jnp.log(u) < 0.5 * x**2 + d - d * safe_v + d * jnp.log(safe_v))
  first = jnp.argmax(accept, axis=0)
  sample = d * jnp.take_along_axis(safe_v, first[None], axis=0)[0]
  if boost:
    sample = sample * jax.random.uniform(k_boost, shape, minval=1e-12) ** (1.0 / alpha)
  return sample


def _gabor_gamma_init(alpha_j: float, beta: float):
  """gamma ~ Gamma(alpha_j, rate beta)."""
  return lambda key, shape, dtype=jnp.float32: (sample_gamma(key, alpha_j, shape) / beta).astype(
    dtype
  )


def _gabor_mu_init(spread: float, causal: bool):
  """Envelope centres: ``s U(-1, 1)`` or, causal, ``1 - s U(0, 1)`` (near the current step)."""

  def init(key, shape, dtype=jnp.float32):
    if causal:
      return 1.0 - spread * jax.random.uniform(key, shape, dtype)
    return spread * jax.random.uniform(key, shape, dtype, -1.0, 1.0)

  return init


class _OutputLinear(nn.Module):
  """Linear ``H -> features`` computing only the columns ``out_channels`` selects."""

  features: int
  output_scale: float

  @nn.compact
  def __call__(self, h_KxH, out_channels: Channels):
    kernel = self.param(
      "kernel", _scaled(_kaiming_uniform, self.output_scale), (h_KxH.shape[-1], self.features)
    )
    bias = self.param("bias", nn.initializers.zeros, (self.features,))
    return h_KxH @ select(kernel, out_channels, 1) + select(bias, out_channels)


class GaborFilter(nn.Module):
  """``g(p) = exp(-1/2 sum_d (gamma_d (p_d - mu_d))^2) * sin(Omega p + phi)`` per hidden unit."""

  hidden: int
  alpha_j: float
  beta: float
  omega_0: float
  mu_spread: float
  causal: bool

  @nn.compact
  def __call__(self, p_KxD):
    dims = p_KxD.shape[-1]
    gamma_HxD = self.param("gamma", _gabor_gamma_init(self.alpha_j, self.beta), (self.hidden, dims))
    mu_HxD = self.param("mu", _gabor_mu_init(self.mu_spread, self.causal), (self.hidden, dims))

    def omega_init(key, shape, dtype=jnp.float32):
      # CCNN: U(+-1/sqrt(D)) scaled by 2 pi omega_0 gamma (gamma at its initial value).
      bound = 1.0 / math.sqrt(dims)
      u = jax.random.uniform(key, shape, dtype, -bound, bound)
      return u * 2.0 * math.pi * self.omega_0 * jax.lax.stop_gradient(gamma_HxD)

    omega_HxD = self.param("omega", omega_init, (self.hidden, dims))
    phi_H = self.param("phi", nn.initializers.zeros, (self.hidden,))
    diff_KxHxD = p_KxD[..., None, :] - mu_HxD
    envelope = jnp.exp(-0.5 * jnp.sum((gamma_HxD * diff_KxHxD) ** 2, axis=-1))
    return envelope * jnp.sin(p_KxD @ omega_HxD.T + phi_H)


class MAGNet(nn.Module):
  """Multiplicative Anisotropic Gabor Network (CCNN's kernel net).

  ``h_1 = g_1(p)``, ``h_{j+1} = g_{j+1}(p) * (W_j h_j + b_j)``, ``psi = W_out h + b_out``, with
  ``num_layers`` hidden linears and ``num_layers + 1`` Gabor filters. Filter ``j`` (0-based) draws
  ``gamma ~ Gamma(alpha / (j + 1), beta)`` as CCNN's code indexes it.
  """

  features: int
  hidden: int = 32
  num_layers: int = 3
  omega_0: float = ModelConfig.omega_0
  alpha: float = 6.0
  beta: float = 1.0
  causal: bool = False
  kernel_sigma_init: float = ModelConfig.kernel_sigma_init
  output_scale: float = 1.0

  @nn.compact
  def __call__(self, p_KxD, out_channels: Channels | None = None):
    out_channels = self.features if out_channels is None else out_channels
    _check_inputs("MAGNet", p_KxD, out_channels, self.features)
    spread = 1.667 * self.kernel_sigma_init

    def gabor(j):
      return GaborFilter(
        self.hidden, self.alpha / (j + 1), self.beta, self.omega_0, spread, self.causal,
        name=f"gabor_{j}",
      )  # fmt: skip

    h = gabor(0)(p_KxD)
    for j in range(self.num_layers):
      linear = nn.Dense(
        self.hidden, kernel_init=_kaiming_uniform, bias_init=nn.initializers.constant(1.0),
        name=f"linear_{j}",
      )  # fmt: skip
      h = gabor(j + 1)(p_KxD) * linear(h)
    return _OutputLinear(self.features, self.output_scale, name="out")(h, out_channels)


class SIREN(nn.Module):
  """``sin(omega_0 (W x + b))`` layers, linear output (Sitzmann et al.); CCNN's alternative."""

  features: int
  hidden: int = 32
  num_layers: int = 3
  omega_0: float = 30.0
  output_scale: float = 1.0

  @nn.compact
  def __call__(self, p_KxD, out_channels: Channels | None = None):
    out_channels = self.features if out_channels is None else out_channels
    _check_inputs("SIREN", p_KxD, out_channels, self.features)
    h = p_KxD
    for j in range(self.num_layers):
      fan_in = h.shape[-1]
      bound = 1.0 / fan_in if j == 0 else math.sqrt(6.0 / fan_in) / self.omega_0
      dense = nn.Dense(
        self.hidden,
        kernel_init=_uniform(bound),
        bias_init=nn.initializers.zeros,
        name=f"linear_{j}",
      )
      h = jnp.sin(self.omega_0 * dense(h))
    return _OutputLinear(self.features, self.output_scale, name="out")(h, out_channels)


def _uniform(bound: float):
  return lambda key, shape, dtype=jnp.float32: jax.random.uniform(key, shape, dtype, -bound, bound)


def make_kernel_net(
  kind: str,
  features: int,
  *,
  hidden: int,
  num_layers: int,
  omega_0: float,
  causal: bool,
  kernel_sigma_init: float,
  initial_positions: int,
  alpha: float = 6.0,
  beta: float = 1.0,
  name: str | None = None,
) -> nn.Module:
  """The kernel net ``kind`` (``"magnet"`` or ``"siren"``), Chang-scaled for F positions."""
  output_scale = math.sqrt(1.0 / initial_positions)
  if kind == "magnet":
    return MAGNet(
      features, hidden, num_layers, omega_0, alpha, beta, causal, kernel_sigma_init, output_scale,
      name=name,
    )  # fmt: skip
  if kind == "siren":
    return SIREN(features, hidden, num_layers, omega_0, output_scale, name=name)
  raise ValueError(f"unknown kernel net {kind!r}; expected 'magnet' or 'siren'")
