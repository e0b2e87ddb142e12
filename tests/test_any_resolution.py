"""A trained network run at another input size: the same continuous kernels on the new grid."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from test_model import cached_init, set_masks, small_config
from test_spectral import band_limited_1d, band_limited_2d

from dnarch_jax.method import spectral
from dnarch_jax.method.arch import Arch, arch_at_input_size, compute_arch
from dnarch_jax.network.model import DNArchCCNN

RES_CUTOFFS = {1: [0.45, 0.8, 0.3, 1.0], 2: [(0.4, 0.7), (0.8, 1.2), 0.5, 0.5]}


def network(ndim: int):
  # omega_0 = 1: kernels smooth on the training grid, so a denser grid samples the same function
  # (a kernel net that oscillates between the trained taps has no such limit to converge to).
  cfg = small_config(ndim, omega_0=1.0)
  variables = cached_init(cfg)
  params = set_masks(
    variables["params"], cfg, np.random.default_rng(ndim), RES_CUTOFFS[ndim], depth_cutoff=1.0
  )
  return cfg, {"params": params, "batch_stats": variables["batch_stats"]}


def band_limited(cfg):
  if cfg.ndim == 1:
    return jnp.asarray(band_limited_1d(64, 10, np.random.default_rng(1), batch=4, channels=2))
  x = band_limited_2d(16, 12, 3, np.random.default_rng(1))
  return jnp.asarray(np.concatenate([x, x[..., :1]], axis=-1))  # 3 channels


def without_kernel_scale(arch: Arch) -> Arch:
  one = lambda c: dataclasses.replace(c, kernel_scale=1.0)
  blocks = tuple(dataclasses.replace(b, conv=one(b.conv)) for b in arch.blocks)
  return dataclasses.replace(arch, stem=one(arch.stem), blocks=blocks)


def test_at_the_training_size_it_is_the_trained_architecture():
  cfg, variables = network(2)
  arch = compute_arch(variables["params"], cfg, 4)
  assert arch_at_input_size(variables["params"], cfg, cfg.input_size, 4) == arch
  assert "kernel_scale" not in arch.to_json()  # arch.jsonl records keep their format
  bigger = arch_at_input_size(variables["params"], cfg, (32, 24), 4)
  assert Arch.from_dict(bigger.to_dict()) == bigger
  assert bigger.stem.kernel_scale == 0.25 and bigger.input_size == (32, 24)
  assert [b.resolution for b in bigger.blocks] == [
    tuple(2 * r for r in b.resolution) for b in arch.blocks
  ]
  with pytest.raises(ValueError, match="input_size"):
    arch_at_input_size(variables["params"], cfg, (32,), 4)


def sampled_kernels(cfg, variables, arch):
  x = jnp.zeros((1, *arch.input_size, cfg.in_channels))
  apply = lambda v, x: DNArchCCNN(cfg).apply(v, x, arch, train=False, mutable=["intermediates"])
  _, state = jax.jit(apply)(variables, x)
  return {
    name: layer["conv"]["masked_kernel"][0] if "conv" in layer else layer["masked_kernel"][0]
    for name, layer in state["intermediates"].items()
    if name == "stem_conv" or name.startswith("block_")
  }


def test_at_twice_the_size_every_trained_tap_is_sampled_again():
  # Exact: the kernel net and mask are evaluated at the new taps; at an integer factor the trained
  # taps are every other one of them (counted from the centre), scaled by the tap spacing ratio.
  cfg, variables = network(2)
  arch = compute_arch(variables["params"], cfg, 1)
  double = arch_at_input_size(variables["params"], cfg, (32, 24), 1)
  trained, new = sampled_kernels(cfg, variables, arch), sampled_kernels(cfg, variables, double)
  for name, k in trained.items():
    k2 = new[name]
    centre = [(t - 1) // 2 for t in k2.shape[:-1]]
    half = [(t - 1) // 2 for t in k.shape[:-1]]
    rows = slice(centre[0] - 2 * half[0], centre[0] + 2 * half[0] + 1, 2)
    cols = slice(centre[1] - 2 * half[1], centre[1] + 2 * half[1] + 1, 2)
    np.testing.assert_allclose(k2[rows, cols] / 0.25, k, rtol=1e-5, atol=1e-6, err_msg=name)


@pytest.mark.parametrize("ndim", [1, 2])
def test_an_upsampled_input_gives_the_trained_sizes_logits(ndim):
  # Approximate: a twice-denser grid computes the same continuous convolutions as Riemann sums
  # over twice the taps. Without the spacing ratio the sums double per axis and layer.
  cfg, variables = network(ndim)
  x = band_limited(cfg)
  model = jax.jit(lambda x, arch: DNArchCCNN(cfg).apply(variables, x, arch), static_argnums=1)
  want = model(x, compute_arch(variables["params"], cfg, 4))
  size = tuple(2 * n for n in cfg.input_size)
  double = arch_at_input_size(variables["params"], cfg, size, 4)
  x2 = spectral.spectral_resample(x, size)
  rel = lambda y: float(jnp.linalg.norm(y - want) / jnp.linalg.norm(want))
  error, unscaled = rel(model(x2, double)), rel(model(x2, without_kernel_scale(double)))
  assert error < 0.35 and unscaled > 5 * error, (error, unscaled)
  assert np.array_equal(np.argmax(model(x2, double), -1), np.argmax(want, -1))
