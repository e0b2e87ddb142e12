"""The cost model against XLA's cost analysis, and the soft cost's gradients."""

import functools
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dnarch_jax.config import ModelConfig, load_config, validate
from dnarch_jax.interfaces.cli import main
from dnarch_jax.interfaces.summary import xla_forward_flops
from dnarch_jax.method import cost, search_space
from dnarch_jax.method.arch import compute_arch
from dnarch_jax.method.arch_params import arch_params
from dnarch_jax.method.sizes import arch_sizes, soft_sizes
from dnarch_jax.network.model import init_variables
from dnarch_jax.run.experiment import run_model_config


@functools.cache
def setup(task):
  config = load_config(f"experiments/{task}.py:dnarch")
  cfg = run_model_config(config)
  return cfg, init_variables(cfg, jax.random.key(0)), int(config.data.batch_size)


def with_masks(params, sigma, width, resolution, depth):
  def value(path, leaf):
    name = path[-1].key
    table = {
      "arch_sigma": sigma,
      "arch_stream_cutoff": width,
      "arch_hidden_cutoff": width,
      "arch_resolution_cutoff": resolution,
      "arch_depth_cutoff": depth,
    }
    return jnp.full_like(leaf, table[name]) if name in table else leaf

  return jax.tree_util.tree_map_with_path(value, params)


ARCHS = {
  "initial": dict(sigma=0.075, width=1.1, resolution=1.1, depth=1.1),
  "cropped": dict(sigma=0.2, width=0.4, resolution=0.55, depth=0.6),
  "small": dict(sigma=0.03, width=0.15, resolution=0.3, depth=0.2),
}


@pytest.mark.parametrize("task", ["smnist", "mnist"])
@pytest.mark.parametrize("which", ["initial", "cropped", "small", "uncropped"])
def test_cost_model_within_10_percent_of_xla(task, which):
  cfg, variables, batch = setup(task)
  masks = ARCHS.get(which, ARCHS["initial"])
  params = with_masks(variables["params"], **masks)
  arch = compute_arch(params, cfg, batch, crop=which != "uncropped")
  model_flops = float(cost.flops(arch_sizes(arch, cfg, batch)))
  xla_flops = xla_forward_flops(cfg, {**variables, "params": params}, arch, batch)
  assert abs(model_flops / xla_flops - 1) < 0.10, (arch, model_flops, xla_flops)


def test_the_three_architectures_differ():
  cfg, variables, batch = setup("mnist")
  archs = {
    k: compute_arch(with_masks(variables["params"], **m), cfg, batch) for k, m in ARCHS.items()
  }
  assert len(set(archs.values())) == 3
  assert archs["small"].depth < archs["cropped"].depth < archs["initial"].depth


@pytest.mark.parametrize("task", ["smnist", "mnist", "mnist_dense"])
def test_soft_cost_is_the_crop_cost_and_differentiable_in_every_kept_mask(task):
  """The loss's cost is the cost of the Arch the current mask parameters crop to (computed in
  the graph, traced, against compute_arch on the host), at random points of the search space,
  half of them with every block at the input resolution (a dense head then needs no resample:
  the traced cost once priced one there); and every mask parameter that sizes a kept part of
  the network gets a gradient."""
  cfg, variables, batch = setup(task)
  rng = np.random.default_rng(0)

  def draw(full_resolution):
    def value(path, leaf):
      name = path[-1].key
      if not name.startswith("arch_"):
        return leaf
      low, high = search_space.bounds(name, cfg)
      if full_resolution and name == "arch_resolution_cutoff":
        low = high
      return jnp.asarray(rng.uniform(low, high, leaf.shape), leaf.dtype)

    return lambda path, leaf: value(path, leaf)

  soft = jax.jit(lambda p, arch: cost.flops(soft_sizes(p, cfg, arch, batch)), static_argnums=1)
  for i in range(6):
    params = jax.tree_util.tree_map_with_path(draw(i % 2 == 1), variables["params"])
    arch = compute_arch(params, cfg, batch)
    hard_value = float(cost.flops(arch_sizes(arch, cfg, batch)))
    assert float(soft(params, arch)) == pytest.approx(hard_value, rel=1e-5), arch
    grads = arch_params(jax.grad(soft)(params, arch))
    kept = [f"['block_{l}']" for l, b in enumerate(arch.blocks) if b.active]
    for path, g in jax.tree_util.tree_flatten_with_path(grads)[0]:
      name = jax.tree_util.keystr(path)
      if name.startswith("['block_") and not name.startswith(tuple(kept)):
        continue  # a skipped block costs nothing, whatever its own masks say
      if "arch_sigma" in name and "fft" in str(arch):
        continue  # the FFT routes' cost does not depend on the kernel size
      assert np.all(np.abs(g) > 0), (name, arch)


def test_gated_widths_cost_the_kept_channels_softly_and_in_xla():
  """Scaled sigmoid gates as the width mask: the soft cost of saturated gates (0 or 1) is the
  integer cost of the ``Arch`` they crop to, and that is within 10% of XLA's count.

  On the FFT route, whose count has no integer effect in the channels (the shift and native
  routes' exact count pads them to blocks of 8, which a soft width cannot)."""
  cfg = validate(
    ModelConfig(
      input_size=(16, 12), in_channels=3, num_classes=5, kernel_grid=17, num_blocks=3, width=24,
      hidden_width=32, kernel_net_hidden=8, learn_kernel=False, learn_width=True,
      width_mask="scaled_sigmoid_gate", conv_route="fft",
    )
  )  # fmt: skip
  variables = init_variables(cfg, jax.random.key(0))
  rng = np.random.default_rng(0)
  saturate = lambda path, leaf: (
    jnp.asarray(rng.choice([-30.0, 30.0], leaf.shape, p=[0.4, 0.6]), leaf.dtype)
    if str(path[-1].key).endswith("_gate")
    else leaf
  )
  params = jax.tree_util.tree_map_with_path(saturate, variables["params"])
  arch = compute_arch(params, cfg, 8)
  assert arch.stream_width < cfg.width and arch.stream_channels != tuple(range(arch.stream_width))
  hard = float(cost.flops(arch_sizes(arch, cfg, 8)))
  soft = float(cost.flops(soft_sizes(params, cfg, arch, 8)))
  assert soft == pytest.approx(hard, rel=1e-6)
  xla = xla_forward_flops(cfg, {**variables, "params": params}, arch, 8)
  assert abs(hard / xla - 1) < 0.10, (hard, xla)


@pytest.mark.parametrize("task", ["smnist", "mnist"])
def test_summary_cli_prints_model_and_xla_flops(task, capsys):
  assert main(["summary", "--config", f"experiments/{task}.py:smoke", "--json"]) == 0
  out = json.loads(capsys.readouterr().out)
  assert abs(out["flops_model"] / out["flops_xla"] - 1) < 0.10
  assert {"params", "layers"} <= set(out)
  assert [layer["name"] for layer in out["layers"]] == ["stem", "block_0", "block_1", "head"]
  assert main(["summary", "--config", f"experiments/{task}.py:smoke", "--no-xla"]) == 0
  assert "FLOPs per example" in capsys.readouterr().out
