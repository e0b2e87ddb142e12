"""Host memory around XLA:CPU's steps: the compiler's handed back, the steps' on huge pages.

A compile allocates and frees hundreds of MiB on its threads; glibc keeps freed memory in its
per-thread arenas, so the process stays resident at its compile peak and the step's own buffers
come on top (sMNIST CCNN-4,140: the training step's peak fell from 1741 to 1414 MiB with a
trim between compile and first run; ``benchmarks/results/README.md``). ``trim()`` runs glibc's
``malloc_trim``; where the C library has none (macOS, musl) it only collects garbage.

A step's own temporaries (897 MiB for the sMNIST CCNN-4,140 training step) are allocated on
XLA's runtime threads, whose glibc arenas serve blocks that large with a fresh ``mmap`` and unmap
them when freed: every step faults its buffers in again, 4 KiB at a time (230k faults, 0.8 s of
kernel time per 2.8 s step on a 2-core VM). :func:`reexec_with_huge_pages` restarts the program
with glibc asking for transparent huge pages on those blocks, a 2 MiB fault each (about 1k per
step): the step ran 2.0-2.2 against 2.3-3.0 s, at the same peak memory
(``benchmarks/results/README.md``). Keeping the freed blocks instead (one arena, no ``mmap``)
was measured too and dropped: the fragmented heap grew the training process from 1.4 to 2.3 GiB.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import gc
import importlib.metadata
import importlib.util
import os
import pathlib
import pkgutil
import platform
import sys

# glibc >= 2.35: madvise(MADV_HUGEPAGE) every block malloc maps; glibc reads it at start only.
HUGE_PAGES_TUNABLE = "glibc.malloc.hugetlb=1"
_THP_SETTING = pathlib.Path("/sys/kernel/mm/transparent_hugepage/enabled")


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


def runs_on_cpu() -> bool:
  """Whether JAX will compute on the CPU, decided without starting its backends: ``JAX_PLATFORMS``
  names only ``cpu``, or it is unset and no accelerator plugin (PJRT plugin, libtpu) is installed.
  """
  platforms = os.environ.get("JAX_PLATFORMS", "")
  if platforms:
    return {p.strip() for p in platforms.split(",")} == {"cpu"}
  if importlib.metadata.entry_points(group="jax_plugins") or importlib.util.find_spec("libtpu"):
    return False
  namespace = importlib.util.find_spec("jax_plugins")
  return namespace is None or not any(pkgutil.iter_modules(namespace.submodule_search_locations))


def huge_page_env(environ) -> dict[str, str] | None:
  """``environ`` with :data:`HUGE_PAGES_TUNABLE` added to ``GLIBC_TUNABLES``, or None where it
  would change nothing: already there, not glibc, or the kernel's transparent huge pages off."""
  tunables = environ.get("GLIBC_TUNABLES", "")
  if "glibc.malloc.hugetlb" in tunables or platform.libc_ver()[0] != "glibc":
    return None
  try:
    if "[never]" in _THP_SETTING.read_text():
      return None
  except OSError:
    return None
  return {**environ, "GLIBC_TUNABLES": ":".join(filter(None, (tunables, HUGE_PAGES_TUNABLE)))}


def reexec_with_huge_pages(argv: list[str]) -> None:
  """Replace this process by ``python *argv`` with :func:`huge_page_env` (same pid, so signals
  and supervisors are unaffected) when JAX will run on the CPU; return if nothing would change.

  Call it first thing in a program's entry point (``dnarch`` does), before any work is lost.
  """
  env = huge_page_env(os.environ)
  if env is not None and runs_on_cpu():
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, [sys.executable, *argv], env)
