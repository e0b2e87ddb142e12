"""Training: resumption, devices, learning-rate partition, budgets, preemption, bad input."""

import json
import os
import pathlib
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from dnarch_jax.config import load_config
from dnarch_jax.interfaces import events, report
from dnarch_jax.interfaces.cli import main
from dnarch_jax.method import budget as budget_lib
from dnarch_jax.method.arch_params import is_arch_param
from dnarch_jax.run.checkpoint import Checkpointer
from dnarch_jax.run.loop import NonFiniteLossError, _all_finite
from dnarch_jax.run.train import Trainer
from dnarch_jax.run.workdir import WorkdirError, WorkdirMismatchError

SMOKE = "experiments/mnist.py:smoke"
FAST = ["arch_refresh_every=1000", "progress=False", "eval_every=1000", "checkpoint_every=1000"]


def smoke_config(*overrides):
  return load_config(SMOKE, [*FAST, *overrides])


def leaves_equal(a, b):
  la, lb = jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)
  return len(la) == len(lb) and all(
    np.array_equal(np.asarray(x), np.asarray(y)) for x, y in zip(la, lb, strict=True)
  )


def train_metrics(workdir):
  return [
    r for r in report.read_jsonl(pathlib.Path(workdir) / "metrics.jsonl") if r["kind"] == "train"
  ]


def test_stop_and_resume_is_bit_identical(tmp_path):
  overrides = ["total_steps=20", "log_every=2", "arch_refresh_every=5"]
  straight = Trainer(smoke_config(*overrides), tmp_path / "straight")
  straight.run()
  first = Trainer(smoke_config(*overrides), tmp_path / "resumed")
  assert first.run(stop_at=15)["status"] == "stopped"
  second = Trainer(smoke_config(*overrides), tmp_path / "resumed")
  assert second.run()["status"] == "completed"
  assert int(second.state.step) == int(straight.state.step) == 20
  assert leaves_equal(second.state.params, straight.state.params)
  assert leaves_equal(second.state.opt_state, straight.state.opt_state)
  assert leaves_equal(second.state.batch_stats, straight.state.batch_stats)
  assert second.arch == straight.arch
  strip = lambda rows: [{k: v for k, v in r.items() if k != "steps_per_s"} for r in rows]
  assert strip(train_metrics(tmp_path / "resumed")) == strip(train_metrics(tmp_path / "straight"))
  # The stop fell on a refresh step that changed the architecture (15): its record is written
  # once, not twice.
  arch_records = lambda run: report.read_jsonl(tmp_path / run / "arch.jsonl")
  assert arch_records("resumed") == arch_records("straight")
  assert 15 in [r["step"] for r in arch_records("straight")]


def test_eight_devices_equal_one_device(tmp_path):
  assert jax.device_count() == 8
  results, steps = {}, 5
  for n in (8, 1):
    trainer = Trainer(
      smoke_config(f"total_steps={steps}", f"log_every={steps}"),
      tmp_path / str(n),
      jax.devices()[:n],
    )
    trainer.run()
    results[n] = (trainer.state.params, train_metrics(tmp_path / str(n))[-1]["loss"])
  np.testing.assert_allclose(results[8][1], results[1][1], rtol=1e-5)
  # Reductions over a sharded batch add in another order: equal to rounding, leaf by leaf. Adam
  # divides each gradient by its own RMS, so an element whose gradient cancels down to rounding
  # size (measured: the stem mixer's last column, gradient RMS 1.2e-6 against 6e-6 to 1.4e-5 in
  # the others, 0.2% apart between the two orders) moves by that fraction of a step more or less:
  # allow 1e-3 of the largest total travel, peak lr x steps. A sharding fault (a shard dropped or
  # counted twice) changes gradients by O(1) and parameters by O(lr) a step, 1000x more.
  optim = trainer.config.optim
  adam_rounding = (
    1e-3 * steps * max(optim.lr, optim.lr * optim.arch_lr_factor, optim.get("arch_lr") or 0.0)
  )
  flat8 = jax.tree_util.tree_flatten_with_path(results[8][0])[0]
  for (path, a), b in zip(flat8, jax.tree_util.tree_leaves(results[1][0]), strict=True):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    bound = 1e-5 * max(np.linalg.norm(b), 1e-3) + adam_rounding
    assert np.linalg.norm(a - b) <= bound, jax.tree_util.keystr(path)


@pytest.mark.parametrize("frozen", ["arch", "weights"])
def test_a_zero_learning_rate_freezes_its_partition(tmp_path, frozen):
  lr = ["optim.arch_lr=0.0"] if frozen == "arch" else ["optim.lr=0.0", "optim.arch_lr=0.05"]
  trainer = Trainer(smoke_config("total_steps=4", "log_every=4", *lr), tmp_path)
  before = jax.device_get(trainer.state.params)
  trainer.run()
  after = jax.device_get(trainer.state.params)
  moved = {True: [], False: []}
  for (path, a), b in zip(
    jax.tree_util.tree_flatten_with_path(before)[0], jax.tree_util.tree_leaves(after), strict=True
  ):
    moved[is_arch_param(path)].append(not np.array_equal(a, b))
  frozen_is_arch = frozen == "arch"
  assert not any(moved[frozen_is_arch]), "a frozen parameter moved"
  assert any(moved[not frozen_is_arch]), "nothing else moved either"


