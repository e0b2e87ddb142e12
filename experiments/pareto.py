"""Does the search pay? DNArch against uniform scaling, random architectures and retraining, at
equal FLOPs, on smnist and mnist.

For each task, budget (a fraction of the maximal network's FLOPs per example) and seed, four runs
of the same network, trained for the same number of steps with the same weights' schedule:

- ``dnarch``: all four dimensions learned under the (soft) budget from the task's configured
  start (projected into the budget at step 0 when it costs more; a budget above the start's cost
  does not bind, the penalty only pushes down), searching during the first ``arch_epochs`` and
  training the found architecture for the rest of the run;
- ``retrain``: the architecture ``dnarch`` ended with, trained from scratch, fixed (what the
  found architecture is worth apart from the joint training);
- ``uniform``: the maximal network shrunk as a user would by hand: the stream and hidden widths
  and the blocks' resolutions scaled by one factor (each to the reachable size nearest the
  factor times its maximum; resolutions not below ``model.resolution_min``), kernels (their
  extent, so taps follow the resolution) and depth as the configured start has them, the factor
  the largest whose network fits the budget;
- ``random``: mask parameters drawn uniformly in their boxes (``dnarch_jax.method.search_space``: the
  space DNArch searches), redrawn until the architecture costs within 5% of the budget.

The fixed runs start from their architecture (``--config.arch_init``) with the masks frozen
(``optim.arch_lr`` 0) and no budget. Every run is the plain command line (``dnarch train``,
``dnarch eval`` on the test set, ``dnarch summary --json --no-xla``), timed by wall clock from
the start of training to the end of the evaluation. A finished row (its line in
``OUT/results.jsonl``) is never rerun; a row that was interrupted restarts from scratch (so its
wall time is one run's).

    python experiments/pareto.py --out runs/pareto [--only mnist:dnarch:0.125:0 ...]
    python experiments/pareto.py --out runs/pareto --table        # experiments/README.md's table
    python experiments/pareto.py --out runs/pareto --plot experiments/results/pareto.png
    python experiments/pareto.py --out runs/pareto --config.model.width=140  # e.g. on a GPU

``--config.*`` arguments pass through to every ``dnarch train`` (and make rows of their own).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import pathlib
import platform
import shutil
import subprocess
import sys
import time

import numpy as np

METHODS = ("dnarch", "retrain", "uniform", "random")
FRACTIONS = (0.125, 0.25, 0.5)
SEEDS = (0, 1, 2)
RANDOM_TOLERANCE = 0.05  # random architectures within 5% of the budget
RANDOM_MAX_DRAWS = 20000


@dataclasses.dataclass(frozen=True)
class Task:
  """A task's network and schedule: ``config`` and its overrides, the same for every method."""

  config: str
  overrides: tuple[str, ...]
  search: tuple[str, ...]  # dnarch's alone: when the architecture is searched


# Small maximal networks (4 blocks of 16 channels) so a row takes minutes on a 2-core CPU.
# mnist: the main job's network and settings (experiments/mnist.py:main: blocks from 18x18, the
# resolution floor at 18x18) at half its widths, 2 epochs, the search in the first 0.75, with
# kernels from sigma 0.075: every row in experiments/results was measured so, before the main job
# started at 0.15 (e3021db), and a resumed sweep must not mix the two.
# smnist: experiments/smnist.py:dnarch at 16 channels, 3 epochs, the search in the first 1.
TASKS = {
  "mnist": Task(
    config="experiments/mnist.py:main",
    overrides=(
      "model.width=16", "model.hidden_width=32", "optim.epochs=2.0", "optim.warmup_epochs=0.1",
      "model.kernel_sigma_init=0.075",
    ),
    search=("optim.arch_epochs=0.75", "optim.arch_warmup_epochs=0.1"),
  ),
  "smnist": Task(
    config="experiments/smnist.py:dnarch",
    overrides=(
      "model.width=16", "model.hidden_width=16", "optim.epochs=3.0", "optim.warmup_epochs=0.1",
    ),
    search=("optim.arch_epochs=1.0", "optim.arch_warmup_epochs=0.1", "arch_refresh_every=100"),
  ),
}  # fmt: skip

