"""Flax layers that own parameters at their maximal shapes and compute on a crop of them.

Parameters never change shape (so optimizer state and checkpoints stay valid as the architecture
changes); a layer is told, through static sizes, how much of itself to use. The math they call is
in the pure modules (``masks``, ``grids``, ``conv``).

Low precision (``ModelConfig.compute_dtype``): every layer returns its input's dtype. Parameters
stay float32: products (dense, convolution) take them rounded to the input's dtype and accumulate
in float32, and every elementwise op that meets a parameter (bias, BatchNorm's affine) runs in
float32 and rounds its result. So every sum over the batch and positions, the parameters'
gradients and BatchNorm's statistics, is a float32 sum (``precision``).
"""

from __future__ import annotations

from collections.abc import Sequence

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax.ad_checkpoint import checkpoint_name

from dnarch_jax.config import ModelConfig
from dnarch_jax.method import grids, masks
from dnarch_jax.method.channels import Channels, count, index, select
from dnarch_jax.method.mask_kinds import KERNEL
from dnarch_jax.network import conv
from dnarch_jax.network.kernelnets import make_kernel_net
from dnarch_jax.precision import accumulation_dtype, add_in_float32, upcast


@jax.custom_vjp
def dense_product(x, w_IxO):
  """``x @ w`` over the last axis of ``x``, in ``x``'s dtype (``w`` rounded to it, float32
  accumulation), with a weight gradient in ``w``'s dtype that XLA:CPU computes without copying
  the output gradient.

  Autodiff's weight gradient is ``dot(x, g)`` contracting the leading axes, for which XLA:CPU
  copies the output gradient ``g`` into a transposed buffer every step (``g`` also feeds the
  input gradient, so the copy cannot fuse). Written as ``dot(g, x)^T`` it takes both operands
  as they are: the sMNIST CCNN-4,140 step lost its 8 [140, 78400] copies and ran 1975 against
  2286 ms (``benchmarks/results/README.md``).
  """
  return _matmul(x, w_IxO)


def _matmul(a, b):
  """``a @ b`` in ``a``'s dtype, accumulated in float32 at least."""
  ab = jnp.matmul(a, b.astype(a.dtype), preferred_element_type=accumulation_dtype(a.dtype))
  return ab.astype(a.dtype)


def _dense_product_fwd(x, w):
  return _matmul(x, w), (x, w)


def _dense_product_bwd(res, g):
  x, w = res
  g_NxO, x_NxI = g.reshape(-1, g.shape[-1]), x.reshape(-1, x.shape[-1])
  contract_N = (((0,), (0,)), ((), ()))
  dw_OxI = jax.lax.dot_general(
    g_NxO, x_NxI, contract_N, preferred_element_type=accumulation_dtype(x.dtype)
  )
  return _matmul(g, w.T).astype(x.dtype), dw_OxI.T.astype(w.dtype)


dense_product.defvjp(_dense_product_fwd, _dense_product_bwd)


class SlicedDense(nn.Module):
  """``x @ W[in, out] + b[out]`` with ``W`` owned at ``[in_features, features]``.

  ``out_channels`` and ``in_channels`` are ``dnarch_jax.method.channels`` selections: by default
  every output channel, and as many leading input channels as ``x`` has. ``separate_bias=True``
  returns ``(x @ W, b)`` for the consumer to add ``b``: XLA:CPU cannot fuse the add into the
  product, so added inside the consumer's own fusion it costs no pass over the output.
  """

  in_features: int
  features: int
  kernel_init: nn.initializers.Initializer = nn.initializers.lecun_normal()
  use_bias: bool = True

  @nn.compact
  def __call__(
    self,
    x,
    out_channels: Channels | None = None,
    in_channels: Channels | None = None,
    *,
    separate_bias: bool = False,
  ):
    in_channels = x.shape[-1] if in_channels is None else in_channels
    kernel = self.param("kernel", self.kernel_init, (self.in_features, self.features))
    kernel = select(select(kernel, in_channels, 0), out_channels, 1)
    if self.in_features > 1:
      y = dense_product(x, kernel)
    else:  # an outer product (the stem's mixer): elementwise, so float32 and autodiff's reduction
      y = (x.astype(jnp.float32) @ kernel).astype(x.dtype)
    bias = None
    if self.use_bias:
      bias = select(self.param("bias", nn.initializers.zeros, (self.features,)), out_channels)
    if separate_bias:  # float32: the consumer adds it in its own float32 elementwise ops
      return y, (0.0 if bias is None else bias)
    return y if bias is None else add_in_float32(y, bias)


