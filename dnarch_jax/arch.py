"""``Arch``: the static architecture computed from the mask parameters (METHOD.md §5).

Cropping changes shapes and ``jit`` needs static shapes, so every crop size lives in a frozen,
hashable value that the compiled step takes as a static argument. It is computed on the host from
the masks' closed-form extents, rounded *up* to buckets so it changes rarely. Parameters keep
their maximal shapes; the model slices them to the ``Arch`` it is given.

``compute_arch(..., crop=False)`` gives the *full* architecture for the same mask parameters:
maximal kernels, widths and depth (masks zeroed below the threshold), the same resolutions. The
model applied with it computes the same function as with the cropped ``Arch``.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from dnarch_jax import conv, cost, grids, masks
from dnarch_jax.channels import Channels
from dnarch_jax.channels import count as channel_count
from dnarch_jax.config import ModelConfig
from dnarch_jax.optim import is_arch_param


@dataclasses.dataclass(frozen=True)
class ConvArch:
  """A continuous conv layer: taps kept per spatial axis and the convolution route used."""

  taps: tuple[int, ...]
  route: str


@dataclasses.dataclass(frozen=True)
class BlockArch:
  """One residual block.

  ``resolution`` is the spatial size the block runs at; ``resample`` says whether the block takes
  its input there through its own frequency mask (resolution learning on and the block kept).
  An inactive block is skipped in the cropped network; the full network computes it with gate 0.
  ``hidden_channels`` are the kept hidden channels when the width mask keeps a subset (scaled
  sigmoid gates); ``None`` means the first ``hidden_width``.
  """

  conv: ConvArch
  hidden_width: int
  resolution: tuple[int, ...]
  resample: bool
  active: bool
  hidden_channels: tuple[int, ...] | None = None

  @property
  def hidden(self) -> Channels:
    """The hidden channels computed, as a ``dnarch_jax.channels`` selection."""
    return self.hidden_width if self.hidden_channels is None else self.hidden_channels


@dataclasses.dataclass(frozen=True)
class Arch:
  """The whole network: ``stream_channels`` as ``BlockArch.hidden_channels``, for the stream."""

  input_size: tuple[int, ...]
  stem: ConvArch
  stream_width: int
  blocks: tuple[BlockArch, ...]
  stream_channels: tuple[int, ...] | None = None

  @property
  def stream(self) -> Channels:
    """The stream channels computed, as a ``dnarch_jax.channels`` selection."""
    return self.stream_width if self.stream_channels is None else self.stream_channels

  @property
  def depth(self) -> int:
    return sum(b.active for b in self.blocks)

  @property
  def output_resolution(self) -> tuple[int, ...]:
    return self.blocks[-1].resolution if self.blocks else self.input_size

  def with_conv_routes(self, new_route: Callable[[str], str]) -> Arch:
    """The same architecture with each conv's route replaced by ``new_route(route)``."""
    swap = lambda c: dataclasses.replace(c, route=new_route(c.route))
    blocks = tuple(dataclasses.replace(b, conv=swap(b.conv)) for b in self.blocks)
    return dataclasses.replace(self, stem=swap(self.stem), blocks=blocks)

  def to_dict(self) -> dict[str, Any]:
    return dataclasses.asdict(self)

  def to_json(self) -> str:
    return json.dumps(self.to_dict(), sort_keys=True)

  @classmethod
  def from_dict(cls, d: Mapping[str, Any]) -> Arch:
    conv_arch = lambda c: ConvArch(tuple(c["taps"]), c["route"])
    indices = lambda v: None if v is None else tuple(int(i) for i in v)
    blocks = tuple(
      BlockArch(
        conv_arch(b["conv"]),
        b["hidden_width"],
        tuple(b["resolution"]),
        b["resample"],
        b["active"],
        indices(b.get("hidden_channels")),
      )
      for b in d["blocks"]
    )
    return cls(
      tuple(d["input_size"]),
      conv_arch(d["stem"]),
      d["stream_width"],
      blocks,
      indices(d.get("stream_channels")),
    )