@pytest.mark.parametrize("task", ["smnist", "mnist"])
def test_the_budget_holds_during_training(task, tmp_path):
  """The paper's claim, in a 1D and a 2D task: a run whose configured start exceeds its budget
  starts within it (its masks projected), and the cropped cost stays within 1.05x the budget at
  every architecture refresh after the first in soft mode and within it in hard mode, with an
  architecture learning rate high enough that the task's gradient pushes the network against
  the budget (the penalty's gradient reaches the masks). Resolutions are floored near the input's
  as in the main job: the task's gradient lowers them, which would take the cost far below the
  budget within a few steps (experiments/README.md, "The search")."""
  common = [
    "total_steps=18", "log_every=1", "arch_refresh_every=6", "optim.arch_lr=0.02",
    "optim.warmup_epochs=0.0", "budget.fraction=0.2", "model.resolution_min=0.9",
  ]  # fmt: skip
  for mode in ("soft", "hard"):
    config = load_config(f"experiments/{task}.py:smoke", [*FAST, *common, f"budget.mode={mode}"])
    trainer = Trainer(config, tmp_path / mode)
    start = budget_lib.arch_cost(trainer.arch, trainer.cfg, trainer.batch_size, "flops")
    trainer.run()
    costs = [r["flops"] for r in report.read_jsonl(tmp_path / mode / "arch.jsonl")]
    assert start > trainer.budget  # the configured start is over budget...
    assert costs[0] <= trainer.budget  # ...and the run starts within it
    assert max(costs) <= (1.05 if mode == "soft" else 1.0) * trainer.budget
    train = train_metrics(tmp_path / mode)
    assert max(r["arch_grad_budget"] for r in train) > 0  # the budget bound at some step
    assert all(r["arch_grad_task"] > 0 for r in train)


def test_non_finite_weights_never_reach_a_checkpoint(tmp_path):
  """Weights that turn NaN between two log steps (log_every > checkpoint_every) stop the run at
  the next save or refresh, naming the step; the latest checkpoint, which a rerun resumes from,
  holds finite weights (a NaN one would poison every rerun)."""
  Trainer(smoke_config("total_steps=2", "log_every=1", "checkpoint_every=2"), tmp_path).run()
  blow_up = ["log_every=20", "checkpoint_every=1", "optim.lr=1e30", "optim.arch_lr=1e30"]
  with pytest.raises(NonFiniteLossError, match="non-finite parameters at step"):
    Trainer(smoke_config("total_steps=20", *blow_up), tmp_path, allow_config_change=True).run()
  resumed = Trainer(smoke_config("total_steps=20"), tmp_path, allow_config_change=True)
  assert 2 <= resumed.restore_or_start() < 20
  assert bool(_all_finite(resumed.state.params))


@pytest.mark.parametrize(
  "override, field",
  [
    ("budget.fraction=2.0", "config.budget.fraction"),
    ("budget.fraction=-1.0", "config.budget.fraction"),
    ("budget.weight=-1.0", "config.budget.weight"),
    ("optim.epochs=-1.0", "config.optim.epochs"),
    ("optim.lr=-0.5", "config.optim.lr"),
  ],
)
def test_out_of_range_settings_are_refused_naming_the_field_and_value(tmp_path, override, field):
  value = override.split("=")[1]
  with pytest.raises(ValueError, match=f"{field}: .*got {value}"):
    Trainer(smoke_config(override), tmp_path)
  assert not (tmp_path / "checkpoints").exists()


def test_bad_input_names_the_cause(tmp_path):
  with pytest.raises(ValueError, match="unknown config key"):
    smoke_config("model.no_such_field=1")
  with pytest.raises(ValueError, match="config.budget.value: .* below the smallest reachable"):
    Trainer(smoke_config("budget.value=10.0"), tmp_path / "a")
  Trainer(smoke_config("total_steps=1", "log_every=1"), tmp_path / "b").run()
  with pytest.raises(WorkdirMismatchError, match="different model"):
    Trainer(smoke_config("model.width=24"), tmp_path / "b")
  with pytest.raises(WorkdirError, match=r"budget.fraction \(0.5 -> 0.25\)"):
    Trainer(smoke_config("budget.fraction=0.25"), tmp_path / "b")
  Trainer(smoke_config("budget.fraction=0.25"), tmp_path / "b", allow_config_change=True)


