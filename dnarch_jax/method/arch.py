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
import pathlib
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from dnarch_jax.config import ModelConfig
from dnarch_jax.method import grids
from dnarch_jax.method.arch_params import arch_params, initial_arch_params, lookup, width_param
from dnarch_jax.method.channels import Channels
from dnarch_jax.method.channels import count as channel_count
from dnarch_jax.method.mask_kinds import DEPTH, KERNEL, resolution_mask, width_mask
from dnarch_jax.network.conv_routes import resolve_route


@dataclasses.dataclass(frozen=True)
class ConvArch:
  """A continuous conv layer: taps kept per spatial axis and the convolution route used.

  ``kernel_scale`` multiplies the sampled kernel; it is 1 except in a network evaluated at an
  input size other than its training one (:func:`arch_at_input_size`), and is written to JSON
  only then (``arch.jsonl`` records keep their format)."""

  taps: tuple[int, ...]
  route: str
  kernel_scale: float = 1.0


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
    """The hidden channels computed, as a ``dnarch_jax.method.channels`` selection."""
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
    """The stream channels computed, as a ``dnarch_jax.method.channels`` selection."""
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
    d = dataclasses.asdict(self)
    for c in (d["stem"], *(b["conv"] for b in d["blocks"])):
      if c["kernel_scale"] == 1.0:
        del c["kernel_scale"]
    return d

  def to_json(self) -> str:
    return json.dumps(self.to_dict(), sort_keys=True)

  @classmethod
  def from_dict(cls, d: Mapping[str, Any]) -> Arch:
    conv_arch = lambda c: ConvArch(tuple(c["taps"]), c["route"], c.get("kernel_scale", 1.0))
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


def block_resolution(cutoff_D, cfg: ModelConfig) -> tuple[int, ...]:
  """The resolution a block's mask parameters give, per axis."""
  kind = resolution_mask(cfg)
  return tuple(kind.size(float(cutoff_D[axis]), cfg, axis) for axis in range(cfg.ndim))


def conv_taps(sigma_D, cfg: ModelConfig, resolution, crop: bool) -> tuple[int, ...]:
  """Taps per axis of a continuous conv at ``resolution``: the crop of its mask, or all."""
  taps = []
  for axis, m in enumerate(resolution):
    n, big_n = cfg.grid_size(axis), cfg.input_size[axis]
    limit = grids.max_taps(n, big_n, m, cfg.causal)
    if not (crop and cfg.learn_kernel):
      taps.append(limit)
      continue
    sigma = float(sigma_D[axis])
    taps.append(
      KERNEL.taps(sigma, n, big_n, m, cfg.causal, cfg.threshold, cfg.kernel_bucket, limit)
    )
  return tuple(taps)


def _conv_arch(sigma_D, cfg, resolution, channels, batch_size, crop) -> ConvArch:
  taps = conv_taps(sigma_D, cfg, resolution, crop)
  route = resolve_route(resolution, taps, channels, batch_size, cfg.causal, cfg.conv_route)
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
  get = lambda *keys: lookup(p, keys)

  def width(param, count) -> Channels:
    return width_mask(cfg).kept(param, cfg, count) if crop and cfg.learn_width else count

  stream = width(get(width_param(cfg, "stream")), cfg.width)
  if cfg.learn_depth:
    gate_kept = DEPTH.kept(float(get(DEPTH.param)), cfg)
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


