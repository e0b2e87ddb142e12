"""A user's own data: read by the layout it is given, checked at load, summarised, trained on."""

import json
import math
import pathlib

import numpy as np
import pytest

from dnarch_jax.config import load_config
from dnarch_jax.data import (
  arrays,
  config,
  describe_data,
  make_eval_pipeline,
  split_from_config,
  tasks,
)
from dnarch_jax.interfaces import cli
from dnarch_jax.run.experiment import run_model_config
from dnarch_jax.run.restore import restore_run


def _save(folder: pathlib.Path, **files: np.ndarray) -> pathlib.Path:
  folder.mkdir(parents=True, exist_ok=True)
  for name, array in files.items():
    np.save(folder / f"{name}.npy", array)
  return folder


def _labelled(n: int, num_classes: int) -> np.ndarray:
  return np.arange(n) % num_classes  # every class present once n >= num_classes


def _folder(tmp_path, x_shape=(20, 3), n_train=50, n_test=12, dtype=np.float32, **overrides):
  rng = np.random.default_rng(0)
  files = dict(
    train_x=rng.normal(size=(n_train, *x_shape)).astype(dtype),
    train_y=_labelled(n_train, 4),
    test_x=rng.normal(size=(n_test, *x_shape)).astype(dtype),
    test_y=_labelled(n_test, 4),
  )
  files.update(overrides)
  return _save(tmp_path / "data", **files)


def _data_config(folder, **fields):
  cfg = config.default_data_config("arrays")
  with cfg.ignore_type():  # as a --config override may: type errors are validation's to name
    cfg.update(data_dir=str(folder), **fields)
  config.validate_data_config(cfg)
  return cfg


# --- Layout ---------------------------------------------------------------------------------------

SHAPES = [
  # (per-example x shape, layout, what the model sees, or the error)
  ((20,), None, (20, 1)),
  ((20,), "image", (20, 1)),  # [N, L] is a sequence whatever the layout
  ((20, 3), "sequence", (20, 3)),
  ((20, 3), "image", (20, 3, 1)),
  ((20, 1), "sequence", (20, 1)),  # a trailing 1 is read as the layout says, never guessed
  ((20, 1), "image", (20, 1, 1)),
  ((20, 3), None, r"shape \(50, 20, 3\) are \[N, L, C\] sequences or \[N, H, W\] grayscale "
                  r"images; say which with config.data.layout=sequence or .*layout=image"),
  ((6, 5, 3), None, (6, 5, 3)),
  ((6, 5, 3), "image", (6, 5, 3)),
  ((6, 5, 3), "sequence", r"shape \(50, 6, 5, 3\) are \[N, H, W, C\] images, not sequences; set "
                          r"config.data.layout=image"),
]  # fmt: skip


@pytest.mark.parametrize("x_shape,layout,expected", SHAPES)
def test_the_layout_says_how_inputs_are_read(tmp_path, x_shape, layout, expected):
  folder = _folder(tmp_path, x_shape)
  if isinstance(expected, str):
    with pytest.raises(ValueError, match="train_x.npy: inputs of " + expected):
      tasks.task_info("arrays", folder, layout=layout)
  else:
    assert tasks.task_info("arrays", folder, layout=layout) == (expected, 4, False)


def test_dense_labels_follow_the_layout(tmp_path):
  rng = np.random.default_rng(1)
  x = dict(train_x=rng.normal(size=(30, 8, 2)), test_x=rng.normal(size=(6, 8, 2)))
  per_step = _folder(tmp_path / "a", **x, train_y=rng.integers(0, 3, (30, 8)),
                     test_y=rng.integers(0, 3, (6, 8)))  # fmt: skip
  assert tasks.task_info("arrays", per_step, layout="sequence") == ((8, 2), 3, True)
  with pytest.raises(ValueError, match=r"train_y.npy: labels have shape \(30, 8\); expected"):
    tasks.task_info("arrays", per_step, layout="image")
  per_pixel = _folder(tmp_path / "b", **x, train_y=rng.integers(0, 3, (30, 8, 2)),
                      test_y=rng.integers(0, 3, (6, 8, 2)))  # fmt: skip
  assert tasks.task_info("arrays", per_pixel, layout="image") == ((8, 2, 1), 3, True)


