"""Depthwise convolution, the op every CCNN block spends its time in (METHOD.md section 2).

`depthwise_conv(x, kernel, causal=..., route=...)` computes a "same"-size cross-correlation of
`x_BxSxC` (1 or 2 spatial dims, channels last) with one kernel per channel, `kernel_TxC`:

- centred (1D or 2D, odd taps, centre (K-1)//2): `y[i] = sum_j k[j] x[i + j - (K-1)//2]`;
- causal (1D): `y[t] = sum_j k[K-1-j] x[t-j]`, i.e. left padding K-1, the last tap weighs step t.

Both are `y[i] = sum_j k[j] x[i + j - lo]` with `lo = K-1` (causal) or `(K-1)//2` (centred); the
code below only deals in `pads = ((lo, hi), ...)`, `hi = K-1-lo`. Taps that can never meet the
input (more than S-1 steps away) are cropped first, so kernels larger than the input are cheap.

Routes (all exact up to float rounding, all differentiable in x and kernel, jit/grad/vmap-safe):

- "direct": `lax.conv_general_dilated(..., feature_group_count=C)`. XLA:CPU turns the grouped
  conv into a dense C-times-larger one, so on CPU it is by far the slowest
  (benchmarks/results/README.md).
- "fft": zero-padded rfft along contiguous axes (channels moved first), no circular wrap;
  backward is 3 transforms per chunk (x, g, and the inverse giving dx; dk from conj(G) X).
- "shift": shift-and-add in a channel-blocked layout `[b, C/8, *S, 8]` (one AVX2 register of 8
  channels innermost, so a tap's 8 kernel values stay in a register along the whole row), with
  a custom VJP: dx is the same shift-and-add with the flipped kernel, dk comes from the FFT
  cross-correlation of x and g (XLA:CPU's reductions for per-tap dk sums run at ~1 GFLOP/s).
- "native" (CPU, f32): the same arithmetic in C++ (`csrc/depthwise_conv.cc`, compiled at
  install, called through XLA's FFI: `dnarch_jax.network.native`). An 8-position x 8-channel tile of
  outputs stays in registers while the taps stream past it, so a tap costs one kernel load,
  eight input loads and eight FMAs; dx is the forward kernel with the flipped kernel, dk a
  kernel of its own (eight taps' sums in registers along each row). float64, other
  backends, or an install without the compiled library run it as "shift".
- "native_fft" (CPU, f32, 1D): the "fft" route's arithmetic in C++ (`csrc/fft_conv_kernels.inc`):
  per example and group of 16 channels (two real signals as one complex one, one AVX2 register
  per 8 lanes), a power-of-two radix-4 FFT along the sequence read straight from the
  channels-last layout, the product with the kernel's spectrum, and the inverse, all in a
  128 KiB buffer; dk sums conj(G) X over the batch and inverts once. XLA's route spends as long
  moving channels first, padding and cropping as transforming. 2D inputs (and whatever "native"
  cannot run) run as "fft".

Low precision (bfloat16, float16; ``ModelConfig.compute_dtype``): x, the kernel and y keep the
input's dtype, and every route accumulates in float32: the FFTs transform in float32 (there is no
bfloat16 FFT), the shift route's sums are float32, and the native routes run their float32
kernels on x and the kernel converted on the way in, y converted on the way out. "direct" is
XLA's convolution in the input's dtype (float32 accumulation is the backend's choice).

Why chunks and conds: the "fft" and "shift" routes walk the batch in chunks of at most 256 MiB
(of x; of x and g backward), each the branch of a `lax.cond` whose two branches are identical
and whose predicate is read from the previous chunk's output (a real data dependency: chunks run
one after another and reuse the same temporaries). The cond is a fusion barrier XLA keeps
(`optimization_barrier` is stripped before fusion on XLA:CPU unless `cse_barrier_expander` is
off): without it XLA fuses the shift-and-add into its neighbours and a sMNIST CCNN-4,140
training step took 2685 ms against 1752. Small chunks (4 MiB, in L2/L3 and under glibc's mmap
threshold) made that step only about 4% faster (1755-1762 against 1822-1853 ms, interleaved)
while each chunk's cond branches are compiled code of their own: 510 MiB more resident
executable on sMNIST, against the memory targets; so batches up to 256 MiB are one chunk, and
the chunking only bounds the temporaries of very large batches.
The FFT route's transforms fuse with nothing, so a batch of one chunk runs without the cond.
No while loop is used, so XLA's cost analysis (which counts a loop body once) sees every chunk.
Under vmap the chunk runner is mapped sequentially (`custom_batching.sequential_vmap`), because a
batched predicate would make `lax.cond` evaluate both branches.

How "auto" picks a route is ``dnarch_jax.network.conv_routes``; the timings behind its rule are in
benchmarks/results/README.md ("Depthwise convolution routes on the CPU"); the FLOPs XLA counts
for each route, which the cost model mirrors, are ``dnarch_jax.network.conv_flops``.
"""

