"""The DNArch CCNN (Linen): stem, ``L_max`` pre-norm residual blocks, classification or dense head.

``DNArchCCNN(cfg).apply(variables, x, arch, train=...)`` computes exactly the network ``arch``
describes (cropped), or the full one for ``compute_arch(..., crop=False)``; both give the same
output (METHOD.md §5). With every ``learn_*`` switch off it is CCNN with fixed sizes; with only
``learn_kernel`` it is CCNN with FlexConv's learned kernel sizes, as CCNN's paper runs it.

Mixed precision (``cfg.compute_dtype``): the input is cast to the compute dtype once and every
activation the network stores is in it: the convolutions' and dense products' inputs and
outputs, the residual stream. Parameters, kernel nets, masks, gates and BatchNorm statistics
stay float32; the elementwise ops that meet them run in float32 and round their result to the
compute dtype (``dnarch_jax.network.layers``: every sum over positions is then a float32 sum). The
head runs in float32, so the logits and the loss are float32.

Architecture parameters (all named ``arch_*``):
  ``stem_conv/arch_sigma``, ``block_l/conv/arch_sigma``: gaussian kernel-size masks, per axis;
  ``arch_stream_cutoff``, ``block_l/arch_hidden_cutoff``: sigmoid-cutoff width masks (or, with
  ``width_mask="scaled_sigmoid_gate"``, DNAL's per-channel gates ``arch_stream_gate`` and
  ``block_l/arch_hidden_gate``);
  ``block_l/arch_resolution_cutoff``: the block's frequency mask, per axis;
  ``arch_depth_cutoff``: the sigmoid-cutoff mask over blocks.
"""

from __future__ import annotations

import math

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from dnarch_jax.config import ModelConfig
from dnarch_jax.method import mask_kinds, spectral
from dnarch_jax.method.arch import Arch, BlockArch, initial_arch
from dnarch_jax.method.channels import Channels
from dnarch_jax.network.layers import (
  MaskedContinuousConv,
  SlicedBatchNorm,
  SlicedDense,
  channel_dropout,
)
from dnarch_jax.precision import multiply_in_float32

_kaiming_normal = nn.initializers.variance_scaling(2.0, "fan_in", "normal")


def width_mask(module: nn.Module, kind: str, count: int, channels: Channels, cfg: ModelConfig):
  """The ``"stream"`` or ``"hidden"`` width mask on the ``channels`` computed, declaring its
  parameter (its kind's: a cutoff, or one gate logit per channel) in ``module``."""
  widths = mask_kinds.width_mask(cfg)
  init = nn.initializers.constant(widths.initial_param(cfg, count))
  param = module.param(widths.param_name(kind), init, widths.param_shape(count))
  return widths.values(param, count, channels, cfg)


def frequency_mask_fns(cutoff_D, cfg: ModelConfig):
  """Per-axis callables mapping absolute frequencies to the block's resolution mask."""
  kind = mask_kinds.resolution_mask(cfg)

  def make(axis):
    nyquist = cfg.input_size[axis] / 2
    return lambda freq: kind.values(freq / nyquist, cutoff_D[axis], cfg, axis)

  return [make(axis) for axis in range(cfg.ndim)]


def _conv(
  cfg: ModelConfig, channels: int, initial_taps, name: str, use_bias: bool = True
) -> MaskedContinuousConv:
  return MaskedContinuousConv(
    channels=channels,
    kernel_grid=tuple(cfg.grid_size(a) for a in range(cfg.ndim)),
    input_size=cfg.input_size,
    causal=cfg.causal,
    learn_size=cfg.learn_kernel,
    kernel_sigma_init=cfg.kernel_sigma_init,
    threshold=cfg.threshold,
    kernel_net=cfg.kernel_net,
    kernel_net_hidden=cfg.kernel_net_hidden,
    kernel_net_layers=cfg.kernel_net_layers,
    omega_0=cfg.omega_0,
    magnet_alpha=cfg.magnet_alpha,
    magnet_beta=cfg.magnet_beta,
    initial_positions=math.prod(initial_taps),
    use_bias=use_bias,
    name=name,
  )