class SlicedBatchNorm(nn.Module):
  """BatchNorm over all axes but the last, owning ``features`` channels and using the ones
  ``channels`` selects (by default as many leading ones as ``x`` has).

  Statistics are over the whole (global) batch: under ``jit`` with the batch sharded over devices
  this is CCNN's SyncBN. Running averages of channels outside the crop are left untouched.
  """

  features: int
  momentum: float = 0.9  # PyTorch's momentum 0.1
  epsilon: float = 1e-5

  @nn.compact
  def __call__(self, x, channels: Channels | None = None, *, train: bool, pool_axes=None):
    """BatchNorm of ``x``; with ``pool_axes``, its mean over those axes, computed as the norm
    (per-channel affine) of ``x``'s mean: the same value, without the normalised ``x`` and its
    gradient at full size."""
    channels = x.shape[-1] if channels is None else channels
    scale = select(self.param("scale", nn.initializers.ones, (self.features,)), channels)
    bias = select(self.param("bias", nn.initializers.zeros, (self.features,)), channels)
    ra_mean = self.variable("batch_stats", "mean", jnp.zeros, (self.features,))
    ra_var = self.variable("batch_stats", "var", jnp.ones, (self.features,))
    x32 = upcast(x)  # statistics, pooling and the affine in float32 whatever x's dtype
    if train:
      axes = tuple(range(x.ndim - 1))
      # Named so a rematerialised network keeps these [C] statistics instead of re-reducing x.
      mean = checkpoint_name(jnp.mean(x32, axis=axes), "norm_stats")
      # d var / d mean = -2 mean(x - mean) = 0: stopping it is exact and spares the backward
      # pass a reduction of x - mean per channel.
      centred = x32 - jax.lax.stop_gradient(mean)
      var = checkpoint_name(jnp.mean(jnp.square(centred), axis=axes), "norm_stats")
      if not self.is_initializing():
        m, at = self.momentum, index(channels)
        ra_mean.value = ra_mean.value.at[at].set(m * ra_mean.value[at] + (1 - m) * mean)
        ra_var.value = ra_var.value.at[at].set(m * ra_var.value[at] + (1 - m) * var)
    else:
      mean, var = select(ra_mean.value, channels), select(ra_var.value, channels)
    if pool_axes is not None:
      x32 = jnp.mean(x32, axis=pool_axes)
    # x * a + (bias - mean * a): the mean's gradient then shares the bias's sum of g, where
    # (x - mean) * a + bias costs one more reduction (of g * a) per channel.
    a = jax.lax.rsqrt(var + self.epsilon) * scale
    return (x32 * a + (bias - mean * a)).astype(x.dtype)


def channel_dropout(x_BxSxC, rate: float, rng, max_channels: int, channels: Channels | None = None):
  """Dropout2d: drop whole channels per example. The keep mask is drawn for ``max_channels``
  and restricted to ``channels`` (by default the leading ones ``x`` has), so a cropped network
  drops exactly the channels its full counterpart drops."""
  if rate == 0.0:
    return x_BxSxC
  channels = x_BxSxC.shape[-1] if channels is None else channels
  shape = (x_BxSxC.shape[0],) + (1,) * (x_BxSxC.ndim - 2) + (max_channels,)
  keep = select(jax.random.bernoulli(rng, 1.0 - rate, shape), channels)
  return jnp.where(keep, x_BxSxC / (1.0 - rate), 0.0)


