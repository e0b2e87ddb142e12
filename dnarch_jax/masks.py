"""Masks: pure functions of a normalised coordinate, each with a closed-form extent (METHOD.md §3).

A mask maps coordinates to values in [0, 1]; its *extent* is the region where the mask is at least
the threshold ``t``: that region is what cropping keeps. Every function here works on NumPy arrays
(float64, host side, used to compute the static architecture) and on JAX arrays (traced, under
``jit``/``grad``/``vmap``), returning the same kind it was given.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

DEFAULT_THRESHOLD = 0.1


def array_module(*arrays):
  """NumPy for host values, jax.numpy as soon as one argument (or a leaf of one: sizes come in
  tuples) is a JAX array or tracer."""
  leaves = jax.tree_util.tree_leaves(arrays)
  return jnp if any(isinstance(a, jax.Array) for a in leaves) else np


def _np_sigmoid(z):
  return np.exp(-np.logaddexp(0.0, -z))


def _check_threshold(threshold: float) -> None:
  if not 0.0 < threshold < 1.0:
    raise ValueError(f"mask threshold must lie in (0, 1), got {threshold}")


# --- gaussian [ccnn]: the kernel-size mask ------------------------------------------------------


def gaussian(u_NxD, mu_D, sigma_D):
  """``exp(-1/2 sum_d (u_d - mu_d)^2 / (sigma_d^2 + 1e-8))``, one value per row of ``u_NxD``."""
  xp = array_module(u_NxD, mu_D, sigma_D)
  z = (u_NxD - mu_D) ** 2 / (sigma_D**2 + 1e-8)
  return xp.exp(-0.5 * xp.sum(z, axis=-1))


def gaussian_radius(sigma, threshold: float = DEFAULT_THRESHOLD):
  """Half-width of the gaussian's extent per axis: ``|u_d - mu_d| <= |sigma_d| sqrt(-2 ln t)``.

  Exact for one axis; for several axes the extent of the product is an ellipse inside the box
  these radii describe, so cropping to the box keeps everything at or above the threshold.
  """
  _check_threshold(threshold)
  xp = array_module(sigma)
  return xp.sqrt(sigma**2 + 1e-8) * math.sqrt(-2.0 * math.log(threshold))


# --- sigmoid cutoff [design]: width, resolution and depth masks ---------------------------------


def sigmoid_cutoff(u, cutoff, temperature: float):
  """``sigmoid(tau (c - u))`` on ``u`` in [0, 1]: ~1 below the cutoff ``c``, ~0 above it."""
  xp = array_module(u, cutoff)
  if xp is np:
    return _np_sigmoid(temperature * (cutoff - u))
  return jax.nn.sigmoid(temperature * (cutoff - u))


def sigmoid_cutoff_extent(cutoff, temperature: float, threshold: float = DEFAULT_THRESHOLD):
  """Largest ``u`` with mask >= t: ``c + ln(1/t - 1) / tau`` (the mask decreases in u)."""
  _check_threshold(threshold)
  return cutoff + math.log(1.0 / threshold - 1.0) / temperature


# --- ramp [diffstride]: the alternative resolution mask -----------------------------------------


def ramp(u, z, R: float = 4.0):
  """DiffStride's ``clip((R + z - u) / R, 0, 1)``: 1 up to ``z``, linear to 0 over ``R`` units."""
  xp = array_module(u, z)
  return xp.clip((R + z - u) / R, 0.0, 1.0)


def ramp_extent(z, R: float = 4.0, threshold: float = DEFAULT_THRESHOLD):
  """Largest ``u`` with ramp >= t: ``z + R (1 - t)``."""
  _check_threshold(threshold)
  return z + R * (1.0 - threshold)


# --- scaled sigmoid gate [dnal]: DNAL's channel gates -------------------------------------------


def scaled_sigmoid_gate(s, delta: float):
  """DNAL's channel gate ``sigmoid(delta * s_i)``; ``delta`` is annealed from 1 to 1e4."""
  xp = array_module(s)
  if xp is np:
    return _np_sigmoid(delta * s)
  return jax.nn.sigmoid(delta * s)


def scaled_sigmoid_gate_extent(s, delta: float, threshold: float = DEFAULT_THRESHOLD):
  """Boolean per element: gate >= t, i.e. ``s >= ln(t / (1 - t)) / delta``."""
  _check_threshold(threshold)
  return s >= math.log(threshold / (1.0 - threshold)) / delta


def scaled_sigmoid_gate_kept(s, delta: float, threshold: float = DEFAULT_THRESHOLD):
  """Sorted indices of the gates at or above ``threshold`` (host side, float64).

  Never empty: when no gate reaches the threshold the largest one is kept, so a layer keeps a
  channel (a network with an empty layer computes a constant) [design].
  """
  s = np.asarray(jax.device_get(s), np.float64)
  kept = np.flatnonzero(scaled_sigmoid_gate_extent(s, float(delta), threshold))
  if kept.size == 0:
    kept = np.asarray([int(np.argmax(s))])
  return tuple(int(i) for i in kept)


# --- thresholding: what makes a cropped network equal the full one -------------------------------


def thresholded(m, threshold: float = DEFAULT_THRESHOLD):
  """``m`` where ``m >= t``, else exactly 0.

  Both the cropped and the full network multiply by thresholded masks, so entries the crop drops
  are zero in the full network too. The gradient reaches the mask parameters through ``m`` on the
  kept region (the indicator itself is piecewise constant).
  """
  xp = array_module(m)
  return xp.where(m >= threshold, m, xp.zeros_like(m))
