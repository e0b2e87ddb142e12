"""The mixed-precision rule in one place (``ModelConfig.compute_dtype``).

Activations may be stored in a low-precision dtype (bfloat16); every sum over the batch and
positions, and every elementwise op that meets a float32 parameter, runs in float32 at least:
XLA:CPU's bfloat16 reductions are not float32 sums (a bias gradient over 4x64x64 positions of ones
came out 1024, not 16384). float32 and float64 inputs pass through unchanged.
"""

from __future__ import annotations

import jax.numpy as jnp


def accumulation_dtype(dtype):
  """float32 for low-precision dtypes, else ``dtype`` itself."""
  return jnp.promote_types(dtype, jnp.float32)


def upcast(x):
  """``x`` in its accumulation dtype (a no-op for float32)."""
  return x.astype(accumulation_dtype(x.dtype))


def add_in_float32(x, b):
  """``x + b`` computed in float32 at least and returned in ``x``'s dtype (``b``: a parameter)."""
  return (upcast(x) + b).astype(x.dtype)


def multiply_in_float32(x, m):
  """``x * m`` computed in float32 at least and returned in ``x``'s dtype (``m``: a mask)."""
  return (upcast(x) * m).astype(x.dtype)
