"""Every experiment file: its variants load and validate, and its smoke variant trains.

Datasets that are not shipped (CIFAR, STL10, Speech Commands) train under tfds's mock data or a
fake source; MNIST-based tasks train on the real shipped files. A folder of the user's own NumPy
arrays trains through the command line with no code change.
"""

import json
import pathlib

import numpy as np
import pytest
import tensorflow_datasets as tfds

from dnarch_jax.config import load_config
from dnarch_jax.data import sources
from dnarch_jax.interfaces.cli import main
from dnarch_jax.interfaces.variants import VARIANTS
from dnarch_jax.method import budget, search_space
from dnarch_jax.method.arch import initial_arch
from dnarch_jax.method.arch_params import initial_arch_params
from dnarch_jax.run.experiment import run_model_config
from dnarch_jax.run.train import Trainer

EXPERIMENTS = sorted(
  p.stem for p in pathlib.Path("experiments").glob("*.py") if not p.stem.startswith("dnal_")
)
TASKS = [
  "smnist", "pmnist", "scifar10", "cifar10", "cifar100", "stl10", "speech_commands_raw",
  "speech_commands_mfcc", "mnist", "mnist_dense",
]  # fmt: skip
# Two steps, one evaluation, no progress bar: what a smoke run must get through.
QUICK = ["total_steps=2", "eval_every=2", "checkpoint_every=2", "log_every=1", "progress=False"]


def test_every_paper_task_has_an_experiment_file():
  assert set(TASKS) <= set(EXPERIMENTS)


@pytest.mark.parametrize("name", TASKS)
def test_every_variant_loads_and_validates(name):
  for variant in VARIANTS:
    config = load_config(f"experiments/{name}.py:{variant}")
    cfg = run_model_config(config)
    assert config.data.task == name and config.variant == variant
    learned = {d for d in ("kernel", "width", "resolution", "depth") if getattr(cfg, f"learn_{d}")}
    if variant.startswith("ccnn_"):
      assert learned == {"kernel"} and config.budget.fraction == 0.0
      assert (cfg.num_blocks, cfg.width) == ((6, 380) if variant == "ccnn_6_380" else (4, 140))
    elif variant == "dnarch_k":
      assert learned == {"kernel"} and config.budget.fraction == 0.8
    elif variant != "smoke":
      assert {"kernel", "width", "depth"} <= learned and config.budget.fraction > 0
      assert cfg.kernel_sigma_init == 0.075
  with pytest.raises(ValueError, match="unknown variant 'nope'"):
    load_config(f"experiments/{name}.py:nope")


@pytest.mark.parametrize("name", TASKS)
def test_every_dnarch_variant_starts_within_its_budget(name):
  """What the trainer does at step 0 (masks clipped to their boxes, then projected into the
  budget if the configured start exceeds it) gives every budgeted variant a start within its
  budget: the budget is feasible and the projection finds a point inside it."""
  variants = [v for v in VARIANTS if v.startswith("dnarch")]
  variants += ["main", "width"] if name == "mnist" else []
  for variant in variants:
    config = load_config(f"experiments/{name}.py:{variant}")
    cfg = run_model_config(config)
    batch = int(config.data.batch_size)
    params = search_space.clip_to_bounds(initial_arch_params(cfg), cfg)
    value = budget.resolve_budget(config.budget, params, cfg, batch)
    metric = config.budget.metric
    _, arch = budget.project_to_budget(params, cfg, value, batch, metric)
    assert 0 < budget.arch_cost(arch, cfg, batch, metric) <= value, variant


