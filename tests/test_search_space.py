"""The search space: boxes, the architecture optimiser's per-dimension travel, bucket boundaries."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from dnarch_jax.config import ModelConfig, validate
from dnarch_jax.method import budget, grids, search_space
from dnarch_jax.method.arch import compute_arch
from dnarch_jax.method.arch_params import flat_arch_params, initial_arch_params
from dnarch_jax.method.crops import bucket_boundaries
from dnarch_jax.network.model import init_variables
from dnarch_jax.run.optim import make_optimizer, param_labels

CFG_2D = validate(
  ModelConfig(
    input_size=(16, 12), in_channels=3, num_classes=5, kernel_grid=17, num_blocks=3, width=24,
    hidden_width=32, kernel_net_hidden=8, learn_width=True, learn_resolution=True,
    learn_depth=True,
  )
)  # fmt: skip
CFG_1D = validate(
  ModelConfig(
    input_size=(64,), in_channels=1, num_classes=4, kernel_grid=0, causal=True, num_blocks=2,
    width=16, hidden_width=16, kernel_net_hidden=8, kernel_bucket=4, learn_width=True,
    learn_resolution=True, learn_depth=True,
  )
)  # fmt: skip


@pytest.mark.parametrize("cfg", [CFG_1D, CFG_2D], ids=["1d", "2d"])
def test_box_ends_are_the_smallest_and_largest_architecture(cfg):
  """At the low end of every box the crop is minimal (3 taps, 2 causal: a kernel never shrinks
  to its centre alone, where the task loss could not grow it again; one bucket of channels; one
  block; the lowest resolution), at the high end maximal, and the top of a cutoff's box keeps
  every element's mask at 1 - t."""
  params = init_variables(cfg, jax.random.key(0))["params"]

  def at_end(high):
    def end(path, leaf):
      name = path[-1].key
      if not name.startswith("arch_"):
        return leaf
      return jnp.broadcast_to(search_space.bounds(name, cfg)[int(high)], leaf.shape)

    return compute_arch(jax.tree_util.tree_map_with_path(end, params), cfg)

  small, large = at_end(False), at_end(True)
  assert small.depth == 1 and large.depth == cfg.num_blocks
  assert small.stream_width == cfg.width_bucket and large.stream_width == cfg.width
  assert small.blocks[0].resolution == (2,) * cfg.ndim
  assert large.blocks[0].resolution == cfg.input_size
  smallest = grids.bucket_taps(2 if cfg.causal else 3, cfg.kernel_bucket, 10**6)
  assert small.stem.taps == (smallest,) * cfg.ndim
  full = compute_arch(params, cfg, crop=False)
  assert large.stem.taps == full.stem.taps and large.blocks[0].conv.taps == full.blocks[0].conv.taps
  a = np.log(1 / cfg.threshold - 1) / cfg.width_temperature
  assert search_space.bounds("arch_stream_cutoff", cfg)[1] == pytest.approx(1 + a)


def test_a_consistent_gradient_crosses_every_dimension_in_one_over_arch_lr_steps():
  """Adam steps by its rate whatever the gradient's scale, and each dimension's rate is scaled by
  its range: ``n`` steps at ``arch_lr`` with a constant gradient move ``n * arch_lr`` ranges,
  for the kernel's small sigma box as for a cutoff's, and the clip holds the box's end."""
  cfg = CFG_2D
  params = search_space.clip_to_bounds(init_variables(cfg, jax.random.key(0))["params"], cfg)
  ranges = search_space.dimension_ranges(cfg)
  assert ranges["kernel"] < 0.5 < 1 < ranges["width"] == ranges["depth"]
  optim = dict(lr=1e-3, weight_decay=0.0, warmup_epochs=0.0, arch_lr_factor=1.0, arch_lr=0.003)
  tx = make_optimizer(optim, params, total_steps=10**6, steps_per_epoch=1, arch_ranges=ranges)
  # A gradient that shrinks every architecture parameter, a thousand times larger for some.
  grads = jax.tree_util.tree_map(lambda p: jnp.ones_like(p), params)
  grads["arch_stream_cutoff"] = jnp.asarray(1e3)

  @jax.jit
  def step(p, state):
    updates, state = tx.update(grads, state, p)
    return search_space.clip_to_bounds(optax.apply_updates(p, updates), cfg), state

  state, p = tx.init(params), params
  for _ in range(5):
    p, state = step(p, state)
  moved = flat_arch_params(jax.tree_util.tree_map(jnp.subtract, params, p))
  labels = flat_arch_params(jax.tree_util.tree_map(lambda _: 0.0, params))
  for name in labels:
    dimension = {"arch_sigma": "kernel", "arch_resolution_cutoff": "resolution"}.get(
      name.rsplit("/", 1)[-1], "depth" if "depth" in name else "width"
    )
    # 4 steps: the schedule's one warm-up step has rate 0.
    np.testing.assert_allclose(moved[name], 4 * 0.003 * ranges[dimension], rtol=1e-3)
  # Pushed on, every parameter stops at the bottom of its box.
  for _ in range(1000):
    p, state = step(p, state)
  for name, value in flat_arch_params(p).items():
    low = search_space.bounds(name.rsplit("/", 1)[-1], cfg)[0]
    np.testing.assert_allclose(value, low, rtol=1e-5)
  assert set(jax.tree_util.tree_leaves(param_labels(params))) == {
    "weights", "arch/kernel", "arch/width", "arch/resolution", "arch/depth",
  }  # fmt: skip


