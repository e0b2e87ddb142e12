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

import chex
import jax
import jax.numpy as jnp
import numpy as np

from dnarch_jax import conv, cost, grids, search_space
from dnarch_jax.channels import Channels
from dnarch_jax.channels import count as channel_count
from dnarch_jax.config import ModelConfig
from dnarch_jax.mask_kinds import DEPTH, KERNEL, resolution_mask, width_mask
from dnarch_jax.optim import is_arch_param


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


def flat_arch_params(params) -> dict[str, float | list[float]]:
  """The architecture parameters as ``{"block_0/conv/arch_sigma": [0.075, 0.075], ...}`` (plain
  floats, for ``metrics.jsonl``); a parameter with one value gives a float."""
  out = {}
  for path, leaf in jax.tree_util.tree_flatten_with_path(arch_params(params))[0]:
    name = "/".join(str(getattr(k, "key", k)) for k in path)
    values = np.asarray(leaf, np.float64)
    out[name] = float(values) if values.ndim == 0 else [float(v) for v in values]
  return out


def initial_arch_params(cfg: ModelConfig) -> dict:
  """The architecture parameters' initial values, as the model's initialisers set them."""
  d = cfg.ndim
  p: dict = {}
  sigma = lambda: {"arch_sigma": np.full((d,), cfg.kernel_sigma_init)}
  if cfg.learn_kernel:
    p["stem_conv"] = sigma()
  if cfg.learn_width:
    p[width_param(cfg, "stream")] = width_mask(cfg).initial_param(cfg, cfg.width)
  if cfg.learn_depth:
    p["arch_depth_cutoff"] = np.asarray(cfg.depth_init_cutoff)
  for l in range(cfg.num_blocks):
    block: dict = {}
    if cfg.learn_kernel:
      block["conv"] = sigma()
    if cfg.learn_width:
      block[width_param(cfg, "hidden")] = width_mask(cfg).initial_param(cfg, cfg.hidden_width)
    if cfg.learn_resolution:
      block["arch_resolution_cutoff"] = np.full((d,), cfg.resolution_init_cutoff)
    if block:
      p[f"block_{l}"] = block
  return p


def width_param(cfg: ModelConfig, kind: str) -> str:
  """Name of the ``"stream"`` or ``"hidden"`` width mask's parameter (its kind's: a scalar cutoff
  ``arch_stream_cutoff`` for the ordered mask, one logit per channel ``arch_stream_gate``)."""
  return width_mask(cfg).param_name(kind)


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
  get = lambda *keys: _lookup(p, keys)

  def at_new_size(size):
    ratios = zip(size, input_size, cfg.input_size, strict=True)
    return tuple(max(1, round(r * new / big)) for r, new, big in ratios)

  def conv_at(sigma_D, trained_resolution, resolution, channels) -> ConvArch:
    taps = conv_taps(sigma_D, cfg, resolution, crop=True)
    route = conv.resolve_route(resolution, taps, channels, batch_size, cfg.causal, cfg.conv_route)
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


# --- bucket boundaries, for plots of the parameters' trajectories ------------------------------


def _crop_size_fn(name: str, cfg: ModelConfig, arch: Arch) -> Callable[[float, int], int] | None:
  """``size(value, axis)``: the integer size the parameter at flat ``name`` crops to at
  ``value`` (the other axes at the same value; resolutions as in ``arch``); ``None`` for
  per-channel gates, which have no size of their own."""
  leaf = name.rsplit("/", 1)[-1]
  if leaf == "arch_sigma":
    resolution = search_space.layer_resolution(name.split("/"), cfg, arch)
    return lambda v, a: conv_taps([v] * cfg.ndim, cfg, resolution, crop=True)[a]
  if leaf in ("arch_stream_cutoff", "arch_hidden_cutoff"):
    count = cfg.width if leaf == "arch_stream_cutoff" else cfg.hidden_width
    return lambda v, a: width_mask(cfg).kept(v, cfg, count)
  if leaf == "arch_resolution_cutoff":
    return lambda v, a: resolution_mask(cfg).size(v, cfg, a)
  if leaf == DEPTH.param:
    return lambda v, a: int(np.sum(DEPTH.kept(v, cfg)))
  return None  # per-channel gates: a subset, not a size


