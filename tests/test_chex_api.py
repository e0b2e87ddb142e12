"""The public functional API as users compose it: under ``chex.variants`` (jit or not; JAX arrays
on device, or NumPy on the host where a function takes both), under ``vmap`` where a function is
meant to be mapped (vmapped == the per-example results stacked), and its input checks (each
fires with a message naming the argument)."""

import dataclasses
import math

import chex
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from dnarch_jax.config import ModelConfig, validate
from dnarch_jax.method import budget, cost, grids, masks, spectral
from dnarch_jax.method.arch import compute_arch, initial_arch
from dnarch_jax.method.arch_params import initial_arch_params
from dnarch_jax.method.sizes import arch_sizes, soft_kernel_taps, soft_sizes
from dnarch_jax.network import conv
from dnarch_jax.network.kernelnets import SIREN, MAGNet
from dnarch_jax.network.layers import MaskedContinuousConv
from dnarch_jax.network.model import DNArchCCNN, init_variables

T = masks.DEFAULT_THRESHOLD
# float32 on device against the float64 NumPy route.
TOL = dict(rtol=1e-5, atol=1e-6)


def tiny_config(**overrides) -> ModelConfig:
  """The smallest network that still exercises every mask: 1D, two blocks, eight channels."""
  base = dict(
    input_size=(16,), in_channels=2, num_classes=3, causal=True, kernel_grid=0, num_blocks=2,
    width=8, hidden_width=8, kernel_net_hidden=4, kernel_net_layers=1, omega_0=30.0,
    dropout=0.0, width_bucket=4, kernel_bucket=4, learn_kernel=True, learn_width=True,
    learn_resolution=True, learn_depth=True,
  )  # fmt: skip
  base.update(overrides)
  return validate(ModelConfig(**base))


def np_gaussian(u, mu, sigma):
  return np.exp(-0.5 * np.sum((u - mu) ** 2 / (sigma**2 + 1e-8), axis=-1))


def np_sigmoid(z):
  return 1.0 / (1.0 + np.exp(-z))


def stacked(fn, *batches):
  """The per-example results of ``fn`` over the leading axis of every batch, stacked."""
  return jnp.stack([fn(*args) for args in zip(*batches, strict=True)])


# --- masks: jit or not, device or host --------------------------------------------------------

U = np.linspace(-0.2, 1.2, 15)


class MasksTest(chex.TestCase):
  @chex.variants(with_jit=True, without_jit=True, with_device=True, without_device=True)
  def test_gaussian(self):
    u = np.stack([U, U[::-1]], axis=-1)  # [N, 2]
    mu, sigma = np.array([0.3, 0.5]), np.array([0.2, 0.4])
    out = self.variant(masks.gaussian)(u, mu, sigma)
    chex.assert_shape(out, (15,))
    chex.assert_trees_all_close(out, np_gaussian(u, mu, sigma), **TOL)
    # Known values: 1 at the centre, exp(-1/2) one sigma away on one axis.
    at = self.variant(masks.gaussian)(np.array([[0.3, 0.5], [0.5, 0.5]]), mu, sigma)
    chex.assert_trees_all_close(at, np.array([1.0, math.exp(-0.5)]), **TOL)
    # A scalar mu / sigma stands for every axis, as before.
    iso = self.variant(masks.gaussian)(u, 0.3, 0.2)
    chex.assert_trees_all_close(iso, np_gaussian(u, 0.3, 0.2), **TOL)

  @chex.variants(with_jit=True, without_jit=True, with_device=True, without_device=True)
  def test_gaussian_radius(self):
    sigma = np.array([0.075, -0.3])
    r = self.variant(lambda s: masks.gaussian_radius(s, T))(sigma)
    chex.assert_trees_all_close(r, np.sqrt(sigma**2 + 1e-8) * math.sqrt(-2 * math.log(T)), **TOL)
    # The mask is the threshold at the radius.
    at_edge = np_gaussian(np.asarray(r)[:, None], 0.0, sigma[:, None])
    chex.assert_trees_all_close(at_edge, np.full(2, T), rtol=1e-5)

  @chex.variants(with_jit=True, without_jit=True, with_device=True, without_device=True)
  def test_sigmoid_cutoff_and_extent(self):
    out = self.variant(masks.sigmoid_cutoff)(U, 0.5, 20.0)
    chex.assert_trees_all_close(out, np_sigmoid(20.0 * (0.5 - U)), **TOL)
    half = self.variant(masks.sigmoid_cutoff)(np.float32(0.5), 0.5, 20.0)
    chex.assert_trees_all_close(half, 0.5, **TOL)  # at the cutoff
    e = self.variant(lambda c: masks.sigmoid_cutoff_extent(c, 20.0, T))(np.array([0.2, 0.7]))
    chex.assert_trees_all_close(e, np.array([0.2, 0.7]) + math.log(1 / T - 1) / 20.0, **TOL)
    chex.assert_trees_all_close(np_sigmoid(20.0 * (np.array([0.2, 0.7]) - e)), np.full(2, T))

  @chex.variants(with_jit=True, without_jit=True, with_device=True, without_device=True)
  def test_ramp_and_extent(self):
    out = self.variant(masks.ramp)(U * 10, 3.0, 4.0)
    chex.assert_trees_all_close(out, np.clip((4.0 + 3.0 - U * 10) / 4.0, 0, 1), **TOL)
    ends = self.variant(masks.ramp)(np.array([3.0, 7.0]), 3.0, 4.0)
    chex.assert_trees_all_close(ends, np.array([1.0, 0.0]), **TOL)  # 1 at z, 0 at z + R
    e = self.variant(lambda z: masks.ramp_extent(z, 4.0, T))(np.array([3.0, -1.0]))
    chex.assert_trees_all_close(e, np.array([3.0, -1.0]) + 4.0 * (1 - T), **TOL)

  @chex.variants(with_jit=True, without_jit=True, with_device=True, without_device=True)
  def test_scaled_sigmoid_gate_and_extent(self):
    s = np.array([-2.0, -0.1, 0.0, 0.3])
    out = self.variant(masks.scaled_sigmoid_gate)(s, 3.0)
    chex.assert_trees_all_close(out, np_sigmoid(3.0 * s), **TOL)
    chex.assert_trees_all_close(out[2], 0.5, **TOL)  # sigmoid(0)
    kept = self.variant(lambda s: masks.scaled_sigmoid_gate_extent(s, 3.0, T))(s)
    np.testing.assert_array_equal(kept, np_sigmoid(3.0 * s) >= T)
    np.testing.assert_array_equal(kept, [False, True, True, True])

  @chex.variants(with_jit=True, without_jit=True, with_device=True, without_device=True)
  def test_thresholded(self):
    m = np.array([0.05, 0.1, 0.5, 0.099])
    out = self.variant(lambda m: masks.thresholded(m, T))(m)
    chex.assert_trees_all_close(out, np.array([0.0, 0.1, 0.5, 0.0]), **TOL)