# --- the architecture parameters ---------------------------------------------------------------


def arch_params(params) -> dict:
  """The architecture parameters of ``params`` as a nested dict of host float64 arrays."""
  out: dict = {}
  for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
    if is_arch_param(path):
      node = out
      keys = [getattr(k, "key", str(k)) for k in path]
      for k in keys[:-1]:
        node = node.setdefault(k, {})
      node[keys[-1]] = np.asarray(jax.device_get(leaf), np.float64)
  return out


def initial_arch_params(cfg: ModelConfig) -> dict:
  """The architecture parameters' initial values, as the model's initialisers set them."""
  d = cfg.ndim
  p: dict = {}
  sigma = lambda: {"arch_sigma": np.full((d,), cfg.kernel_sigma_init)}
  if cfg.learn_kernel:
    p["stem_conv"] = sigma()
  if cfg.learn_width:
    p[width_param(cfg, "stream")] = initial_width_param(cfg, cfg.width)
  if cfg.learn_depth:
    p["arch_depth_cutoff"] = np.asarray(cfg.depth_init_cutoff)
  for l in range(cfg.num_blocks):
    block: dict = {}
    if cfg.learn_kernel:
      block["conv"] = sigma()
    if cfg.learn_width:
      block[width_param(cfg, "hidden")] = initial_width_param(cfg, cfg.hidden_width)
    if cfg.learn_resolution:
      block["arch_resolution_cutoff"] = np.full((d,), cfg.resolution_init_cutoff)
    if block:
      p[f"block_{l}"] = block
  return p


def width_param(cfg: ModelConfig, kind: str) -> str:
  """Name of the ``"stream"`` or ``"hidden"`` width mask's parameter: a scalar cutoff for the
  ordered mask (``arch_stream_cutoff``), one logit per channel for gates (``arch_stream_gate``)."""
  suffix = "gate" if cfg.width_mask == "scaled_sigmoid_gate" else "cutoff"
  return f"arch_{kind}_{suffix}"


# Gate logits start at width_gate_init minus this much times the channel's normalised index.
GATE_INIT_TIE_BREAK = 0.01


def initial_width_param(cfg: ModelConfig, count: int) -> np.ndarray:
  """The width mask's initial parameter: the cutoff, or one gate logit per channel.

  Gate logits decrease very slightly with the channel index [design]: equal logits would cross
  the threshold together, so a hard budget's projection at initialisation (which moves every
  logit towards the smallest network) could only keep all channels or one; with the tie broken
  it removes the last channels first, as the ordered mask does, and training reorders them.
  """
  if cfg.width_mask == "scaled_sigmoid_gate":
    return cfg.width_gate_init - GATE_INIT_TIE_BREAK * index_coordinates(count)
  return np.asarray(cfg.width_init_cutoff)


def kept_channels(param, cfg: ModelConfig, count: int) -> Channels:
  """What a width mask keeps: the first ``n`` channels (ordered mask, ``n`` rounded up to the
  width bucket) or the indices of the gates at or above the threshold (no bucket: the kept set,
  not its size, is what changes)."""
  if cfg.width_mask == "scaled_sigmoid_gate":
    return masks.scaled_sigmoid_gate_kept(param, cfg.width_gate_delta, cfg.threshold)
  e = masks.sigmoid_cutoff_extent(float(param), cfg.width_temperature, cfg.threshold)
  return round_up(kept_count(e, count), cfg.width_bucket, count)


def soft_width(param, cfg: ModelConfig, count: int):
  """Differentiable width: the sum of the (unthresholded) width mask over all ``count``."""
  if cfg.width_mask == "scaled_sigmoid_gate":
    return jnp.sum(masks.scaled_sigmoid_gate(param, cfg.width_gate_delta))
  u = jnp.asarray(index_coordinates(count), jnp.float32)
  return jnp.sum(masks.sigmoid_cutoff(u, param, cfg.width_temperature))