def test_cli_train_eval_and_continue(tmp_path, capsys):
  workdir = str(tmp_path / "run")
  assert (
    main(
      [
        "train",
        "--config",
        SMOKE,
        "--workdir",
        workdir,
        "--config.total_steps=6",
        "--config.progress=False",
      ]
    )
    == 0
  )
  capsys.readouterr()
  assert main(["eval", "--workdir", workdir]) == 0
  metrics = json.loads(capsys.readouterr().out)
  assert {"accuracy", "loss", "flops", "params", "step"} <= set(metrics)
  assert metrics["step"] == 6 and 0.0 <= metrics["accuracy"] <= 1.0
  # A larger total_steps on the same workdir continues from the checkpoint.
  assert (
    main(["train", "--workdir", workdir, "--config.total_steps=9", "--config.progress=False"]) == 0
  )
  steps = [r["step"] for r in train_metrics(workdir)]
  assert steps == sorted(steps) and steps[-1] == 9 and len(steps) == len(set(steps))
  for name in ("learning_curves.png", "cost.png", "architecture.png", "arch_params.png"):
    assert (tmp_path / "run" / "report" / name).stat().st_size > 0
  # TensorBoard shows what the JSONL files hold, across the resume: every training and validation
  # record once, the cost against the budget, the architecture's sizes per layer, the report.
  scalars = events.read_scalars(workdir)
  records = report.read_jsonl(tmp_path / "run" / "metrics.jsonl")
  train = train_metrics(workdir)
  assert scalars["train/loss"] == {r["step"]: pytest.approx(r["loss"], rel=1e-6) for r in train}
  val = [r for r in records if r["kind"] == "val"]
  assert scalars["val/accuracy"] == {r["step"]: pytest.approx(r["accuracy"]) for r in val}
  assert scalars["cost/budget"] == {r["step"]: pytest.approx(r["budget"]) for r in train}
  ratios = {r["step"]: pytest.approx(r["flops"] / r["budget"], rel=1e-6) for r in train}
  assert scalars["cost/over_budget"] == ratios
  archs = report.read_jsonl(tmp_path / "run" / "arch.jsonl")
  assert scalars["arch/flops"] == {r["step"]: pytest.approx(r["flops"]) for r in archs}
  for r in archs:
    blocks = r["arch"]["blocks"]
    assert scalars["arch/block_0/hidden"][r["step"]] == blocks[0]["hidden_width"]
    assert scalars["arch/stem/kernel_1"][r["step"]] == r["arch"]["stem"]["taps"][1]
    assert scalars["arch/block_1/resolution_0"][r["step"]] == blocks[1]["resolution"][0]
  reports = {"report/learning_curves", "report/cost", "report/architecture", "report/arch_params"}
  assert set(events.image_tags(workdir)) == reports
  # eval of a workdir whose latest checkpoint is corrupt reads the one before (with a warning).
  metadata = tmp_path / "run" / "checkpoints" / "9" / "state" / "_METADATA"
  metadata.write_text(metadata.read_text()[:100])
  capsys.readouterr()
  assert main(["eval", "--workdir", workdir, "--checkpoint", "latest"]) == 0
  assert json.loads(capsys.readouterr().out)["step"] == 6


@pytest.mark.slow
def test_sigterm_saves_a_checkpoint_from_which_training_resumes(tmp_path):
  workdir = tmp_path / "run"
  cmd = [sys.executable, "-m", "dnarch_jax", "train", "--config", SMOKE, "--workdir", str(workdir),
         "--config.total_steps=400", "--config.log_every=1", "--config.progress=False",
         "--config.eval_every=1000", "--config.checkpoint_every=1000",
         "--config.arch_refresh_every=1000"]  # fmt: skip
  env = {**os.environ, "XLA_FLAGS": "--xla_backend_optimization_level=0"}
  proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
  deadline = time.time() + 300
  while time.time() < deadline and len(train_metrics(workdir)) < 3:
    time.sleep(0.5)
  proc.send_signal(signal.SIGTERM)
  out, err = proc.communicate(timeout=300)
  assert proc.returncode == 3, err[-2000:]
  assert json.loads(out.strip().splitlines()[-1])["status"] == "preempted"
  saved = Checkpointer(workdir / "checkpoints").latest_step()
  assert saved is not None and saved >= 3
  resumed = Trainer(load_config(SMOKE, [*FAST, "total_steps=" + str(saved + 2)]), workdir)
  assert resumed.run()["step"] == saved + 2


HELP_WORDS = {
  "train": ("--config.KEY=VALUE", "resumes", "SIGTERM", "SIGINT", "exit status", "checkpoints/",
            "--allow_config_change", "One process at a time"),
  "summary": ("--config.KEY=VALUE", "a corrupt one is skipped", "exit status"),
  "eval": ("a corrupt one is skipped", "exit status", "--workdir"),
  "export": ("a corrupt one is skipped", "exit status", "--out"),
  "predict": ("exit status", "--model", "--input"),
}  # fmt: skip


@pytest.mark.parametrize("command", sorted(HELP_WORDS))
def test_help_says_overrides_resume_signals_and_exit_status(command, capsys):
  with pytest.raises(SystemExit) as exit_:
    main([command, "--help"])
  out = capsys.readouterr().out
  assert exit_.value.code == 0
  for words in HELP_WORDS[command]:
    assert words in out, words