LOOP = ("progress=False", "log_every=50", "eval_every=100000", "checkpoint_every=100000")


@dataclasses.dataclass(frozen=True)
class Row:
  task: str
  method: str
  fraction: float
  seed: int

  @property
  def name(self) -> str:
    return f"{self.task}_{self.method}_b{self.fraction:g}_s{self.seed}"

  @property
  def key(self) -> str:
    return f"{self.task}:{self.method}:{self.fraction:g}:{self.seed}"


def all_rows(tasks=("mnist", "smnist")) -> list[Row]:
  """Seed 0 of every task and budget first, so a partial sweep already compares every method."""
  return [
    Row(task, method, fraction, seed)
    for seed in SEEDS
    for task in tasks
    for fraction in FRACTIONS
    for method in METHODS
  ]


def select(rows: list[Row], only: list[str] | None) -> list[Row]:
  if not only:
    return rows
  chosen = []
  for pattern in only:
    parts = pattern.split(":")
    if len(parts) > 4 or parts[0] not in TASKS or (len(parts) > 1 and parts[1] not in METHODS):
      raise SystemExit(f"--only {pattern}: expected TASK[:METHOD[:FRACTION[:SEED]]]")
    chosen += [r for r in rows if r.key.split(":")[: len(parts)] == parts]
  return [r for r in rows if r in chosen]


# --- the runs' configs --------------------------------------------------------------------------


def base_overrides(row: Row, extra: list[str]) -> list[str]:
  """The task's settings, then the search's for a dnarch row, then ``--config.*`` (which win)."""
  task = TASKS[row.task]
  search = [*task.search, f"budget.fraction={row.fraction}"] if row.method == "dnarch" else []
  given = (e.removeprefix("--config.") for e in extra)
  return [*task.overrides, *LOOP, f"seed={row.seed}", *search, *given]


def load(row: Row, overrides: list[str]):
  """The config, model config and batch size of a row's run."""
  from dnarch_jax.config import load_config
  from dnarch_jax.run.experiment import run_model_config

  config = load_config(TASKS[row.task].config, overrides)
  return config, run_model_config(config), int(config.data.batch_size)


def maximal_and_budget(row: Row, extra: list[str]) -> tuple[float, float]:
  import jax

  from dnarch_jax.method import budget
  from dnarch_jax.network.model import init_variables

  _, cfg, batch = load(row, base_overrides(row, extra))
  params = init_variables(cfg, jax.random.key(row.seed))["params"]
  maximal = budget.maximal_cost(params, cfg, batch, "flops")
  return maximal, row.fraction * maximal


def uniform_arch(row: Row, extra: list[str]):
  """The largest uniform shrink of the maximal network within the budget, and its factor."""
  import jax

  from dnarch_jax.method.arch import compute_arch
  from dnarch_jax.method.budget import arch_cost
  from dnarch_jax.method.crops import params_with_sizes
  from dnarch_jax.network.model import init_variables

  _, cfg, batch = load(row, base_overrides(row, extra))
  _, budget = maximal_and_budget(row, extra)
  params = init_variables(cfg, jax.random.key(row.seed))["params"]
  start = compute_arch(params, cfg, batch)
  scaled = ("arch_stream_cutoff", "arch_hidden_cutoff", "arch_resolution_cutoff")

  def arch_at(factor):
    def choose(name, axis, sizes):
      if not name.endswith(scaled):
        return None
      # The nearest reachable size: rounding down instead halves a width of 16 in 8-channel
      # buckets at any factor below 1 (smnist at 1/2: widths 8 beside resolutions of 768 of 784).
      return min(sizes, key=lambda size: (abs(size - factor * sizes[-1]), size))

    arch = compute_arch(params_with_sizes(params, cfg, start, choose), cfg, batch)
    return arch, arch_cost(arch, cfg, batch, "flops")

  if arch_at(1.0)[1] <= budget:  # the maximal widths and resolutions fit: no shrink needed
    return arch_at(1.0)[0], dict(factor=1.0)
  low, high = 0.0, 1.0
  if arch_at(low)[1] > budget:
    raise SystemExit(f"{row.key}: the smallest uniform shrink costs more than the budget")
  for _ in range(12):  # sizes come in buckets: a factor to 1/4096 finds the largest that fits
    mid = (low + high) / 2
    low, high = (mid, high) if arch_at(mid)[1] <= budget else (low, mid)
  return arch_at(low)[0], dict(factor=round(low, 4))


