"""Compiling ahead of the first step, handing freed compiler memory back, huge pages for steps."""

import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dnarch_jax.run import hostmem


def test_compile_and_trim_leaves_the_first_call_nothing_to_compile():
  """The step ``dnarch train`` compiles ahead (to trim between compile and run) must be the one
  its first call uses: one backend compile in all, and the right result."""
  compiles = []

  def listener(name, secs, **kwargs):
    if name == "/jax/core/compile/backend_compile_duration":
      compiles.append(secs)

  step = jax.jit(lambda x, n: x * n, static_argnums=1, donate_argnums=0)
  x, y = jnp.ones(3), jnp.ones(3)  # created before listening: creating arrays compiles too
  jax.monitoring.register_event_duration_secs_listener(listener)
  try:
    hostmem.compile_and_trim(step, x, 2)
    assert len(compiles) == 1
    np.testing.assert_array_equal(step(y, 2), [2.0, 2.0, 2.0])
    assert len(compiles) == 1
  finally:
    jax.monitoring.unregister_event_duration_listener(listener)


# One process's page faults during a call after the first, of a step whose XLA temporaries (the
# product and its spectrum, 256 MiB: 65536 pages of 4 KiB) come from a fresh mapping each call;
# its output is small, so the faults are the temporaries'.
_FAULTS_PER_CALL = """
import resource
import jax, jax.numpy as jnp
step = jax.jit(lambda x, w: jnp.sum(jnp.abs(jnp.fft.rfft(x @ w)), axis=0))
x, w = jnp.ones((16384, 256)), jnp.ones((256, 2048)) / 256
for call in range(4):
  before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
  step(x, w).block_until_ready()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""

_needs_huge_pages = pytest.mark.skipif(
  hostmem.huge_page_env({}) is None, reason="glibc with the kernel's transparent huge pages on"
)


def _run(args, env):
  out = subprocess.run([sys.executable, *args], env=env, capture_output=True, text=True)
  assert out.returncode == 0, out.stderr[-2000:]
  return out.stdout.split()


@_needs_huge_pages
def test_huge_pages_spare_a_step_from_faulting_its_temporaries_in_page_by_page():
  environ = {k: v for k, v in os.environ.items() if k != "GLIBC_TUNABLES"}
  (small_pages,) = _run(["-c", _FAULTS_PER_CALL], environ)
  (huge_pages,) = _run(["-c", _FAULTS_PER_CALL], hostmem.huge_page_env(environ))
  assert int(small_pages) > 0.9 * 65536
  assert int(huge_pages) < 0.05 * 65536


@_needs_huge_pages
def test_reexec_with_huge_pages_restarts_once_in_the_same_process(tmp_path):
  program = tmp_path / "program.py"
  program.write_text(
    "import os, sys\n"
    "from dnarch_jax.run import hostmem\n"
    "print('start', os.getpid(), flush=True)\n"
    "hostmem.reexec_with_huge_pages(sys.argv)\n"
    "print('tunables', os.environ.get('GLIBC_TUNABLES', '-'))\n"
  )
  environ = {k: v for k, v in os.environ.items() if k != "GLIBC_TUNABLES"}
  words = _run([str(program)], {**environ, "JAX_PLATFORMS": "cpu"})
  assert words[0] == words[2] == "start" and words[1] == words[3]  # one restart, same pid
  assert words[4:] == ["tunables", hostmem.HUGE_PAGES_TUNABLE]
  # JAX not on the CPU: no restart.
  assert _run([str(program)], {**environ, "JAX_PLATFORMS": "tpu"})[2:] == ["tunables", "-"]
