"""Training a given architecture: mask parameters that crop to an ``Arch`` (``params_for_arch``),
the ``arch_init`` config field, and its errors."""

import dataclasses
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dnarch_jax.config import load_config
from dnarch_jax.method import search_space
from dnarch_jax.method.arch import Arch, compute_arch, load_arch, sizes_of
from dnarch_jax.method.crops import params_for_arch
from dnarch_jax.network.model import init_variables
from dnarch_jax.run.experiment import run_model_config
from dnarch_jax.run.train import Trainer

FAST = ["progress=False", "eval_every=1000", "checkpoint_every=1000", "arch_refresh_every=1"]


def random_arch_params(params, cfg, rng):
  """Mask parameters drawn in their boxes (the kernels' at the layers' resolutions)."""

  def draw(path, leaf):
    name = path[-1].key
    if not name.startswith("arch_"):
      return leaf
    low, high = search_space.bounds(name, cfg)
    return jnp.asarray(rng.uniform(low, high, leaf.shape), leaf.dtype)

  p = search_space.clip_to_bounds(jax.tree_util.tree_map_with_path(draw, params), cfg)
  return search_space.clip_to_bounds(p, cfg, compute_arch(p, cfg, 64))


@pytest.mark.parametrize("task", ["smnist", "mnist", "mnist_dense"])
def test_params_for_arch_crop_to_the_architecture_they_were_set_for(task):
  """Two routes to one Arch: random mask parameters crop to it; parameters set from it (starting
  anywhere else) crop to it too."""
  cfg = run_model_config(load_config(f"experiments/{task}.py:dnarch"))
  params = init_variables(cfg, jax.random.key(0))["params"]
  rng = np.random.default_rng(0)
  for _ in range(4):
    target = compute_arch(random_arch_params(params, cfg, rng), cfg, 64)
    assert compute_arch(params_for_arch(params, cfg, target, 64), cfg, 64) == target


def test_an_architecture_outside_the_space_names_the_parameter():
  cfg = run_model_config(load_config("experiments/mnist.py:main"))
  params = init_variables(cfg, jax.random.key(0))["params"]
  start = compute_arch(params, cfg, 64)
  too_wide = dataclasses.replace(start, stream_width=33)
  with pytest.raises(ValueError, match=r"arch_init: arch_stream_cutoff cannot crop to 33"):
    params_for_arch(params, cfg, too_wide, 64, "arch_init")
  fewer = dataclasses.replace(start, blocks=start.blocks[:2])
  with pytest.raises(ValueError, match="arch_init: 2 blocks"):
    params_for_arch(params, cfg, fewer, 64, "arch_init")


def test_load_arch_reads_an_arch_a_record_or_a_log(tmp_path):
  cfg = run_model_config(load_config("experiments/mnist.py:main"))
  arch = compute_arch(init_variables(cfg, jax.random.key(0))["params"], cfg, 64)
  (tmp_path / "a.json").write_text(json.dumps(arch.to_dict()))
  (tmp_path / "b.json").write_text(json.dumps({"flops": 1.0, "arch": arch.to_dict()}, indent=2))
  other = dataclasses.replace(arch, stream_width=16)
  log = [json.dumps({"step": s, "arch": a.to_dict()}) for s, a in ((0, other), (50, arch))]
  (tmp_path / "arch.jsonl").write_text("\n".join(log) + "\n")
  for name in ("a.json", "b.json", "arch.jsonl"):
    assert load_arch(str(tmp_path / name)) == arch
  with pytest.raises(ValueError, match="arch_init: no file"):
    load_arch(str(tmp_path / "missing.json"))
  (tmp_path / "bad.json").write_text('{"flops": 1}')
  with pytest.raises(ValueError, match="arch_init: .*bad.json holds no architecture"):
    load_arch(str(tmp_path / "bad.json"))


def test_a_run_from_arch_init_trains_that_architecture_fixed(tmp_path):
  """With arch_init, masks frozen and no budget, every refresh keeps the given architecture."""
  base = load_config("experiments/mnist.py:smoke", FAST)
  cfg = run_model_config(base)
  params = init_variables(cfg, jax.random.key(3))["params"]
  target = compute_arch(random_arch_params(params, cfg, np.random.default_rng(3)), cfg, 1)
  path = tmp_path / "arch.json"
  path.write_text(json.dumps(target.to_dict()))
  overrides = [f"arch_init={path}", "optim.arch_lr=0.0", "total_steps=3", "log_every=1"]
  trainer = Trainer(load_config("experiments/mnist.py:smoke", [*FAST, *overrides]), tmp_path / "r")
  result = trainer.run()
  logged = [json.loads(line) for line in (tmp_path / "r" / "arch.jsonl").read_text().splitlines()]
  assert {sizes_of(Arch.from_dict(r["arch"])) for r in logged} == {sizes_of(target)}
  assert sizes_of(Arch.from_dict(result["arch"])) == sizes_of(target)


def test_a_run_starts_with_every_kernel_in_its_blocks_box(tmp_path):
  """A block below the input's resolution has a kernel box of its own (3 taps at its
  resolution). The train step clips every kernel to its block's box after each update, so the
  start must lie in it too, or the first update changes the architecture by itself: here a
  sigma of 0.04 is 3 taps at the input's 28x28 and 1 tap at the blocks' resolution."""
  overrides = [*FAST, "model.resolution_init_cutoff=0.45", "model.kernel_sigma_init=0.04"]
  overrides += ["budget.value=1e12"]  # no projection: the start as configured
  trainer = Trainer(load_config("experiments/mnist.py:smoke", overrides), tmp_path / "r")
  params = jax.device_get(trainer.state.params)
  arch = compute_arch(params, trainer.cfg, trainer.batch_size)
  assert all(b.resolution < (28, 28) for b in arch.blocks)
  assert all(min(b.conv.taps) >= 3 for b in arch.blocks), arch
  clipped = search_space.clip_to_bounds(params, trainer.cfg, arch)
  assert jax.tree.all(jax.tree.map(np.array_equal, clipped, params))