from __future__ import annotations

import functools
import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from dnarch_jax.method import grids
from dnarch_jax.network import native
from dnarch_jax.network.conv_routes import resolve_route, xla_countable_route
from dnarch_jax.precision import accumulation_dtype

# f32 lanes of one AVX2 register: the shift route's channel block.
_LANES = 8
# Bytes of x per chunk (module docstring): one chunk for the batches measured here.
_CHUNK_BYTES = 256 << 20
# Whether a route's chunks need the cond as a fusion barrier even when there is only one chunk
# (`_sequenced`'s `barrier`; `route_flops` counts the conds it leaves).
_BARRIER = {"fft": False, "shift": True}


# --------------------------------------------------------------------------------------------
# Shapes: validation, cropping, padding, chunking (host-side integer math).
# --------------------------------------------------------------------------------------------


def _validate(x, kernel, causal: bool) -> None:
  """Static checks of depthwise_conv's inputs (trace time). chex assertions raising ValueError,
  which callers have always caught here, each message naming the argument."""
  x_shape, k_shape = tuple(x.shape), tuple(kernel.shape)
  chex.assert_rank(
    x,
    {3, 4},
    custom_message=f"depthwise_conv: x must be [B, *spatial, C] with 1 or 2 spatial dims, got "
    f"{x_shape}",
    exception_type=ValueError,
  )
  d = len(x_shape) - 2
  chex.assert_rank(
    kernel,
    d + 1,
    custom_message=f"depthwise_conv: kernel rank {len(k_shape)} does not match x with {d} "
    f"spatial dim(s): expected kernel [*taps, C] with {d} tap dim(s), got {k_shape}",
    exception_type=ValueError,
  )
  chex.assert_axis_dimension(
    kernel,
    -1,
    x_shape[-1],
    custom_message=f"depthwise_conv: kernel has {k_shape[-1]} channels, x has {x_shape[-1]}",
    exception_type=ValueError,
  )
  if causal and d != 1:
    raise ValueError("depthwise_conv: causal convolution is only defined for 1 spatial dim")
  if not causal and any(t % 2 == 0 for t in k_shape[:-1]):
    raise ValueError(
      f"depthwise_conv: centred convolution needs odd taps per axis, got {k_shape[:-1]}"
    )
  if any(t < 1 for t in k_shape[:-1]) or any(s < 1 for s in x_shape[1:-1]):
    raise ValueError(f"depthwise_conv: empty input or kernel: x {x_shape}, kernel {k_shape}")


