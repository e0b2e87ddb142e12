"""The DNArch CCNN: cropped network = thresholded full network; gradients reach every mask."""

import collections
import dataclasses
import functools
import math
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dnarch_jax.config import ModelConfig, validate
from dnarch_jax.method.arch import Arch, compute_arch, initial_arch
from dnarch_jax.method.arch_params import arch_params, initial_arch_params
from dnarch_jax.network.model import DNArchCCNN, compiler_options, init_variables

ALL_ON = dict(learn_kernel=True, learn_width=True, learn_resolution=True, learn_depth=True)


def small_config(ndim: int, **overrides) -> ModelConfig:
  if ndim == 1:
    base = dict(input_size=(64,), in_channels=2, causal=True, kernel_grid=0, kernel_bucket=4)
  else:
    base = dict(input_size=(16, 12), in_channels=3, kernel_grid=17)
  base.update(
    num_classes=5, num_blocks=4, width=24, hidden_width=32, kernel_net_hidden=8, omega_0=30.0,
    dropout=0.2, width_bucket=4, **ALL_ON,
  )  # fmt: skip
  base.update(overrides)
  return validate(ModelConfig(**base))


@functools.cache
def cached_init(cfg: ModelConfig):
  """One initialisation per configuration for the whole module (init compiles for seconds)."""
  return init_variables(cfg, jax.random.key(0))


def set_masks(
  params, cfg: ModelConfig, rng, resolution_cutoffs, depth_cutoff=0.5, sigma=(0.05, 0.3)
):
  """Random masks that crop kernel size and width; given depth and per-block resolution cutoffs
  (depth cutoff 0.5 keeps blocks 0 and 1 of 4)."""

  def value(path, leaf):
    name = path[-1].key
    block = next((int(k.key.split("_")[1]) for k in path if str(k.key).startswith("block_")), None)
    if name == "arch_sigma":
      return jnp.asarray(rng.uniform(*sigma, leaf.shape), leaf.dtype)
    if name in ("arch_stream_cutoff", "arch_hidden_cutoff"):
      return jnp.asarray(rng.uniform(0.2, 0.7), leaf.dtype)
    if name == "arch_depth_cutoff":
      return jnp.asarray(depth_cutoff, leaf.dtype)
    if name == "arch_resolution_cutoff":
      return jnp.asarray(np.broadcast_to(resolution_cutoffs[block], leaf.shape), leaf.dtype)
    return leaf

  return jax.tree_util.tree_map_with_path(value, params)


def apply_both(cfg, params, batch_stats, x, train):
  model = DNArchCCNN(cfg)
  variables = {"params": params, "batch_stats": batch_stats}
  cropped = compute_arch(params, cfg, x.shape[0])
  full = compute_arch(params, cfg, x.shape[0], crop=False)
  kwargs = dict(rngs={"dropout": jax.random.key(7)}, mutable=["batch_stats"]) if train else {}
  apply = jax.jit(
    lambda v, x, arch: model.apply(v, x, arch, train=train, **kwargs), static_argnums=2
  )
  out_c = apply(variables, x, cropped)
  out_f = apply(variables, x, full)
  if train:
    (out_c, _), (out_f, _) = out_c, out_f
  return cropped, full, out_c, out_f


def rel(a, b):
  return float(jnp.linalg.norm(a - b) / jnp.linalg.norm(b))


CASES = [
  # (ndim, per-block resolution cutoffs (normalised): lower, higher than the input, ...; input
  # size overrides: odd sizes resample between odd and even grids)
  (1, [0.45, 0.8, 0.3, 1.0], {}),
  (2, [(0.4, 0.7), (0.8, 1.2), 0.5, 0.5], {}),
]
ODD_CASES = [  # in training mode only, to keep the suite's time
  (1, [0.45, 0.8, 0.3, 1.0], dict(input_size=(63,))),  # 63 -> 34 -> 56
  (2, [(0.4, 0.7), (0.8, 1.2), 0.5, 0.5], dict(input_size=(15, 13))),  # -> (6, 10) -> (12, 13)
]


