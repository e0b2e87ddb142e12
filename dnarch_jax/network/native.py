"""dnarch_jax's C++ CPU kernels (``csrc/``), called through XLA's FFI.

``pip install`` compiles them into ``dnarch_jax/network/_native_conv*.so`` (setup.py; optional, so
an install without a C++ compiler still works). ``available()`` says whether the library loaded;
``dnarch_jax.network.conv``'s "native" and "native_fft" routes use it and run as "shift" and "fft"
where they cannot.

The calls are plain (no VJP; ``conv`` defines it) and f32 only:

- ``depthwise_forward(x, kernel, pads)``: ``y[i] = sum_j k[j] x[i + j - lo]``, x zero-padded by
  ``pads = ((lo, hi), ...)`` per spatial axis, ``hi = taps - 1 - lo``;
- ``depthwise_kernel_grad(x, g, taps, pads)``: ``dk[j] = sum_{b, i} g[b, i] x[b, i + j - lo]``.

Both compute by direct summation (register tiles, ``csrc/depthwise_conv_kernels.inc``), or with
``fft=True`` (1D only) by power-of-two FFTs along the sequence, 16 channels per complex
transform (``csrc/fft_conv_kernels.inc``): ``conv``'s "native_fft" route.

XLA's cost analysis counts a custom call as 0 FLOPs; ``conv_flops.route_flops`` says what to count.

Sharding: each call is a ``custom_partitioning`` op whose rule keeps the batch axis as the
operands have it (``P("data")`` under ``dnarch_jax.run.sharding``) and replicates the rest, so
data-parallel training runs every device's shard through the kernels with no gather; the
kernel gradient's per-shard sums are ``psum``-ed over the batch's mesh axes. Under ``vmap`` the
calls run once per mapped element (``custom_batching.sequential_vmap``; ``custom_partitioning``
has no batching rule). A multi-device program with these calls is served by the persistent
compilation cache across processes only where ``jax_remove_custom_partitioning_ptr_from_cache_key``
is on, which ``dnarch`` sets (``sharding.enable_compilation_cache``; see ``_run``).
"""

from __future__ import annotations

import ctypes
import functools
import importlib.machinery
import pathlib
import warnings

import jax
import numpy as np
from jax.experimental.custom_partitioning import custom_partitioning
from jax.experimental.xla_metadata import set_xla_metadata
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

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
    raise RuntimeError(
      "dnarch_jax: the native kernels are not built (see dnarch_jax/network/native.py)"
    )
  out = jax.ShapeDtypeStruct(out_shape, np.float32)
  return jax.ffi.ffi_call(target, out, vmap_method="sequential")(*args, **_lo_attrs(pads))


def _target(name: str, fft: bool) -> str:
  return name.replace("dwconv", "dwconv_fft") if fft else name


# --------------------------------------------------------------------------------------------
# Partitioning: the batch axis keeps its sharding, every other axis is replicated.
# --------------------------------------------------------------------------------------------


def _batch_axes(sharding):
  """The mesh axes the leading (batch) axis is sharded over, or None."""
  spec = sharding.spec if isinstance(sharding, NamedSharding) else P()
  return spec[0] if len(spec) else None


def _batch_sharded(mesh, shape, axes) -> NamedSharding:
  return NamedSharding(mesh, P(axes, *([None] * (len(shape) - 1))))


def _as_batch_sharded(mesh, arg) -> NamedSharding:
  """``arg``'s sharding of its batch axis, every other axis replicated."""
  return _batch_sharded(mesh, arg.shape, _batch_axes(arg.sharding))


def _factors(ndim: int):
  """Shardy's factor names for x [b, *s, c] and a kernel [*t, c]: only b may stay split."""
  spatial = [f"s{i}" for i in range(ndim - 2)]
  x = " ".join(["b", *spatial, "c"])
  kernel = " ".join([*(f"t{i}" for i in range(ndim - 2)), "c"])
  return x, kernel, dict(need_replication_factors=(*spatial, "c"))


def _forward_call(x, kernel, pads, fft):
  return _call(_target("dnarch_dwconv_fwd", fft), x.shape, x, kernel, pads=pads)


