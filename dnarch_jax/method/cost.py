"""The cost model: FLOPs and parameters of a DNArch network from its sizes (METHOD.md §6).

One formula serves two purposes. Evaluated on *soft* sizes (sums of mask values, JAX arrays) it
is differentiable and drives the complexity term of the loss; evaluated on an ``Arch``'s integer
sizes it is what we report, and it matches XLA's cost analysis of the compiled cropped forward
pass (tests hold it within 10%).

FLOPs follow XLA's counting so the two can be compared: a matmul is ``2 M N K``; an elementwise
op 1 per element (tanh-GELU 8; exp and sin are "transcendentals", not FLOPs); an FFT counts
``8 * (input elements) * prod_d floor(log2 n_d)``; convolutions count as their route does.
Counts are per example of the forward pass in evaluation mode; the kernel nets run once per
batch and are divided by the batch size.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import chex
import jax
import jax.numpy as jnp
import numpy as np

from dnarch_jax.method.masks import array_module
from dnarch_jax.network.conv_flops import route_cost

Scalar = Any  # a Python/NumPy number or a JAX scalar


def _prod(values):
  out = 1.0
  for v in values:
    out = out * v
  return out


@dataclasses.dataclass(frozen=True)
class ConvSizes:
  """A depthwise continuous conv: resolution and taps per axis, channels, route."""

  resolution: tuple[Scalar, ...]
  taps: tuple[Scalar, ...]
  channels: Scalar
  route: str


@dataclasses.dataclass(frozen=True)
class BlockSizes:
  conv: ConvSizes
  hidden: Scalar
  gate: Scalar  # 1 or 0 for an Arch; the soft depth gate otherwise
  resample_from: tuple[Scalar, ...] | None  # input resolution when the block resamples


@dataclasses.dataclass(frozen=True)
class NetworkSizes:
  """Everything the cost depends on. Built by ``dnarch_jax.method.sizes.arch_sizes`` /
  ``soft_sizes``."""

  input_size: tuple[int, ...]
  in_channels: int
  num_classes: int
  stream: Scalar
  stem: ConvSizes
  blocks: tuple[BlockSizes, ...]
  dense_head: bool
  # Whether the dense head resamples back to the input resolution: decided by the crop (an
  # ``Arch``), since a traced soft resolution's value is unknown when the cost is traced.
  head_resamples: bool
  causal: bool
  kernel_net: str
  kernel_net_hidden: int
  kernel_net_layers: int
  learn_kernel: bool
  learn_width: bool
  learn_depth: bool
  batch_size: int


# --- convolutions -------------------------------------------------------------------------------


def fft_flops(shape_in: Sequence[Scalar], transform_lengths: Sequence[Scalar]):
  """XLA's count for an FFT: ``8 * input elements * prod floor(log2 n)``."""
  xp = array_module(*shape_in, *transform_lengths)
  logs = _prod(xp.floor(xp.log2(xp.maximum(n, 2))) for n in transform_lengths)
  return 8.0 * _prod(shape_in) * logs


def conv_flops(c: ConvSizes, causal: bool, batch_size: int):
  """Forward FLOPs per example of a depthwise conv by its route, as XLA counts them.

  The routes own their cost (``dnarch_jax.network.conv.route_cost``, exact on integer sizes and
  differentiable on soft ones); the kernel's own transform is excluded (once per batch, small).
  """
  return route_cost(c.resolution, c.taps, c.channels, batch_size, causal, c.route)


# --- kernel nets ----------------------------------------------------------------------------------


def kernel_net_flops(positions, dims: int, out_channels, kind: str, hidden: int, layers: int):
  """FLOPs of a kernel net at ``positions`` points (once per batch)."""
  h, k = hidden, positions
  if kind == "magnet":
    # Per Gabor filter: envelope (diff, scale, square, sum, halve) ~ 4 K H D + K H, the sine's
    # argument 2 K D H + K H, and the product of envelope and sine K H.
    gabor = k * h * (6 * dims + 3)
    hidden_layers = layers * (2 * k * h * h + 2 * k * h)  # linear + bias, times the next filter
    body = (layers + 1) * gabor + hidden_layers
  else:
    body = 2 * k * dims * h + 2 * k * h + (layers - 1) * (2 * k * h * h + 2 * k * h)
  return body + 2 * k * h * out_channels + k * out_channels


