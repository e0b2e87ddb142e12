"""Compiling ahead of the first step and handing freed compiler memory back."""

import jax
import jax.numpy as jnp
import numpy as np

from dnarch_jax import hostmem


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