def bucket_boundaries(params, cfg: ModelConfig, arch: Arch, samples: int = 256) -> dict:
  """Where each architecture parameter's crop changes: ``{flat name: [{"at": [v_1, ...],
  "sizes": [s_0, s_1, ...]}, ...one per axis]}``, sizes ``s_i`` between the values ``v_i`` over
  the parameter's box (``search_space.bounds``), with the kernels' resolutions of ``arch``.
  Found by a sweep then bisection (every size is monotone in its parameter)."""
  out = {}
  for name, value in flat_arch_params(params).items():
    size = _crop_size_fn(name, cfg, arch)
    if size is None:
      continue
    resolution = search_space.layer_resolution(name.split("/"), cfg, arch)
    low, high = (
      np.broadcast_to(b, np.shape(value))
      for b in search_space.bounds(name.rsplit("/", 1)[-1], cfg, resolution)
    )

    axes = []
    for a in range(max(1, np.size(value))):
      lo, hi = float(np.ravel(low)[a]), float(np.ravel(high)[a])
      grid = np.linspace(lo, hi, samples)
      sizes = [size(v, a) for v in grid]
      at, kept = [], [sizes[0]]
      for i in np.flatnonzero(np.diff(sizes)):
        left, right = grid[i], grid[i + 1]
        for _ in range(30):
          mid = (left + right) / 2
          left, right = (mid, right) if size(mid, a) == sizes[i] else (left, mid)
        at.append(float(right))
        kept.append(sizes[i + 1])
      axes.append({"at": at, "sizes": [int(k) for k in kept]})
    out[name] = axes
  return out


# --- an architecture given: mask parameters that crop to it ------------------------------------


def _target_size(name: str, axis: int, target: Arch) -> int:
  """The size ``target`` gives the parameter at flat ``name`` on ``axis``."""
  keys = name.split("/")
  leaf = keys[-1]
  block = target.blocks[int(keys[0].split("_")[1])] if keys[0].startswith("block_") else None
  if leaf == "arch_sigma":
    return (block.conv if block else target.stem).taps[axis]
  if leaf == "arch_stream_cutoff":
    return target.stream_width
  if leaf == "arch_hidden_cutoff":
    return block.hidden_width
  if leaf == "arch_resolution_cutoff":
    return block.resolution[axis]
  return target.depth  # arch_depth_cutoff


def params_with_sizes(
  params, cfg: ModelConfig, arch: Arch, choose: Callable[[str, int, list[int]], int | None]
):
  """``params`` with each architecture parameter for which ``choose(name, axis, sizes)`` gives a
  size (one of ``sizes``: those the parameter can crop to, ascending) set to the middle of the
  interval of its box where it crops to that size (as far as possible from both neighbours);
  ``None`` leaves it. ``arch`` gives the layers' resolutions (the kernels' boxes)."""
  host = jax.device_get(params)
  values = {}
  for name, axes in bucket_boundaries(host, cfg, arch).items():
    low, high = search_space.bounds(
      name.rsplit("/", 1)[-1], cfg, search_space.layer_resolution(name.split("/"), cfg, arch)
    )
    current = np.ravel(np.asarray(flat_arch_params(host)[name], np.float64))
    chosen = []
    for a, table in enumerate(axes):
      size = choose(name, a, table["sizes"])
      if size is None:
        chosen.append(float(current[a]))
        continue
      i = table["sizes"].index(size)
      edges = [float(np.ravel(low)[min(a, np.size(low) - 1)]), *table["at"]]
      edges.append(float(np.ravel(high)[min(a, np.size(high) - 1)]))
      chosen.append((edges[i] + edges[i + 1]) / 2)
    values[name] = chosen

  def set_value(path, leaf):
    name = "/".join(str(getattr(k, "key", k)) for k in path)
    if name not in values:
      return leaf
    return jnp.asarray(np.reshape(values[name], np.shape(leaf)), jnp.asarray(leaf).dtype)

  return jax.tree_util.tree_map_with_path(set_value, params)


def sizes_of(arch: Arch) -> tuple:
  """What an ``Arch`` computes, without how: kernel taps, widths, resolutions, kept blocks."""
  blocks = tuple((b.conv.taps, b.hidden_width, b.resolution, b.active) for b in arch.blocks)
  return arch.stem.taps, arch.stream_width, blocks


def params_for_arch(params, cfg: ModelConfig, target: Arch, batch_size: int, field: str = "arch"):
  """``params`` with every architecture parameter set so that ``compute_arch`` crops to
  ``target``'s sizes (:func:`params_with_sizes`; routes and resampling follow from the sizes).
  A size the search space cannot crop to is a ``ValueError`` naming ``field``, the parameter
  and the sizes it can take. Ordered width masks only (gates have no size of their own)."""
  if not width_mask(cfg).sizes_settable:
    raise ValueError(f"{field}: an architecture cannot be given with per-channel width gates")
  if len(target.blocks) != cfg.num_blocks or tuple(target.input_size) != tuple(cfg.input_size):
    raise ValueError(
      f"{field}: {len(target.blocks)} blocks at input {tuple(target.input_size)}, the model has "
      f"{cfg.num_blocks} at {tuple(cfg.input_size)}"
    )

  def choose(name, axis, sizes):
    size = _target_size(name, axis, target)
    if size not in sizes:
      raise ValueError(f"{field}: {name} cannot crop to {size}; it takes {sizes}")
    return size

  out = params_with_sizes(params, cfg, target, choose)
  found = compute_arch(out, cfg, batch_size)
  if sizes_of(found) != sizes_of(target):
    raise ValueError(f"{field}: the masks set for {sizes_of(target)} crop to {sizes_of(found)}")
  return out


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


# --- sizes for the cost model ------------------------------------------------------------------


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
  get = lambda *keys: _lookup(params, keys)
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