def random_arch(row: Row, extra: list[str]):
  """Mask parameters uniform in their boxes until the architecture costs within 5% of the
  budget; the draw's random stream is the row's (task, budget, seed)."""
  import jax
  import jax.numpy as jnp

  from dnarch_jax.method import search_space
  from dnarch_jax.method.arch import compute_arch
  from dnarch_jax.method.budget import arch_cost
  from dnarch_jax.network.model import init_variables

  _, cfg, batch = load(row, base_overrides(row, extra))
  _, budget = maximal_and_budget(row, extra)
  params = jax.device_get(init_variables(cfg, jax.random.key(row.seed))["params"])
  rng = np.random.default_rng([list(TASKS).index(row.task), int(row.fraction * 1000), row.seed])

  def draw(path, leaf):
    name = path[-1].key
    if not name.startswith("arch_"):
      return leaf
    low, high = search_space.bounds(name, cfg)
    return jnp.asarray(rng.uniform(low, high, np.shape(leaf)), leaf.dtype)

  for draws in range(1, RANDOM_MAX_DRAWS + 1):
    p = search_space.clip_to_bounds(jax.tree_util.tree_map_with_path(draw, params), cfg)
    # The kernels' boxes depend on the layers' resolutions: clip again at the drawn ones.
    p = search_space.clip_to_bounds(p, cfg, compute_arch(p, cfg, batch))
    arch = compute_arch(p, cfg, batch)
    if abs(arch_cost(arch, cfg, batch, "flops") / budget - 1) <= RANDOM_TOLERANCE:
      return arch, dict(draws=draws)
  raise SystemExit(f"{row.key}: no random architecture within 5% of the budget in {draws} draws")


def retrain_arch(row: Row, out: pathlib.Path, extra: list[str]):
  from dnarch_jax.method.arch import load_arch

  source = dataclasses.replace(row, method="dnarch")
  log = out / source.name / "arch.jsonl"
  if not (out / source.name / "result.json").exists():
    raise SystemExit(f"{row.key}: needs its dnarch row ({source.key}) first")
  return load_arch(str(log)), dict(source=source.key)


# --- one row ------------------------------------------------------------------------------------


def dnarch_cli(*args: str) -> str:
  out = subprocess.run(["dnarch", *args], capture_output=True, text=True)
  if out.returncode:
    raise RuntimeError(f"dnarch {' '.join(args)} failed:\n{out.stderr[-3000:]}")
  return out.stdout.strip().splitlines()[-1]