class MaskedContinuousConv(nn.Module):
  """Depthwise convolution with a continuous kernel and a learnable gaussian size mask.

  The kernel is a kernel net sampled at the layer's tap positions times the thresholded gaussian
  mask ``exp(-1/2 sum_d (p_d - mu)^2 / sigma_d^2)`` (mu = 0, or 1 for causal kernels; sigma_d is
  the architecture parameter ``arch_sigma``, one per axis, so 2D kernels can be rectangular).

  Call it with the static number of ``taps`` per axis to compute only the crop (see
  :func:`dnarch_jax.method.arch.compute_arch`), or with ``taps=None`` for the uncropped kernel:
  both give the same output up to rounding. The grid follows the input's resolution relative to
  ``input_size`` (METHOD.md §4.3): a block at half resolution samples every other kernel point.

  Masks are thresholded in both networks, so the task loss reaches ``arch_sigma`` through the
  kept taps' mask values. An axis cropped to its single centre tap (mask exactly 1 there) gets
  no task gradient; only the cost term can then move its sigma.

  Attributes:
    channels: channels the kernel net owns; the input holds the ones the call's ``in_channels``
      selects (by default the first few).
    kernel_grid: kernel samples per axis at input resolution (n).
    input_size: the network's input size per axis (N), the unit of resolution.
    causal: 1D causal kernel (the last tap weighs the current step).
    learn_size: apply the learnable gaussian mask; without it the kernel is global (CKCNN).
  """

  channels: int
  kernel_grid: Sequence[int]
  input_size: Sequence[int]
  causal: bool = False
  learn_size: bool = True
  kernel_sigma_init: float = ModelConfig.kernel_sigma_init
  threshold: float = masks.DEFAULT_THRESHOLD
  kernel_net: str = "magnet"
  kernel_net_hidden: int = 32
  kernel_net_layers: int = 3
  omega_0: float = ModelConfig.omega_0
  magnet_alpha: float = 6.0
  magnet_beta: float = 1.0
  initial_positions: int = 1  # taps at the initial crop: the kernel net's output scaling
  use_bias: bool = True

  def tap_positions(self, resolution: Sequence[int], taps: Sequence[int] | None):
    """``[*taps, D]`` kernel coordinates at ``resolution`` (host-side, static)."""
    per_axis = []
    for d, m in enumerate(resolution):
      n, big_n = self.kernel_grid[d], self.input_size[d]
      k = grids.max_taps(n, big_n, m, self.causal) if taps is None else taps[d]
      per_axis.append(grids.tap_positions(n, big_n, m, k, self.causal))
    return grids.position_grid(per_axis)

  def _check_inputs(self, x_BxSxC, taps, in_channels) -> None:
    d = len(self.input_size)
    chex.assert_equal(
      len(self.kernel_grid),
      d,
      custom_message="MaskedContinuousConv: kernel_grid must give one size per axis of input_size",
    )
    chex.assert_rank(
      x_BxSxC,
      d + 2,
      custom_message=f"MaskedContinuousConv: x_BxSxC must be [B, *spatial, C] with {d} spatial "
      f"dim(s), as input_size {tuple(self.input_size)}",
    )
    if taps is not None:
      chex.assert_equal(
        len(taps), d, custom_message="MaskedContinuousConv: taps must give one count per axis"
      )
    if in_channels is None:
      chex.assert_axis_dimension_lteq(
        x_BxSxC,
        -1,
        self.channels,
        custom_message=f"MaskedContinuousConv: x_BxSxC has more channels than the layer's "
        f"channels={self.channels}",
      )
    else:
      chex.assert_axis_dimension(
        x_BxSxC,
        -1,
        count(in_channels),
        custom_message="MaskedContinuousConv: x_BxSxC must have one channel per in_channels "
        "selected",
      )

  def mask(self, p_KxD):
    """Thresholded gaussian mask at positions ``p_KxD`` (``[*K]``), or ones without a mask."""
    if not self.learn_size:
      return jnp.ones(p_KxD.shape[:-1], jnp.float32)
    dims = p_KxD.shape[-1]
    sigma = self.param("arch_sigma", nn.initializers.constant(self.kernel_sigma_init), (dims,))
    mu = np.full((dims,), 1.0 if self.causal else 0.0, np.float32)
    return KERNEL.values(p_KxD, mu, sigma, self.threshold)

  @nn.compact
  def __call__(
    self,
    x_BxSxC,
    taps: Sequence[int] | None = None,
    route: str = "auto",
    in_channels: Channels | None = None,
    kernel_scale: float = 1.0,
  ):
    """``kernel_scale`` multiplies the sampled kernel: the ratio of the trained grid's tap spacing
    to this one's, for a network evaluated at another input size (``arch.arch_at_input_size``).

    ``x_BxSxC`` may be at any resolution (the grid follows it), but with ``input_size``'s number
    of spatial axes; the checks below are on static shapes only (trace time)."""
    self._check_inputs(x_BxSxC, taps, in_channels)
    resolution = x_BxSxC.shape[1:-1]
    p_KxD = self.tap_positions(resolution, taps)
    kernel_net = make_kernel_net(
      self.kernel_net,
      self.channels,
      hidden=self.kernel_net_hidden,
      num_layers=self.kernel_net_layers,
      omega_0=self.omega_0,
      causal=self.causal,
      kernel_sigma_init=self.kernel_sigma_init,
      initial_positions=self.initial_positions,
      alpha=self.magnet_alpha,
      beta=self.magnet_beta,
      name="kernel_net",
    )
    in_channels = x_BxSxC.shape[-1] if in_channels is None else in_channels
    kernel_KxC = kernel_net(jnp.asarray(p_KxD), out_channels=in_channels)
    kernel_KxC = kernel_KxC * self.mask(p_KxD)[..., None]
    if kernel_scale != 1.0:  # (never while training)
      kernel_KxC = kernel_KxC * kernel_scale
    # Recorded for CCNN's L2 regulariser, which penalises the sampled, masked kernels, and for
    # the export, which stores them.
    self.sow("intermediates", "masked_kernel", kernel_KxC)
    # In x's dtype; the float32 kernel gets a float32 gradient (conv.depthwise_conv).
    y = conv.depthwise_conv(x_BxSxC, kernel_KxC, causal=self.causal, route=route)
    if self.use_bias:
      bias = select(self.param("bias", nn.initializers.zeros, (self.channels,)), in_channels)
      y = add_in_float32(y, bias)
    return y
