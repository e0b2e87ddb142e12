"""FLOPs of a depthwise convolution route as XLA's cost analysis counts them (the cost model's
convolution term, host integers or traced soft sizes).

The XLA FLOP counts the cost model mirrors are in `route_flops`; note XLA counts an FFT as
`8 * input elements * prod_d floor(log2 n_d)` (measured on bare rfft/irfft/fft at many sizes).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from dnarch_jax.method import grids
from dnarch_jax.method.masks import array_module
from dnarch_jax.network.conv import _BARRIER, _LANES, _chunk_size, _fast_len, _fft_shape
from dnarch_jax.network.conv_routes import ROUTES, resolve_route, xla_countable_route


def _valid_pairs(xp, length, taps, causal: bool):
  """(output, tap) pairs along an axis whose input lies inside it: sum over offsets of S-|o|."""
  if causal:
    m = xp.minimum(taps - 1, length - 1)
    return (m + 1) * length - m * (m + 1) / 2
  m = xp.minimum((taps - 1) / 2, length - 1)
  return (2 * m + 1) * length - m * (m + 1)


def _smooth_lengths(limit: int) -> np.ndarray:
  """The 7-smooth numbers up to ``limit``, sorted: ``_fast_len`` as a table, for traced sizes."""
  out = {1}
  for p in (2, 3, 5, 7):
    out |= {n * p**k for n in out for k in range(1, int(math.log(limit, p)) + 1)}
  return np.array(sorted(n for n in out if n <= limit), np.float32)  # exact: all below 2**24


_SMOOTH = _smooth_lengths(1 << 20)


def _per_example_flops(spatial, taps, channels, causal: bool, route: str, rounded: bool):
  """XLA's count of one example's share of `route` (kernel-side work excluded).

  `rounded` applies the integer effects: 7-smooth FFT lengths, channels padded to blocks of 8,
  XLA's 1x1-conv-to-multiply rewrite; on integer-valued sizes that is XLA's count. Sizes may be
  JAX scalars (soft sizes, whose values are the crop's integers); without `rounded` the same
  formula is evaluated without those roundings: a smooth function to differentiate.
  """
  xp = array_module(spatial, taps, channels)
  route = xla_countable_route(route)  # what an FFI call does, in the XLA ops that count it
  if causal:
    taps = [xp.minimum(t, s) for s, t in zip(spatial, taps, strict=True)]
  else:
    taps = [xp.minimum(t, 2 * s - 1) for s, t in zip(spatial, taps, strict=True)]
  if route == "direct":
    pairs = [_valid_pairs(xp, s, t, causal) for s, t in zip(spatial, taps, strict=True)]
    flops = 2 * channels * math.prod(pairs)
    if rounded:
      one_by_one = math.prod(xp.equal(t, 1) for t in taps)
      flops = xp.where(one_by_one, math.prod(spatial) * channels, flops)
    return flops
  if route == "shift":
    c = -(-channels // _LANES) * _LANES if rounded else channels
    return (2 * math.prod(taps) - 1) * c * math.prod(spatial)
  if route != "fft":
    raise ValueError(f"depthwise_conv: unknown route {route!r}; use 'auto' or {ROUTES}")
  # FFT length per axis S + max(lo, hi): S + K - 1 causal, S + (K - 1) / 2 centred.
  ns = [s + (t - 1 if causal else (t - 1) / 2) for s, t in zip(spatial, taps, strict=True)]
  if rounded and xp is np:
    ns = [_fast_len(int(n)) for n in ns]
  elif rounded:
    smooth = jnp.asarray(_SMOOTH)
    ns = [smooth[jnp.searchsorted(smooth, jnp.ceil(n))] for n in ns]
  half = xp.floor(ns[-1] / 2) + 1 if rounded else ns[-1] / 2 + 1
  n, f = math.prod(ns), math.prod(ns[:-1]) * half
  log_factor = math.prod(xp.floor(xp.log2(v)) for v in ns)
  # rfft of x, inverse of X * conj(K) (a complex multiply counts 2).
  return 8 * log_factor * channels * (n + f) + 2 * channels * f


def _is_concrete(*values) -> bool:
  return array_module(*values) is np and all(
    float(v) == int(v) for v in jax.tree_util.tree_leaves(values)
  )


def route_cost(resolution, taps, channels, batch_size, causal, route):
  """Forward FLOPs per example of `route` (kernel-side work excluded), as XLA counts them.

  Integer sizes give the exact count, i.e. ``route_flops`` less the kernel's own transform,
  divided by the batch. Soft sizes (JAX scalars with the crop's integer values, for the
  differentiable cost) give the same exact count as the value, with the gradient of the
  unrounded formula (straight-through) [design].
  """
  resolution, taps = tuple(resolution), tuple(taps)
  if route == "auto":
    route = resolve_route(resolution, taps, channels, batch_size, causal)
  if _is_concrete(resolution, taps, channels):
    resolution, taps, channels = tuple(map(int, resolution)), tuple(map(int, taps)), int(channels)
    return float(_per_example_flops(resolution, taps, channels, causal, route, rounded=True))
  value = _per_example_flops(resolution, taps, channels, causal, route, rounded=True)
  relaxed = _per_example_flops(resolution, taps, channels, causal, route, rounded=False)
  return relaxed + jax.lax.stop_gradient(value - relaxed)


def route_flops(spatial, taps, channels, batch, causal, route) -> float:
  """Forward FLOPs of `route` as XLA's cost analysis counts them (host-side integer math).

  XLA counts: a grouped conv 2 per (output, tap) pair whose input is inside the image (a 1x1 one
  is rewritten to a multiply, 1 per element); an FFT ``8 * input elements * prod_d floor(log2
  n_d)`` (an XLA convention, not the real ~2.5 n log2 n of a real transform); elementwise ops 1
  per element, a complex multiply 2; slices, pads, transposes, dynamic-update-slices 0; one
  convert per chunk's cond and one compare per chained predicate (conds: the shift route, and
  the FFT route with more than one chunk). "native" counts as "shift" (``xla_countable_route``).
  """
  spatial, taps = tuple(int(s) for s in spatial), tuple(int(t) for t in taps)
  c, b = int(channels), int(batch)
  route = xla_countable_route(resolve_route(spatial, taps, c, b, causal, route))
  flops = b * _per_example_flops(spatial, taps, c, causal, route, rounded=True)
  if route == "direct":
    return float(flops)
  n_chunks = -(-b // _chunk_size(b, math.prod(spatial) * c * 4))
  if _BARRIER[route] or n_chunks > 1:
    flops += 2 * n_chunks - 1  # the chunks' conds
  if route == "fft":  # the kernel's rfft and conj(K)
    ns = _fft_shape(spatial, grids.conv_pads(grids.cropped_taps(spatial, taps, causal), causal))
    n, f = math.prod(ns), math.prod(ns[:-1]) * (ns[-1] // 2 + 1)
    flops += 8 * math.prod(int(math.floor(math.log2(v))) for v in ns) * c * n + c * f
  return float(flops)