@pytest.mark.parametrize(
  "ndim,res_cutoffs,overrides,train",
  [(*case, train) for case in CASES for train in (False, True)]
  + [(*case, True) for case in ODD_CASES],
)
def test_cropped_network_equals_thresholded_full_network(ndim, res_cutoffs, overrides, train):
  cfg = small_config(ndim, **overrides)
  variables = cached_init(cfg)
  params = set_masks(variables["params"], cfg, np.random.default_rng(ndim), res_cutoffs)
  x = jax.random.normal(jax.random.key(1), (4, *cfg.input_size, cfg.in_channels))
  cropped, full, out_c, out_f = apply_both(cfg, params, variables["batch_stats"], x, train)

  # The masks really crop every dimension ...
  maximal = compute_arch(params, cfg, 4, crop=False)
  assert cropped.stream_width < cfg.width
  assert all(b.hidden_width < cfg.hidden_width for b in cropped.blocks if b.active)
  assert cropped.depth == 2 < cfg.num_blocks
  assert all(
    np.prod(c.conv.taps) < np.prod(m.conv.taps)
    for c, m in zip(cropped.blocks, maximal.blocks, strict=True)
    if c.active
  )
  # ... with a block below its input's resolution and the next one above it.
  res = [b.resolution for b in cropped.blocks if b.active]
  assert np.prod(res[0]) < np.prod(cfg.input_size) and np.prod(res[1]) > np.prod(res[0])
  assert [b.resolution for b in full.blocks if b.resample] == res
  # ... and the cropped network computes the same function.
  assert out_c.shape == out_f.shape == (4, cfg.num_classes)
  assert rel(out_c, out_f) < 1e-5


GATED = dict(width_mask="scaled_sigmoid_gate")


def set_gates(params, rng, logits):
  """Gate logits drawn by ``logits(rng, shape)``; depth cutoff 0.5 (blocks 0 and 1 of 4)."""

  def value(path, leaf):
    name = path[-1].key
    if name in ("arch_stream_gate", "arch_hidden_gate"):
      return jnp.asarray(logits(rng, leaf.shape), jnp.float32)
    if name == "arch_depth_cutoff":
      return jnp.asarray(0.5, leaf.dtype)
    return leaf

  return jax.tree_util.tree_map_with_path(value, params)


@pytest.mark.parametrize("ndim,train", [(1, False), (2, True)])
def test_gated_widths_crop_to_channel_subsets_equal_to_the_full_network(ndim, train):
  """DNAL's scaled sigmoid gate in place of the ordered width mask: the cropped network computes
  an arbitrary subset of channels and equals the full network with sub-threshold gates zeroed."""
  cfg = small_config(ndim, **GATED)
  variables = cached_init(cfg)
  rng = np.random.default_rng(ndim)
  # delta 1, threshold 0.1: logits below ln(1/9) = -2.2 are cut, about a fifth of N(0, 2.5^2).
  params = set_gates(variables["params"], rng, lambda r, shape: r.normal(0.0, 2.5, shape))
  x = jax.random.normal(jax.random.key(1), (4, *cfg.input_size, cfg.in_channels))
  cropped, full, out_c, out_f = apply_both(cfg, params, variables["batch_stats"], x, train)

  stream = np.asarray(params["arch_stream_gate"])
  expected = tuple(int(i) for i in np.flatnonzero(1 / (1 + np.exp(-stream)) >= cfg.threshold))
  assert cropped.stream_channels == expected and cropped.stream_width == len(expected)
  for b in (b for b in cropped.blocks if b.active):
    assert b.hidden_channels is not None and b.hidden_width == len(b.hidden_channels)
  kept = [cropped.stream_channels] + [b.hidden_channels for b in cropped.blocks if b.active]
  # Subsets, not prefixes: the ordered mask could not have described them.
  assert all(0 < len(k) < max(k) + 1 for k in kept)
  assert full.stream_channels is None and full.stream_width == cfg.width
  assert rel(out_c, out_f) < 1e-5


