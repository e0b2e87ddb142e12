"""Spectral resampling: exact on band-limited input, amplitude-preserving, differentiable."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.signal

from dnarch_jax.method import masks, spectral


def band_limited_1d(length, max_freq, rng, batch=2, channels=3):
  t = np.arange(length) / length
  x = np.zeros((batch, length, channels))
  for k in range(max_freq + 1):
    a = rng.normal(size=(batch, 1, channels))
    phase = rng.uniform(0, 2 * np.pi, size=(batch, 1, channels))
    x += a * np.cos(2 * np.pi * k * t[None, :, None] + phase)
  return x.astype(np.float32)


def band_limited_2d(h, w, max_freq, rng):
  yy, xx = np.meshgrid(np.arange(h) / h, np.arange(w) / w, indexing="ij")
  x = np.zeros((2, h, w, 2))
  for a in range(-max_freq, max_freq + 1):
    for b in range(max_freq + 1):
      amp = rng.normal(size=(2, 1, 1, 2))
      phase = rng.uniform(0, 2 * np.pi, size=(2, 1, 1, 2))
      x += amp * np.cos(2 * np.pi * (a * yy + b * xx)[None, :, :, None] + phase)
  return x.astype(np.float32)


def rel_err(a, b):
  return float(np.linalg.norm(np.asarray(a) - b) / np.linalg.norm(b))


@pytest.mark.parametrize("low", [16, 24, 62])
def test_down_then_up_returns_band_limited_input_1d(low):
  x = band_limited_1d(64, low // 2 - 1, np.random.default_rng(low))
  back = spectral.spectral_resample(spectral.spectral_resample(jnp.asarray(x), (low,)), (64,))
  assert rel_err(back, x) < 1e-5


def test_up_then_down_returns_input_1d():
  x = band_limited_1d(32, 16, np.random.default_rng(0))  # includes the Nyquist frequency
  up = spectral.spectral_resample(jnp.asarray(x), (80,))
  assert rel_err(spectral.spectral_resample(up, (32,)), x) < 1e-5


@pytest.mark.parametrize("low", [(12, 16), (28, 8), (8, 8)])
def test_down_then_up_returns_band_limited_input_2d(low):
  x = band_limited_2d(32, 32, min(low) // 2 - 1, np.random.default_rng(1))
  down = spectral.spectral_resample(jnp.asarray(x), low)
  assert down.shape == (2, *low, 2)
  assert rel_err(spectral.spectral_resample(down, (32, 32)), x) < 1e-5


def test_upsampled_samples_interpolate_the_signal():
  x = band_limited_1d(32, 10, np.random.default_rng(2))
  up = np.asarray(spectral.spectral_resample(jnp.asarray(x), (96,)))
  np.testing.assert_allclose(up[:, ::3], x, atol=1e-4)


def test_constant_is_preserved_and_mask_is_applied():
  x = jnp.ones((1, 28, 28, 1)) * 3.0
  np.testing.assert_allclose(spectral.spectral_resample(x, (14, 14)), 3.0, rtol=1e-5)
  half = lambda f: jnp.full(f.shape, 0.5)
  y = spectral.spectral_resample(x, (14, 14), [half, half])
  np.testing.assert_allclose(y, 0.75, rtol=1e-5)


@pytest.mark.parametrize("n_in", [7, 16])
@pytest.mark.parametrize("n_out", [5, 12, 21, 22])
def test_any_sizes_match_scipy_resample(n_in, n_out):
  # scipy.signal.resample is an independent route (its own FFT, Nyquist split and sum); the inputs
  # are white noise, so every bin, the Nyquist ones included, is exercised. Axis 1 is two-sided
  # (fftn), axis 2 one-sided (rfftn) in our resampler.
  x = np.random.default_rng(n_in * 100 + n_out).normal(size=(2, n_in, n_in + 1, 2))
  ours = spectral.spectral_resample(jnp.asarray(x, jnp.float32), (n_out, n_out + 1))
  ref = scipy.signal.resample(scipy.signal.resample(x, n_out, axis=1), n_out + 1, axis=2)
  np.testing.assert_allclose(ours, ref, atol=1e-5)


def test_odd_lengths_keep_band_limited_signals():
  x = band_limited_1d(63, 15, np.random.default_rng(4))
  down = spectral.spectral_resample(jnp.asarray(x), (33,))
  assert rel_err(spectral.spectral_resample(down, (63,)), x) < 1e-5


def test_gradient_reaches_the_cutoff_under_jit_and_vmap():
  x = jnp.asarray(band_limited_1d(64, 20, np.random.default_rng(3)))

  def energy(c):
    fn = lambda f: masks.sigmoid_cutoff(f / 32.0, c, 20.0)
    return jnp.sum(spectral.spectral_resample(x, (32,), [fn]) ** 2)

  g = jax.jit(jax.grad(energy))(0.4)
  assert float(g) > 0  # a higher cutoff keeps more energy
  vals = jax.vmap(energy)(jnp.array([0.2, 0.4]))
  assert float(vals[1]) > float(vals[0])