# --- extents -> integer sizes ------------------------------------------------------------------


def index_coordinates(count: int) -> np.ndarray:
  """Normalised index ``u_i = i / (count - 1)`` of channels or blocks (0 for a single one)."""
  return np.arange(count) / max(count - 1, 1)


def kept_count(extent: float, count: int) -> int:
  """Elements with ``u_i <= extent``; never fewer than 1 (the first element is always kept)."""
  return int(np.clip(np.floor(extent * max(count - 1, 1) + 1e-9) + 1, 1, count))


def round_up(value: int, bucket: int, limit: int) -> int:
  return min(limit, bucket * math.ceil(value / bucket))


def resolution_extent(cutoff, cfg: ModelConfig, axis: int):
  """Largest normalised frequency kept by a block's resolution mask along ``axis``."""
  if cfg.resolution_mask == "ramp":
    return masks.ramp_extent(cutoff, ramp_width(cfg, axis), cfg.threshold)
  return masks.sigmoid_cutoff_extent(cutoff, cfg.resolution_temperature, cfg.threshold)


def ramp_width(cfg: ModelConfig, axis: int) -> float:
  """DiffStride's R (frequency bins) in normalised frequency units along ``axis``."""
  return cfg.resolution_ramp / (cfg.input_size[axis] / 2)


def block_resolution(cutoff_D, cfg: ModelConfig) -> tuple[int, ...]:
  """Even size per axis keeping every frequency whose mask is >= t, rounded up to the bucket."""
  sizes = []
  for axis, big_n in enumerate(cfg.input_size):
    k_max = math.floor(float(resolution_extent(cutoff_D[axis], cfg, axis)) * big_n / 2 + 1e-9)
    size = int(np.clip(2 * k_max, cfg.resolution_bucket, big_n))
    sizes.append(round_up(size, cfg.resolution_bucket, big_n))
  return tuple(sizes)


def conv_taps(sigma_D, cfg: ModelConfig, resolution, crop: bool) -> tuple[int, ...]:
  """Taps per axis of a continuous conv at ``resolution``: the crop of its mask, or all."""
  taps = []
  for axis, m in enumerate(resolution):
    n, big_n = cfg.grid_size(axis), cfg.input_size[axis]
    limit = grids.max_taps(n, big_n, m, cfg.causal)
    if not (crop and cfg.learn_kernel):
      taps.append(limit)
      continue
    radius = float(masks.gaussian_radius(np.asarray(sigma_D[axis]), cfg.threshold))
    k = grids.crop_taps(radius, n, big_n, m, cfg.causal)
    taps.append(grids.bucket_taps(k, cfg.kernel_bucket, limit))
  return tuple(taps)


def _conv_arch(sigma_D, cfg, resolution, channels, batch_size, crop) -> ConvArch:
  taps = conv_taps(sigma_D, cfg, resolution, crop)
  route = conv.resolve_route(resolution, taps, channels, batch_size, cfg.causal, cfg.conv_route)
  return ConvArch(taps, route)