class Block(nn.Module):
  """``y = x + g * GELU(Linear(Dropout(GELU(Mixer(DepthwiseCK(BN(x)))))))`` at the block's
  resolution, stream and hidden widths masked (CCNN's "S4 block", METHOD.md §4).

  With ``cfg.remat`` the block is three remat regions, each ending at a convolution or matrix
  product (resampling -> BN -> conv; bias -> GELU -> mask -> dropout -> linear product; bias ->
  GELU -> mask -> gate -> residual add), with the mixer's product between them. Every value the
  backward pass keeps is then a region's input: the block's input and the conv, mixer and linear
  outputs; the elementwise rest is recomputed inside the backward pass's fusions. A value saved
  inside a region would cost one more pass over it: JAX puts a (no-op) ``reduce_precision`` on
  every floating-point residual of ``jax.checkpoint``, and XLA:CPU materialises it as a copy.
  """

  cfg: ModelConfig
  initial_taps: tuple[int, ...]

  @nn.compact
  def __call__(self, x_BxSxC, stream_mask_C, gate, stream: Channels, barch: BlockArch, train: bool):
    cfg = self.cfg
    # static_argnums count the module as 0.
    h, x_BxSxC = _region(cfg, _resample_norm_and_conv, (3, 4, 5))(
      self, x_BxSxC, stream_mask_C, stream, barch, train
    )
    mixer = SlicedDense(cfg.width, cfg.hidden_width, _kaiming_normal, name="mixer")
    h, mixer_bias = mixer(h, barch.hidden, stream, separate_bias=True)
    h, linear_bias = _region(cfg, _hidden_and_linear, (3, 4, 5))(
      self, h, mixer_bias, stream, barch.hidden, train
    )
    residual = jax.checkpoint(_residual_add) if cfg.remat else _residual_add
    return residual(x_BxSxC, h, linear_bias, stream_mask_C, gate)


@nn.compact
def _resample_norm_and_conv(block: Block, x_BxSxC, stream_mask_C, stream, barch, train: bool):
  """A block's first region: the input at the block's resolution, then BatchNorm, stream mask
  and depthwise continuous conv (with bias). Returns the conv's output and the resampled input
  (the skip path), which the backward pass recomputes rather than keeping its spectrum."""
  cfg = block.cfg
  if cfg.learn_resolution:
    cutoff = block.param(
      "arch_resolution_cutoff", nn.initializers.constant(cfg.resolution_init_cutoff), (cfg.ndim,)
    )
    if barch.resample:
      x_BxSxC = spectral.spectral_resample(
        x_BxSxC, barch.resolution, frequency_mask_fns(cutoff, cfg)
      )
  h = SlicedBatchNorm(cfg.width, name="norm")(x_BxSxC, stream, train=train)
  h = _masked(h, stream_mask_C)
  conv = _conv(cfg, cfg.width, block.initial_taps, "conv")
  c = barch.conv
  return conv(h, c.taps, c.route, in_channels=stream, kernel_scale=c.kernel_scale), x_BxSxC


@nn.compact
def _hidden_and_linear(block: Block, h, mixer_bias, stream, hidden, train: bool):
  """A block's second region: the mixer's bias, GELU, hidden mask and dropout, then the linear
  layer's product; returns it and the linear layer's bias, which the next region adds."""
  cfg = block.cfg
  h = nn.gelu(h + mixer_bias)  # float32: the bias is
  if cfg.learn_width:
    h = _masked(h, width_mask(block, "hidden", cfg.hidden_width, hidden, cfg))
  h = h.astype(cfg.compute_dtype)
  if train and cfg.dropout > 0:
    h = channel_dropout(h, cfg.dropout, block.make_rng("dropout"), cfg.hidden_width, hidden)
  linear = SlicedDense(cfg.hidden_width, cfg.width, _kaiming_normal, name="linear")
  return linear(h, stream, hidden, separate_bias=True)


def _residual_add(x_BxSxC, h, linear_bias, stream_mask_C, gate):
  """A block's last region: the linear layer's bias, GELU, stream mask, depth gate, skip."""
  h = _masked(nn.gelu(h + linear_bias), stream_mask_C)  # float32: the bias is
  return (x_BxSxC + (h if gate is None else h * gate)).astype(x_BxSxC.dtype)


# What the remat regions of the stem, blocks and head keep for the backward pass besides their
# inputs (``ModelConfig.remat``): the BatchNorm statistics, [C] each, instead of re-reducing x.
REMAT_POLICY = jax.checkpoint_policies.save_only_these_names("norm_stats")


def _region(cfg: ModelConfig, fn, static_argnums):
  """``fn(module, ...)`` as a remat region of its own (with ``cfg.remat``), else ``fn``."""
  if not cfg.remat:
    return fn
  return nn.remat(fn, static_argnums=static_argnums, policy=REMAT_POLICY)


def compiler_options(cfg: ModelConfig) -> dict[str, str] | None:
  """XLA options for jitting a gradient of the model: pass them as ``jax.jit(...,
  compiler_options=compiler_options(cfg))``.

  XLA:CPU strips the optimization barriers ``jax.checkpoint`` puts around the recomputation
  (``cse_barrier_expander``), after which common-subexpression elimination merges it back into
  the forward pass and remat keeps everything again (temporaries of a sMNIST CCNN-4,140 step:
  1763 MiB either way); with the pass off they fall to 940 MiB.
  """
  if cfg.remat and jax.default_backend() == "cpu":
    return {"xla_disable_hlo_passes": "cse_barrier_expander"}
  return None


def _masked(x, mask):
  """``x * mask``, computed in float32 (masks are), in ``x``'s dtype."""
  return x if mask is None else multiply_in_float32(x, mask)


