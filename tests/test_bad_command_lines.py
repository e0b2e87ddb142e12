"""Bad command lines end cleanly: one ``dnarch CMD: error: ...`` line naming the field, path or
value, exit status 2, no traceback; ``train`` refuses before anything is compiled.

Each case is a command line and words its error must contain. The training cases run with
``init_variables`` replaced by a function that fails the test: a refusal must come before the
network is initialised (the first compile of a run).
"""

import json

import jax
import numpy as np
import pytest

import dnarch_jax.dnal.train
import dnarch_jax.run.train
from dnarch_jax.config import load_config
from dnarch_jax.interfaces import exported
from dnarch_jax.interfaces.cli import main

SMOKE = "experiments/mnist.py:smoke"


def _train(*overrides):
  return ["train", "--config", SMOKE, "--workdir", "{tmp}/run", *overrides]


TRAIN_CASES = [
  (_train("--config.total_steps=-1"), "config.total_steps"),
  (_train("--config.total_steps=abc"), "expected an integer, got 'abc'"),
  (_train("--config.total_steps=1.5"), "expected an integer, got '1.5'"),
  (_train("--config.log_every=0"), "config.log_every"),
  (_train("--config.eval_every=-5"), "config.eval_every"),
  (_train("--config.checkpoint_every=0"), "config.checkpoint_every"),
  (_train("--config.arch_refresh_every=0"), "config.arch_refresh_every"),
  (_train("--config.keep_last=0"), "config.keep_last"),
  (_train("--config.optim.lr=-1"), "config.optim.lr: must be non-negative, got -1"),
  (_train("--config.optim.lr=float('nan')"), "config.optim.lr"),
  (_train("--config.optim.weight_decay=-0.1"), "config.optim.weight_decay"),
  (_train("--config.optim.epochs=-1"), "config.optim.epochs: must be positive, got -1"),
  (_train("--config.optim.epochs=0"), "config.optim.epochs"),
  (_train("--config.budget.fraction=2"), "config.budget.fraction"),
  (_train("--config.budget.fraction=-1"), "got -1"),
  (_train("--config.budget.fraction=abc"), "--config.budget.fraction: expected a number"),
  (_train("--config.budget.weight=-1"), "config.budget.weight: must be non-negative, got -1"),
  (_train("--config.budget.value=-5"), "config.budget.value"),
  (_train("--config.budget.value=10.0"), "below the smallest reachable"),
  (_train("--config.budget.mode=medium"), "medium"),
  (_train("--config.budget.metric=joules"), "joules"),
  (_train("--config.model.width=0"), "width"),
  (_train("--config.model.num_blocks=0"), "num_blocks"),
  (_train("--config.model.compute_dtype=float16"), "compute_dtype"),
  (_train("--config.model.width_mask=box"), "box"),
  (_train("--config.model.no_such_field=1"), "unknown config key"),
  (_train("--config.no_such_field=1"), "unknown config key"),
  (_train("--config.nosection.field=1"), "unknown config key 'nosection'"),
  (_train("--config.model.learn_width=maybe"), "expected True or False, got 'maybe'"),
  (_train("--config.model.dropout=1.5"), "dropout"),
  (_train("--config.model.kernel_net_hidden=0"), "kernel_net_hidden"),
  (_train("--config.data.batch_size=0"), "batch_size"),
  (_train("--config.data.val_size=-1"), "val_size"),
  (_train("--config.data.task=nope"), "nope"),
  (_train("--config.data.eval_batch_size=0"), "eval_batch_size"),
  (_train("--config.seed=x"), "--config.seed: expected an integer"),
  (_train("--config.total_steps"), "expected --config.KEY=VALUE"),
  (_train("--not-a-flag"), "unrecognised argument '--not-a-flag'"),
  (["train", "--workdir", "{tmp}/saved", "--config.total_steps=1", "--seed=3"], "'--seed=3'"),
  (["train", "--config", "experiments/nope.py", "--workdir", "{tmp}/run"], "experiments/nope.py"),
  (["train", "--config", "README.md", "--workdir", "{tmp}/run"], "README.md"),
  (["train", "--workdir", "{tmp}/empty"], "no config.json"),
  (["train", "--config", SMOKE, "--workdir", "{tmp}/afile"], "is a file"),
  (["train", "--config", SMOKE, "--workdir", "{tmp}/afile/run"], "cannot be created"),
  (["train", "--workdir", "{tmp}/saved", "--config.budget.fraction=0.25"], "budget.fraction"),
  (["train", "--workdir", "{tmp}/saved", "--config.optim.lr=0.5"], "--allow_config_change"),
  (["train", "--workdir", "{tmp}/saved", "--config.model.width=24"], "different model"),
  (["train", "--workdir", "{tmp}/saved", "--config.data.batch_size=32"], "different data"),
]