# --- masks under vmap: over a batch of mask parameters -----------------------------------------


class MasksVmapTest(chex.TestCase):
  @chex.variants(with_jit=True, without_jit=True)
  def test_masks_vmapped_over_their_parameters(self):
    rng = np.random.default_rng(0)
    u_Nx2 = jnp.asarray(rng.uniform(-1, 1, (9, 2)), jnp.float32)
    u = jnp.asarray(U, jnp.float32)
    mu_Bx2 = jnp.asarray(rng.uniform(-0.5, 0.5, (4, 2)), jnp.float32)
    sigma_Bx2 = jnp.asarray(rng.uniform(0.05, 0.6, (4, 2)), jnp.float32)
    c_B = jnp.asarray(rng.uniform(0, 1, 4), jnp.float32)
    s_BxC = jnp.asarray(rng.normal(size=(4, 6)), jnp.float32)
    cases = [
      (lambda mu, sigma: masks.gaussian(u_Nx2, mu, sigma), (mu_Bx2, sigma_Bx2)),
      (lambda sigma: masks.gaussian_radius(sigma, T), (sigma_Bx2,)),
      (lambda c: masks.sigmoid_cutoff(u, c, 20.0), (c_B,)),
      (lambda c: masks.sigmoid_cutoff_extent(c, 20.0, T), (c_B,)),
      (lambda z: masks.ramp(u * 10, z * 10, 4.0), (c_B,)),
      (lambda z: masks.ramp_extent(z, 4.0, T), (c_B,)),
      (lambda s: masks.scaled_sigmoid_gate(s, 3.0), (s_BxC,)),
      (lambda s: masks.scaled_sigmoid_gate_extent(s, 3.0, T), (s_BxC,)),
      (lambda c: masks.thresholded(masks.sigmoid_cutoff(u, c, 20.0), T), (c_B,)),
    ]
    for fn, batches in cases:
      chex.assert_trees_all_close(
        self.variant(jax.vmap(fn))(*batches), stacked(fn, *batches), **TOL
      )


# --- grids and the soft kernel size -----------------------------------------------------------