def compute_arch(
  arch_params_tree: Mapping, cfg: ModelConfig, batch_size: int = 1, crop: bool = True
) -> Arch:
  """The architecture the mask parameters describe (``crop=True``) or its full counterpart.

  Args:
    arch_params_tree: the architecture parameters, e.g. ``arch_params(params)`` or
      ``initial_arch_params(cfg)``; a full parameter tree works too.
    cfg: the model configuration.
    batch_size: the batch the convolution routes are chosen for.
    crop: ``False`` gives the full architecture (same resolutions, everything else maximal).
  """
  p = arch_params(arch_params_tree)
  get = lambda *keys: _lookup(p, keys)
  t = cfg.threshold

  def width(param, count) -> Channels:
    return kept_channels(param, cfg, count) if crop and cfg.learn_width else count

  stream = width(get(width_param(cfg, "stream")), cfg.width)
  if cfg.learn_depth:
    e = masks.sigmoid_cutoff_extent(float(get("arch_depth_cutoff")), cfg.depth_temperature, t)
    gate_kept = index_coordinates(cfg.num_blocks) <= e + 1e-12
    gate_kept[0] = True
  else:
    gate_kept = np.ones(cfg.num_blocks, bool)

  stem = _conv_arch(
    get("stem_conv", "arch_sigma"), cfg, cfg.input_size, cfg.in_channels, batch_size, crop
  )
  current = tuple(cfg.input_size)
  blocks = []
  for l in range(cfg.num_blocks):
    kept = bool(gate_kept[l])
    resample = cfg.learn_resolution and kept
    resolution = (
      block_resolution(get(f"block_{l}", "arch_resolution_cutoff"), cfg) if resample else current
    )
    hidden = width(get(f"block_{l}", width_param(cfg, "hidden")), cfg.hidden_width)
    sigma = get(f"block_{l}", "conv", "arch_sigma")
    conv_arch = _conv_arch(sigma, cfg, resolution, channel_count(stream), batch_size, crop)
    blocks.append(
      BlockArch(
        conv_arch,
        channel_count(hidden),
        resolution,
        resample,
        active=kept or not crop,
        hidden_channels=_indices(hidden),
      )
    )
    if kept:
      current = resolution
  return Arch(tuple(cfg.input_size), stem, channel_count(stream), tuple(blocks), _indices(stream))


def _indices(channels: Channels) -> tuple[int, ...] | None:
  return None if isinstance(channels, int) else channels


def _lookup(tree: Mapping, keys):
  node: Any = tree
  for k in keys:
    if not isinstance(node, Mapping) or k not in node:
      return None
    node = node[k]
  return node


def initial_arch(cfg: ModelConfig, batch_size: int = 1, crop: bool = True) -> Arch:
  """The architecture at initialisation, before any parameter exists."""
  return compute_arch(initial_arch_params(cfg), cfg, batch_size, crop)


# --- sizes for the cost model ------------------------------------------------------------------


def _network_sizes(cfg: ModelConfig, batch_size: int, stream, stem, blocks):
  return cost.NetworkSizes(
    input_size=tuple(cfg.input_size),
    in_channels=cfg.in_channels,
    num_classes=cfg.num_classes,
    stream=stream,
    stem=stem,
    blocks=tuple(blocks),
    dense_head=cfg.head == "dense",
    causal=cfg.causal,
    kernel_net=cfg.kernel_net,
    kernel_net_hidden=cfg.kernel_net_hidden,
    kernel_net_layers=cfg.kernel_net_layers,
    learn_kernel=cfg.learn_kernel,
    learn_width=cfg.learn_width,
    learn_depth=cfg.learn_depth,
    batch_size=batch_size,
  )


def arch_sizes(arch: Arch, cfg: ModelConfig, batch_size: int) -> cost.NetworkSizes:
  """The integer sizes of ``arch``: what the cropped network computes."""
  stem = cost.ConvSizes(arch.input_size, arch.stem.taps, cfg.in_channels, arch.stem.route)
  blocks, current = [], tuple(arch.input_size)
  for b in arch.blocks:
    conv_sizes = cost.ConvSizes(b.resolution, b.conv.taps, arch.stream_width, b.conv.route)
    resample_from = current if b.resample else None
    blocks.append(cost.BlockSizes(conv_sizes, b.hidden_width, int(b.active), resample_from))
    if b.active:
      current = b.resolution
  return _network_sizes(cfg, batch_size, arch.stream_width, stem, blocks)


