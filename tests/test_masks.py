"""Masks and grids: closed-form extents against brute force, crop arithmetic, JAX transforms."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dnarch_jax.method import grids, masks

T = 0.1
U = np.linspace(-3, 3, 600_001)  # dense grid, step 1e-5


def brute_extent(values, coords):
  kept = coords[values >= T]
  return kept.min(), kept.max()


@pytest.mark.parametrize("mu,sigma", [(0.0, 0.075), (1.0, 0.3), (-0.2, 0.01), (0.5, -0.4)])
def test_gaussian_extent_matches_brute_force(mu, sigma):
  m = masks.gaussian(U[:, None], np.array([mu]), np.array([sigma]))
  lo, hi = brute_extent(m, U)
  r = masks.gaussian_radius(np.array(sigma), T)
  np.testing.assert_allclose([lo, hi], [mu - r, mu + r], atol=2e-5)


def test_gaussian_2d_box_contains_extent_and_is_tight_per_axis():
  sigma = np.array([0.1, 0.35])
  g = np.linspace(-1, 1, 2001)
  p = np.stack(np.meshgrid(g, g, indexing="ij"), -1).reshape(-1, 2)
  m = masks.gaussian(p, np.zeros(2), sigma)
  kept = p[m >= T]
  r = masks.gaussian_radius(sigma, T)
  assert np.all(np.abs(kept) <= r + 1e-3)
  np.testing.assert_allclose(np.abs(kept).max(0), r, atol=2e-3)


@pytest.mark.parametrize("cutoff,tau", [(0.5, 20.0), (1.1, 20.0), (0.2, 5.0), (-0.1, 50.0)])
def test_sigmoid_cutoff_extent_matches_brute_force(cutoff, tau):
  m = masks.sigmoid_cutoff(U, cutoff, tau)
  _, hi = brute_extent(m, U)
  np.testing.assert_allclose(hi, masks.sigmoid_cutoff_extent(cutoff, tau, T), atol=2e-5)


@pytest.mark.parametrize("z,R", [(0.3, 1.0), (1.0, 0.5), (-2.5, 4.0)])
def test_ramp_extent_matches_brute_force(z, R):
  m = masks.ramp(U, z, R)
  _, hi = brute_extent(m, U)
  np.testing.assert_allclose(hi, masks.ramp_extent(z, R, T), atol=2e-5)


@pytest.mark.parametrize("delta", [1.0, 30.0, 1e4])
def test_scaled_sigmoid_gate_extent_matches_brute_force(delta):
  s = np.random.default_rng(0).normal(scale=0.5, size=10_000)
  np.testing.assert_array_equal(
    masks.scaled_sigmoid_gate_extent(s, delta, T), masks.scaled_sigmoid_gate(s, delta) >= T
  )


def test_bad_threshold_is_rejected():
  with pytest.raises(ValueError, match="threshold"):
    masks.gaussian_radius(np.array(0.1), 1.5)


def test_worked_crops():
  r = masks.gaussian_radius(np.array(0.075), T)
  assert grids.crop_taps(float(r), 33, 32, 32, causal=False) == 5  # 5x5 on CIFAR's grid
  assert grids.crop_taps(float(r), 784, 784, 784, causal=True) == 65  # sMNIST


@pytest.mark.parametrize("causal", [False, True])
def test_crop_keeps_every_tap_at_or_above_threshold(causal):
  rng = np.random.default_rng(1)
  n, big_n = (784, 784) if causal else (33, 32)
  for resolution in (big_n, big_n // 2, big_n // 4):
    full = grids.max_taps(n, big_n, resolution, causal)
    p_full = grids.tap_positions(n, big_n, resolution, full, causal)
    for sigma in rng.uniform(0.005, 1.2, size=40):
      mu = 1.0 if causal else 0.0
      m = masks.gaussian(p_full[:, None].astype(np.float64), np.array([mu]), np.array([sigma]))
      k = grids.crop_taps(
        float(masks.gaussian_radius(np.array(sigma), T)), n, big_n, resolution, causal
      )
      kept = np.zeros(full, bool)
      kept[full - k :] = True if causal else False
      if not causal:
        kept[(full - k) // 2 : (full - k) // 2 + k] = True
      assert np.all(m[~kept] < T), (sigma, resolution)
      assert np.all(m[kept][[0, -1]] >= T) or k == full or causal  # centred crop is tight
      # A cropped grid is the matching slice of the full one, bit for bit.
      p_crop = grids.tap_positions(n, big_n, resolution, k, causal)
      np.testing.assert_array_equal(p_crop, p_full[kept])


def test_bucket_taps_stays_odd_and_capped():
  assert grids.bucket_taps(5, 2, 33) == 5
  assert grids.bucket_taps(65, 16, 784) == 65
  assert grids.bucket_taps(66, 16, 784) == 81
  assert grids.bucket_taps(780, 16, 784) == 784


def test_mask_functions_compose_with_jit_grad_vmap():
  u = jnp.linspace(0, 1, 11)

  def total(theta):
    sigma, c, z, s = theta
    g = masks.gaussian(u[:, None], jnp.zeros(1), sigma[None])
    return (
      jnp.sum(masks.thresholded(g, T))
      + jnp.sum(masks.sigmoid_cutoff(u, c, 20.0))
      + jnp.sum(masks.ramp(u * 10, z, 4.0))
      + jnp.sum(masks.scaled_sigmoid_gate(s * u, 3.0))
    )

  theta = (jnp.array(0.3), jnp.array(0.5), jnp.array(4.0), jnp.array(0.2))
  grads = jax.jit(jax.grad(total))(theta)
  assert all(float(jnp.abs(g)) > 0 for g in grads)
  batched = jax.vmap(lambda s: total((s, theta[1], theta[2], theta[3])))(jnp.array([0.1, 0.2]))
  chex.assert_shape(batched, (2,))
  np.testing.assert_allclose(batched[1], total((jnp.array(0.2), *theta[1:])), rtol=1e-6)
