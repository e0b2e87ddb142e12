"""The search space: where each architecture parameter may go, and how fast it gets there.

[design] METHOD.md leaves the architecture parameters' ranges and rates open; a mask only does its
job if its parameter can travel (METHOD.md §3), so both are fixed here, per dimension:

* **Range.** Every architecture parameter lives in a box: from the value that gives its smallest
  architecture to the value that gives its largest, plus the soft shoulder of its mask.
  Sigmoid cutoffs (width, depth, resolution) span ``[-a, 1 + a]`` with ``a = ln(1/t - 1) / tau``:
  at the bottom the extent is 0 (one channel, one block, the lowest resolution, or the fraction
  ``resolution_min`` of the input's resolution where a config sets one), at the top the
  mask is ``1 - t`` at the last channel, block or frequency (0.9: the whole network, nearly
  unattenuated). DiffStride's ramp spans ``[-R (1 - t), 1]``. A gaussian's sigma spans from a
  radius of one grid step at the layer's resolution (3 taps, 2 causal) to the whole grid (radius
  1, or 2 for causal kernels, whose mask is centred at +1). Not one tap: a kernel cropped to its
  centre is a trap, since the centre's mask value is 1 whatever sigma is and the taps beside it
  are thresholded to 0, so the task loss could never grow it again (measured: block kernels
  projected to 1 tap stayed there for the rest of a run). The train step clips the parameters
  to their box after every update: outside it a parameter changes no crop, so travel there
  would be wasted, and a task gradient pushing a saturated mask further would otherwise store
  up distance to come back.
  DNAL's gate logits are unbounded (their sigmoid saturates by itself).
* **Rate.** Adam moves every parameter by about its learning rate per step whatever the gradient's
  scale, so the architecture optimiser's rate is multiplied by each dimension's range:
  ``optim.arch_lr`` (or ``lr * arch_lr_factor``) is the fraction of a range a consistent gradient
  crosses per step at the schedule's peak, the same for the four dimensions. Under the warm-up and
  cosine schedule the whole run moves a parameter at most about ``arch_lr * steps / 2`` ranges.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from dnarch_jax.config import ModelConfig
from dnarch_jax.method import mask_kinds
from dnarch_jax.method.arch_params import is_arch_param

DIMENSIONS = ("kernel", "width", "resolution", "depth")


def bounds(name: str, cfg: ModelConfig, resolution=None) -> tuple[np.ndarray, np.ndarray]:
  """``(low, high)`` of the architecture parameter named ``name`` (per axis where it has axes);
  for a kernel's sigma, at the ``resolution`` its layer runs at (the input's by default)."""
  if name == mask_kinds.KERNEL.param:
    return mask_kinds.KERNEL.bounds(cfg, resolution)
  if name == mask_kinds.DEPTH.param:
    return mask_kinds.DEPTH.bounds(cfg)
  if name == "arch_resolution_cutoff":
    kind = mask_kinds.resolution_mask(cfg)
    return kind.low(cfg), kind.high(cfg)
  return mask_kinds.width_mask(cfg).bounds(cfg)  # arch_stream_* and arch_hidden_*


_EXAMPLE_PARAM = {
  "kernel": "arch_sigma",
  "width": "arch_stream_cutoff",
  "resolution": "arch_resolution_cutoff",
  "depth": "arch_depth_cutoff",
}


def dimension_range(dimension: str, cfg: ModelConfig) -> float:
  """The width of a dimension's box (the largest over axes): the scale of its Adam steps. DNAL's
  unbounded gate logits keep the plain rate (1)."""
  if dimension == "width":
    return mask_kinds.width_mask(cfg).box_width(cfg)
  low, high = bounds(_EXAMPLE_PARAM[dimension], cfg)
  return float(np.max(high - low))


def dimension_ranges(cfg: ModelConfig) -> dict[str, float]:
  return {d: dimension_range(d, cfg) for d in DIMENSIONS}


def _name(path) -> str:
  return str(getattr(path[-1], "key", path[-1]))


def layer_resolution(path, cfg: ModelConfig, arch=None) -> tuple[int, ...]:
  """The resolution the layer owning the parameter at ``path`` (pytree keys, or the parts of a
  flat name such as ``"block_0/conv/arch_sigma"``) runs at in ``arch`` (a
  ``dnarch_jax.method.arch.Arch``; the input's without one or for the stem)."""
  first = str(getattr(path[0], "key", path[0]))
  if arch is None or not first.startswith("block_"):
    return tuple(cfg.input_size)
  return tuple(arch.blocks[int(first[len("block_") :])].resolution)


def clip_to_bounds(params, cfg: ModelConfig, arch=None):
  """``params`` with every architecture parameter clipped to its box (works traced or not);
  kernel boxes at the resolutions of ``arch`` (the input's without one)."""

  def clip(path, leaf):
    if not is_arch_param(path) or _name(path).endswith("_gate"):
      return leaf
    low, high = bounds(_name(path), cfg, layer_resolution(path, cfg, arch))
    if isinstance(leaf, jax.Array):
      return jnp.clip(leaf, jnp.asarray(low, leaf.dtype), jnp.asarray(high, leaf.dtype))
    return np.clip(leaf, low, high).astype(np.asarray(leaf).dtype)

  return jax.tree_util.tree_map_with_path(clip, params)