class CropTest(chex.TestCase):
  @chex.variants(with_jit=True, without_jit=True, with_device=True, without_device=True)
  def test_crop_and_bucket_taps(self):
    radius = float(masks.gaussian_radius(0.075, T))
    centred = self.variant(lambda r: grids.crop_taps(r, 33, 32, 32, False))(radius)
    causal = self.variant(lambda r: grids.crop_taps(r, 784, 784, 784, True))(radius)
    assert (int(centred), int(causal)) == (5, 65)  # the worked crops (CIFAR, sMNIST)
    bucket = self.variant(lambda t: grids.bucket_taps(t, 16, 784))
    assert [int(bucket(t)) for t in (65.0, 66.0, 780.0)] == [65, 81, 784]

  @chex.variants(with_jit=True, without_jit=True)
  def test_crop_taps_vmapped_over_radii(self):
    radii = jnp.linspace(0.01, 1.2, 7)
    crop = lambda r: grids.crop_taps(r, 33, 32, 16, False)  # at half resolution
    host = [grids.crop_taps(float(r), 33, 32, 16, False) for r in radii]
    np.testing.assert_array_equal(self.variant(jax.vmap(crop))(radii), host)

  @chex.variants(with_jit=True, without_jit=True)
  def test_soft_kernel_taps_value_is_the_crop(self):
    taps = self.variant(lambda s: soft_kernel_taps(s, (33, 33), (32, 32), (32, 16)))
    out = taps(jnp.array([0.075, 0.3]))
    radius = masks.gaussian_radius(np.array([0.075, 0.3]), T)
    host = [
      grids.crop_taps(float(r), 33, 32, m, False) for r, m in zip(radius, (32, 16), strict=True)
    ]
    np.testing.assert_array_equal(np.asarray(out), host)
    grads = jax.grad(lambda s: sum(soft_kernel_taps(s, (33, 33), (32, 32))))(jnp.array([0.1, 0.2]))
    assert np.all(np.asarray(grads) > 0)  # straight-through: the extent's gradient


# --- depthwise_conv -------------------------------------------------------------------------------


def np_depthwise(x, k, causal):
  """``y[i] = sum_j k[j] x[i + j - lo]`` per channel, 1D, zero padding (the definition)."""
  taps = k.shape[0]
  lo = taps - 1 if causal else (taps - 1) // 2
  y = np.zeros_like(x)
  for i in range(x.shape[1]):
    for j in range(taps):
      src = i + j - lo
      if 0 <= src < x.shape[1]:
        y[:, i] += k[j] * x[:, src]
  return y


ROUTES = ("auto", "direct", "fft", "shift", "native")


class DepthwiseConvTest(chex.TestCase):
  @chex.variants(with_jit=True, without_jit=True, with_device=True)
  def test_matches_the_definition(self):
    rng = np.random.default_rng(1)
    x = rng.normal(size=(2, 11, 3)).astype(np.float32)
    for causal, taps in ((True, 4), (False, 5)):
      k = rng.normal(size=(taps, 3)).astype(np.float32)
      ref = np_depthwise(x.astype(np.float64), k.astype(np.float64), causal)
      for route in ROUTES:
        fn = lambda x, k, c=causal, r=route: conv.depthwise_conv(x, k, causal=c, route=r)
        chex.assert_trees_all_close(self.variant(fn)(x, k), ref, rtol=1e-4, atol=1e-5)
    # Known value: a kernel with a single 1 at the centre tap is the identity.
    delta = np.zeros((3, 3), np.float32)
    delta[1] = 1.0
    identity = self.variant(lambda x, k: conv.depthwise_conv(x, k, causal=False))(x, delta)
    chex.assert_trees_all_close(identity, x, **TOL)

  @chex.variants(with_jit=True, without_jit=True)
  def test_vmapped_over_a_leading_axis(self):
    rng = np.random.default_rng(2)
    x_GxBxSxC = jnp.asarray(rng.normal(size=(3, 2, 10, 4)), jnp.float32)
    k_GxKxC = jnp.asarray(rng.normal(size=(3, 5, 4)), jnp.float32)
    for route in ROUTES:
      fn = lambda x, k, r=route: conv.depthwise_conv(x, k, causal=False, route=r)
      out = self.variant(jax.vmap(fn))(x_GxBxSxC, k_GxKxC)
      chex.assert_trees_all_close(out, stacked(fn, x_GxBxSxC, k_GxKxC), rtol=1e-4, atol=1e-5)
      shared = self.variant(jax.vmap(fn, in_axes=(0, None)))(x_GxBxSxC, k_GxKxC[0])
      per_example = stacked(lambda x, fn=fn: fn(x, k_GxKxC[0]), x_GxBxSxC)
      chex.assert_trees_all_close(shared, per_example, rtol=1e-4, atol=1e-5)


# --- spectral_resample ------------------------------------------------------------------------