def _crop_kernel(kernel, spatial, causal: bool):
  taps = kernel.shape[:-1]
  new = grids.cropped_taps(spatial, taps, causal)
  if new == taps:
    return kernel
  # Causal keeps the last taps (those weighing steps t-S+1..t); centred keeps the centre.
  starts = [t - n if causal else (t - n) // 2 for t, n in zip(taps, new, strict=True)]
  idx = tuple(slice(a, a + n) for a, n in zip(starts, new, strict=True))
  return kernel[idx]


def _fast_len(n: int) -> int:
  """Smallest 7-smooth length >= n: pocketfft/ducc has radix 2/3/5/7 passes, primes are slow."""
  m = n
  while True:
    r = m
    for p in (2, 3, 5, 7):
      while r % p == 0:
        r //= p
    if r == 1:
      return m
    m += 1


def _fft_shape(spatial, pads) -> tuple[int, ...]:
  # Circular correlation is exact (no wrap onto outputs or kernel lags) once n > S-1+max(lo,hi).
  return tuple(_fast_len(s + max(p)) for s, p in zip(spatial, pads, strict=True))


def _chunk_size(batch: int, sample_bytes: int) -> int:
  per = max(1, min(batch, _CHUNK_BYTES // max(sample_bytes, 1)))
  n_chunks = -(-batch // per)
  return -(-batch // n_chunks)  # balance the chunks


# --------------------------------------------------------------------------------------------
# Sequential chunks behind identical-branch conds (see module docstring).
# --------------------------------------------------------------------------------------------


def _sequenced(body, post, operands, batch, chunk, out_shape, out_dtype, red_zero, barrier):
  """out[i:i+n] = post(body(i, n, *operands)[0]); red = sum of body(...)[1], chunk by chunk.

  ``barrier=False`` (``_BARRIER``: the FFT route, whose transforms fuse with nothing) runs a
  single chunk as it is: its cond, zero-filled output and update-slice cost 86 MiB of
  temporaries in the uncropped sMNIST CCNN-4,140 step (969 against 883 MiB) for no speed.
  """
  if not barrier and chunk >= batch:
    y, r = body(0, batch, *operands)
    return post(y), (red_zero if r is None else r)

  def run(*ops):
    out_BxSxC = jnp.zeros(out_shape, out_dtype)
    red = red_zero
    # A constant predicate would be folded (and the cond inlined); behind a barrier it is not.
    pred = lax.optimization_barrier(jnp.asarray(True))
    for start in range(0, batch, chunk):
      size = min(chunk, batch - start)
      branch = functools.partial(body, start, size)
      y_c, r_c = lax.cond(pred, branch, branch, *ops)
      # Both branches are the same, so the predicate's value is irrelevant; reading it from
      # this chunk's output orders the next chunk after this one (so they share temporaries).
      # Two interleaved chains of chunks (to overlap the single-threaded FFTs) measured no
      # faster here.
      pred = y_c.reshape(-1)[0] > 0
      out_BxSxC = lax.dynamic_update_slice_in_dim(out_BxSxC, post(y_c), start, axis=0)
      if r_c is not None:
        red = red + r_c
    return out_BxSxC, red

  return jax.custom_batching.sequential_vmap(run)(*operands)


# --------------------------------------------------------------------------------------------
# Route "direct".
# --------------------------------------------------------------------------------------------


def _direct(x, kernel, pads):
  d = x.ndim - 2
  dn = ("NWC", "WIO", "NWC") if d == 1 else ("NHWC", "HWIO", "NHWC")
  rhs = kernel[..., None, :]  # [*T, 1, C]: one input channel per group
  return lax.conv_general_dilated(
    x, rhs, (1,) * d, pads, dimension_numbers=dn, feature_group_count=x.shape[-1],
    preferred_element_type=accumulation_dtype(x.dtype),
  ).astype(x.dtype)  # fmt: skip


# --------------------------------------------------------------------------------------------
# Route "fft".
# --------------------------------------------------------------------------------------------


def _kernel_spectrum(kernel, pads, ns):
  """rfft of the kernel placed so that circular cross-correlation gives y[i] (lag j - lo)."""
  d = kernel.ndim - 1
  k_CxT = jnp.moveaxis(kernel, -1, 0).astype(accumulation_dtype(kernel.dtype))
  k_CxN = jnp.pad(
    k_CxT, [(0, 0)] + [(0, n - t) for n, t in zip(ns, kernel.shape[:-1], strict=True)]
  )
  k_CxN = jnp.roll(k_CxN, [-lo for lo, _ in pads], axis=tuple(range(1, d + 1)))
  return jnp.fft.rfftn(k_CxN, axes=tuple(range(1, d + 1)))


def _spectra(start, size, ns, *arrays):
  """rfft of a batch chunk of each [B, *S, C] array, channels moved first (contiguous axes)."""
  d = len(ns)
  axes = tuple(range(2, d + 2))
  out = []
  for a in arrays:
    a_c = lax.slice_in_dim(a, start, start + size, axis=0).astype(accumulation_dtype(a.dtype))
    out.append(jnp.fft.rfftn(jnp.moveaxis(a_c, -1, 1), s=ns, axes=axes))
  return out


def _fft_post(spatial, dtype):
  def post(y_bxCxN):  # crop the padded transform, put channels back last, back to x's dtype
    idx = (slice(None), slice(None)) + tuple(slice(0, s) for s in spatial)
    return jnp.moveaxis(y_bxCxN[idx], 1, -1).astype(dtype)

  return post


def _dk_from_corr(r_CxF, pads, ns, taps):
  """dk[j] = sum g[i] x[i + j - lo]: the correlation's lags j - lo, rolled to j."""
  d = len(ns)
  axes = tuple(range(1, d + 1))
  r_CxN = jnp.fft.irfftn(r_CxF, s=ns, axes=axes)
  r_CxN = jnp.roll(r_CxN, [lo for lo, _ in pads], axis=axes)
  idx = (slice(None),) + tuple(slice(0, t) for t in taps)
  return jnp.moveaxis(r_CxN[idx], 0, -1)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def _fft_conv(x, kernel, pads):
  spatial, B, C = x.shape[1:-1], x.shape[0], x.shape[-1]
  ns = _fft_shape(spatial, pads)
  kf = _kernel_spectrum(kernel, pads, ns)
  axes = tuple(range(2, len(ns) + 2))

  def body(start, size, x, kf):
    (X,) = _spectra(start, size, ns, x)
    return jnp.fft.irfftn(X * jnp.conj(kf), s=ns, axes=axes), None

  chunk = _chunk_size(B, math.prod(spatial) * C * x.dtype.itemsize)
  operands, barrier = (x, kf), _BARRIER["fft"]
  post = _fft_post(spatial, x.dtype)
  y, _ = _sequenced(body, post, operands, B, chunk, x.shape, x.dtype, None, barrier)
  return y


def _fft_conv_fwd(x, kernel, pads):
  return _fft_conv(x, kernel, pads), (x, kernel)


def _fft_conv_bwd(pads, res, g):
  x, kernel = res
  ns = _fft_shape(x.shape[1:-1], pads)
  kf = _kernel_spectrum(kernel, pads, ns)
  axes = tuple(range(2, len(ns) + 2))
  # dx = g circularly convolved with k.
  dx_chunk = lambda start, size, g, G, kf: jnp.fft.irfftn(G * kf, s=ns, axes=axes)
  post = _fft_post(x.shape[1:-1], x.dtype)
  return _backward_in_chunks(x, g, kernel, pads, ns, dx_chunk, post, kf, _BARRIER["fft"])


def _backward_in_chunks(x, g, kernel, pads, ns, dx_chunk, post, operand, barrier):
  """(dx, dk) over batch chunks: dx from ``dx_chunk(start, size, g, G, operand)`` (the route's
  own), dk from the summed spectrum of the cross-correlation of g and x (every route's)."""
  spatial, B, C = x.shape[1:-1], x.shape[0], x.shape[-1]

  def body(start, size, x, g, operand):
    X, G = _spectra(start, size, ns, x, g)
    return dx_chunk(start, size, g, G, operand), jnp.sum(jnp.conj(G) * X, axis=0)

  chunk = _chunk_size(B, 2 * math.prod(spatial) * C * x.dtype.itemsize)
  spectrum_CxF = (C, *ns[:-1], ns[-1] // 2 + 1)
  red_zero = jnp.zeros(spectrum_CxF, jnp.result_type(x.dtype, jnp.complex64))
  dx, r = _sequenced(body, post, (x, g, operand), B, chunk, x.shape, x.dtype, red_zero, barrier)
  dk = _dk_from_corr(r, pads, ns, kernel.shape[:-1])
  return dx, dk.astype(kernel.dtype)


_fft_conv.defvjp(_fft_conv_fwd, _fft_conv_bwd)


# --------------------------------------------------------------------------------------------
# Route "shift".
# --------------------------------------------------------------------------------------------


def _blocked_channels(c: int) -> int:
  return -(-c // _LANES) * _LANES


def _blocked_kernel(kernel):
  """[*T, C] -> [*T, C/8, 1.., 8]: broadcasts against a blocked [b, C/8, *S, 8] array, in the
  dtype the shift route sums in (float32 at least)."""
  taps, c = kernel.shape[:-1], kernel.shape[-1]
  cp = _blocked_channels(c)
  k = jnp.pad(kernel.astype(accumulation_dtype(kernel.dtype)), [(0, 0)] * len(taps) + [(0, cp - c)])
  return k.reshape(taps + (cp // _LANES,) + (1,) * len(taps) + (_LANES,))


def _tree_sum(terms):
  # Pairwise sums keep the FMA chains short (one long serial chain is latency-bound).
  while len(terms) > 1:
    terms = [sum(terms[i : i + 2][1:], terms[i]) for i in range(0, len(terms), 2)]
  return terms[0]


def _shift_chunk(a, start, size, kb, pads, spatial):
  """sum_j k[j] a[i + j - lo] for a batch chunk of a [B, *S, C]; output blocked."""
  d = len(spatial)
  c = a.shape[-1]
  cp = _blocked_channels(c)
  a_c = lax.slice_in_dim(a, start, start + size, axis=0).astype(kb.dtype)
  a_p = jnp.pad(a_c, [(0, 0)] + list(pads) + [(0, cp - c)])
  sp = a_p.shape[1:-1]
  # [b, *Sp, C/8, 8] -> [b, C/8, *Sp, 8]: XLA loops over the output in layout order, so the
  # 8-channel block innermost with the spatial axes around it keeps a tap's kernel in a register.
  a_b = jnp.moveaxis(a_p.reshape((size,) + sp + (cp // _LANES, _LANES)), d + 1, 1)
  taps = kb.shape[:d]
  terms = []
  for j in np.ndindex(*taps):
    idx = (slice(None), slice(None)) + tuple(
      slice(o, o + s) for o, s in zip(j, spatial, strict=True)
    )
    terms.append(kb[j] * a_b[idx])
  return _tree_sum(terms)


def _shift_post(c, dtype):
  def post(y_b):  # [b, C/8, *S, 8] -> [b, *S, C], back to x's dtype
    y = jnp.moveaxis(y_b, 1, -2)
    return y.reshape(y.shape[:-2] + (-1,))[..., :c].astype(dtype)

  return post


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def _shift_conv(x, kernel, pads):
  spatial, B, C = x.shape[1:-1], x.shape[0], x.shape[-1]
  kb = _blocked_kernel(kernel)

  def body(start, size, x, kb):
    return _shift_chunk(x, start, size, kb, pads, spatial), None

  chunk = _chunk_size(B, math.prod(spatial) * C * x.dtype.itemsize)
  operands, barrier = (x, kb), _BARRIER["shift"]
  post = _shift_post(C, x.dtype)
  y, _ = _sequenced(body, post, operands, B, chunk, x.shape, x.dtype, None, barrier)
  return y


def _shift_conv_fwd(x, kernel, pads):
  return _shift_conv(x, kernel, pads), (x, kernel)


def _shift_conv_bwd(pads, res, g):
  x, kernel = res
  spatial, C = x.shape[1:-1], x.shape[-1]
  d = len(spatial)
  # dx[m] = sum_j k[j] g[m - j + lo]: the same shift-and-add with the flipped kernel, pads swapped.
  kb_flip = _blocked_kernel(kernel[(slice(None, None, -1),) * d])
  pads_t = tuple((hi, lo) for lo, hi in pads)
  ns = _fft_shape(spatial, pads)
  dx_chunk = lambda start, size, g, G, kb: _shift_chunk(g, start, size, kb, pads_t, spatial)
  return _backward_in_chunks(
    x, g, kernel, pads, ns, dx_chunk, _shift_post(C, x.dtype), kb_flip, _BARRIER["shift"]
  )


_shift_conv.defvjp(_shift_conv_fwd, _shift_conv_bwd)


# --------------------------------------------------------------------------------------------
# Route "native".
# --------------------------------------------------------------------------------------------


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def _native_conv(x, kernel, pads, fft):
  return native.depthwise_forward(x, kernel, pads, fft=fft)


def _native_conv_fwd(x, kernel, pads, fft):
  return _native_conv(x, kernel, pads, fft), (x, kernel)


def _native_conv_bwd(pads, fft, res, g):
  x, kernel = res
  d = x.ndim - 2
  # dx is the forward op with the flipped kernel and the pads swapped, as in the shift route.
  flipped = kernel[(slice(None, None, -1),) * d]
  dx = native.depthwise_forward(g, flipped, tuple(p[::-1] for p in pads), fft=fft)
  return dx, native.depthwise_kernel_grad(x, g, kernel.shape[:-1], pads, fft=fft)


_native_conv.defvjp(_native_conv_fwd, _native_conv_bwd)


def _native_runs(route: str, dtype, ndim: int) -> bool:
  """Whether ``route`` is a native one that can run here (else its XLA twin runs instead)."""
  if route not in ("native", "native_fft") or (route == "native_fft" and ndim != 3):
    return False
  low_or_single = jnp.dtype(dtype) in (jnp.float32, jnp.bfloat16, jnp.float16)
  return native.available() and low_or_single and jax.default_backend() == "cpu"


# --------------------------------------------------------------------------------------------
# Public API.
# --------------------------------------------------------------------------------------------


def depthwise_conv(x, kernel, *, causal: bool, route: str = "auto") -> jax.Array:
  """Same-size depthwise cross-correlation of x_BxSxC with kernel_TxC (see module docstring).

  Computes in the inputs' common dtype, except that a low-precision x (bfloat16, float16) keeps
  its dtype with a float32 kernel: y and dx in x's dtype, dk float32 (float32 sums).
  """
  _validate(x, kernel, causal)
  spatial = tuple(x.shape[1:-1])
  r = resolve_route(spatial, tuple(kernel.shape[:-1]), x.shape[-1], x.shape[0], causal, route)
  chex.assert_type(
    [x, kernel],
    float,
    custom_message=f"depthwise_conv: needs floating inputs, got {x.dtype} and {kernel.dtype} "
    "(x, kernel)",
    exception_type=ValueError,
  )
  low = jnp.finfo(x.dtype).bits < 32
  dtype = x.dtype if low else jnp.result_type(x, kernel)
  x = x.astype(dtype)
  kernel = _crop_kernel(kernel if low else kernel.astype(dtype), spatial, causal)
  pads = grids.conv_pads(kernel.shape[:-1], causal)
  if r == "direct":
    return _direct(x, kernel.astype(dtype), pads)
  if _native_runs(r, dtype, x.ndim):  # float32 kernels (converts fuse into x's producer)
    f32 = jnp.float32
    return _native_conv(x.astype(f32), kernel.astype(f32), pads, r == "native_fft").astype(dtype)
  if xla_countable_route(r) == "fft":  # "fft", or "native_fft" where it cannot run (2D included)
    return _fft_conv(x, kernel, pads)
  return _shift_conv(x, kernel, pads)  # "shift", or "native" where it cannot run