def test_every_gate_of_a_kept_channel_receives_a_gradient():
  cfg = small_config(1, **GATED)
  variables = cached_init(cfg)
  params = set_gates(variables["params"], np.random.default_rng(0), lambda r, s: r.uniform(0, 2, s))
  x = jax.random.normal(jax.random.key(1), (4, *cfg.input_size, cfg.in_channels))
  labels = jnp.arange(4) % cfg.num_classes
  arch = compute_arch(params, cfg, 4)
  assert arch.stream_width == cfg.width  # every gate above the threshold

  def loss(p):
    logits = DNArchCCNN(cfg).apply({"params": p, "batch_stats": variables["batch_stats"]}, x, arch)
    return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits), labels[:, None], 1))

  grads = jax.jit(jax.grad(loss))(params)
  assert grads["arch_stream_gate"].shape == (cfg.width,)
  assert np.all(np.abs(grads["arch_stream_gate"]) > 0)
  for l in (0, 1):  # the kept blocks
    g = grads[f"block_{l}"]["arch_hidden_gate"]
    assert g.shape == (cfg.hidden_width,) and np.all(np.abs(g) > 0)


def _remat_loss_and_grads(cfg, batch_size, remat):
  """Jitted ``(loss, grads)`` of the training-mode network with ``remat`` on or off, and the
  compiled gradient."""
  cfg = dataclasses.replace(cfg, remat=remat)
  variables = cached_init(dataclasses.replace(cfg, remat=False))
  x = jax.random.normal(jax.random.key(1), (batch_size, *cfg.input_size, cfg.in_channels))
  arch = compute_arch(variables["params"], cfg, batch_size)

  def loss(p):
    logits, _ = DNArchCCNN(cfg).apply(
      {"params": p, "batch_stats": variables["batch_stats"]}, x, arch, train=True,
      mutable=["batch_stats"], rngs={"dropout": jax.random.key(2)},
    )  # fmt: skip
    return jnp.sum(logits**2)

  fn = jax.jit(jax.value_and_grad(loss), compiler_options=compiler_options(cfg))
  compiled = fn.lower(variables["params"]).compile()  # compiled once, inspected and called
  return compiled(variables["params"]), compiled


@pytest.mark.parametrize("ndim", [1, 2])
def test_rematerialised_network_gives_the_same_loss_and_gradients(ndim):
  """``remat=True`` recomputes activations, masks and dropout in the backward pass: same
  numbers (dropout masks included) as keeping them."""
  cfg = small_config(ndim)
  ((plain, plain_grads), _), ((remat, remat_grads), _) = (
    _remat_loss_and_grads(cfg, 4, r) for r in (False, True)
  )
  assert float(remat) == pytest.approx(float(plain), rel=1e-6)
  for a, b in zip(jax.tree.leaves(remat_grads), jax.tree.leaves(plain_grads), strict=True):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


def test_rematerialisation_survives_xla_and_halves_the_temporaries():
  """XLA:CPU undoes ``jax.checkpoint`` unless ``compiler_options`` keeps its barriers: with them
  the gradient's temporaries must fall well below those of keeping every activation."""
  cfg = small_config(1, input_size=(1024,), **dict.fromkeys(ALL_ON, False))
  plain_bytes, remat_bytes = (
    _remat_loss_and_grads(cfg, 32, r)[1].memory_analysis().temp_size_in_bytes for r in (False, True)
  )
  assert remat_bytes < 0.7 * plain_bytes, (remat_bytes, plain_bytes)


