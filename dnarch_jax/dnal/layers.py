"""Linen layers owning parameters at their maximal shapes and computing on a subset of channels.

A pruned layer keeps an arbitrary subset of its channels, so the layers take static index arrays
(``None``: every channel) and gather the kept rows and columns of their parameters. Gradients reach
only what was gathered; parameters never change shape, so optimizer state survives pruning.
"""

from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from dnarch_jax.dnal import gates as gates_lib
from dnarch_jax.dnal.arch import GATE_PARAM


def _flat_normal(key, shape, std: float, dtype):
  """``N(0, std^2)`` drawn flat and reshaped. With ``jax_threefry_partitionable`` (on by default)
  XLA:CPU took ~25 s to compile the random bits of a 4-D kernel shape and under 1 s for the same
  count drawn flat (measured on this 2-core machine), so every initialiser here draws flat."""
  return (std * jax.random.normal(key, (math.prod(shape),), dtype)).reshape(shape)


def conv_init(key, shape, dtype=jnp.float32):
  """The official code's conv init: ``N(0, 2 / (k * k * out_channels))`` (kaiming, fan-out)."""
  kh, kw, _, cout = shape
  return _flat_normal(key, shape, math.sqrt(2.0 / (kh * kw * cout)), dtype)


def normal_init(std: float):
  """``N(0, std^2)``: the official VGG's classifier init (std 0.01)."""
  return lambda key, shape, dtype=jnp.float32: _flat_normal(key, shape, std, dtype)


def torch_linear_init(key, shape, dtype=jnp.float32):
  """PyTorch's default Linear init, ``U(-1/sqrt(fan_in), 1/sqrt(fan_in))``."""
  bound = 1.0 / math.sqrt(shape[0])
  flat = jax.random.uniform(key, (math.prod(shape),), dtype, -bound, bound)
  return flat.reshape(shape)


def take(x, idx, axis: int):
  """``x`` restricted to the static indices ``idx`` along ``axis`` (all of it for ``None``)."""
  return x if idx is None else jnp.take(x, idx, axis=axis)


class IndexedBatchNorm(nn.Module):
  """BatchNorm over all axes but the last, owning ``features`` channels and using those at
  ``idx``. Statistics are over the global batch; running averages of other channels are kept."""

  features: int
  momentum: float = 0.9  # PyTorch's momentum 0.1
  epsilon: float = 1e-5

  @nn.compact
  def __call__(self, x, idx=None, *, train: bool):
    scale = take(self.param("scale", nn.initializers.ones, (self.features,)), idx, 0)
    bias = take(self.param("bias", nn.initializers.zeros, (self.features,)), idx, 0)
    ra_mean = self.variable("batch_stats", "mean", jnp.zeros, (self.features,))
    ra_var = self.variable("batch_stats", "var", jnp.ones, (self.features,))
    if train:
      axes = tuple(range(x.ndim - 1))
      mean = jnp.mean(x, axis=axes)
      var = jnp.mean(jnp.square(x - mean), axis=axes)
      if not self.is_initializing():
        at = slice(None) if idx is None else idx
        m = self.momentum
        ra_mean.value = ra_mean.value.at[at].set(m * ra_mean.value[at] + (1 - m) * mean)
        # PyTorch keeps the unbiased variance in its running average.
        n = np.prod(x.shape[:-1])
        unbiased = var * (n / max(n - 1, 1))
        ra_var.value = ra_var.value.at[at].set(m * ra_var.value[at] + (1 - m) * unbiased)
    else:
      mean, var = take(ra_mean.value, idx, 0), take(ra_var.value, idx, 0)
    return (x - mean) * (jax.lax.rsqrt(var + self.epsilon) * scale) + bias


class IndexedDense(nn.Module):
  """``x @ W[in_idx][:, out_idx] + b[out_idx]`` with ``W`` owned at ``[in_features, features]``."""

  in_features: int
  features: int
  kernel_init: nn.initializers.Initializer = torch_linear_init
  use_bias: bool = True

  @nn.compact
  def __call__(self, x, in_idx=None):
    kernel = self.param("kernel", self.kernel_init, (self.in_features, self.features))
    y = x @ take(kernel, in_idx, 0)
    if self.use_bias:
      y = y + self.param("bias", nn.initializers.zeros, (self.features,))
    return y


class GatedConvBN(nn.Module):
  """``gate(BN(conv3x3(x)))``: a conv without bias, BatchNorm, and DNAL's channel gate.

  Called with static ``in_idx`` (the input channels ``x`` holds) and ``out_idx`` (the channels
  to compute), or ``None`` for all of them. The gate depends on ``mode`` (``dnal.gates.MODES``):
  ``off`` leaves channels as they are, ``soft`` multiplies them by ``sigmoid(delta s)``, ``hard``
  by the same times ``out_mask`` (static 0/1: the full network with pruned channels zeroed; the
  cropped network passes ``None`` and computes only ``out_idx``). The gate follows BatchNorm and
  precedes the ReLU, as the official code's ``ScaleLayer2d``.
  """

  in_features: int
  features: int
  strides: int = 1
  kernel_size: int = 3

  @nn.compact
  def __call__(self, x, in_idx, out_idx, out_mask, mode: str, delta, *, train: bool):
    k = self.kernel_size
    kernel = self.param("kernel", conv_init, (k, k, self.in_features, self.features))
    kernel = take(take(kernel, in_idx, 2), out_idx, 3)
    pad = (k - 1) // 2
    y = jax.lax.conv_general_dilated(
      x,
      kernel,
      (self.strides, self.strides),
      ((pad, pad), (pad, pad)),  # PyTorch's padding=1, also at stride 2
      dimension_numbers=("NHWC", "HWIO", "NHWC"),
    )
    y = IndexedBatchNorm(self.features, name="norm")(y, out_idx, train=train)
    s = self.param(GATE_PARAM, nn.initializers.zeros, (self.features,))
    if mode == "off":
      return y
    g = gates_lib.gate_values(take(s, out_idx, 0), delta)
    if mode == "hard" and out_mask is not None:
      g = g * jnp.asarray(out_mask, g.dtype)
    return y * g
