"""From mask parameters to crop sizes and back: where each architecture parameter's crop
changes (``bucket_boundaries``, for the plots of the parameters' paths) and parameters that
crop to given sizes (``params_with_sizes``, ``params_for_arch``: ``config.arch_init``, the
Pareto experiment's fixed architectures).
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from dnarch_jax.config import ModelConfig
from dnarch_jax.method import search_space
from dnarch_jax.method.arch import Arch, compute_arch, conv_taps, sizes_of
from dnarch_jax.method.arch_params import flat_arch_params
from dnarch_jax.method.mask_kinds import DEPTH, resolution_mask, width_mask

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