@pytest.mark.parametrize("ndim", [1, 2])
def test_rematerialised_gradient_keeps_activations_without_copying_them(ndim):
  """JAX marks every floating-point value a remat region saves with a no-op ``reduce_precision``,
  which XLA:CPU materialises as a copy; the model's regions save only their inputs (and [C]
  BatchNorm statistics), so the compiled gradient holds no activation-sized one."""
  cfg = small_config(ndim)
  _, compiled = _remat_loss_and_grads(cfg, 4, True)
  shapes = re.findall(r"= f32\[([\d,]*)\]\S* reduce-precision\(", compiled.as_text())
  sizes = [math.prod(int(d) for d in s.split(",") if d) for s in shapes]
  assert sizes and max(sizes) <= cfg.hidden_width, sizes


def test_dense_head_cropped_equals_full_and_returns_input_resolution():
  cfg = small_config(2, head="dense")
  variables = cached_init(cfg)
  params = set_masks(variables["params"], cfg, np.random.default_rng(3), [0.5, 0.5, 0.5, 0.5])
  x = jax.random.normal(jax.random.key(1), (2, *cfg.input_size, cfg.in_channels))
  _, _, out_c, out_f = apply_both(cfg, params, variables["batch_stats"], x, False)
  assert out_c.shape == (2, *cfg.input_size, cfg.num_classes)
  assert rel(out_c, out_f) < 1e-5


@pytest.mark.parametrize("ndim", [1, 2])
def test_every_architecture_parameter_receives_a_gradient(ndim):
  cfg = small_config(ndim)
  variables = cached_init(cfg)
  # Every block kept (gates below 1 but above the threshold) and every kernel at least 3 taps per
  # axis: a kernel axis cropped to its centre tap has mask exactly 1 there, so its sigma then
  # learns only from the cost term.
  rng = np.random.default_rng(5)
  params = set_masks(variables["params"], cfg, rng, [0.6] * 4, 0.9, sigma=(0.3, 0.5))
  x = jax.random.normal(jax.random.key(1), (4, *cfg.input_size, cfg.in_channels))
  labels = jnp.arange(4) % cfg.num_classes
  arch = compute_arch(params, cfg, 4)

  def loss(p):
    logits, _ = DNArchCCNN(cfg).apply(
      {"params": p, "batch_stats": variables["batch_stats"]}, x, arch, train=True,
      rngs={"dropout": jax.random.key(2)}, mutable=["batch_stats"],
    )  # fmt: skip
    return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits), labels[:, None], 1))

  grads = arch_params(jax.jit(jax.grad(loss))(params))
  flat = jax.tree_util.tree_flatten_with_path(grads)[0]
  expected = 2 + 1 + 3 * cfg.num_blocks  # stem sigma, stream, depth; per block sigma/hidden/res
  assert len(flat) == expected
  for path, g in flat:
    assert np.all(np.abs(g) > 0), f"no gradient for {jax.tree_util.keystr(path)}"


def test_ccnn_without_learned_dimensions_has_no_masks_and_full_sizes():
  cfg = small_config(
    2, learn_kernel=False, learn_width=False, learn_resolution=False, learn_depth=False
  )
  variables = cached_init(cfg)
  assert arch_params(variables["params"]) == {}
  arch = initial_arch(cfg)
  assert arch == compute_arch({}, cfg, crop=False)
  assert arch.stream_width == cfg.width and arch.depth == cfg.num_blocks
  assert all(b.conv.taps == (17, 17) and not b.resample for b in arch.blocks)


def test_initial_arch_crops_kernels_and_keeps_everything_else():
  cfg = small_config(2)
  arch = initial_arch(cfg)
  assert arch.stem.taps == (3, 3)  # grid 17 over 16 pixels, sigma 0.075: radius 0.161, step 1/8
  assert arch.stream_width == cfg.width and arch.depth == cfg.num_blocks
  assert all(b.resolution == cfg.input_size for b in arch.blocks)


