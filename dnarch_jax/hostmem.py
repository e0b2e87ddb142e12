"""Handing the memory XLA's compiler freed back to the system before a step runs.

A compile allocates and frees hundreds of MiB on its threads; glibc keeps freed memory in its
per-thread arenas, so the process stays resident at its compile peak and the step's own buffers
come on top (sMNIST CCNN-4,140: the training step's peak fell from 1741 to 1414 MiB with a
trim between compile and first run; ``benchmarks/results/README.md``). ``trim()`` runs glibc's
``malloc_trim``; where the C library has none (macOS, musl) it only collects garbage.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import gc


@functools.cache
def _malloc_trim():
  try:
    return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
  except (OSError, AttributeError):
    return None


def trim() -> None:
  """Collect Python garbage and return the C heap's free pages to the system."""
  gc.collect()
  malloc_trim = _malloc_trim()
  if malloc_trim is not None:
    malloc_trim(0)


def compile_and_trim(jitted, *args) -> None:
  """Compile ``jitted`` for ``args`` ahead of its first call (the call then finds it in jit's
  cache), then :func:`trim`, so the first step does not stack its buffers on the compiler's."""
  jitted.lower(*args).compile()
  trim()