def run_row(row: Row, out: pathlib.Path, extra: list[str]) -> dict:
  from dnarch_jax.method.arch import sizes_of

  workdir = out / row.name
  shutil.rmtree(workdir, ignore_errors=True)  # an interrupted row restarts: one run's wall time
  overrides = base_overrides(row, extra)
  info: dict = {}
  if row.method != "dnarch":
    make = {"uniform": uniform_arch, "random": random_arch}.get(row.method)
    arch, info = make(row, extra) if make else retrain_arch(row, out, extra)
    arch_file = out / "archs" / f"{row.name}.json"
    arch_file.parent.mkdir(parents=True, exist_ok=True)
    arch_file.write_text(json.dumps(arch.to_dict()))
    overrides += [
      f"arch_init={arch_file}", "optim.arch_lr=0.0", "budget.fraction=0.0", "budget.value=0.0",
    ]  # fmt: skip
  train = ["train", "--config", TASKS[row.task].config, "--workdir", str(workdir)]
  train += [f"--config.{o}" for o in overrides]
  start = time.time()
  trained = json.loads(dnarch_cli(*train))
  evaluated = json.loads(dnarch_cli("eval", "--workdir", str(workdir)))
  wall = time.time() - start
  summary = json.loads(dnarch_cli("summary", "--workdir", str(workdir), "--json", "--no-xla"))
  (workdir / "result.json").write_text(json.dumps(trained))
  maximal, budget = maximal_and_budget(row, extra)
  from dnarch_jax.method.arch import Arch

  arch = Arch.from_dict(trained["arch"])
  taps, stream, blocks = sizes_of(arch)
  return dict(
    task=row.task,
    method=row.method,
    budget_fraction=row.fraction,
    seed=row.seed,
    flops=summary["flops_model"],
    params=summary["params"],
    test_accuracy=evaluated["accuracy"],
    steps=trained["step"],
    wall_s=round(wall, 1),
    budget=budget,
    maximal_flops=maximal,
    max_cost=trained["max_cost"],
    compiles=trained["compiles"],
    arch=dict(
      stem_taps=list(taps), stream=stream, depth=arch.depth,
      blocks=[dict(taps=list(t), hidden=h, resolution=list(r)) for t, h, r, on in blocks if on],
    ),
    extra=extra,
    hardware=f"{os.cpu_count()}-core {platform.machine()} CPU",
    command=f"python experiments/pareto.py --out {out} --only {row.key}"
    + "".join(f" {e}" for e in extra),
    train_command="dnarch " + " ".join(train),
    **info,
  )  # fmt: skip


def read_results(out: pathlib.Path) -> list[dict]:
  path = out / "results.jsonl"
  if not path.exists():
    return []
  return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def done_keys(results: list[dict]) -> set:
  return {
    (r["task"], r["method"], r["budget_fraction"], r["seed"], tuple(r["extra"])) for r in results
  }


# --- table and plot -----------------------------------------------------------------------------


def _mean_std(values: list[float]) -> tuple[float, float]:
  a = np.asarray(values, np.float64)
  return float(a.mean()), float(a.std(ddof=1)) if a.size > 1 else 0.0


def summarise(results: list[dict]) -> list[dict]:
  """Per (task, budget, method): seeds, mean and spread of test accuracy and FLOPs, wall time,
  and for dnarch its wall time over its retrain row's (the search's cost)."""
  groups: dict = {}
  for r in results:
    groups.setdefault((r["task"], r["budget_fraction"], r["method"]), []).append(r)
  retrain_wall = {
    (r["task"], r["budget_fraction"], r["seed"]): r["wall_s"]
    for r in results
    if r["method"] == "retrain"
  }
  rows = []
  order = lambda k: (list(TASKS).index(k[0]), k[1], METHODS.index(k[2]))
  for key in sorted(groups, key=order):
    rs = groups[key]
    acc, acc_sd = _mean_std([r["test_accuracy"] for r in rs])
    flops, flops_sd = _mean_std([r["flops"] for r in rs])
    ratios = [
      r["wall_s"] / retrain_wall[(r["task"], r["budget_fraction"], r["seed"])]
      for r in rs
      if r["method"] == "dnarch" and (r["task"], r["budget_fraction"], r["seed"]) in retrain_wall
    ]
    rows.append(
      dict(
        task=key[0], budget_fraction=key[1], method=key[2], seeds=len(rs),
        accuracy=acc, accuracy_sd=acc_sd, flops=flops, flops_sd=flops_sd,
        budget=rs[0]["budget"], wall_s=float(np.mean([r["wall_s"] for r in rs])),
        search_cost=float(np.mean(ratios)) if ratios else None,
      )
    )  # fmt: skip
  return rows