def _forward_partition(pads, fft, mesh, arg_shapes, result_shape):
  x_sharding = _as_batch_sharded(mesh, arg_shapes[0])
  lower = lambda x, kernel: _forward_call(x, kernel, pads, fft)
  return mesh, lower, x_sharding, (x_sharding, NamedSharding(mesh, P()))


def _forward_rule(pads, fft, mesh, value_types, result_types):
  x, kernel, options = _factors(len(value_types[0].shape))
  return f"{x}, {kernel} -> {x}", options


_forward = custom_partitioning(_forward_call, static_argnums=(2, 3))
_forward.def_partition(
  partition=_forward_partition,
  infer_sharding_from_operands=lambda pads, fft, mesh, args, result: _as_batch_sharded(
    mesh, args[0]
  ),
  sharding_rule=_forward_rule,
)


def _kernel_grad_call(x, g, taps, pads, fft):
  shape = (*taps, x.shape[-1])
  return _call(_target("dnarch_dwconv_dk", fft), shape, x, g, pads=pads)


def _kernel_grad_partition(taps, pads, fft, mesh, arg_shapes, result_shape):
  axes = _batch_axes(arg_shapes[0].sharding)
  x_sharding = _as_batch_sharded(mesh, arg_shapes[0])

  def lower(x, g):  # this shard's sum over its examples, then the sum over the shards
    dk = _kernel_grad_call(x, g, taps, pads, fft)
    return dk if axes is None else jax.lax.psum(dk, axes)

  return mesh, lower, NamedSharding(mesh, P()), (x_sharding, x_sharding)


def _kernel_grad_rule(taps, pads, fft, mesh, value_types, result_types):
  x, kernel, options = _factors(len(value_types[0].shape))
  return f"{x}, {x} -> {kernel}", options


_kernel_grad = custom_partitioning(_kernel_grad_call, static_argnums=(2, 3, 4))
_kernel_grad.def_partition(
  partition=_kernel_grad_partition,
  infer_sharding_from_operands=lambda taps, pads, fft, mesh, args, result: NamedSharding(mesh, P()),
  sharding_rule=_kernel_grad_rule,
)


# --------------------------------------------------------------------------------------------
# Public calls.
# --------------------------------------------------------------------------------------------


def _run(name: str, partitioned, args, static: tuple, fft: bool):
  """``partitioned(*args, *static, fft)``, vmappable, tagged for the compilation cache."""
  if fft and args[0].ndim != 3:
    raise ValueError(
      f"dnarch_jax.network.native: fft=True is 1D only ([B, L, C]), got {args[0].shape}"
    )
  # JAX tells custom_partitioning ops apart in the IR only by a per-process pointer, which keeps
  # a persistent compilation cache from serving them to another process. Tagged with their
  # static arguments, the IR says what each computes, so a cache key that leaves the pointer out
  # (``sharding.enable_compilation_cache``) is safe for these ops.
  with set_xla_metadata(dnarch_native=repr((name, *static, fft))):
    call = lambda *a: partitioned(*a, *static, fft)
    return jax.custom_batching.sequential_vmap(call)(*args)


def _static_pads(pads) -> tuple[tuple[int, int], ...]:
  return tuple((int(lo), int(hi)) for lo, hi in pads)  # hashable, for custom_partitioning


def depthwise_forward(x_BxSxC, kernel_TxC, pads, fft: bool = False) -> jax.Array:
  """Same-size depthwise cross-correlation, f32 (module docstring)."""
  return _run("forward", _forward, (x_BxSxC, kernel_TxC), (_static_pads(pads),), fft)


def depthwise_kernel_grad(x_BxSxC, g_BxSxC, taps, pads, fft: bool = False) -> jax.Array:
  """The kernel gradient ``[*taps, C]`` of ``depthwise_forward`` for output cotangent g."""
  static = (tuple(map(int, taps)), _static_pads(pads))
  return _run("kernel_grad", _kernel_grad, (x_BxSxC, g_BxSxC), static, fft)