def kernel_mask_flops(positions, dims: int, channels):
  """Gaussian mask at every tap (~4 D per position), thresholded, times the kernel."""
  return positions * (4 * dims + 2) + positions * channels


# --- the network ----------------------------------------------------------------------------------


def _conv_layer_flops(c: ConvSizes, s: NetworkSizes, bias: bool = True):
  """Per example: the conv, its bias, and (amortised) the kernel net and mask sampling it."""
  positions = _prod(c.resolution)
  taps = _prod(c.taps)
  dims = len(c.taps)
  per_batch = kernel_net_flops(
    taps, dims, c.channels, s.kernel_net, s.kernel_net_hidden, s.kernel_net_layers
  )
  if s.learn_kernel:
    per_batch = per_batch + kernel_mask_flops(taps, dims, c.channels)
  bias_flops = positions * c.channels if bias else 0
  return conv_flops(c, s.causal, s.batch_size) + bias_flops + per_batch / s.batch_size


def resample_flops(size_in: Sequence[Scalar], size_out: Sequence[Scalar], channels, masked: bool):
  """rfftn at the input size, mask and rescale, irfftn at the output size."""
  half = lambda size: (*size[:-1], size[-1] / 2 + 1)
  spectrum_out = _prod(half(size_out)) * channels
  flops = fft_flops((_prod(size_in), channels), size_in)
  flops = flops + fft_flops((spectrum_out,), size_out)
  flops = flops + _prod(size_out) * channels  # amplitude rescale
  if masked:
    flops = flops + spectrum_out * 2 * len(size_out)  # one complex-by-real product per axis
  return flops


def _check_sizes(fn: str, s: NetworkSizes) -> None:
  """Static checks of a ``NetworkSizes`` (shapes only, so they cost nothing under jit): every
  conv and resample sized on the input's axes, every size one scalar (soft sizes are JAX
  scalars; a batch of them is vmap's job)."""
  d = len(s.input_size)
  per_axis = [("s.stem.resolution", s.stem.resolution), ("s.stem.taps", s.stem.taps)]
  scalars = [("s.stream", s.stream), ("s.stem.channels", s.stem.channels)]
  for l, b in enumerate(s.blocks):
    per_axis += [(f"s.blocks[{l}].conv.resolution", b.conv.resolution)]
    per_axis += [(f"s.blocks[{l}].conv.taps", b.conv.taps)]
    if b.resample_from is not None:
      per_axis += [(f"s.blocks[{l}].resample_from", b.resample_from)]
    scalars += [(f"s.blocks[{l}].conv.channels", b.conv.channels)]
    scalars += [(f"s.blocks[{l}].hidden", b.hidden), (f"s.blocks[{l}].gate", b.gate)]
  for name, sizes in per_axis:
    chex.assert_equal(
      len(sizes), d, custom_message=f"{fn}: {name} must give one size per axis of s.input_size"
    )
    scalars += [(f"{name}[{axis}]", v) for axis, v in enumerate(sizes)]
  for name, value in scalars:
    chex.assert_rank(value, 0, custom_message=f"{fn}: {name} must be a scalar")


def layer_flops(s: NetworkSizes) -> dict[str, Any]:
  """FLOPs per example of each part of the network: ``stem``, ``block_l``, ``head``."""
  _check_sizes("layer_flops", s)
  return _layer_flops(s)