def arch_at_input_size(
  arch_params_tree: Mapping, cfg: ModelConfig, input_size, batch_size: int = 1
) -> Arch:
  """The cropped architecture run on inputs of ``input_size`` instead of ``cfg.input_size``.

  Continuous kernels make the trained network resolution-agnostic (FlexConv, CCNN): every layer
  runs at its trained resolution times ``input_size / cfg.input_size`` (rounded, per axis), and
  every kernel is the same continuous function sampled on that layer's grid. What is exact: the
  kernel values at each new tap (the kernel net and gaussian mask are evaluated at the new
  positions; at an integer factor the trained taps are among them), widths, depth, and the
  frequency masks, which are written in cycles per signal and so mean the same at any size. What
  is an approximation: a denser grid sums more taps, so each kernel is scaled by the ratio of the
  tap spacings (``ConvArch.kernel_scale``, trained resolution over new, per axis) to keep the
  same continuous convolution as a Riemann sum; BatchNorm's running statistics are the trained
  resolution's; and a smaller input loses every frequency above its own Nyquist.
  Evaluation only (BatchNorm in eval mode); the cost of the result is ``arch_sizes``'s as usual.
  """
  trained = compute_arch(arch_params_tree, cfg, batch_size)
  input_size = tuple(int(n) for n in input_size)
  if len(input_size) != cfg.ndim or min(input_size) < 1:
    raise ValueError(
      f"input_size: {list(input_size)} must be {cfg.ndim} positive size(s), like the model's "
      f"{list(cfg.input_size)}"
    )
  if input_size == tuple(cfg.input_size):
    return trained
  p = arch_params(arch_params_tree)
  get = lambda *keys: lookup(p, keys)

  def at_new_size(size):
    ratios = zip(size, input_size, cfg.input_size, strict=True)
    return tuple(max(1, round(r * new / big)) for r, new, big in ratios)

  def conv_at(sigma_D, trained_resolution, resolution, channels) -> ConvArch:
    taps = conv_taps(sigma_D, cfg, resolution, crop=True)
    route = resolve_route(resolution, taps, channels, batch_size, cfg.causal, cfg.conv_route)
    spacing = math.prod(t / n for t, n in zip(trained_resolution, resolution, strict=True))
    return ConvArch(taps, route, float(spacing))

  stem = conv_at(get("stem_conv", "arch_sigma"), cfg.input_size, input_size, cfg.in_channels)
  blocks = []
  for l, b in enumerate(trained.blocks):
    resolution = at_new_size(b.resolution)
    sigma = get(f"block_{l}", "conv", "arch_sigma")
    conv_arch = conv_at(sigma, b.resolution, resolution, trained.stream_width)
    blocks.append(dataclasses.replace(b, conv=conv_arch, resolution=resolution))
  return dataclasses.replace(trained, input_size=input_size, stem=stem, blocks=tuple(blocks))


def _indices(channels: Channels) -> tuple[int, ...] | None:
  return None if isinstance(channels, int) else channels


def initial_arch(cfg: ModelConfig, batch_size: int = 1, crop: bool = True) -> Arch:
  """The architecture at initialisation, before any parameter exists."""
  return compute_arch(initial_arch_params(cfg), cfg, batch_size, crop)


def sizes_of(arch: Arch) -> tuple:
  """What an ``Arch`` computes, without how: kernel taps, widths, resolutions, kept blocks."""
  blocks = tuple((b.conv.taps, b.hidden_width, b.resolution, b.active) for b in arch.blocks)
  return arch.stem.taps, arch.stream_width, blocks


def load_arch(path: str, field: str = "arch_init") -> Arch:
  """An ``Arch`` from a JSON file: the ``Arch`` dict itself, or a record holding one under
  ``"arch"`` (a line of a run's ``arch.jsonl``, ``dnarch summary --json``); a file of several
  lines gives its last."""
  file = pathlib.Path(path)
  if not file.is_file():
    raise ValueError(f"{field}: no file {path}")
  try:
    text = file.read_text()
    try:
      record = json.loads(text)
    except json.JSONDecodeError:  # JSON lines: the last
      record = json.loads(text.strip().splitlines()[-1])
    return Arch.from_dict(record.get("arch", record))
  except (ValueError, KeyError, TypeError, IndexError) as e:
    raise ValueError(f"{field}: {path} holds no architecture ({type(e).__name__}: {e})") from None
