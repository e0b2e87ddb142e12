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
  conv into a dense C-times-larger one, so on CPU it is by far the slowest (table below).
- "fft": zero-padded rfft along contiguous axes (channels moved first), no circular wrap;
  backward is 3 transforms per chunk (x, g, and the inverse giving dx; dk from conj(G) X).
- "shift": shift-and-add in a channel-blocked layout `[b, C/8, *S, 8]` (one AVX2 register of 8
  channels innermost, so a tap's 8 kernel values stay in a register along the whole row), with
  a custom VJP: dx is the same shift-and-add with the flipped kernel, dk comes from the FFT
  cross-correlation of x and g (XLA:CPU's reductions for per-tap dk sums run at ~1 GFLOP/s).
- "native" (CPU, f32): the same arithmetic in C++ (`csrc/depthwise_conv.cc`, compiled at
  install, called through XLA's FFI: `dnarch_jax.native`). An 8-position x 8-channel tile of
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

Measured on this machine (AMD EPYC, 2 cores shared with other users, jax 0.10.2 XLA:CPU, f32,
C=140; `benchmarks/conv_routes.py`, median ms over 7 runs). Other users' jobs kept 0 to 1.1 of
the 2 cores busy during these runs (about 1 for most), which can double a time, so compare routes
with the interleaved head-to-head numbers below the table:

    shape (B x S x C)   taps   direct fwd / fwd+bwd   fft fwd / fwd+bwd   shift fwd / fwd+bwd
    100x784x140 causal  65     771 / 3893             77 / 96             42 / 121
                        129    4192 / 8867            67 / 115            352 / 417
                        257    3847 / 17735           87 / 124            1475 / 1366
                        784    -                      134 / 214           -
    100x392x140 causal  65     406 / 2076             34 / 52             22 / 47
                        129    2385 / 4973            46 / 57             179 / 328
                        257    6459 / 10645           46 / 70             730 / 761
                        784    -                      61 / 85             -
    64x32x32x140        5x5    458 / 10457            108 / 171           20 / 105
                        9x9    1049 / 24805           107 / 152           55 / 136
                        17x17  -                      185 / 278           1673 / 1946
                        33x33  -                      166 / 233           -
    64x16x16x140        5x5    111 / 573              21 / 33             6 / 26
                        9x9    260 / 1619             24 / 38             13 / 35
                        17x17  -                      33 / 52             692 / 710
                        33x33  -                      64 / 92             -

Head to head, interleaved on a quiet machine (fwd+bwd ms, fft vs shift): 1D L=784 taps 65: 99 vs
85, 81: 102 vs 87, 97: 126 vs 121; 2D 32x32 taps 7x7: 154 vs 110, 9x9: 135 vs 121, 11x11: 158 vs
139. The shift route falls off a cliff past ~120 kernel positions (the unrolled sum no longer
keeps its taps in registers: 129 taps is 8x the time of 65). A blocked-Toeplitz batched matmul
(channels as the batch dim) was 0.4-0.7 s forward at 65 taps: XLA:CPU's batched matmul runs at
30-45 GFLOP/s on these shapes, against ~110 for a plain one, so it is not offered.

The native route, measured later (same script, fwd+bwd ms, median of 5, native vs fft vs
shift): 100x784x140 causal taps 65: 63 / 168 / 180; 129: 100 / 239 / 634; 257: 175 / 206 /
1305; 784: 475 / 292 / -. 64x32x32x140 5x5: 53 / 297 / 217; 9x9: 74 / 319 / 232; 17x17: 172 /
290 / 1820; 33x33: 632 / 548 / -. Its time grows with the kernel positions and the FFT's barely:
they cross at about 300 positions in 1D and 2D.

The native FFT (2026-12-02, another host: a 2-core Intel Xeon, about twice as fast as the AMD
EPYC above; `benchmarks/conv_routes.py`-style timing of the FFI calls alone, median of 7, ms,
100x784x140 causal; native_fft fwd / dk against native fwd / dk): taps 33: 29 / 18 against
17 / 9; 65: 31 / 19 against 21 / 13; 129: 31 / 19 against 29 / 20; 257: 44 / 34 against 43 /
35; 784: 43 / 34 (the FFT size is 1024 up to 241 taps, then 2048). The sMNIST CCNN-4,140
training step uncropped (784 taps) took 2165 ms with "fft" and 1020 ms with "native_fft", back
to back on that host.

Rule ("auto", CPU): where the native library loaded, "native_fft" for 1D kernels past the size
where it beats the direct kernel (`_native_fft_pays`: at length 784, past 117 taps up to 241 and
past 258 from there), else "native" up to 300 kernel positions; otherwise "shift" up to 100
positions, else "fft"; "direct" never (5-40x slower at every size measured). The native calls
keep the batch's sharding (`dnarch_jax.native`: each device runs its shard, dk is summed over
them), so the rule holds on a data-parallel mesh too. The rule ignores batch and channels: the
measurements span B=64..100 at C=140 only. GPU/TPU: unmeasured; CCNN's rule ("fft" once every
cropped kernel side exceeds 50, else "direct").

The XLA FLOP counts the cost model mirrors are in `route_flops`; note XLA counts an FFT as
`8 * input elements * prod_d floor(log2 n_d)` (measured on bare rfft/irfft/fft at many sizes).
"""

from __future__ import annotations

import functools
import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from dnarch_jax import native
from dnarch_jax.masks import array_module
from dnarch_jax.precision import accumulation_dtype

ROUTES = ("direct", "fft", "shift", "native", "native_fft")

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


def _cropped_taps(spatial, taps, causal: bool) -> tuple[int, ...]:
  """Taps that can reach the input: at most S (causal) or 2S-1 (centred) per axis."""
  if causal:
    return tuple(min(t, s) for s, t in zip(spatial, taps, strict=True))
  return tuple(min(t, 2 * s - 1) for s, t in zip(spatial, taps, strict=True))


def _crop_kernel(kernel, spatial, causal: bool):
  taps = kernel.shape[:-1]
  new = _cropped_taps(spatial, taps, causal)
  if new == taps:
    return kernel
  # Causal keeps the last taps (those weighing steps t-S+1..t); centred keeps the centre.
  starts = [t - n if causal else (t - n) // 2 for t, n in zip(taps, new, strict=True)]
  idx = tuple(slice(a, a + n) for a, n in zip(starts, new, strict=True))
  return kernel[idx]


def _pads(taps, causal: bool) -> tuple[tuple[int, int], ...]:
  lo = [t - 1 if causal else (t - 1) // 2 for t in taps]
  return tuple((a, t - 1 - a) for a, t in zip(lo, taps, strict=True))


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
  pads = _pads(kernel.shape[:-1], causal)
  if r == "direct":
    return _direct(x, kernel.astype(dtype), pads)
  if _native_runs(r, dtype, x.ndim):  # float32 kernels (converts fuse into x's producer)
    f32 = jnp.float32
    return _native_conv(x.astype(f32), kernel.astype(f32), pads, r == "native_fft").astype(dtype)
  if xla_countable_route(r) == "fft":  # "fft", or "native_fft" where it cannot run (2D included)
    return _fft_conv(x, kernel, pads)
  return _shift_conv(x, kernel, pads)  # "shift", or "native" where it cannot run


def resolve_route(spatial, taps, channels, batch, causal, route="auto") -> str:
  """The concrete route "auto" picks for these static sizes (host-side, no tracing)."""
  if route != "auto":
    if route not in ROUTES:
      raise ValueError(f"depthwise_conv: unknown route {route!r}; use 'auto' or {ROUTES}")
    return route
  spatial, taps = tuple(spatial), tuple(taps)
  taps = _cropped_taps(spatial, taps, causal)
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


# Past ~120 kernel positions the shift route's unrolled sum slows down 5-8x (module docstring).
_SHIFT_MAX_POSITIONS = 100
# The native route's time grows with the kernel positions, the FFT's barely: they cross at
# about 300 (1D 257 taps: 175 vs 206 ms fwd+bwd; 2D 17x17: 172 vs 290; 33x33: 632 vs 548).
_NATIVE_MAX_POSITIONS = 300


def _native_fft_pays(length: int, taps: int, causal: bool) -> bool:
  """Whether the native FFT (transform size M, a power of two) beats the native direct kernel
  on a 1D conv of this cropped size. Per output and channel the direct kernel costs ~taps
  multiply-adds, the FFT ~M log2(M) / length, and 9x the latter matched the former where they
  were measured equal (length 784: 129 taps, M 1024; 257 taps, M 2048; module docstring)."""
  lo, hi = _pads((taps,), causal)[0]
  m = 1 << max(1, math.ceil(math.log2(length + max(lo, hi))))  # csrc's FftSize
  return 9 * m * math.log2(m) / length < taps


def xla_countable_route(route: str) -> str:
  """The route to compile for XLA's cost analysis: it counts an FFI call as 0 FLOPs, so the
  native routes are counted as the XLA routes doing the same arithmetic ("shift", "fft")."""
  return {"native": "shift", "native_fft": "fft"}.get(route, route)


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
    ns = _fft_shape(spatial, _pads(_cropped_taps(spatial, taps, causal), causal))
    n, f = math.prod(ns), math.prod(ns[:-1]) * (ns[-1] // 2 + 1)
    flops += 8 * math.prod(int(math.floor(math.log2(v))) for v in ns) * c * n + c * f
  return float(flops)