def test_a_config_carries_its_experiments_layout():
  assert config.default_data_config("smnist").layout == "sequence"
  assert config.default_data_config("cifar10").layout == "image"
  assert config.default_data_config("arrays").layout is None
  assert config.default_data_config("tfds:my_set").layout is None
  assert load_config("experiments/smnist.py:smoke", ["data.task=arrays"]).data.layout == "sequence"
  assert load_config("experiments/mnist.py:dnarch", ["data.task=arrays"]).data.layout == "image"
  cfg = config.default_data_config("arrays")
  cfg.update(data_dir="/somewhere", layout="grid")
  with pytest.raises(ValueError, match="config.data.layout='grid': must be 'sequence', 'image'"):
    config.validate_data_config(cfg)


def test_multichannel_sequences_reach_the_model_and_the_batches(tmp_path):
  folder = _folder(tmp_path, (20, 3))
  cfg = load_config(
    "experiments/smnist.py:smoke",
    ["data.task=arrays", f"data.data_dir='{folder}'", "data.val_size=None"],
  )
  model = run_model_config(cfg)
  assert (model.input_size, model.in_channels, model.num_classes) == ((20,), 3, 4)
  batch = next(
    make_eval_pipeline(
      "arrays", "test", batch_size=4, data_dir=folder, process_count=1, layout="sequence"
    )
  )
  assert batch["input"].shape == (4, 20, 3)
  np.testing.assert_array_equal(batch["input"], np.load(folder / "test_x.npy")[:4])


# --- Labels ---------------------------------------------------------------------------------------


def test_a_class_missing_from_train_is_named(tmp_path):
  folder = _folder(tmp_path, test_y=np.array([0, 1, 2, 3, 5, 7] * 2))
  with pytest.raises(ValueError, match=r"test_y.npy: class\(es\) \[5, 7\] never occur in the "):
    tasks.get_task("arrays", folder, layout="sequence")
  rng = np.random.default_rng(2)
  with_val = _folder(tmp_path / "v", val_x=rng.normal(size=(5, 20, 3)).astype(np.float32),
                     val_y=np.array([0, 1, 4, 4, 4]))  # fmt: skip
  with pytest.raises(ValueError, match=r"val_y.npy: class\(es\) \[4\] never occur"):
    tasks.get_task("arrays", with_val, layout="sequence")


def test_num_classes_sets_the_count_and_bounds_every_label(tmp_path):
  folder = _folder(tmp_path)
  assert tasks.task_info("arrays", folder, layout="sequence", num_classes=6)[1] == 6
  cfg = load_config(
    "experiments/smnist.py:smoke",
    ["data.task=arrays", f"data.data_dir='{folder}'", "data.num_classes=6"],
  )
  assert run_model_config(cfg).num_classes == 6  # the model's head follows the config
  with pytest.raises(ValueError, match=r"train_y.npy: example 3 has label 3, not below "
                                       r"config.data.num_classes=3"):  # fmt: skip
    tasks.task_info("arrays", folder, layout="sequence", num_classes=3)
  with pytest.raises(ValueError, match="config.data.num_classes=5: task smnist has 10 classes"):
    tasks.task_info("smnist", num_classes=5)
  for bad in (0, "3"):
    with pytest.raises(ValueError, match=f"config.data.num_classes={bad!r}: must be a positive"):
      _data_config(folder, num_classes=bad)


def test_negative_and_fractional_labels_are_refused(tmp_path):
  folder = _folder(tmp_path / "a", train_y=np.array([0, 1, 2, 3, -2] * 10))
  with pytest.raises(ValueError, match="train_y.npy: labels must be >= 0; example 4 has label -2"):
    tasks.get_task("arrays", folder, layout="sequence")
  folder = _folder(tmp_path / "b", test_y=np.full(12, 1.0))
  with pytest.raises(ValueError, match="test_y.npy: labels must be integers, got dtype float64"):
    tasks.get_task("arrays", folder, layout="sequence")


