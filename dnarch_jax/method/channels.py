"""Static channel selections: which of a layer's channels a cropped network computes.

A selection is either an ``int`` ``n`` (the first ``n`` channels: DNArch's ordered width mask
keeps a prefix) or a tuple of channel indices (a scaled sigmoid gate keeps any subset). Both are
hashable, so they live in the static ``Arch``; layers own parameters at their maximal width and
take the selected rows, columns or entries.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

Channels = int | tuple[int, ...]


def count(channels: Channels) -> int:
  """How many channels the selection keeps."""
  return channels if isinstance(channels, int) else len(channels)


def prefix(channels: Channels) -> int | None:
  """``n`` when the selection is the first ``n`` channels (in order), else ``None``."""
  if isinstance(channels, int):
    return channels
  return len(channels) if tuple(channels) == tuple(range(len(channels))) else None


def select(x, channels: Channels | None, axis: int = -1):
  """``x`` restricted to ``channels`` along ``axis`` (all of it for ``None``).

  A prefix is a static slice; any other subset a gather with constant indices. Works on NumPy
  and JAX arrays alike.
  """
  if channels is None:
    return x
  n = prefix(channels)
  if n is not None:
    return x[(slice(None),) * (axis % x.ndim) + (slice(0, n),)]
  xp = jnp if isinstance(x, jax.Array) else np
  return xp.take(x, np.asarray(channels, np.int32), axis=axis)


def index(channels: Channels):
  """What ``array.at[...]`` takes to update the selected entries of a 1-D array."""
  n = prefix(channels)
  return slice(0, n) if n is not None else np.asarray(channels, np.int32)