def markdown_table(results: list[dict]) -> str:
  lines = [
    "| task | budget | method | seeds | test acc % (mean ± sd) | MFLOPs (mean ± sd) | "
    "wall min | dnarch / retrain wall |",
    "|---|---|---|---|---|---|---|---|",
  ]
  for s in summarise(results):
    cost = "-" if s["search_cost"] is None else f"{s['search_cost']:.2f}x"
    spread = lambda mean, sd, n=s["seeds"]: f"{mean:.2f} ± {sd:.2f}" if n > 1 else f"{mean:.2f}"
    lines.append(
      f"| {s['task']} | {s['budget_fraction']:g} ({s['budget'] / 1e6:.1f} M) | {s['method']} "
      f"| {s['seeds']} | {spread(100 * s['accuracy'], 100 * s['accuracy_sd'])} "
      f"| {spread(s['flops'] / 1e6, s['flops_sd'] / 1e6)} | {s['wall_s'] / 60:.1f} | {cost} |"
    )
  return "\n".join(lines)


def plot(results: list[dict], path: pathlib.Path) -> None:
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  summary = summarise(results)
  tasks = [t for t in TASKS if any(s["task"] == t for s in summary)]
  fig, axes = plt.subplots(1, len(tasks), figsize=(6 * len(tasks), 4.5), squeeze=False)
  colors = dict(dnarch="tab:red", retrain="tab:orange", uniform="tab:blue", random="tab:gray")
  for ax, task in zip(axes[0], tasks, strict=True):
    for method in METHODS:
      points = [s for s in summary if s["task"] == task and s["method"] == method]
      if not points:
        continue
      ax.errorbar(
        [p["flops"] / 1e6 for p in points],
        [100 * p["accuracy"] for p in points],
        xerr=[p["flops_sd"] / 1e6 for p in points],
        yerr=[100 * p["accuracy_sd"] for p in points],
        marker="o", capsize=3, color=colors[method], label=method,
      )  # fmt: skip
      seeds = [r for r in results if r["task"] == task and r["method"] == method]
      ax.scatter(
        [r["flops"] / 1e6 for r in seeds], [100 * r["test_accuracy"] for r in seeds],
        s=8, alpha=0.4, color=colors[method],
      )  # fmt: skip
    for fraction in sorted({s["budget"] for s in summary if s["task"] == task}):
      ax.axvline(fraction / 1e6, color="k", lw=0.5, ls=":")
    ax.set(title=f"{task}: test accuracy against FLOPs (dotted: budgets)", xscale="log")
    for axis in (ax.xaxis.set_major_formatter, ax.xaxis.set_minor_formatter):
      axis(matplotlib.ticker.FormatStrFormatter("%g"))
    ax.set(xlabel="MFLOPs per example", ylabel="test accuracy %")
    ax.grid(alpha=0.3)
    ax.legend()
  fig.tight_layout()
  path.parent.mkdir(parents=True, exist_ok=True)
  fig.savefig(path, dpi=120)


# --- command line -------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--out", type=pathlib.Path, default=pathlib.Path("runs/pareto"))
  parser.add_argument("--only", nargs="*", help="TASK[:METHOD[:FRACTION[:SEED]]] rows")
  parser.add_argument("--table", action="store_true", help="print the table of OUT's results")
  parser.add_argument("--plot", type=pathlib.Path, help="draw OUT's results into this PNG")
  args, extra = parser.parse_known_args(argv)
  bad = [e for e in extra if not e.startswith("--config.")]
  if bad:
    parser.error(f"unrecognised arguments: {' '.join(bad)} (only --config.* pass through)")
  results = read_results(args.out)
  if args.table or args.plot:
    if args.table:
      print(markdown_table(results))
    if args.plot:
      plot(results, args.plot)
    return 0
  args.out.mkdir(parents=True, exist_ok=True)
  done = done_keys(results)
  for row in select(all_rows(), args.only):
    if (row.task, row.method, row.fraction, row.seed, tuple(extra)) in done:
      continue
    result = run_row(row, args.out, extra)
    with open(args.out / "results.jsonl", "a") as f:
      f.write(json.dumps(result) + "\n")
    print(
      f"{row.key}: {100 * result['test_accuracy']:.2f}% at {result['flops'] / 1e6:.2f} MFLOPs "
      f"(budget {result['budget'] / 1e6:.2f}), {result['wall_s'] / 60:.1f} min",
      flush=True,
    )
  return 0


if __name__ == "__main__":
  sys.exit(main())