class DNArchCCNN(nn.Module):
  """The DNArch network. ``__call__(x_BxSxC, arch, train)`` -> logits ``[B, classes]`` (or
  ``[B, *spatial, classes]`` with the dense head). Dropout draws from the ``"dropout"`` rng."""

  cfg: ModelConfig

  @nn.compact
  def __call__(self, x_BxSxC, arch: Arch | None = None, *, train: bool = False):
    cfg = self.cfg
    init_arch = initial_arch(cfg)
    arch = init_arch if arch is None else arch
    # Static checks (trace time), naming the argument. arch.input_size is cfg.input_size except
    # for a network evaluated at another input size (dnarch_jax.method.arch.arch_at_input_size).
    chex.assert_equal(
      len(arch.blocks),
      cfg.num_blocks,
      custom_message=f"DNArchCCNN: arch must have cfg.num_blocks={cfg.num_blocks} blocks (an Arch "
      "computed for this config)",
    )
    chex.assert_shape(
      x_BxSxC,
      (None, *arch.input_size, cfg.in_channels),
      custom_message=f"DNArchCCNN: input x_BxSxC of shape {x_BxSxC.shape} does not match the "
      f"model's [batch, *{arch.input_size}, {cfg.in_channels}]",
      exception_type=ValueError,
    )
    stream = arch.stream
    stream_mask = width_mask(self, "stream", cfg.width, stream, cfg) if cfg.learn_width else None
    gates = [None] * cfg.num_blocks
    if cfg.learn_depth:
      init = nn.initializers.constant(cfg.depth_init_cutoff)
      g = mask_kinds.DEPTH.values(self.param(mask_kinds.DEPTH.param, init, ()), cfg)
      gates = [g[l] for l in range(cfg.num_blocks)]

    x = x_BxSxC
    if train and cfg.input_dropout > 0:
      keep = jax.random.bernoulli(self.make_rng("dropout"), 1 - cfg.input_dropout, x.shape)
      x = jnp.where(keep, x / (1 - cfg.input_dropout), 0.0)
    x = x.astype(cfg.compute_dtype)
    # static_argnums count the module as 0.
    h = _region(cfg, _stem, (2, 3, 5))(self, x, arch, init_arch, stream_mask, train)

    for l, barch in enumerate(arch.blocks):
      block = Block(cfg, init_arch.blocks[l].conv.taps, name=f"block_{l}")
      if barch.active or self.is_initializing():
        h = block(h, stream_mask, gates[l], stream, barch, train)

    return _region(cfg, _head, (2, 4, 5))(self, h, stream, stream_mask, train, arch.input_size)


@nn.compact
def _stem(model: DNArchCCNN, x, arch: Arch, init_arch: Arch, stream_mask, train: bool):
  """Stem of ``DNArchCCNN``: continuous conv, mixer to the stream width, BatchNorm, GELU."""
  cfg = model.cfg
  # BatchNorm follows the stem's conv and mixer, so biases there would be no-ops whose exactly
  # zero gradient Adam turns into rounding-noise steps (CCNN has them; we leave them out).
  stem_conv = _conv(cfg, cfg.in_channels, init_arch.stem.taps, "stem_conv", use_bias=False)
  h = stem_conv(x, arch.stem.taps, arch.stem.route, kernel_scale=arch.stem.kernel_scale)
  stem_mixer = SlicedDense(cfg.in_channels, cfg.width, _kaiming_normal, False, name="stem_mixer")
  h = stem_mixer(h, arch.stream)
  h = SlicedBatchNorm(cfg.width, name="stem_norm")(h, arch.stream, train=train)
  return _masked(nn.gelu(h), stream_mask)


@nn.compact
def _head(model: DNArchCCNN, h, stream: Channels, stream_mask, train: bool, input_size):
  """Head of ``DNArchCCNN``: BatchNorm, then a per-position or pooled linear classifier (the
  dense one at the input's size)."""
  cfg = model.cfg
  # float32 from here: the logits feed the loss; the head is one small product.
  h = h.astype(jnp.float32)
  norm = SlicedBatchNorm(cfg.width, name="head_norm")
  head = SlicedDense(cfg.width, cfg.num_classes, name="head")
  if cfg.head == "dense":
    h = _masked(norm(h, stream, train=train), stream_mask)
    if tuple(h.shape[1:-1]) != tuple(input_size):
      h = spectral.spectral_resample(h, input_size)
    return head(h, in_channels=stream)
  # Pooled: the norm and mask are per-channel affine, so they apply to the mean over positions.
  pooled_BxC = norm(h, stream, train=train, pool_axes=tuple(range(1, h.ndim - 1)))
  return head(_masked(pooled_BxC, stream_mask), in_channels=stream)


def init_variables(cfg: ModelConfig, rng, batch_size: int = 2):
  """Parameters and batch statistics at their maximal shapes (one trace of the full network)."""
  x = jnp.zeros((batch_size, *cfg.input_size, cfg.in_channels), jnp.float32)
  model = DNArchCCNN(cfg)
  return jax.jit(lambda r: model.init(r, x, initial_arch(cfg, crop=False), train=False))(rng)


def count_params(params) -> int:
  return int(sum(np.prod(p.shape) for p in jax.tree_util.tree_leaves(params)))
