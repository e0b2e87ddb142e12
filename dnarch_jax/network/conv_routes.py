"""Which depthwise-convolution route runs: ``resolve_route`` and the "auto" rule.

Rule ("auto", CPU): where the native library loaded, "native_fft" for 1D kernels past the size
where it beats the direct kernel (`_native_fft_pays`: at length 784, past 117 taps up to 241 and
past 258 from there), else "native" up to 300 kernel positions; otherwise "shift" up to 100
positions, else "fft"; "direct" never (5-40x slower at every size measured). The native calls
keep the batch's sharding (`dnarch_jax.network.native`: each device runs its shard, dk is summed
over them), so the rule holds on a data-parallel mesh too. The rule ignores batch and channels: the
measurements span B=64..100 at C=140 only. GPU/TPU: unmeasured; CCNN's rule ("fft" once every
cropped kernel side exceeds 50, else "direct").
The timings are in benchmarks/results/README.md ("Depthwise convolution routes on the CPU").
"""

from __future__ import annotations

import math

import jax

from dnarch_jax.method import grids
from dnarch_jax.network import native

ROUTES = ("direct", "fft", "shift", "native", "native_fft")


def resolve_route(spatial, taps, channels, batch, causal, route="auto") -> str:
  """The concrete route "auto" picks for these static sizes (host-side, no tracing)."""
  if route != "auto":
    if route not in ROUTES:
      raise ValueError(f"depthwise_conv: unknown route {route!r}; use 'auto' or {ROUTES}")
    return route
  spatial, taps = tuple(spatial), tuple(taps)
  taps = grids.cropped_taps(spatial, taps, causal)
  if jax.default_backend() != "cpu":
    # Unmeasured on GPU/TPU (no accelerator has been lent yet): CCNN's rule, FFT once every
    # cropped kernel side exceeds 50. `bash benchmarks/gpu.sh routes` times every route there
    # (benchmarks/conv_routes.py, JSON lines with the rule's pick beside each); this rule is to
    # be replaced by one derived from that file, as the CPU's below was.
    return "fft" if min(taps) > 50 else "direct"
  positions = math.prod(taps)
  if native.available():
    if len(spatial) == 1 and _native_fft_pays(spatial[0], taps[0], causal):
      return "native_fft"
    if positions <= _NATIVE_MAX_POSITIONS:
      return "native"
  return "shift" if positions <= _SHIFT_MAX_POSITIONS else "fft"


# Past ~120 kernel positions the shift route's unrolled sum slows down 5-8x
# (benchmarks/results/README.md).
_SHIFT_MAX_POSITIONS = 100
# The native route's time grows with the kernel positions, the FFT's barely: they cross at
# about 300 (1D 257 taps: 175 vs 206 ms fwd+bwd; 2D 17x17: 172 vs 290; 33x33: 632 vs 548).
_NATIVE_MAX_POSITIONS = 300


def _native_fft_pays(length: int, taps: int, causal: bool) -> bool:
  """Whether the native FFT (transform size M, a power of two) beats the native direct kernel
  on a 1D conv of this cropped size. Per output and channel the direct kernel costs ~taps
  multiply-adds, the FFT ~M log2(M) / length, and 9x the latter matched the former where they
  were measured equal (length 784: 129 taps, M 1024; 257 taps, M 2048;
  benchmarks/results/README.md)."""
  lo, hi = grids.conv_pads((taps,), causal)[0]
  m = 1 << max(1, math.ceil(math.log2(length + max(lo, hi))))  # csrc's FftSize
  return 9 * m * math.log2(m) / length < taps


def xla_countable_route(route: str) -> str:
  """The route to compile for XLA's cost analysis: it counts an FFI call as 0 FLOPs, so the
  native routes are counted as the XLA routes doing the same arithmetic ("shift", "fft")."""
  return {"native": "shift", "native_fft": "fft"}.get(route, route)
