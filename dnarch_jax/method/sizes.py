"""The sizes the cost model prices (METHOD.md §6): an ``Arch``'s integer sizes
(``arch_sizes``, what the cropped network computes) and the loss's soft sizes (``soft_sizes``,
the same integers as values, differentiable in the mask parameters).
"""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np

from dnarch_jax.config import ModelConfig
from dnarch_jax.method import cost
from dnarch_jax.method.arch import Arch
from dnarch_jax.method.arch_params import lookup, width_param
from dnarch_jax.method.mask_kinds import DEPTH, KERNEL, resolution_mask, width_mask


def _network_sizes(cfg: ModelConfig, arch: Arch, batch_size: int, stream, stem, blocks):
  dense_head = cfg.head == "dense"
  return cost.NetworkSizes(
    input_size=tuple(cfg.input_size),
    in_channels=cfg.in_channels,
    num_classes=cfg.num_classes,
    stream=stream,
    stem=stem,
    blocks=tuple(blocks),
    dense_head=dense_head,
    head_resamples=dense_head and tuple(arch.output_resolution) != tuple(cfg.input_size),
    causal=cfg.causal,
    kernel_net=cfg.kernel_net,
    kernel_net_hidden=cfg.kernel_net_hidden,
    kernel_net_layers=cfg.kernel_net_layers,
    learn_kernel=cfg.learn_kernel,
    learn_width=cfg.learn_width,
    learn_depth=cfg.learn_depth,
    batch_size=batch_size,
  )


def _check_cost_inputs(fn: str, arch: Arch, cfg: ModelConfig, batch_size: int) -> None:
  """``arch`` is one of ``cfg``'s networks (fewer blocks would be priced as a shallower network
  without a word) and ``batch_size`` a positive integer (kernel nets are amortised over it)."""
  chex.assert_equal(
    len(arch.blocks),
    cfg.num_blocks,
    custom_message=f"{fn}: arch must have cfg.num_blocks={cfg.num_blocks} blocks",
  )
  chex.assert_equal(
    len(arch.input_size),
    cfg.ndim,
    custom_message=f"{fn}: arch.input_size must have cfg's {cfg.ndim} spatial dim(s)",
  )
  chex.assert_type(batch_size, int, custom_message=f"{fn}: batch_size must be an integer")
  chex.assert_scalar_positive(int(batch_size), custom_message=f"{fn}: batch_size must be >= 1")


def arch_sizes(arch: Arch, cfg: ModelConfig, batch_size: int) -> cost.NetworkSizes:
  """The integer sizes of ``arch``: what the cropped network computes."""
  _check_cost_inputs("arch_sizes", arch, cfg, batch_size)
  stem = cost.ConvSizes(arch.input_size, arch.stem.taps, cfg.in_channels, arch.stem.route)
  blocks, current = [], tuple(arch.input_size)
  for b in arch.blocks:
    conv_sizes = cost.ConvSizes(b.resolution, b.conv.taps, arch.stream_width, b.conv.route)
    resample_from = current if b.resample else None
    blocks.append(cost.BlockSizes(conv_sizes, b.hidden_width, int(b.active), resample_from))
    if b.active:
      current = b.resolution
  return _network_sizes(cfg, arch, batch_size, arch.stream_width, stem, blocks)


def soft_kernel_taps(
  sigma_D, kernel_grid, input_size, resolution=None, causal=False, threshold=0.1, bucket=1
):
  """Differentiable kernel size per axis for a cost term: the taps of the layer's crop (the
  gaussian's extent on the grid at ``resolution``, rounded up to ``bucket``) as the value, with
  the gradient of the extent's continuous tap count (straight-through) [design].

  ``sigma_D`` is a layer's ``arch_sigma``; the other arguments are those of the layer (and the
  resolution it runs at, the input's by default; it may be a traced size). Use it to build a cost
  term for your own model: its value is what ``crop_taps`` gives the host.
  """
  resolution = input_size if resolution is None else resolution
  # One entry per axis everywhere: the loop below would otherwise follow the shortest silently.
  d = len(input_size)
  chex.assert_equal(
    np.shape(sigma_D),
    (d,),
    custom_message=f"soft_kernel_taps: sigma_D must be [D], one sigma per axis of input_size ({d})",
  )
  for name, sizes in (("kernel_grid", kernel_grid), ("resolution", resolution)):
    chex.assert_equal(
      len(sizes), d, custom_message=f"soft_kernel_taps: {name} must give one size per axis ({d})"
    )
  return tuple(
    KERNEL.soft_taps(sigma, n, big_n, m, causal, threshold, bucket)
    for sigma, n, big_n, m in zip(sigma_D, kernel_grid, input_size, resolution, strict=True)
  )