class SpectralResampleTest(chex.TestCase):
  @chex.variants(with_jit=True, without_jit=True, with_device=True)
  def test_known_values(self):
    resample = self.variant(lambda x: spectral.spectral_resample(x, (14, 9)))
    const = np.full((2, 10, 12, 3), 3.0, np.float32)
    chex.assert_trees_all_close(resample(const), np.full((2, 14, 9, 3), 3.0), rtol=1e-5)
    # A band-limited signal survives down- then upsampling.
    t = np.arange(32) / 32
    x = np.stack([np.cos(2 * np.pi * 3 * t), np.sin(2 * np.pi * 5 * t)], -1)[None]
    there = self.variant(lambda x: spectral.spectral_resample(x, (16,)))(x.astype(np.float32))
    back = self.variant(lambda x: spectral.spectral_resample(x, (32,)))(there)
    chex.assert_trees_all_close(back, x, atol=1e-5)

  @chex.variants(with_jit=True, without_jit=True)
  def test_vmapped_over_inputs_and_over_mask_cutoffs(self):
    rng = np.random.default_rng(3)
    x_GxBxSxC = jnp.asarray(rng.normal(size=(3, 2, 20, 4)), jnp.float32)
    down = lambda x: spectral.spectral_resample(x, (13,))
    chex.assert_trees_all_close(
      self.variant(jax.vmap(down))(x_GxBxSxC), stacked(down, x_GxBxSxC), rtol=1e-5, atol=1e-6
    )
    x = x_GxBxSxC[0]

    def masked(c):
      fn = lambda f: masks.sigmoid_cutoff(f / 10.0, c, 20.0)
      return spectral.spectral_resample(x, (12,), [fn])

    cutoffs = jnp.array([0.2, 0.5, 0.9])
    chex.assert_trees_all_close(
      self.variant(jax.vmap(masked))(cutoffs), stacked(masked, cutoffs), rtol=1e-5, atol=1e-6
    )


# --- kernel nets and the masked continuous conv -----------------------------------------------


class ModulesTest(chex.TestCase):
  @chex.variants(with_jit=True, without_jit=True)
  def test_kernel_nets(self):
    p_Kx1 = jnp.linspace(-1, 1, 9)[:, None]
    for net in (MAGNet(6, hidden=8, num_layers=1, omega_0=30.0), SIREN(6, hidden=8)):
      variables = net.init(jax.random.key(0), p_Kx1)
      full = self.variant(net.apply)(variables, p_Kx1)
      chex.assert_shape(full, (9, 6))
      chex.assert_trees_all_close(full, net.apply(variables, p_Kx1), **TOL)
      # A selection computes exactly the selected columns.
      some = self.variant(lambda v, p, n=net: n.apply(v, p, out_channels=(1, 4)))(variables, p_Kx1)
      chex.assert_trees_all_close(some, full[:, jnp.array([1, 4])], **TOL)

  @chex.variants(with_jit=True, without_jit=True)
  def test_masked_continuous_conv_crop_equals_full(self):
    layer = MaskedContinuousConv(channels=4, kernel_grid=(33,), input_size=(32,), omega_0=30.0)
    x = jax.random.normal(jax.random.key(1), (2, 32, 4))
    variables = layer.init(jax.random.key(0), x)
    # The initial mask (sigma 0.075 on 33 samples over 32 inputs) keeps 5 taps.
    taps = grids.crop_taps(float(masks.gaussian_radius(0.075, T)), 33, 32, 32, False)
    assert taps == 5
    cropped = self.variant(lambda v, x: layer.apply(v, x, (taps,)))(variables, x)
    full = self.variant(layer.apply)(variables, x)
    chex.assert_shape(cropped, (2, 32, 4))
    chex.assert_trees_all_close(cropped, full, rtol=1e-5, atol=1e-6)
    # Half the resolution, the first 3 channels: the grid follows the input.
    half = self.variant(lambda v, x: layer.apply(v, x, in_channels=3))(variables, x[:, ::2, :3])
    chex.assert_shape(half, (2, 16, 3))


# --- cost and budget --------------------------------------------------------------------------


