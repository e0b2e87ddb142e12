"""Kernel grids: where a continuous kernel is sampled, at any resolution and crop (METHOD.md §2).

Geometry: at the input resolution ``N`` a kernel axis is sampled at ``n`` points spanning [-1, 1]
(step ``2 / (n - 1)``). A block running at resolution ``M`` samples the same continuous kernel with
a step ``N / M`` times larger, so it covers the same physical extent. Centred kernels are symmetric
around 0 (odd tap counts); causal kernels end at +1, the tap that weighs the current step.

All functions are host-side integer/float64 arithmetic: the results are static shapes. The crop
arithmetic (``crop_taps``, ``bucket_taps``, ``max_taps``) also takes traced JAX scalars, so the
loss's cost model counts the taps of the crop the current mask parameters give with the very
formula the host uses (``dnarch_jax.method.sizes.soft_sizes``). Their inputs are checked with chex
assertions naming the argument (shapes and the static integers only: nothing per step).
"""

from __future__ import annotations

import chex
import numpy as np

from dnarch_jax.method.masks import array_module


def _check_scalar(fn: str, name: str, value) -> None:
  """One size per call (``int`` on the host path needs it; vmap batches them)."""
  chex.assert_rank(value, 0, custom_message=f"{fn}: {name} must be a scalar (one axis)")


def _check_count(fn: str, name: str, value, minimum: int) -> None:
  """A static integer at least ``minimum`` (grid sizes and buckets divide: 0 gives inf/nan)."""
  chex.assert_type(value, int, custom_message=f"{fn}: {name} must be an integer")
  chex.assert_scalar_in(
    int(value), minimum, float("inf"), custom_message=f"{fn}: {name} must be >= {minimum}"
  )


def grid_step(n: int, input_size: int, resolution: int) -> float:
  """Distance between taps, in kernel coordinates, for a layer running at ``resolution``."""
  return 2.0 / (n - 1) * input_size / resolution


def max_taps(n: int, input_size: int, resolution: int, causal: bool) -> int:
  """Taps of the uncropped kernel at ``resolution``: all grid points inside [-1, 1]."""
  # Integer arithmetic: (n - 1) * M / N grid steps fit in the length-2 interval.
  steps_in_span = ((n - 1) * resolution) // input_size  # also exact on float-held integers
  if causal:
    return steps_in_span + 1
  return 2 * (steps_in_span // 2) + 1


def crop_taps(radius: float, n: int, input_size: int, resolution: int, causal: bool) -> int:
  """Taps kept by a gaussian mask of extent ``radius`` (CCNN's crop arithmetic).

  Centred: ``2 * floor(r / step) + 1``, exactly the grid points with ``|p| <= r`` (CCNN writes
  ``2 ceil(r / step) - 1``, which differs only when r / step is an integer). Causal:
  ``1 + ceil(r / step)``, CCNN's count from the end of the grid, one tap more than the strict
  extent at most (harmless: the extra tap is thresholded to zero). Worked checks: n = 33,
  sigma = 0.075 gives 5 taps; causal n = 784 gives 65.
  """
  _check_scalar("crop_taps", "radius", radius)
  _check_scalar("crop_taps", "resolution", resolution)
  _check_count("crop_taps", "n", n, 2)
  _check_count("crop_taps", "input_size", input_size, 1)
  xp = array_module(radius, resolution)
  ratio = radius / grid_step(n, input_size, resolution)
  taps = 1 + xp.ceil(ratio - 1e-9) if causal else 2 * xp.floor(ratio + 1e-9) + 1
  taps = xp.clip(taps, 1, max_taps(n, input_size, resolution, causal))
  return int(taps) if xp is np else taps


def relaxed_taps(radius, n: int, input_size: int, resolution, causal: bool):
  """``crop_taps`` without its rounding: the taps a mask of extent ``radius`` covers as a real
  number, whose derivative is the crop's rate of growth (the loss's straight-through gradient).
  """
  ratio = radius / grid_step(n, input_size, resolution)
  return 1 + ratio if causal else 1 + 2 * ratio


def bucket_taps(taps, bucket: int, limit):
  """Round ``taps`` up to ``1 + k * bucket`` (odd when ``bucket`` is even), at most ``limit``."""
  _check_scalar("bucket_taps", "taps", taps)
  _check_scalar("bucket_taps", "limit", limit)
  _check_count("bucket_taps", "bucket", bucket, 1)
  xp = array_module(taps, limit)
  out = xp.minimum(limit, 1 + bucket * xp.ceil((taps - 1) / bucket))
  return int(out) if xp is np else out


def tap_positions(n: int, input_size: int, resolution: int, taps: int, causal: bool) -> np.ndarray:
  """Kernel coordinates of ``taps`` taps, float32.

  Written so a cropped kernel's positions are bit-identical to the matching entries of the
  uncropped one: centred ``(i - (K-1)/2) * step``, causal ``1 - (K-1-i) * step``.
  """
  step = grid_step(n, input_size, resolution)
  i = np.arange(taps, dtype=np.float64)
  if causal:
    pos = 1.0 - (taps - 1 - i) * step
  else:
    pos = (i - (taps - 1) / 2) * step
  return pos.astype(np.float32)


def position_grid(positions_per_axis: list[np.ndarray]) -> np.ndarray:
  """Meshgrid (``indexing="ij"``) of per-axis positions, channels last: ``[K_1, ..., K_D, D]``."""
  for d, p in enumerate(positions_per_axis):
    chex.assert_rank(
      p, 1, custom_message=f"position_grid: positions_per_axis[{d}] must be one axis' positions"
    )
  mesh = np.meshgrid(*positions_per_axis, indexing="ij")
  return np.stack(mesh, axis=-1).astype(np.float32)


def cropped_taps(spatial, taps, causal: bool) -> tuple[int, ...]:
  """Taps that can reach the input: at most S (causal) or 2S-1 (centred) per axis."""
  if causal:
    return tuple(min(t, s) for s, t in zip(spatial, taps, strict=True))
  return tuple(min(t, 2 * s - 1) for s, t in zip(spatial, taps, strict=True))


def conv_pads(taps, causal: bool) -> tuple[tuple[int, int], ...]:
  """``((lo, hi), ...)`` per axis of a same-size conv: ``lo = K - 1`` causal, ``(K - 1) // 2``
  centred, ``hi = K - 1 - lo`` (``dnarch_jax.network.conv``)."""
  lo = [t - 1 if causal else (t - 1) // 2 for t in taps]
  return tuple((a, t - 1 - a) for a, t in zip(lo, taps, strict=True))