def soft_sizes(params, cfg: ModelConfig, arch: Arch, batch_size: int) -> cost.NetworkSizes:
  """Sizes for the loss's cost term, differentiable in the mask parameters (METHOD.md §6).

  [design] Every size's *value* is the integer size of the crop the current mask parameters give
  (what :func:`compute_arch` would return for them: kernel taps, widths and resolutions rounded up
  to their buckets, 0/1 depth gates), so the cost the budget term sees is the cost of the network
  that runs, not a sum of mask values (which read 0.6x the cropped cost). Its *gradient* is that
  of each mask's continuous extent (straight-through): taps ``1 + 2 r / step`` (causal
  ``1 + r / step``), widths ``extent * (C - 1) + 1``, resolutions ``extent * N``, a unit ramp per
  block for depth, and the sum of the gates for DNAL's per-channel gates. The convolution route of
  each layer is the one ``arch`` uses; ``arch`` also gives the sizes of dimensions not learned.
  """
  _check_cost_inputs("soft_sizes", arch, cfg, batch_size)
  get = lambda *keys: lookup(params, keys)
  grid = [cfg.grid_size(a) for a in range(cfg.ndim)]

  def soft_taps(sigma_D, resolution, taps_if_fixed):
    if not cfg.learn_kernel:
      return taps_if_fixed
    return soft_kernel_taps(
      sigma_D, grid, cfg.input_size, resolution, cfg.causal, cfg.threshold, cfg.kernel_bucket
    )

  widths = width_mask(cfg)
  stream = (
    widths.soft_width(get(width_param(cfg, "stream")), cfg, cfg.width)
    if cfg.learn_width
    else cfg.width
  )
  if cfg.learn_depth:
    gates = DEPTH.soft_gates(get(DEPTH.param), cfg)
  else:
    gates = [1.0] * cfg.num_blocks
  stem_taps = soft_taps(get("stem_conv", "arch_sigma"), cfg.input_size, arch.stem.taps)
  stem = cost.ConvSizes(tuple(cfg.input_size), stem_taps, cfg.in_channels, arch.stem.route)
  blocks, current = [], tuple(cfg.input_size)
  for l, b in enumerate(arch.blocks):
    if cfg.learn_resolution:
      cutoff_D = get(f"block_{l}", "arch_resolution_cutoff")
      resolution = tuple(
        resolution_mask(cfg).soft_size(cutoff_D[a], cfg, a) for a in range(cfg.ndim)
      )
      resample_from = current
      # A skipped block leaves the resolution as it was (as compute_arch does).
      kept = jax.lax.stop_gradient(jnp.asarray(gates[l]))
      current = tuple(kept * r + (1 - kept) * c for r, c in zip(resolution, current, strict=True))
    else:
      resolution, resample_from = tuple(cfg.input_size), None
    hidden = (
      widths.soft_width(get(f"block_{l}", width_param(cfg, "hidden")), cfg, cfg.hidden_width)
      if cfg.learn_width
      else cfg.hidden_width
    )
    taps = soft_taps(get(f"block_{l}", "conv", "arch_sigma"), resolution, b.conv.taps)
    conv_sizes = cost.ConvSizes(resolution, taps, stream, b.conv.route)
    blocks.append(cost.BlockSizes(conv_sizes, hidden, gates[l], resample_from))
  return _network_sizes(cfg, arch, batch_size, stream, stem, blocks)
