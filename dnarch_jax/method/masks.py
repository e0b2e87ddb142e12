"""Masks: pure functions of a normalised coordinate, each with a closed-form extent (METHOD.md §3).

A mask maps coordinates to values in [0, 1]; its *extent* is the region where the mask is at least
the threshold ``t``: that region is what cropping keeps. Every function here works on NumPy arrays
(float64, host side, used to compute the static architecture) and on JAX arrays (traced, under
``jit``/``grad``/``vmap``), returning the same kind it was given.

Inputs are checked with chex assertions on shapes only (at trace time under ``jit``: no work per
step), each message naming the argument: a mask parameter that would broadcast the mask to a shape
other than its coordinates' is refused rather than computed. The parameters are scalars (``[D]``
for the gaussian); a batch of them is ``vmap``'s job.
"""

from __future__ import annotations

import math

import chex
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


def _check_broadcast(fn: str, name: str, value, target_shape, expected: str) -> None:
  """``value`` broadcasts to ``target_shape`` (shapes only: NumPy, JAX, tracers or scalars)."""
  shape = np.shape(value)
  chex.assert_is_broadcastable(
    shape, tuple(target_shape), custom_message=f"{fn}: {name} of shape {shape} must {expected}"
  )


def _check_per_coordinate(fn: str, name: str, value, coords_name: str, coords) -> None:
  """A mask parameter broadcasts to its coordinates' shape: one mask value per coordinate. One
  that broadcasts the other way would silently compute a mask per parameter."""
  shape = np.shape(coords)
  expected = f"broadcast to {coords_name}'s shape {shape} (vmap over a batch of mask parameters)"
  _check_broadcast(fn, name, value, shape, expected)


def _check_threshold(threshold: float, fn: str) -> None:
  # The extents take its logarithm on the host: a traced threshold cannot be used there.
  chex.assert_rank(threshold, 0, custom_message=f"{fn}: threshold must be a number in (0, 1)")
  if isinstance(threshold, jax.core.Tracer):
    raise AssertionError(
      f"{fn}: threshold must be a concrete number in (0, 1) (a hyperparameter), not a traced "
      "value: pass it as a Python float, or as a static argument under jit"
    )
  if not 0.0 < threshold < 1.0:
    raise ValueError(f"mask threshold must lie in (0, 1), got {threshold}")


# --- gaussian [ccnn]: the kernel-size mask ------------------------------------------------------


def gaussian(u_NxD, mu_D, sigma_D):
  """``exp(-1/2 sum_d (u_d - mu_d)^2 / (sigma_d^2 + 1e-8))``, one value per row of ``u_NxD``."""
  chex.assert_shape(
    u_NxD, (..., None), custom_message="gaussian: u_NxD must be [..., D] (positions last)"
  )
  d = np.shape(u_NxD)[-1]
  expected = f"be a scalar or [D] with D = {d}, u_NxD's last axis"
  _check_broadcast("gaussian", "mu_D", mu_D, (d,), expected)
  _check_broadcast("gaussian", "sigma_D", sigma_D, (d,), expected)
  xp = array_module(u_NxD, mu_D, sigma_D)
  z = (u_NxD - mu_D) ** 2 / (sigma_D**2 + 1e-8)
  return xp.exp(-0.5 * xp.sum(z, axis=-1))


def gaussian_radius(sigma, threshold: float = DEFAULT_THRESHOLD):
  """Half-width of the gaussian's extent per axis: ``|u_d - mu_d| <= |sigma_d| sqrt(-2 ln t)``.

  Exact for one axis; for several axes the extent of the product is an ellipse inside the box
  these radii describe, so cropping to the box keeps everything at or above the threshold.
  """
  _check_threshold(threshold, "gaussian_radius")
  xp = array_module(sigma)
  return xp.sqrt(sigma**2 + 1e-8) * math.sqrt(-2.0 * math.log(threshold))


# --- sigmoid cutoff [design]: width, resolution and depth masks ---------------------------------


def sigmoid_cutoff(u, cutoff, temperature: float):
  """``sigmoid(tau (c - u))`` on ``u`` in [0, 1]: ~1 below the cutoff ``c``, ~0 above it."""
  _check_per_coordinate("sigmoid_cutoff", "cutoff", cutoff, "u", u)
  _check_per_coordinate("sigmoid_cutoff", "temperature", temperature, "u", u)
  xp = array_module(u, cutoff)
  if xp is np:
    return _np_sigmoid(temperature * (cutoff - u))
  return jax.nn.sigmoid(temperature * (cutoff - u))


def sigmoid_cutoff_extent(cutoff, temperature: float, threshold: float = DEFAULT_THRESHOLD):
  """Largest ``u`` with mask >= t: ``c + ln(1/t - 1) / tau`` (the mask decreases in u)."""
  _check_threshold(threshold, "sigmoid_cutoff_extent")
  return cutoff + math.log(1.0 / threshold - 1.0) / temperature


# --- ramp [diffstride]: the alternative resolution mask -----------------------------------------


def ramp(u, z, R: float = 4.0):
  """DiffStride's ``clip((R + z - u) / R, 0, 1)``: 1 up to ``z``, linear to 0 over ``R`` units."""
  _check_per_coordinate("ramp", "z", z, "u", u)
  _check_per_coordinate("ramp", "R", R, "u", u)
  xp = array_module(u, z)
  return xp.clip((R + z - u) / R, 0.0, 1.0)


def ramp_extent(z, R: float = 4.0, threshold: float = DEFAULT_THRESHOLD):
  """Largest ``u`` with ramp >= t: ``z + R (1 - t)``."""
  _check_threshold(threshold, "ramp_extent")
  return z + R * (1.0 - threshold)


# --- scaled sigmoid gate [dnal]: DNAL's channel gates -------------------------------------------


def scaled_sigmoid_gate(s, delta: float):
  """DNAL's channel gate ``sigmoid(delta * s_i)``; ``delta`` is annealed from 1 to 1e4."""
  _check_per_coordinate("scaled_sigmoid_gate", "delta", delta, "s", s)
  xp = array_module(s)
  if xp is np:
    return _np_sigmoid(delta * s)
  return jax.nn.sigmoid(delta * s)


def scaled_sigmoid_gate_extent(s, delta: float, threshold: float = DEFAULT_THRESHOLD):
  """Boolean per element: gate >= t, i.e. ``s >= ln(t / (1 - t)) / delta``."""
  _check_threshold(threshold, "scaled_sigmoid_gate_extent")
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
  _check_per_coordinate("thresholded", "threshold", threshold, "m", m)
  xp = array_module(m)
  return xp.where(m >= threshold, m, xp.zeros_like(m))