READ_CASES = [
  (["eval", "--workdir", "{tmp}/nowhere"], "{tmp}/nowhere"),
  (["eval", "--workdir", "{tmp}/empty"], "no config.json"),
  (["eval", "--workdir", "{tmp}/saved"], "--workdir {tmp}/saved: holds no checkpoint yet"),
  (["summary", "--workdir", "{tmp}/saved"], "--workdir {tmp}/saved: holds no checkpoint yet"),
  (["export", "--workdir", "{tmp}/saved", "--out", "{tmp}/o"], "holds no checkpoint yet"),
  (["summary", "--workdir", "{tmp}/nowhere"], "{tmp}/nowhere"),
  (["summary", "--workdir", "{tmp}/saved", "--config.seed=1"], "takes no --config overrides"),
  (["summary", "--config", "experiments/nope.py"], "experiments/nope.py"),
  (["summary", "--config", SMOKE, "--config.model.width=-3"], "width"),
  (["export", "--workdir", "{tmp}/nowhere", "--out", "{tmp}/out"], "{tmp}/nowhere"),
  (["export", "--workdir", "{tmp}/saved", "--out", "{tmp}/o", "--config.seed=1"], "overrides"),
  (["predict", "--model", "{tmp}/nowhere", "--input", "{tmp}/x.npy"], "{tmp}/nowhere"),
  (["predict", "--model", "{tmp}/model", "--input", "{tmp}/missing.npy"], "missing.npy"),
  (["predict", "--model", "{tmp}/model", "--input", "{tmp}/shape.npy"], "shape.npy"),
  (["predict", "--model", "{tmp}/model", "--input", "{tmp}/ints.npy"], "ints.npy: dtype int"),
  (["predict", "--model", "{tmp}/model", "--input", "{tmp}/x.npy", "--batch-size", "0"],
   "--batch-size: must be positive, got 0"),
]  # fmt: skip

ARGPARSE_CASES = [
  ["eval", "--workdir", "w", "--split", "train"],
  ["eval", "--workdir", "w", "--checkpoint", "first"],
  ["export", "--workdir", "w"],
  ["train"],
  ["nosuchcommand"],
]


def _case_id(value) -> str:
  return " ".join(value)[:80] if isinstance(value, list) else ""


@pytest.fixture(scope="module")
def tmp(tmp_path_factory):
  """A folder with: ``afile`` (a file), ``empty/`` (a folder), ``saved/`` (a run's config.json
  and nothing else), ``model/`` (an exported model's files, random values) and inputs for it."""
  tmp = tmp_path_factory.mktemp("bad")
  (tmp / "afile").write_text("not a folder")
  (tmp / "empty").mkdir()
  (tmp / "saved").mkdir()
  (tmp / "saved" / "config.json").write_text(load_config(SMOKE).to_json(indent=2))
  spec = exported.ExportSpec(
    input_size=(8, 8), in_channels=1, num_classes=3, head="classification", causal=False,
    stream_width=4, stem=exported.ConvSpec((3, 3), "shift", False), blocks=(),
    width_masks=False, depth_gates=False,
  )  # fmt: skip
  exported.save_exported(tmp / "model", spec, {"params": {}})
  np.save(tmp / "x.npy", np.zeros((2, 8, 8, 1), np.float32))
  np.save(tmp / "shape.npy", np.zeros((2, 9, 8, 1), np.float32))
  np.save(tmp / "ints.npy", np.zeros((2, 8, 8, 1), np.int64))
  return tmp


def _refuse_compiles(monkeypatch):
  """Fail the test if a trainer initialises its network for real (traced shapes, as
  ``jax.eval_shape`` gives the budget check, compile nothing and are let through)."""
  for module, name in ((dnarch_jax.run.train, "init_variables"),
                       (dnarch_jax.dnal.train, "init_dnal_variables")):  # fmt: skip
    real = getattr(module, name)

    def init(cfg, key, *args, _real=real, **kwargs):
      if isinstance(key, jax.core.Tracer):
        return _real(cfg, key, *args, **kwargs)
      raise AssertionError("the network was initialised before the bad input was refused")

    monkeypatch.setattr(module, name, init)


def _one_clean_error(argv, tmp, capsys) -> str:
  argv = [a.replace("{tmp}", str(tmp)) for a in argv]
  assert main(argv) == 2, argv
  err = capsys.readouterr().err
  assert "Traceback" not in err, err
  last = err.strip().splitlines()[-1]
  assert last.startswith(f"dnarch {argv[0]}: error: "), err
  return last


@pytest.mark.parametrize(("argv", "words"), TRAIN_CASES, ids=_case_id)
def test_bad_train_command_lines_are_refused_before_any_compile(
  argv, words, tmp, capsys, monkeypatch
):
  _refuse_compiles(monkeypatch)
  assert words.replace("{tmp}", str(tmp)) in _one_clean_error(argv, tmp, capsys)


@pytest.mark.parametrize(("argv", "words"), READ_CASES, ids=_case_id)
def test_bad_read_command_lines_end_in_one_line(argv, words, tmp, capsys):
  assert words.replace("{tmp}", str(tmp)) in _one_clean_error(argv, tmp, capsys)


@pytest.mark.parametrize("argv", ARGPARSE_CASES, ids=" ".join)
def test_malformed_arguments_are_usage_errors(argv, capsys):
  with pytest.raises(SystemExit) as exit_:
    main(argv)
  assert exit_.value.code == 2
  assert "Traceback" not in capsys.readouterr().err


def test_at_least_fifty_bad_command_lines():
  assert len(TRAIN_CASES) + len(READ_CASES) + len(ARGPARSE_CASES) >= 50
  assert json.dumps(TRAIN_CASES)  # plain data: the cases read as the command lines they are
