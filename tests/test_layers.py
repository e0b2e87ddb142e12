"""Layer building blocks: the dense product's hand-written weight gradient."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dnarch_jax.network.layers import dense_product


@pytest.mark.parametrize("x_shape", [(7, 5), (3, 11, 5), (2, 4, 6, 5)])
def test_dense_product_gradients_match_autodiff_of_the_plain_product(x_shape):
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.standard_normal(x_shape), jnp.float32)
  w = jnp.asarray(rng.standard_normal((5, 3)), jnp.float32)
  g = jnp.asarray(rng.standard_normal((*x_shape[:-1], 3)), jnp.float32)

  def grads(product):
    return jax.jit(jax.grad(lambda x, w: jnp.sum(product(x, w) * g), argnums=(0, 1)))(x, w)

  np.testing.assert_allclose(dense_product(x, w), x @ w, rtol=1e-6)
  for ours, autodiff in zip(grads(dense_product), grads(jnp.matmul), strict=True):
    assert ours.shape == autodiff.shape
    np.testing.assert_allclose(ours, autodiff, rtol=1e-5, atol=1e-6)