# --- Inputs ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("split,index,value", [("test", 7, np.nan), ("train", 41, -np.inf)])
def test_non_finite_inputs_name_the_file_and_example(tmp_path, monkeypatch, split, index, value):
  # Chunks of 3 examples: the scan finds an example past its first chunk.
  monkeypatch.setattr(arrays, "_SCAN_BYTES", 3 * 20 * 3 * 4)
  rng = np.random.default_rng(3)
  x = rng.normal(size=(50 if split == "train" else 12, 20, 3)).astype(np.float32)
  x[index, 5, 1] = value
  folder = _folder(tmp_path, **{f"{split}_x": x})
  with pytest.raises(
    ValueError, match=f"{split}_x.npy: example {index} holds {value}; every input "
  ):
    tasks.get_task("arrays", folder, layout="sequence")


def test_a_folder_is_checked_once_until_its_files_change(tmp_path, monkeypatch):
  folder = _folder(tmp_path)
  checks = []
  check_files = arrays._check_files
  monkeypatch.setattr(arrays, "_check_files", lambda *a: checks.append(a) or check_files(*a))
  for layout in ("sequence", "image", "sequence"):
    tasks.get_task("arrays", folder, layout=layout)
  split_from_config(_data_config(folder, layout="sequence"), "train")
  assert len(checks) == 1
  np.save(folder / "test_x.npy", np.zeros((13, 20, 3), np.float32))
  np.save(folder / "test_y.npy", _labelled(13, 4))
  assert tasks.get_task("arrays", folder, layout="sequence").test_examples == 13
  assert len(checks) == 2


# --- Validation split -----------------------------------------------------------------------------


def test_default_validation_split_follows_the_data_size():
  sizes = {n: tasks.default_val_size(n) for n in (2, 10, 40, 50, 400, 1000, 20000, 60000)}
  assert sizes == {2: 1, 10: 2, 40: 8, 50: 10, 400: 80, 1000: 100, 20000: 2000, 60000: 5000}
  with pytest.raises(ValueError, match="a train split of 1 example"):
    tasks.default_val_size(1)
  assert config.default_data_config("mnist").val_size is None
  assert tasks.get_task("mnist").val_size == 5000  # None means the built-in task's own


def test_an_mnist_config_switched_to_a_small_folder_trains_on_it(tmp_path):
  folder = _folder(tmp_path, (6, 6))
  cfg = load_config(
    "experiments/mnist.py:dnarch", ["data.task=arrays", f"data.data_dir='{folder}'"]
  )
  config.validate_data_config(cfg.data)
  assert len(split_from_config(cfg.data, "train")) == 40
  assert len(split_from_config(cfg.data, "validation")) == 10
  cfg.data.val_size = 50
  with pytest.raises(ValueError, match=r"config.data.val_size=50: must be between 1 and 49 for the "
                                       r"50 train examples .* set config.data.val_size=None for "
                                       r"the default \(10\) or a number below 50"):  # fmt: skip
    split_from_config(cfg.data, "train")
  with pytest.raises(ValueError, match=r"val_size=60000: .*; set config.data.val_size=None"):
    config.validate_data_config(
      load_config("experiments/mnist.py:dnarch", ["data.val_size=60000"]).data
    )


def test_own_validation_files_refuse_a_carve_out(tmp_path):
  rng = np.random.default_rng(4)
  folder = _folder(tmp_path, val_x=rng.normal(size=(8, 20, 3)).astype(np.float32),
                   val_y=_labelled(8, 4))  # fmt: skip
  cfg = _data_config(folder, layout="sequence")
  assert len(split_from_config(cfg, "validation")) == 8
  cfg.val_size = 5
  with pytest.raises(ValueError, match="config.data.val_size=5: task arrays has its own valid"):
    split_from_config(cfg, "train")


# --- Summary --------------------------------------------------------------------------------------


