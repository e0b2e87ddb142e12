"""Fourier-domain resampling of feature maps (METHOD.md §4.3; DiffStride's spectral pooling).

A feature map ``x_BxSxC`` (one or two spatial axes, channels last) is taken to another resolution
by cropping its spectrum (downsampling) or zero-padding it (upsampling), after multiplying it by a
frequency mask. Frequencies are counted in cycles over the whole signal, the same unit at every
resolution, so a mask written on the input's frequencies applies unchanged to any block.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp

from dnarch_jax.precision import upcast


def frequencies(size: int, onesided: bool) -> jax.Array:
  """Absolute frequency (cycles per signal) of each DFT bin of a length-``size`` axis."""
  if onesided:
    return jnp.arange(size // 2 + 1, dtype=jnp.float32)
  return jnp.abs(jnp.fft.fftfreq(size, 1.0 / size)).astype(jnp.float32)


def _resize_axis(X, axis: int, n_in: int, n_out: int, onesided: bool):
  """Crop or zero-pad the spectrum ``X`` along ``axis`` from ``n_in`` to ``n_out`` DFT points.

  Sizes are even. The Nyquist bin of an even-length DFT stands for the pair of frequencies
  +-n/2: when upsampling, the input's Nyquist bin is split evenly between the two bins the larger
  grid has for them (as ``scipy.signal.resample`` does); when downsampling, the two bins that
  become the output's Nyquist are summed. Both keep band-limited signals exact either way.
  """
  if n_out == n_in:
    return X
  half_in, half_out = n_in // 2, n_out // 2
  take = lambda start, stop: jax.lax.slice_in_dim(X, start, stop, axis=axis)
  if onesided:
    if n_out < n_in:
      # Real input: bins +-k are conjugates; their sum is twice bin +k (irfft keeps the real part).
      nyquist = take(half_out, half_out + 1) * 2.0
      return jnp.concatenate([take(0, half_out), nyquist], axis=axis)
    nyquist = take(half_in, half_in + 1) * 0.5
    pad = [(0, 0)] * X.ndim
    pad[axis] = (0, half_out - half_in)
    return jnp.pad(jnp.concatenate([take(0, half_in), nyquist], axis=axis), pad)
  if n_out < n_in:
    nyquist = take(half_out, half_out + 1) + take(n_in - half_out, n_in - half_out + 1)
    rest = take(n_in - half_out + 1, n_in)
    return jnp.concatenate([take(0, half_out), nyquist, rest], axis=axis)
  nyquist = take(half_in, half_in + 1) * 0.5
  zeros_shape = list(X.shape)
  zeros_shape[axis] = n_out - n_in - 1
  zeros = jnp.zeros(zeros_shape, X.dtype)
  parts = [take(0, half_in), nyquist, zeros, nyquist, take(half_in + 1, n_in)]
  return jnp.concatenate(parts, axis=axis)


def spectral_resample(
  x_BxSxC: jax.Array,
  out_size: Sequence[int],
  mask_per_axis: Sequence[object] | None = None,
) -> jax.Array:
  """Resample ``x_BxSxC`` to spatial size ``out_size`` in the Fourier domain.

  Args:
    x_BxSxC: ``[B, *spatial, C]``, one or two spatial axes of even size.
    out_size: target size per spatial axis (even).
    mask_per_axis: optional callables, one per axis, mapping absolute frequencies (float32 array)
      to mask values; the output spectrum is multiplied by their separable product. The mask is
      what makes the resolution differentiable.

  Returns ``[B, *out_size, C]``. Amplitudes are preserved (a constant stays the same constant).
  """
  spatial = x_BxSxC.shape[1:-1]
  out_size = tuple(int(s) for s in out_size)
  if len(out_size) != len(spatial):
    raise ValueError(f"out_size {out_size} does not match the spatial shape {spatial}")
  if any(s % 2 for s in (*spatial, *out_size)):
    raise ValueError(f"spectral resampling needs even sizes, got {spatial} -> {out_size}")
  axes = tuple(range(1, 1 + len(spatial)))
  # FFTs run in float32 at least (there is no bfloat16 transform); the output keeps x's dtype.
  X = jnp.fft.rfftn(upcast(x_BxSxC), axes=axes)
  for i, (axis, n_in, n_out) in enumerate(zip(axes, spatial, out_size, strict=True)):
    X = _resize_axis(X, axis, n_in, n_out, onesided=(i == len(axes) - 1))
  if mask_per_axis is not None:
    for i, (axis, n_out, mask_fn) in enumerate(zip(axes, out_size, mask_per_axis, strict=True)):
      m = mask_fn(frequencies(n_out, onesided=(i == len(axes) - 1)))
      shape = [1] * X.ndim
      shape[axis] = m.shape[0]
      X = X * m.reshape(shape).astype(X.real.dtype)
  scale = 1.0
  for n_in, n_out in zip(spatial, out_size, strict=True):
    scale *= n_out / n_in
  return (jnp.fft.irfftn(X, s=out_size, axes=axes) * scale).astype(x_BxSxC.dtype)