def _layer_flops(s: NetworkSizes) -> dict[str, Any]:
  """``layer_flops`` on sizes already checked."""
  c = s.stream
  mask = 1 if s.learn_width else 0
  n_in = _prod(s.input_size)
  out: dict[str, Any] = {}
  # stem: conv on the input channels, mixer to the stream, BN (3/elt), GELU (8/elt), stream mask.
  out["stem"] = (
    _conv_layer_flops(s.stem, s, bias=False)
    + 2 * n_in * s.in_channels * c
    + n_in * c * (3 + 8 + mask)
  )
  resolution = tuple(s.input_size)
  for l, b in enumerate(s.blocks):
    p = _prod(b.conv.resolution)
    h = b.hidden
    f = 0.0
    if b.resample_from is not None:
      f = resample_flops(b.resample_from, b.conv.resolution, c, masked=True)
    f = f + p * c * (3 + mask)  # pre-norm BN, stream mask
    f = f + _conv_layer_flops(b.conv, s)
    f = f + 2 * p * c * h + p * h * (1 + 8 + mask)  # mixer, bias, GELU, hidden mask
    f = f + 2 * p * h * c + p * c * (1 + 8 + mask)  # linear, bias, GELU, stream mask
    f = f + p * c * ((1 if s.learn_depth else 0) + 1)  # gate, residual
    out[f"block_{l}"] = f * b.gate
    resolution = _select_resolution(b, resolution)
  p_out = _prod(resolution)
  head = p_out * c * (3 + mask)
  if s.dense_head:
    if s.head_resamples:
      head = head + resample_flops(resolution, s.input_size, c, masked=False)
    head = head + n_in * (2 * c * s.num_classes + s.num_classes)
  else:
    head = head + p_out * c + 2 * c * s.num_classes + s.num_classes
  out["head"] = head
  return out


def _select_resolution(b: BlockSizes, previous):
  """The resolution after a block: its own when kept, the previous when off (a traced gate
  blends the two, which for the loss's 0/1 gates is the same choice)."""
  if isinstance(b.gate, int | float | np.integer | np.floating):
    return previous if float(b.gate) == 0.0 else b.conv.resolution
  g = jax.lax.stop_gradient(b.gate)
  return tuple(g * r + (1 - g) * p for r, p in zip(b.conv.resolution, previous, strict=True))


def flops(s: NetworkSizes):
  """Total forward FLOPs per example."""
  _check_sizes("flops", s)
  return sum(_layer_flops(s).values())


def params(s: NetworkSizes):
  """Parameters of the network the sizes describe (kernel nets counted whole, masks excluded).

  Kernel nets stay in the deployed network's parameter count only in their sampled form, so
  this counts what a fixed-shape export stores: sampled depthwise kernels, biases, mixers, BN.
  """
  _check_sizes("params", s)
  c = s.stream
  total = _prod(s.stem.taps) * s.in_channels  # stem kernel (no bias: BatchNorm follows)
  total = total + s.in_channels * c + 2 * c  # stem mixer (no bias), stem BN
  for b in s.blocks:
    h = b.hidden
    block = 2 * c + _prod(b.conv.taps) * c + c  # BN, kernel, bias
    block = block + c * h + h + h * c + c  # mixer, linear
    total = total + block * b.gate
  return total + 2 * c + c * s.num_classes + s.num_classes


def budget_penalty(cost, budget: float, weight: float):
  """The complexity term ``lambda * max(0, cost / budget - 1)^2`` (METHOD.md §6).

  A budget of 0 means no budget: leave the term out (it would divide by zero)."""
  for name, value in (("cost", cost), ("budget", budget), ("weight", weight)):
    chex.assert_rank(value, 0, custom_message=f"budget_penalty: {name} must be a scalar")
  if not isinstance(budget, jax.Array):  # a static number (checked at trace time, once)
    chex.assert_scalar_positive(float(budget), custom_message="budget_penalty: budget must be > 0")
  return weight * jnp.square(jnp.maximum(0.0, cost / budget - 1.0))


def describe(value) -> float:
  """A cost as a plain float for reports."""
  return float(np.asarray(jax.device_get(value)))