class CostTest(chex.TestCase):
  @chex.variants(with_jit=True, without_jit=True)
  def test_soft_cost_is_the_arch_cost(self):
    cfg = tiny_config()
    # float32 JAX parameters, as init gives them (the straight-through sums are exact in float32;
    # NumPy float64 parameters are not what the loss sees).
    params = jax.tree_util.tree_map(jnp.asarray, initial_arch_params(cfg))
    arch = compute_arch(params, cfg, 4)
    hard = arch_sizes(arch, cfg, 4)
    for metric in (cost.flops, cost.params):
      soft = self.variant(lambda p, m=metric: m(soft_sizes(p, cfg, arch, 4)))(params)
      chex.assert_trees_all_close(soft, np.float32(metric(hard)), rtol=1e-5)
    assert budget.arch_cost(arch, cfg, 4, "flops") == float(cost.flops(hard))

  @chex.variants(with_jit=True, without_jit=True, with_device=True, without_device=True)
  def test_budget_penalty(self):
    penalty = self.variant(lambda c: cost.budget_penalty(c, 100.0, 2.0))
    chex.assert_trees_all_close(penalty(np.float32(150.0)), 0.5, **TOL)  # 2 * (1.5 - 1)^2
    chex.assert_trees_all_close(penalty(np.float32(80.0)), 0.0, **TOL)  # within budget
    costs = jnp.array([50.0, 100.0, 150.0, 300.0])
    chex.assert_trees_all_close(
      self.variant(jax.vmap(lambda c: cost.budget_penalty(c, 100.0, 2.0)))(costs),
      np.array([0.0, 0.0, 0.5, 8.0]),
      **TOL,
    )


def test_budget_resolution_and_projection():
  cfg = tiny_config()
  params = jax.tree_util.tree_map(jnp.asarray, initial_arch_params(cfg))  # float32, as init's
  full = budget.arch_cost(compute_arch(params, cfg, 4), cfg, 4, "flops")
  budget_cfg = ml_collections.ConfigDict(dict(metric="flops", mode="hard", value=0, fraction=0.5))
  value = budget.resolve_budget(budget_cfg, params, cfg, 4)
  assert 0 < value <= budget.maximal_cost(params, cfg, 4, "flops")
  projected, arch = budget.project_to_budget(params, cfg, min(value, 0.8 * full), 4, "flops")
  assert budget.arch_cost(arch, cfg, 4, "flops") <= min(value, 0.8 * full)
  chex.assert_trees_all_equal_shapes_and_dtypes(projected, params)


# --- the model with a static Arch -------------------------------------------------------------


class ModelTest(chex.TestCase):
  @chex.variants(with_jit=True, without_jit=True)
  def test_apply_with_a_static_arch(self):
    cfg = tiny_config()
    variables = init_variables(cfg, jax.random.key(0))
    arch = compute_arch(variables["params"], cfg, 2)
    assert hash(arch) == hash(compute_arch(variables["params"], cfg, 2))  # a static argument
    x = jax.random.normal(jax.random.key(1), (2, 16, 2))
    apply = self.variant(
      lambda v, x, arch: DNArchCCNN(cfg).apply(v, x, arch, train=False), static_argnums=(2,)
    )
    logits = apply(variables, x, arch)
    chex.assert_shape(logits, (2, 3))
    chex.assert_tree_all_finite(logits)
    reference = jax.jit(
      lambda v, x, arch: DNArchCCNN(cfg).apply(v, x, arch, train=False), static_argnums=2
    )(variables, x, compute_arch(variables["params"], cfg, 2, crop=False))  # the same function
    chex.assert_trees_all_close(logits, reference, rtol=1e-4, atol=1e-5)


# --- the input checks: each fires, naming the argument ----------------------------------------


def _short_arch():
  """tiny_config's initial Arch less its last block."""
  arch = initial_arch(tiny_config())
  return dataclasses.replace(arch, blocks=arch.blocks[:1])


def _model_call(x, arch=None):
  cfg = tiny_config()
  return DNArchCCNN(cfg).init(jax.random.key(0), x, arch)


def _conv_layer(x, **kwargs):
  layer = MaskedContinuousConv(channels=4, kernel_grid=(33,), input_size=(32,), omega_0=30.0)
  layer = layer.clone(**kwargs.pop("layer", {}))
  return layer.init(jax.random.key(0), x, **kwargs)


def _sizes_with(**changes):
  cfg = tiny_config()
  s = arch_sizes(initial_arch(cfg), cfg, 4)
  return dataclasses.replace(s, **changes)


U_N = np.linspace(0, 1, 5)
X1 = np.zeros((2, 8, 3), np.float32)

