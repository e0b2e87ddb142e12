"""The Pareto comparison (experiments/pareto.py): its rows, its baselines' architectures, its
table and plot, and two rows end to end (dnarch, then retrain from what it found)."""

import dataclasses
import importlib.util
import json
import pathlib
import sys

import jax
import pytest

from dnarch_jax.method.arch import compute_arch
from dnarch_jax.method.budget import arch_cost
from dnarch_jax.network.model import init_variables

_PATH = pathlib.Path(__file__).resolve().parents[1] / "experiments" / "pareto.py"
_spec = importlib.util.spec_from_file_location("pareto", _PATH)
pareto = importlib.util.module_from_spec(_spec)
sys.modules.setdefault("pareto", pareto)  # dataclasses look their module up
_spec.loader.exec_module(pareto)


def test_rows_put_every_task_method_and_budget_of_seed_0_first_and_only_selects():
  rows = pareto.all_rows()
  assert len(rows) == 2 * 3 * 3 * 4
  assert [r.key for r in rows[:4]] == [f"mnist:{m}:0.125:0" for m in pareto.METHODS]
  assert {r.seed for r in rows[:24]} == {0} and {r.task for r in rows[:24]} == {"mnist", "smnist"}
  chosen = pareto.select(rows, ["mnist:dnarch:0.5", "smnist:random:0.25:2"])
  assert [r.key for r in chosen] == [
    "mnist:dnarch:0.5:0", "mnist:dnarch:0.5:1", "mnist:dnarch:0.5:2", "smnist:random:0.25:2",
  ]  # fmt: skip
  with pytest.raises(SystemExit, match="TASK"):
    pareto.select(rows, ["mnist:grid"])
  # --config.* passes through last, so it overrides even the search's own settings.
  dnarch = pareto.Row("smnist", "dnarch", 0.25, 0)
  overrides = pareto.base_overrides(dnarch, ["--config.optim.arch_epochs=0.5"])
  assert overrides[-3:] == [
    "arch_refresh_every=100",
    "budget.fraction=0.25",
    "optim.arch_epochs=0.5",
  ]
  assert not any(
    "arch_epochs" in o
    for o in pareto.base_overrides(dataclasses.replace(dnarch, method="uniform"), [])
  )


def test_uniform_shrinks_widths_and_resolutions_by_one_factor_within_the_budget():
  row = pareto.Row("mnist", "uniform", 0.125, 0)
  arch, info = pareto.uniform_arch(row, [])
  _, cfg, batch = pareto.load(row, pareto.base_overrides(row, []))
  _, budget = pareto.maximal_and_budget(row, [])
  start = compute_arch(init_variables(cfg, jax.random.key(0))["params"], cfg, batch)
  assert arch_cost(arch, cfg, batch, "flops") <= budget
  assert 0 < info["factor"] < 1
  assert arch.depth == start.depth and arch.stem.taps == start.stem.taps
  assert arch.stream_width < cfg.width
  assert len({(b.hidden_width, b.resolution) for b in arch.blocks}) == 1  # one factor for all


def test_random_architectures_cost_within_5_percent_of_the_budget():
  row = pareto.Row("mnist", "random", 0.25, 0)
  arch, info = pareto.random_arch(row, [])
  _, cfg, batch = pareto.load(row, pareto.base_overrides(row, []))
  _, budget = pareto.maximal_and_budget(row, [])
  assert abs(arch_cost(arch, cfg, batch, "flops") / budget - 1) <= 0.05
  assert info["draws"] >= 1


def test_table_and_plot_give_means_spreads_and_the_search_cost(tmp_path):
  def result(method, seed, accuracy, wall):
    return dict(
      task="mnist", method=method, budget_fraction=0.25, seed=seed, flops=1e7 + seed,
      params=1000, test_accuracy=accuracy, steps=10, wall_s=wall, budget=1.2e7, extra=[],
    )  # fmt: skip

  results = [
    result("dnarch", 0, 0.98, 120.0), result("dnarch", 1, 0.99, 150.0),
    result("retrain", 0, 0.97, 100.0), result("retrain", 1, 0.97, 100.0),
    result("uniform", 0, 0.96, 90.0),
  ]  # fmt: skip
  summary = {s["method"]: s for s in pareto.summarise(results)}
  assert summary["dnarch"]["accuracy"] == pytest.approx(0.985)
  assert summary["dnarch"]["accuracy_sd"] == pytest.approx(0.00707, abs=1e-4)
  assert summary["dnarch"]["search_cost"] == pytest.approx((1.2 + 1.5) / 2)
  assert summary["uniform"]["search_cost"] is None and summary["uniform"]["seeds"] == 1
  table = pareto.markdown_table(results)
  assert "| mnist | 0.25 (12.0 M) | dnarch | 2 | 98.50 ± 0.71 |" in table and "1.35x" in table
  pareto.plot(results, tmp_path / "p.png")
  assert (tmp_path / "p.png").stat().st_size > 10_000


def test_a_dnarch_row_and_its_retrain_row_end_to_end(tmp_path, capsys):
  """Three steps each, of a 2-block 8-channel network (--config.* pass through to every run):
  retrain trains dnarch's final architecture fixed; a rerun skips both."""
  only = ["--only", "mnist:dnarch:0.125:0", "mnist:retrain:0.125:0"]
  tiny = ["--config.total_steps=3", "--config.model.num_blocks=2", "--config.model.width=8"]
  argv = ["--out", str(tmp_path), *only, *tiny, "--config.model.hidden_width=8"]
  assert pareto.main(argv) == 0
  results = pareto.read_results(tmp_path)
  assert [r["method"] for r in results] == ["dnarch", "retrain"]
  dnarch, retrain = results
  assert retrain["arch"] == dnarch["arch"] and retrain["source"] == "mnist:dnarch:0.125:0"
  assert dnarch["flops"] <= 1.05 * dnarch["budget"]
  assert all(r["steps"] == 3 and r["extra"] == argv[-4:] for r in results)
  assert len(dnarch["arch"]["blocks"]) <= 2 and dnarch["arch"]["stream"] <= 8
  assert "--config.arch_init=" in retrain["train_command"]
  assert json.loads((tmp_path / "archs" / "mnist_retrain_b0.125_s0.json").read_text())
  assert pareto.main(argv) == 0
  assert len(pareto.read_results(tmp_path)) == 2
