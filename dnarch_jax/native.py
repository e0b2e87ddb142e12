"""dnarch_jax's C++ CPU kernels (``csrc/``), called through XLA's FFI.

``pip install`` compiles them into ``dnarch_jax/_native_conv*.so`` (setup.py; optional, so an
install without a C++ compiler still works). ``available()`` says whether the library loaded;
``dnarch_jax.conv``'s "native" route uses it and runs as "shift" where it cannot.

The calls are plain (no VJP; ``conv`` defines it) and f32 only:

- ``depthwise_forward(x, kernel, pads)``: ``y[i] = sum_j k[j] x[i + j - lo]``, x zero-padded by
  ``pads = ((lo, hi), ...)`` per spatial axis, ``hi = taps - 1 - lo``;
- ``depthwise_kernel_grad(x, g, taps, pads)``: ``dk[j] = sum_{b, i} g[b, i] x[b, i + j - lo]``.

Both compute by direct summation (register tiles, ``csrc/depthwise_conv_kernels.inc``), or with
``fft=True`` (1D only) by power-of-two FFTs along the sequence, 16 channels per complex
transform (``csrc/fft_conv_kernels.inc``): ``conv``'s "native_fft" route.

XLA's cost analysis counts a custom call as 0 FLOPs; ``conv.route_flops`` says what to count.
Under ``vmap`` the calls run once per mapped element (``vmap_method="sequential"``).
"""

from __future__ import annotations

import ctypes
import functools
import importlib.machinery
import pathlib
import warnings

import jax
import numpy as np

# FFI target name -> the handler symbol csrc/depthwise_conv.cc exports.
_TARGETS = {
  "dnarch_dwconv_fwd": "DnarchDwconvFwd",
  "dnarch_dwconv_dk": "DnarchDwconvDk",
  "dnarch_dwconv_fft_fwd": "DnarchDwconvFftFwd",
  "dnarch_dwconv_fft_dk": "DnarchDwconvFftDk",
}


@functools.cache
def _library() -> ctypes.CDLL | None:
  here = pathlib.Path(__file__).parent
  paths = [here / f"_native_conv{s}" for s in importlib.machinery.EXTENSION_SUFFIXES]
  path = next((p for p in paths if p.exists()), None)
  if path is None:
    return None
  try:
    lib = ctypes.cdll.LoadLibrary(str(path))
  except OSError as e:
    warnings.warn(f"dnarch_jax: {path.name} does not load ({e}); no native route", stacklevel=3)
    return None
  for target, symbol in _TARGETS.items():
    jax.ffi.register_ffi_target(target, jax.ffi.pycapsule(getattr(lib, symbol)), platform="cpu")
  return lib


def available() -> bool:
  """Whether the compiled kernels loaded (they run on the CPU backend only)."""
  return _library() is not None


def _lo_attrs(pads) -> dict[str, np.int64]:
  # The kernels see 1D as 2D with one row: (lo_h, lo_w).
  lo = [p[0] for p in pads]
  lo_h, lo_w = (0, lo[0]) if len(lo) == 1 else lo
  return dict(lo_h=np.int64(lo_h), lo_w=np.int64(lo_w))


def _call(target, out_shape, *args, pads):
  if not available():
    raise RuntimeError("dnarch_jax: the native kernels are not built (see dnarch_jax/native.py)")
  out = jax.ShapeDtypeStruct(out_shape, np.float32)
  return jax.ffi.ffi_call(target, out, vmap_method="sequential")(*args, **_lo_attrs(pads))


def _target(name: str, fft: bool, x) -> str:
  if not fft:
    return name
  if x.ndim != 3:
    raise ValueError(f"dnarch_jax.native: fft=True is 1D only ([B, L, C]), got shape {x.shape}")
  return name.replace("dwconv", "dwconv_fft")


def depthwise_forward(x_BxSxC, kernel_TxC, pads, fft: bool = False) -> jax.Array:
  """Same-size depthwise cross-correlation, f32 (module docstring)."""
  target = _target("dnarch_dwconv_fwd", fft, x_BxSxC)
  return _call(target, x_BxSxC.shape, x_BxSxC, kernel_TxC, pads=pads)


def depthwise_kernel_grad(x_BxSxC, g_BxSxC, taps, pads, fft: bool = False) -> jax.Array:
  """The kernel gradient ``[*taps, C]`` of ``depthwise_forward`` for output cotangent g."""
  shape = (*taps, x_BxSxC.shape[-1])
  target = _target("dnarch_dwconv_dk", fft, x_BxSxC)
  return _call(target, shape, x_BxSxC, g_BxSxC, pads=pads)