def test_data_summary_line(tmp_path):
  labels = dict(train_y=np.array([0] * 20 + [1] * 25 + [3] * 5), test_y=np.array([0, 1, 3] * 4))
  folder = _folder(tmp_path, **labels)
  line = describe_data(_data_config(folder, layout="sequence"))
  assert line == (
    f"data: arrays {folder}; train 40, validation 10 (carved from train), test 12; example "
    "(20, 3), sequence layout; 4 classes (largest train label + 1); class shares of train "
    "examples 10.0% (class 3) to 50.0% (class 1); no train example of class 2"
  )
  balanced = describe_data(_data_config(_folder(tmp_path / "b", n_train=48), layout="image"))
  assert balanced.endswith("example (20, 3, 1), image layout; 4 classes (largest train label + 1); "
                           "train examples balanced, 25.0% per class")  # fmt: skip
  mnist = describe_data(config.default_data_config("mnist"))
  assert mnist == (
    "data: mnist; train 55000, validation 5000 (carved from train), test 10000; example "
    "(28, 28, 1), image layout; 10 classes"
  )
  assert "validation unknown (own split)" in describe_data(
    config.default_data_config("speech_commands_raw")
  )


# --- The command line -----------------------------------------------------------------------------


def test_printed_json_is_strict(tmp_path, monkeypatch, capsys):
  value = {"loss": math.nan, "costs": [1.5, math.inf], "pair": (-math.inf, 2), "name": "x"}
  assert cli.strict_json(value) == {
    "loss": None,
    "costs": [1.5, None],
    "pair": [None, 2],
    "name": "x",
  }
  import dnarch_jax.run.evaluate as evaluate_lib
  import dnarch_jax.run.loop as loop_lib

  monkeypatch.setattr(loop_lib, "load_run_config", lambda workdir: config.default_data_config("x"))
  monkeypatch.setattr(evaluate_lib, "evaluate_run", lambda *args: {"loss": math.nan, "step": 3})
  assert cli.main(["eval", "--workdir", str(tmp_path)]) == 0
  printed = json.loads(capsys.readouterr().out, parse_constant=pytest.fail)
  assert printed == {"loss": None, "step": 3}
  # Every command prints through the one helper.
  assert pathlib.Path(cli.__file__).read_text().count("json.dumps(") == 1


def test_own_sequences_train_and_evaluate_through_the_command_line(tmp_path, capsys):
  folder = _folder(tmp_path, (16, 3), n_train=40, n_test=8)
  workdir = str(tmp_path / "run")
  args = ["--config", "experiments/smnist.py:smoke", "--workdir", workdir,
          "--config.data.task=arrays", f"--config.data.data_dir={folder}",
          "--config.progress=False", "--config.total_steps=2", "--config.log_every=1",
          "--config.checkpoint_every=1000", "--config.arch_refresh_every=1000",
          "--config.data.eval_batch_size=8"]  # fmt: skip
  # The smoke variant carves 1000 examples: refused before anything compiles, with the fix.
  assert cli.main(["train", *args]) == 2
  assert "config.data.val_size=None for the default (8)" in capsys.readouterr().err
  assert cli.main(["train", *args, "--config.data.val_size=None"]) == 0
  err = capsys.readouterr().err
  assert "train 32, validation 8 (carved from train), test 8; example (16, 3), sequence" in err
  # total_steps (2) < eval_every (15): the run still evaluates at its end.
  records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").open()]
  assert [r["step"] for r in records if r["kind"] == "val"] == [2]
  assert cli.main(["eval", "--workdir", workdir]) == 0
  metrics = json.loads(capsys.readouterr().out, parse_constant=pytest.fail)
  assert metrics["step"] == 2 and 0 <= metrics["accuracy"] <= 1
  # Reading the run opens no data: its network is sized from the workdir's data_shape.json,
  # so restoring still works once the arrays folder is gone.
  shape = json.loads((tmp_path / "run" / "data_shape.json").read_text())
  assert shape == dict(input_shape=[16, 3], num_classes=4, dense=False)
  folder.rename(tmp_path / "moved")
  run = restore_run(workdir)
  assert run.cfg.input_size == (16,) and run.cfg.num_classes == 4 and run.step == 2