def test_the_main_job_searches_all_four_dimensions_under_a_binding_budget():
  config = load_config("experiments/mnist.py:main")
  cfg = run_model_config(config)
  assert config.variant == "main" and config.data.task == "mnist"
  assert all(getattr(cfg, f"learn_{d}") for d in ("kernel", "width", "resolution", "depth"))
  assert (config.budget.metric, config.budget.fraction, config.budget.mode) == (
    "flops",
    0.15,
    "soft",
  )
  # Its configured start (18x18 blocks, full widths and depth) is over the budget, so the run
  # starts from it projected into the budget, and the budget binds from the first step.
  batch = config.data.batch_size
  arch = initial_arch(cfg, batch)
  assert arch.stream_width == 32 and {b.resolution for b in arch.blocks} == {(18, 18)}
  params = search_space.clip_to_bounds(initial_arch_params(cfg), cfg)
  value = budget.resolve_budget(config.budget, params, cfg, batch)
  assert budget.arch_cost(arch, cfg, batch, "flops") > value
  # The search lasts 1.5 of the 4 epochs, long enough for every mask to cross its whole box at
  # the architecture's peak rate (warm-up and cosine: about half the peak on average).
  steps = config.optim.arch_epochs * 55000 / batch
  assert config.optim.arch_lr * steps / 2 > 1.0


@pytest.mark.parametrize("width_mask", ["sigmoid_cutoff", "scaled_sigmoid_gate"])
def test_the_width_variant_learns_widths_alone_under_a_hard_budget(width_mask):
  config = load_config("experiments/mnist.py:width", [f"model.width_mask={width_mask!r}"])
  cfg = run_model_config(config)
  learned = [d for d in ("kernel", "width", "resolution", "depth") if getattr(cfg, f"learn_{d}")]
  assert learned == ["width"] and cfg.width_mask == width_mask
  assert config.budget.mode == "hard"
  arch = initial_arch(cfg, config.data.batch_size)  # starts at the maximal widths
  assert (arch.stream_width, arch.blocks[0].hidden_width) == (48, 96)
  assert all(b.conv.taps == (5, 5) and b.resolution == (28, 28) for b in arch.blocks)
  # The hard budget's first projection keeps a real network under it, gates included (their
  # initial logits break ties, so they do not all cross the threshold together).
  start = initial_arch_params(cfg)
  value = 0.55 * budget.maximal_cost(start, cfg, 64, "flops")
  projected, fitted = budget.project_to_budget(start, cfg, value, 64, "flops")
  assert 0.9 * value < budget.arch_cost(fitted, cfg, 64, "flops") <= value
  assert 24 <= fitted.stream_width < 48 and all(48 <= b.hidden_width < 96 for b in fitted.blocks)
  if width_mask == "scaled_sigmoid_gate":  # the kept channels' gates are left as they were
    kept = list(fitted.stream_channels)
    got = np.asarray(projected["arch_stream_gate"])[kept]
    np.testing.assert_allclose(got, start["arch_stream_gate"][kept], rtol=1e-6)  # float32


def test_configs_carry_ccnn_hyperparameters():
  """Spot checks against METHOD.md §9's table."""
  cifar = load_config("experiments/cifar10.py:ccnn_4_140")
  assert cifar.model.kernel_sigma_init == 0.75 and cifar.optim.epochs == 350
  assert cifar.data.batch_size == 64 and cifar.data.augment
  big = load_config("experiments/cifar10.py:ccnn_6_380")
  assert (big.model.omega_0, big.model.dropout, big.model.kernel_net_hidden) == (976.78, 0.15, 64)
  pmnist = load_config("experiments/pmnist.py:ccnn_4_140")
  assert (pmnist.model.dropout, pmnist.model.input_dropout, pmnist.optim.lr) == (0.0, 0.2, 0.02)
  raw = load_config("experiments/speech_commands_raw.py:ccnn_4_140")
  assert (raw.data.batch_size, raw.optim.epochs, raw.model.omega_0) == (20, 160, 1295.61)
  assert not load_config("experiments/cifar100.py:dnarch").data.augment
  mfcc = run_model_config(load_config("experiments/speech_commands_mfcc.py:dnarch"))
  assert not mfcc.learn_resolution  # 161 frames: odd, no spectral resampling