@pytest.mark.parametrize("cfg", [CFG_1D, CFG_2D], ids=["1d", "2d"])
def test_bucket_boundaries_are_where_compute_arch_changes(cfg):
  """Just below each boundary the parameter gives one size, just above it the next, as
  compute_arch (the host's crop) sees it; the listed sizes are those between the boundaries."""
  params = search_space.clip_to_bounds(init_variables(cfg, jax.random.key(0))["params"], cfg)
  arch = compute_arch(params, cfg)
  boundaries = bucket_boundaries(params, cfg, arch)
  assert set(boundaries) == set(flat_arch_params(params))

  def size_at(name, axis, value):
    def set_value(path, leaf):
      flat = "/".join(str(k.key) for k in path)
      return leaf.at[axis].set(value) if flat == name and leaf.ndim else (
        jnp.asarray(value, leaf.dtype) if flat == name else leaf
      )  # fmt: skip

    a = compute_arch(jax.tree_util.tree_map_with_path(set_value, params), cfg)
    leaf = name.rsplit("/", 1)[-1]
    if leaf == "arch_depth_cutoff":
      return a.depth
    if leaf == "arch_stream_cutoff":
      return a.stream_width
    block = a.blocks[int(name.split("/")[0][6:])] if name.startswith("block_") else None
    if leaf == "arch_hidden_cutoff":
      return block.hidden_width
    if leaf == "arch_resolution_cutoff":
      return block.resolution[axis]
    conv = a.stem if name.startswith("stem") else block.conv
    return conv.taps[axis]

  checked = 0
  for name, axes in boundaries.items():
    for axis, b in enumerate(axes):
      assert len(b["sizes"]) == len(b["at"]) + 1 and b["sizes"] == sorted(b["sizes"])
      for i, v in enumerate(b["at"][:4]):
        assert size_at(name, axis, v - 1e-4) == b["sizes"][i], (name, v)
        assert size_at(name, axis, v + 1e-4) == b["sizes"][i + 1], (name, v)
        checked += 1
  assert checked > 20


def test_every_configurable_mask_name_has_its_kind():
  from dnarch_jax import config
  from dnarch_jax.method import mask_kinds

  assert set(config.WIDTH_MASKS) == set(mask_kinds.WIDTH_MASKS)
  assert set(config.RESOLUTION_MASKS) == set(mask_kinds.RESOLUTION_MASKS)


def test_a_projection_into_the_budget_keeps_every_kernel_in_its_blocks_box():
  """Blocks running below the input's resolution have kernel boxes of their own (3 taps, 2
  causal, at their resolution). The projection's smallest architecture and its result must lie
  in them, else the train step's clip grows the kernels back after the first update, over the
  budget the projection promised (seen in run h3 of experiments/results/search_main_job.jsonl:
  the main job's network widened to 48 channels, projected to 14x14 blocks with 1-tap kernels,
  had 3x3 kernels at the first refresh)."""
  cfg = validate(dataclasses.replace(CFG_2D, resolution_init_cutoff=0.45))
  params = search_space.clip_to_bounds(initial_arch_params(cfg), cfg)
  start = compute_arch(params, cfg, 4)
  assert all(b.resolution < cfg.input_size for b in start.blocks)  # blocks below the input's
  floor = budget.minimal_cost(params, cfg, 4, "flops")
  full = budget.arch_cost(start, cfg, 4, "flops")
  for value in (floor, 0.5 * (floor + full)):
    projected, arch = budget.project_to_budget(params, cfg, value, 4, "flops")
    assert budget.arch_cost(arch, cfg, 4, "flops") <= value
    assert all(min(b.conv.taps) >= 3 for b in arch.blocks)
    # A fixed point of the train step's clip: the first update starts from this architecture.
    clipped = search_space.clip_to_bounds(projected, cfg, arch)
    assert compute_arch(clipped, cfg, 4) == arch
