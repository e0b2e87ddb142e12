"""Fourier-domain resampling of feature maps (METHOD.md §4.3; DiffStride's spectral pooling).

A feature map ``x_BxSxC`` (one or two spatial axes, channels last) is taken to another resolution
by cropping its spectrum (downsampling) or zero-padding it (upsampling), after multiplying it by a
frequency mask. Frequencies are counted in cycles over the whole signal, the same unit at every
resolution, so a mask written on the input's frequencies applies unchanged to any block.
"""

from __future__ import annotations

from collections.abc import Sequence

import chex
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

  Frequencies below half the smaller size ``m = min(n_in, n_out)`` are copied. When ``m`` is even,
  frequency ``m / 2`` is the smaller grid's Nyquist bin, which stands for the pair +-m/2: when
  upsampling from an even size, the input's Nyquist bin is split evenly between the two bins the
  larger grid has for them (as ``scipy.signal.resample`` does); when downsampling to an even size,
  the two input bins that become the output's Nyquist are summed. An odd ``m`` has no Nyquist bin:
  its frequencies are copied and the rest dropped or zero. Band-limited signals are kept exact
  either way, for any sizes.
  """
  if n_out == n_in:
    return X
  take = lambda start, stop: jax.lax.slice_in_dim(X, start, stop, axis=axis)
  small = min(n_in, n_out)
  below = (small + 1) // 2  # bins 0 .. below-1: frequencies strictly below small / 2
  nyquist_pair = small % 2 == 0
  if onesided:
    # Real input: bins +-k are conjugates, so the one-sided spectrum holds k >= 0 only.
    parts = [take(0, below)]
    if nyquist_pair and n_out < n_in:
      parts.append(take(below, below + 1) * 2.0)  # the pair's sum is twice bin +k
    elif nyquist_pair:
      parts.append(take(below, below + 1) * 0.5)
    out = jnp.concatenate(parts, axis=axis)
    pad = [(0, 0)] * X.ndim
    pad[axis] = (0, n_out // 2 + 1 - out.shape[axis])
    return jnp.pad(out, pad)
  negative = (small - 1) // 2  # bins -negative .. -1
  if n_out < n_in:
    parts = [take(0, below)]
    if nyquist_pair:
      parts.append(take(below, below + 1) + take(n_in - below, n_in - below + 1))
    parts.append(take(n_in - negative, n_in))
    return jnp.concatenate(parts, axis=axis)
  middle = [take(below, below + 1) * 0.5] if nyquist_pair else []
  zeros_shape = list(X.shape)
  zeros_shape[axis] = n_out - n_in - len(middle)
  zeros = jnp.zeros(zeros_shape, X.dtype)
  parts = [take(0, below), *middle, zeros, *middle, take(n_in - negative, n_in)]
  return jnp.concatenate(parts, axis=axis)


def spectral_resample(
  x_BxSxC: jax.Array,
  out_size: Sequence[int],
  mask_per_axis: Sequence[object] | None = None,
) -> jax.Array:
  """Resample ``x_BxSxC`` to spatial size ``out_size`` in the Fourier domain.

  Args:
    x_BxSxC: ``[B, *spatial, C]``, one or two spatial axes of any size.
    out_size: target size per spatial axis (any size, odd or even).
    mask_per_axis: optional callables, one per axis, mapping absolute frequencies (float32 array)
      to mask values; the output spectrum is multiplied by their separable product. The mask is
      what makes the resolution differentiable.

  Returns ``[B, *out_size, C]``. Amplitudes are preserved (a constant stays the same constant).
  """
  # Static checks (trace time), each naming the argument: an integer x would be truncated on the
  # way back to its dtype, and a mask list of the wrong length silently ignored past an axis.
  chex.assert_rank(
    x_BxSxC,
    {3, 4},
    custom_message="spectral_resample: x_BxSxC must be [B, *spatial, C] with 1 or 2 spatial axes",
  )
  chex.assert_type(
    x_BxSxC, float, custom_message="spectral_resample: x_BxSxC must be floating (or bfloat16)"
  )
  spatial = x_BxSxC.shape[1:-1]
  out_size = tuple(int(s) for s in out_size)
  if len(out_size) != len(spatial):
    raise ValueError(
      f"spectral_resample: out_size {out_size} does not match the spatial shape {spatial}"
    )
  if any(s < 1 for s in out_size):
    raise ValueError(f"spectral_resample: out_size {out_size} must be positive")
  if mask_per_axis is not None:
    chex.assert_equal(
      len(mask_per_axis),
      len(spatial),
      custom_message=f"spectral_resample: mask_per_axis must hold one callable per spatial axis "
      f"({len(spatial)})",
    )
  axes = tuple(range(1, 1 + len(spatial)))
  # FFTs run in float32 at least (there is no bfloat16 transform); the output keeps x's dtype.
  X = jnp.fft.rfftn(upcast(x_BxSxC), axes=axes)
  for i, (axis, n_in, n_out) in enumerate(zip(axes, spatial, out_size, strict=True)):
    X = _resize_axis(X, axis, n_in, n_out, onesided=(i == len(axes) - 1))
  if mask_per_axis is not None:
    for i, (axis, n_out, mask_fn) in enumerate(zip(axes, out_size, mask_per_axis, strict=True)):
      freq = frequencies(n_out, onesided=(i == len(axes) - 1))
      m = mask_fn(freq)
      chex.assert_shape(  # one value per frequency (or one for all)
        m,
        ({1, freq.shape[0]},),
        custom_message=f"spectral_resample: mask_per_axis[{i}] must map the {freq.shape[0]} "
        "frequencies of its axis to as many mask values",
      )
      shape = [1] * X.ndim
      shape[axis] = m.shape[0]
      X = X * m.reshape(shape).astype(X.real.dtype)
  scale = 1.0
  for n_in, n_out in zip(spatial, out_size, strict=True):
    scale *= n_out / n_in
  return (jnp.fft.irfftn(X, s=out_size, axes=axes) * scale).astype(x_BxSxC.dtype)