def _train_smoke(name, workdir, *overrides):
  config = load_config(f"experiments/{name}.py:smoke", [*QUICK, *overrides])
  result = Trainer(config, workdir).run()
  assert result["status"] == "completed", result
  rows = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
  train = [r for r in rows if r["kind"] == "train"]
  assert len(train) == 2 and all(np.isfinite(r["loss"]) for r in train)
  assert any(r["kind"] == "val" for r in rows)


@pytest.mark.parametrize("name", ["scifar10", "cifar10", "cifar100", "stl10"])
def test_smoke_trains_under_mock_data(name, tmp_path):
  with tfds.testing.mock_data(num_examples=48, policy=tfds.testing.MockPolicy.USE_CODE):
    _train_smoke(name, tmp_path, f"data.data_dir='{tmp_path / 'tfds'}'", "data.val_size=8")


@pytest.mark.parametrize("name", ["speech_commands_raw", "speech_commands_mfcc"])
def test_speech_smoke_trains_on_a_fake_source(name, tmp_path, monkeypatch):
  rng = np.random.default_rng(0)
  records = [
    {"audio": (rng.normal(size=16000) * 3000).astype(np.int16), "label": np.int64(i % 10)}
    for i in range(40)
  ]
  monkeypatch.setattr(sources, "tfds_source", lambda *args, **kwargs: records)
  _train_smoke(name, tmp_path, "data.eval_batch_size=16")


@pytest.mark.parametrize("name", ["pmnist", "mnist_dense"])
def test_smoke_trains_on_real_mnist(name, tmp_path):
  _train_smoke(name, tmp_path, "data.eval_batch_size=16", "data.val_size=64")
  rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
  val = [r for r in rows if r["kind"] == "val"][-1]
  assert ("mean_iou" in val) == (name == "mnist_dense")


def test_numpy_folder_trains_through_the_command_line(tmp_path):
  """The README's recipe for a user's own data: the task `arrays` and the folder, nothing else."""
  rng = np.random.default_rng(0)
  data = tmp_path / "my_data"
  data.mkdir()
  for split, n in (("train", 96), ("test", 24)):
    np.save(data / f"{split}_x.npy", rng.integers(0, 256, (n, 8, 8), dtype=np.uint8))
    np.save(data / f"{split}_y.npy", rng.integers(0, 3, n))
  workdir = tmp_path / "run"
  common = ["--workdir", str(workdir)]
  overrides = [f"--config.{o}" for o in QUICK] + [
    "--config.data.task=arrays",
    f"--config.data.data_dir={data}",
    "--config.data.val_size=None",
    "--config.data.eval_batch_size=16",
  ]
  assert main(["train", "--config", "experiments/mnist.py:smoke", *common, *overrides]) == 0
  saved = json.loads((workdir / "config.json").read_text())
  assert saved["data"]["task"] == "arrays"
  assert main(["eval", *common]) == 0


def test_mean_iou_from_class_overlaps():
  import jax.numpy as jnp

  from dnarch_jax.run.steps import class_overlap, mean_iou

  labels = jnp.array([[0, 0, 1, 2], [1, 1, 2, 2]])
  predicted = jnp.array([[0, 1, 1, 2], [1, 1, 2, 0]])
  logits = jnp.eye(4)[predicted]  # class 3 never occurs: it must not count
  mask = jnp.array([1.0, 0.0])  # the second example is padding
  intersection, union = class_overlap(logits, labels, mask)
  # Example 0 alone: class 0 -> 1/2, class 1 -> 1/2, class 2 -> 1/1.
  np.testing.assert_allclose(intersection, [1, 1, 1, 0])
  np.testing.assert_allclose(union, [2, 2, 1, 0])
  assert mean_iou(intersection, union) == pytest.approx((0.5 + 0.5 + 1.0) / 3)
