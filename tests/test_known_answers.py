"""Known-answer tasks (experiments/known_answers.py): each dimension's task, shortened, moves its
size from a start below the known answer towards it, without overshooting the tolerance.

The full runs (8 cases, about 3 minutes) are the experiment itself; here every task runs once
from below on a tenth of its steps or so: what must hold is that the task's gradient grows the
size (a dimension whose mask cannot travel, or whose cost term pushes the wrong way, fails), not
that the short run solves the task.
"""

import importlib.util
import pathlib
import sys

import numpy as np
import pytest

_PATH = pathlib.Path(__file__).resolve().parents[1] / "experiments" / "known_answers.py"
_spec = importlib.util.spec_from_file_location("known_answers", _PATH)
known_answers = importlib.util.module_from_spec(_spec)
sys.modules.setdefault("known_answers", known_answers)  # dataclasses look their module up
_spec.loader.exec_module(known_answers)

# Steps of the shortened runs, as a fraction of each task's full run: enough for the first
# architecture changes (compiles, not steps, take most of the time).
STEPS_SCALE = {"kernel": 0.05, "width": 0.1, "resolution": 0.1, "depth": 0.15}


def test_every_task_needs_its_expected_size_by_construction():
  """The data carry what the docstring says: kernel and depth labels need exactly their window,
  resolution labels their band, width labels all channels but a common offset."""
  rng = np.random.default_rng(0)
  x, y = known_answers.energy_data(rng, 64, known_answers.LENGTH, known_answers.WINDOW)
  w = known_answers.WINDOW
  energy = np.stack([np.sum(x[:, max(0, t - w + 1) : t + 1] ** 2, 1) for t in range(x.shape[1])], 1)
  terms = np.minimum(np.arange(x.shape[1]) + 1, w)
  np.testing.assert_array_equal(y, energy > terms * (1 - 2 / (9 * terms)) ** 3)
  x, y = known_answers.moving_sum_data(rng, 64, known_answers.LENGTH, 5)
  np.testing.assert_array_equal(y[:, 10], x[:, 6:11].sum(1) > 0)
  x, y = known_answers.band_limited_data(rng, 64, known_answers.LENGTH, 7)
  spectrum = np.abs(np.fft.rfft(x, axis=1))
  assert spectrum[:, 8:].max() < 1e-4 < spectrum[:, 7].min() and spectrum[:, 0].max() < 1e-4
  x, y = known_answers.argmax_means_data(rng, 64, 8, known_answers.CLASSES, 0.0)
  np.testing.assert_array_equal(y, np.argmax(x[:, 0, 0], 1))


@pytest.mark.parametrize("dimension", known_answers.DIMENSIONS)
def test_the_start_and_the_budget_are_the_sizes_the_task_states(dimension, tmp_path):
  """Below and above starts lie a factor 1.5 or more from the expected size (so a pass needs the
  size to move), and the budget is the cost of the expected architecture."""
  from dnarch_jax.method.arch import initial_arch
  from dnarch_jax.run.experiment import run_model_config

  task = known_answers.TASKS[dimension]
  known_answers.write_data(task, tmp_path)
  low, high = known_answers.tolerance(task.expected)
  for start in known_answers.STARTS:
    config, settings = known_answers.make_config(task, start, tmp_path, steps=10)
    cfg = run_model_config(config)
    size = known_answers.size_of(dimension, initial_arch(cfg, task.batch_size))
    assert size == task.start[start]
    assert size < low if start == "below" else size > high
    assert settings["budget"]["size"] == task.expected and config.budget.value > 0


@pytest.mark.parametrize("dimension", known_answers.DIMENSIONS)
def test_a_short_run_from_below_grows_the_size_towards_the_answer(dimension):
  record = known_answers.run_case(dimension, "below", steps_scale=STEPS_SCALE[dimension])
  start, found, expected = record["start_size"], record["found"], record["expected"]
  assert record["steps"] == round(known_answers.TASKS[dimension].steps * STEPS_SCALE[dimension])
  assert found > start, record["path"]
  assert found <= record["tolerance"][1], record["path"]
  assert abs(found - expected) < abs(start - expected)
  assert 0.0 <= record["test_accuracy"] <= 1.0 and record["budget"] > 0


def test_set_changes_one_field_of_one_task_and_names_a_bad_one(monkeypatch):
  monkeypatch.setattr(known_answers, "TASKS", dict(known_answers.TASKS))
  before = known_answers.TASKS["depth"]
  overrides = known_answers.apply_overrides(["depth.arch_lr=0.01", "depth.model.width=8"])
  after = known_answers.TASKS["depth"]
  assert overrides == {"depth.arch_lr": 0.01, "depth.model.width": 8}
  assert after.arch_lr == 0.01 and after.model == {**before.model, "width": 8}
  assert after.steps == before.steps and known_answers.TASKS["kernel"].arch_lr == 3e-3
  with pytest.raises(SystemExit, match="no field 'lrr'"):
    known_answers.apply_overrides(["depth.lrr=1"])
  with pytest.raises(SystemExit, match="DIMENSION.FIELD=VALUE"):
    known_answers.apply_overrides(["depth.lr"])