# (what is called, the exception, a pattern naming the argument)
BAD_INPUTS = {
  "gaussian u_NxD": (lambda: masks.gaussian(1.0, 0.0, 1.0), AssertionError, "gaussian: u_NxD"),
  "gaussian mu_D": (
    lambda: masks.gaussian(np.zeros((5, 2)), np.zeros(3), np.ones(2)),
    AssertionError,
    "gaussian: mu_D .* D = 2",
  ),
  "gaussian sigma_D": (
    lambda: masks.gaussian(np.zeros((5, 2)), np.zeros(2), np.ones((4, 2))),
    AssertionError,
    "gaussian: sigma_D",
  ),
  "gaussian under jit": (
    lambda: jax.jit(masks.gaussian)(jnp.zeros((5, 2)), jnp.zeros(3), jnp.ones(2)),
    AssertionError,
    "gaussian: mu_D",
  ),
  "gaussian_radius threshold rank": (
    lambda: masks.gaussian_radius(0.1, np.array([0.1, 0.2])),
    AssertionError,
    "gaussian_radius: threshold",
  ),
  "gaussian_radius threshold traced": (
    lambda: jax.jit(masks.gaussian_radius)(0.1, 0.1),
    AssertionError,
    "gaussian_radius: threshold must be a concrete number",
  ),
  "gaussian_radius threshold range": (
    lambda: masks.gaussian_radius(0.1, 1.5),
    ValueError,
    "threshold must lie in",
  ),
  "sigmoid_cutoff cutoff": (
    lambda: masks.sigmoid_cutoff(U_N, np.zeros(3), 20.0),
    AssertionError,
    "sigmoid_cutoff: cutoff of shape \\(3,\\) must broadcast to u's shape \\(5,\\)",
  ),
  "sigmoid_cutoff temperature": (
    lambda: masks.sigmoid_cutoff(U_N, 0.5, np.ones(2)),
    AssertionError,
    "sigmoid_cutoff: temperature",
  ),
  "sigmoid_cutoff_extent threshold": (
    lambda: jax.jit(lambda t: masks.sigmoid_cutoff_extent(0.5, 20.0, t))(0.1),
    AssertionError,
    "sigmoid_cutoff_extent: threshold",
  ),
  "ramp z": (lambda: masks.ramp(U_N, np.zeros(2), 4.0), AssertionError, "ramp: z"),
  "ramp R": (lambda: masks.ramp(U_N, 0.0, np.ones((2, 1))), AssertionError, "ramp: R"),
  "ramp_extent threshold": (
    lambda: masks.ramp_extent(0.5, 4.0, np.ones(2)),
    AssertionError,
    "ramp_extent: threshold",
  ),
  "scaled_sigmoid_gate delta": (
    lambda: masks.scaled_sigmoid_gate(np.zeros(4), np.ones(3)),
    AssertionError,
    "scaled_sigmoid_gate: delta",
  ),
  "scaled_sigmoid_gate_extent threshold": (
    lambda: masks.scaled_sigmoid_gate_extent(np.zeros(4), 1.0, np.ones(4)),
    AssertionError,
    "scaled_sigmoid_gate_extent: threshold",
  ),
  "thresholded threshold": (
    lambda: masks.thresholded(np.zeros(4), np.ones(2)),
    AssertionError,
    "thresholded: threshold",
  ),
  "crop_taps radius": (
    lambda: grids.crop_taps(np.ones(2), 33, 32, 32, False),
    AssertionError,
    "crop_taps: radius",
  ),
  "crop_taps resolution": (
    lambda: grids.crop_taps(0.1, 33, 32, np.array([32, 16]), False),
    AssertionError,
    "crop_taps: resolution",
  ),
  "crop_taps n": (lambda: grids.crop_taps(0.1, 1, 32, 32, False), AssertionError, "crop_taps: n"),
  "crop_taps n integer": (
    lambda: grids.crop_taps(0.1, 33.0, 32, 32, False),
    AssertionError,
    "crop_taps: n must be an integer",
  ),
  "crop_taps input_size": (
    lambda: grids.crop_taps(0.1, 33, 0, 32, False),
    AssertionError,
    "crop_taps: input_size",
  ),
  "bucket_taps taps": (
    lambda: grids.bucket_taps(np.array([5, 7]), 2, 33),
    AssertionError,
    "bucket_taps: taps",
  ),
  "bucket_taps bucket": (
    lambda: grids.bucket_taps(5, 0, 33),
    AssertionError,
    "bucket_taps: bucket",
  ),
  "bucket_taps limit": (
    lambda: grids.bucket_taps(5, 2, np.array([3, 3])),
    AssertionError,
    "bucket_taps: limit",
  ),
  "position_grid positions_per_axis": (
    lambda: grids.position_grid([np.zeros(3), np.zeros((2, 2))]),
    AssertionError,
    "position_grid: positions_per_axis\\[1\\]",
  ),
  "depthwise_conv x": (
    lambda: conv.depthwise_conv(np.zeros((2, 3)), np.zeros((3, 3)), causal=False),
    ValueError,
    "depthwise_conv: x must be",
  ),
  "depthwise_conv kernel rank": (
    lambda: conv.depthwise_conv(X1, np.zeros((3, 3, 3)), causal=False),
    ValueError,
    "depthwise_conv: kernel rank",
  ),
  "depthwise_conv kernel channels": (
    lambda: conv.depthwise_conv(X1, np.zeros((3, 4)), causal=False),
    ValueError,
    "depthwise_conv: kernel has 4 channels, x has 3",
  ),
  "depthwise_conv dtype": (
    lambda: conv.depthwise_conv(jnp.zeros((2, 8, 3), jnp.int32), jnp.zeros((3, 3)), causal=False),
    ValueError,
    "depthwise_conv: needs floating inputs.*\\(x, kernel\\)",
  ),
  "spectral_resample x rank": (
    lambda: spectral.spectral_resample(jnp.zeros((2, 8)), (4,)),
    AssertionError,
    "spectral_resample: x_BxSxC must be \\[B, \\*spatial, C\\]",
  ),
  "spectral_resample x dtype": (
    lambda: spectral.spectral_resample(jnp.zeros((2, 8, 3), jnp.int32), (4,)),
    AssertionError,
    "spectral_resample: x_BxSxC must be floating",
  ),
  "spectral_resample out_size": (
    lambda: spectral.spectral_resample(jnp.zeros((2, 8, 3)), (4, 4)),
    ValueError,
    "spectral_resample: out_size",
  ),
  "spectral_resample mask_per_axis length": (
    lambda: spectral.spectral_resample(jnp.zeros((2, 8, 3)), (4,), [jnp.ones_like] * 2),
    AssertionError,
    "spectral_resample: mask_per_axis must hold one callable per spatial axis",
  ),
  "spectral_resample mask_per_axis shape": (
    lambda: spectral.spectral_resample(jnp.zeros((2, 8, 3)), (4,), [lambda f: jnp.ones(2)]),
    AssertionError,
    "spectral_resample: mask_per_axis\\[0\\] must map the 3 frequencies",
  ),
  "MAGNet p_KxD": (
    lambda: MAGNet(4, hidden=4, num_layers=1).init(jax.random.key(0), jnp.zeros(())),
    AssertionError,
    "MAGNet: p_KxD",
  ),
  "MAGNet out_channels count": (
    lambda: MAGNet(4, hidden=4, num_layers=1).init(jax.random.key(0), jnp.zeros((3, 1)), 6),
    AssertionError,
    "MAGNet: out_channels must select 1 to features=4",
  ),
  "SIREN out_channels index": (
    lambda: SIREN(4, hidden=4).init(jax.random.key(0), jnp.zeros((3, 1)), (0, 4)),
    AssertionError,
    "SIREN: out_channels must index channels below features=4",
  ),
  "MaskedContinuousConv x_BxSxC rank": (
    lambda: _conv_layer(jnp.zeros((2, 8, 8, 4))),
    AssertionError,
    "MaskedContinuousConv: x_BxSxC must be \\[B, \\*spatial, C\\] with 1 spatial",
  ),
  "MaskedContinuousConv x_BxSxC channels": (
    lambda: _conv_layer(jnp.zeros((2, 8, 5))),
    AssertionError,
    "MaskedContinuousConv: x_BxSxC has more channels than the layer's channels=4",
  ),
  "MaskedContinuousConv in_channels": (
    lambda: _conv_layer(jnp.zeros((2, 8, 3)), in_channels=(0, 1)),
    AssertionError,
    "MaskedContinuousConv: x_BxSxC must have one channel per in_channels",
  ),
  "MaskedContinuousConv taps": (
    lambda: _conv_layer(jnp.zeros((2, 8, 4)), taps=(3, 3)),
    AssertionError,
    "MaskedContinuousConv: taps",
  ),
  "MaskedContinuousConv kernel_grid": (
    lambda: _conv_layer(jnp.zeros((2, 8, 4)), layer=dict(kernel_grid=(33, 33))),
    AssertionError,
    "MaskedContinuousConv: kernel_grid",
  ),
  "flops s.stem.taps": (
    lambda: cost.flops(_sizes_with(stem=cost.ConvSizes((16,), (3, 3), 2, "direct"))),
    AssertionError,
    "flops: s.stem.taps must give one size per axis",
  ),
  "params s.stream": (
    lambda: cost.params(_sizes_with(stream=np.ones(3))),
    AssertionError,
    "params: s.stream must be a scalar",
  ),
  "layer_flops s.blocks": (
    lambda: cost.layer_flops(_sizes_with(stream=jnp.ones(2))),
    AssertionError,
    "layer_flops: s.stream",
  ),
  "budget_penalty cost": (
    lambda: cost.budget_penalty(jnp.ones(3), 100.0, 1.0),
    AssertionError,
    "budget_penalty: cost must be a scalar",
  ),
  "budget_penalty budget": (
    lambda: cost.budget_penalty(jnp.ones(()), 0.0, 1.0),
    AssertionError,
    "budget_penalty: budget must be > 0",
  ),
  "budget_penalty weight": (
    lambda: cost.budget_penalty(jnp.ones(()), 10.0, np.ones(2)),
    AssertionError,
    "budget_penalty: weight",
  ),
  "arch_sizes arch": (
    lambda: arch_sizes(_short_arch(), tiny_config(), 4),
    AssertionError,
    "arch_sizes: arch must have cfg.num_blocks=2 blocks",
  ),
  "arch_sizes batch_size": (
    lambda: arch_sizes(initial_arch(tiny_config()), tiny_config(), 0),
    AssertionError,
    "arch_sizes: batch_size must be >= 1",
  ),
  "arch_sizes batch_size integer": (
    lambda: arch_sizes(initial_arch(tiny_config()), tiny_config(), 2.5),
    AssertionError,
    "arch_sizes: batch_size must be an integer",
  ),
  "soft_sizes arch": (
    lambda: soft_sizes(initial_arch_params(tiny_config()), tiny_config(), _short_arch(), 4),
    AssertionError,
    "soft_sizes: arch must have",
  ),
  "soft_kernel_taps sigma_D": (
    lambda: soft_kernel_taps(jnp.ones(2), (33,), (32,)),
    AssertionError,
    "soft_kernel_taps: sigma_D must be \\[D\\]",
  ),
  "soft_kernel_taps kernel_grid": (
    lambda: soft_kernel_taps(jnp.ones(2), (33,), (32, 32)),
    AssertionError,
    "soft_kernel_taps: kernel_grid",
  ),
  "soft_kernel_taps resolution": (
    lambda: soft_kernel_taps(jnp.ones(1), (33,), (32,), (32, 16)),
    AssertionError,
    "soft_kernel_taps: resolution",
  ),
  "arch_cost metric": (
    lambda: budget.arch_cost(initial_arch(tiny_config()), tiny_config(), 4, "param"),
    ValueError,
    "arch_cost: metric must be one of",
  ),
  "project_to_budget budget": (
    lambda: budget.project_to_budget(
      initial_arch_params(tiny_config()), tiny_config(), 0.0, 4, "flops"
    ),
    AssertionError,
    "project_to_budget: budget must be > 0",
  ),
  "project_to_budget iterations": (
    lambda: budget.project_to_budget(
      initial_arch_params(tiny_config()), tiny_config(), 1e6, 4, "flops", iterations=0
    ),
    AssertionError,
    "project_to_budget: iterations",
  ),
  "project_to_budget metric": (
    lambda: budget.project_to_budget(
      initial_arch_params(tiny_config()), tiny_config(), 1e6, 4, "macs"
    ),
    ValueError,
    "project_to_budget: metric",
  ),
  "DNArchCCNN arch": (
    lambda: _model_call(jnp.zeros((2, 16, 2)), _short_arch()),
    AssertionError,
    "DNArchCCNN: arch must have cfg.num_blocks=2 blocks",
  ),
  "DNArchCCNN x_BxSxC": (
    lambda: _model_call(jnp.zeros((2, 12, 2))),
    ValueError,
    "DNArchCCNN: input x_BxSxC of shape \\(2, 12, 2\\) does not match",
  ),
  "DNArchCCNN x_BxSxC rank": (
    lambda: _model_call(jnp.zeros((2, 16))),
    ValueError,
    "DNArchCCNN: input x_BxSxC",
  ),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_input_fails_naming_the_argument(case):
  call, error, pattern = BAD_INPUTS[case]
  with pytest.raises(error, match=pattern):
    call()


def test_checks_accept_what_was_accepted():
  """Scalars and NumPy inputs where the functions always took them; nothing checked by value
  under jit (a traced mask parameter is fine, only the threshold must be concrete)."""
  assert masks.sigmoid_cutoff(0.3, 0.5, 20.0) > 0.5
  assert masks.ramp(0.0, 1.0) == 1.0
  chex.assert_shape(masks.gaussian(np.zeros((3, 4, 2)), np.zeros(2), 0.1), (3, 4))
  assert grids.crop_taps(np.float64(0.2), np.int64(33), 32, np.int64(32), False) == 7
  traced = jax.jit(lambda c, t: masks.thresholded(masks.sigmoid_cutoff(U_N, c, t), c))(0.5, 20.0)
  chex.assert_shape(traced, (5,))
  with chex.fake_jit():  # the checks are plain Python: they also run where jit is faked away
    chex.assert_shape(jax.jit(masks.gaussian)(np.zeros((3, 1)), 0.0, 1.0), (3,))