def soft_kernel_taps(sigma_D, kernel_grid, input_size, resolution=None, causal=False):
  """Differentiable kernel size per axis: the gaussian mask's sum over the input-resolution grid,
  scaled by ``resolution / input_size`` (a block at half resolution samples half as densely).

  ``sigma_D`` is a layer's ``arch_sigma``; the other arguments are those of the layer (and the
  resolution it runs at, the input's by default). Use it to build a cost term for your own model.
  """
  resolution = input_size if resolution is None else resolution
  out = []
  for axis, m in enumerate(resolution):
    n, big_n = kernel_grid[axis], input_size[axis]
    full = grids.max_taps(n, big_n, big_n, causal)
    p = jnp.asarray(grids.tap_positions(n, big_n, big_n, full, causal))[:, None]
    mu = jnp.full((1,), 1.0 if causal else 0.0)
    out.append(jnp.sum(masks.gaussian(p, mu, sigma_D[axis][None])) * m / big_n)
  return tuple(out)


def soft_sizes(params, cfg: ModelConfig, arch: Arch, batch_size: int) -> cost.NetworkSizes:
  """Differentiable sizes from the mask parameters in ``params`` (METHOD.md §6, [design]).

  Soft width = sum of the width mask; soft depth gate = the unthresholded gate; soft resolution
  per axis = ``2 * sum_{k=1}^{N/2} m(k / (N/2))`` (N when the mask is 1 everywhere, 2 k_c for a
  sharp cutoff at bin k_c); soft kernel taps per axis = sum of the gaussian mask over the
  input-resolution grid, scaled by the block's resolution over the input's (sampling density).
  The convolution route of each layer is the one ``arch`` uses.
  """
  get = lambda *keys: _lookup(params, keys)

  def soft_taps(sigma_D, resolution, taps_if_fixed):
    if not cfg.learn_kernel:
      return taps_if_fixed
    grid = [cfg.grid_size(a) for a in range(cfg.ndim)]
    return soft_kernel_taps(sigma_D, grid, cfg.input_size, resolution, cfg.causal)

  def soft_resolution(cutoff_D):
    out = []
    for axis, big_n in enumerate(cfg.input_size):
      u = jnp.arange(1, big_n // 2 + 1, dtype=jnp.float32) / (big_n / 2)
      if cfg.resolution_mask == "ramp":
        m = masks.ramp(u, cutoff_D[axis], ramp_width(cfg, axis))
      else:
        m = masks.sigmoid_cutoff(u, cutoff_D[axis], cfg.resolution_temperature)
      out.append(2.0 * jnp.sum(m))
    return tuple(out)

  stream = (
    soft_width(get(width_param(cfg, "stream")), cfg, cfg.width) if cfg.learn_width else cfg.width
  )
  if cfg.learn_depth:
    u = jnp.asarray(index_coordinates(cfg.num_blocks), jnp.float32)
    gates = masks.sigmoid_cutoff(u, get("arch_depth_cutoff"), cfg.depth_temperature)
  else:
    gates = [1.0] * cfg.num_blocks
  stem_taps = soft_taps(get("stem_conv", "arch_sigma"), cfg.input_size, arch.stem.taps)
  stem = cost.ConvSizes(tuple(cfg.input_size), stem_taps, cfg.in_channels, arch.stem.route)
  blocks, current = [], tuple(cfg.input_size)
  for l, b in enumerate(arch.blocks):
    if cfg.learn_resolution:
      resolution = soft_resolution(get(f"block_{l}", "arch_resolution_cutoff"))
      resample_from = current
      current = resolution
    else:
      resolution, resample_from = tuple(cfg.input_size), None
    hidden = (
      soft_width(get(f"block_{l}", width_param(cfg, "hidden")), cfg, cfg.hidden_width)
      if cfg.learn_width
      else cfg.hidden_width
    )
    taps = soft_taps(get(f"block_{l}", "conv", "arch_sigma"), resolution, b.conv.taps)
    conv_sizes = cost.ConvSizes(resolution, taps, stream, b.conv.route)
    blocks.append(cost.BlockSizes(conv_sizes, hidden, gates[l], resample_from))
  return _network_sizes(cfg, batch_size, stream, stem, blocks)