@pytest.mark.parametrize("overrides", [{}, GATED])
def test_arch_round_trips_through_json_and_is_hashable(overrides):
  cfg = small_config(1, **overrides)
  arch = initial_arch(cfg)
  if overrides:  # gates keep index sets
    logits = lambda r, shape: r.normal(0.0, 3.0, shape)
    params = set_gates(initial_arch_params(cfg), np.random.default_rng(0), logits)
    arch = compute_arch(params, cfg)
    assert arch.stream_channels is not None
  again = Arch.from_dict(__import__("json").loads(arch.to_json()))
  assert again == arch and hash(again) == hash(arch)
  assert dataclasses.replace(arch, stream_width=8) != arch


def test_wrong_input_shape_is_a_clear_error():
  cfg = small_config(1)
  variables = cached_init(cfg)
  with pytest.raises(ValueError, match="does not match"):  # raised while tracing
    DNArchCCNN(cfg).apply(variables, jnp.zeros((2, 32, cfg.in_channels)), initial_arch(cfg))


@pytest.mark.parametrize("alpha", [0.5, 1.5, 6.0])
def test_gamma_sampler_matches_the_gamma_distribution(alpha):
  from dnarch_jax.network.kernelnets import sample_gamma

  x = np.asarray(sample_gamma(jax.random.key(0), alpha, (200_000,)))
  assert np.all(x > 0)
  np.testing.assert_allclose(x.mean(), alpha, rtol=0.01)  # Gamma(a, 1): mean a, variance a
  np.testing.assert_allclose(x.var(), alpha, rtol=0.03)


def _dot_operand_dtypes(fn, *args) -> collections.Counter:
  """Dot products in ``fn``'s lowered program, by their first operand's dtype."""
  text = jax.jit(fn).lower(*args).as_text()
  return collections.Counter(
    re.findall(r"stablehlo\.dot_general .*: \(tensor<[^>]*x(bf16|f32)>", text)
  )


@pytest.mark.parametrize("ndim", [1, 2])
def test_bfloat16_network_computes_in_bfloat16_within_rounding_of_float32(ndim):
  """``compute_dtype="bfloat16"`` with the float32 network's parameters: the activations'
  products (a stem mixer of one input channel excepted: elementwise, in float32) take bfloat16
  operands, the kernel nets and head float32 ones; logits and gradients are float32, within
  bfloat16 rounding of float32's (measured: logits 0.3%, all gradients 0.8-0.9% relative, the
  worst leaf 13%, apart from leaves whose float32 gradient is 0 up to rounding, ~1e-6)."""
  cfg = small_config(ndim, dropout=0.0)
  low = dataclasses.replace(cfg, compute_dtype="bfloat16")
  variables = cached_init(cfg)
  x = jax.random.normal(jax.random.key(1), (4, *cfg.input_size, cfg.in_channels))
  arch = compute_arch(variables["params"], cfg, 4, crop=False)
  forward = lambda c: lambda v, x: DNArchCCNN(c).apply(v, x, arch, train=False)
  products = 2 * cfg.num_blocks + (cfg.in_channels > 1)  # mixers, linears, a stem mixer
  assert _dot_operand_dtypes(forward(low), variables, x)["bf16"] == products
  logits, logits_low = (forward(c)(variables, x) for c in (cfg, low))
  assert logits_low.dtype == jnp.float32
  assert rel(logits_low, logits) < 0.02
  (_, grads), _ = _remat_loss_and_grads(cfg, 4, True)
  (loss_low, grads_low), _ = _remat_loss_and_grads(low, 4, True)
  assert np.isfinite(float(loss_low))
  flat = lambda tree: jnp.concatenate([a.ravel() for a in jax.tree.leaves(tree)])
  assert rel(flat(grads_low), flat(grads)) < 0.05
  for a, b in zip(jax.tree.leaves(grads_low), jax.tree.leaves(grads), strict=True):
    assert a.dtype == jnp.float32
    assert float(jnp.linalg.norm(b)) < 1e-4 or rel(a, b) < 0.4
