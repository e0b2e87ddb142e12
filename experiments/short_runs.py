"""The short runs of experiments/README.md's results table: CCNN-4,140 against DNArch (half the
maximal network's FLOPs) on smnist, pmnist, mnist and mnist_dense, the same steps for both.

Each run is the plain command line (``dnarch train``, then ``dnarch eval`` on the test set, then
``dnarch summary --workdir`` for the final architecture's cost and budget), timed by wall clock.
The runs are far shorter than the paper's 210 epochs, so the warm-up is shortened to a tenth of
the run (the paper's 5 to 10 warm-up epochs would never finish), the cosine decay spans the run,
and the validation split that picks the best checkpoint is 1,000 examples instead of 5,000 (one
validation pass, at the end); every other hyperparameter is the config's. One JSON line per run is appended to
``RUNS/results.jsonl``:

    python experiments/short_runs.py --steps 100 --out runs/table [--only smnist:dnarch ...]
    python experiments/short_runs.py --out runs/table --table   # the Markdown table of the results
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import platform
import subprocess
import time

ROWS = [
  (task, variant)
  for task in ("smnist", "pmnist", "mnist", "mnist_dense")
  for variant in ("ccnn_4_140", "dnarch")
]


def dnarch(*args: str) -> str:
  out = subprocess.run(["dnarch", *args], capture_output=True, text=True)
  if out.returncode:
    raise RuntimeError(f"dnarch {' '.join(args)} failed:\n{out.stderr[-3000:]}")
  return out.stdout.strip().splitlines()[-1]


VAL_SIZE = 1000


def steps_per_epoch(config: str) -> int:
  """As ``dnarch train`` counts them: training examples (validation carved out) per batch."""
  from dnarch_jax.config import load_config
  from dnarch_jax.data import tasks

  cfg = load_config(config)
  return (tasks.get_task(cfg.data.task).train_examples - VAL_SIZE) // int(cfg.data.batch_size)


def run_row(task: str, variant: str, steps: int, out: pathlib.Path) -> dict:
  config = f"experiments/{task}.py:{variant}"
  workdir = out / f"{task}_{variant}"
  per_epoch = steps_per_epoch(config)
  warmup_epochs = 0.1 * steps / per_epoch
  train = [
    "train", "--config", config, "--workdir", str(workdir),
    f"--config.total_steps={steps}", f"--config.optim.warmup_epochs={warmup_epochs:.6f}",
    f"--config.data.val_size={VAL_SIZE}", f"--config.eval_every={steps}",
    f"--config.checkpoint_every={steps}",
    f"--config.log_every={max(1, steps // 10)}", "--config.progress=False",
  ]  # fmt: skip
  start = time.time()
  trained = json.loads(dnarch(*train))
  evaluated = json.loads(dnarch("eval", "--workdir", str(workdir)))
  wall = time.time() - start
  summary = json.loads(dnarch("summary", "--workdir", str(workdir), "--json", "--no-xla"))
  return dict(
    task=task,
    variant=variant,
    steps=steps,
    epochs=round(steps / per_epoch, 3),
    wall_s=round(wall, 1),
    compiles=trained["compiles"],
    test=evaluated,
    flops=summary["flops_model"],
    params=summary["params"],
    budget=summary["budget"],
    depth=summary["depth"],
    hardware=f"{os.cpu_count()}-core {platform.machine()} CPU",
    command="dnarch " + " ".join(train),
  )


def _percent(value: float | None) -> str:
  return "-" if value is None else f"{100 * value:.2f}"


def markdown_table(results: list[dict]) -> str:
  """experiments/README.md's table: one row per run, the last run of each (task, variant)."""
  latest = {(r["task"], r["variant"]): r for r in results}
  lines = [
    "| task | variant | test acc % | mean IoU % | MFLOPs/ex | params | budget MFLOPs | steps "
    "| epochs | wall | compiles | hardware | command |",
    "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
  ]
  for (task, variant), r in latest.items():
    test = r["test"]
    budget = "-" if not r["budget"] else f"{r['budget'] / 1e6:.1f}"
    lines.append(
      f"| {task} | {variant} | {_percent(test['accuracy'])} | {_percent(test.get('mean_iou'))} "
      f"| {r['flops'] / 1e6:.1f} | {r['params']:,} | {budget} | {r['steps']} | {r['epochs']} "
      f"| {r['wall_s'] / 60:.1f} min | {r['compiles']} | {r['hardware']} "
      f"| `python experiments/short_runs.py --steps {r['steps']} --only {task}:{variant}` |"
    )
  return "\n".join(lines)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--steps", type=int, default=150)
  parser.add_argument("--out", default="runs/table")
  parser.add_argument("--only", nargs="*", help="TASK:VARIANT rows to run (default: all)")
  parser.add_argument("--table", action="store_true", help="print the table of OUT's results")
  args = parser.parse_args()
  out = pathlib.Path(args.out)
  if args.table:
    lines = (out / "results.jsonl").read_text().splitlines()
    print(markdown_table([json.loads(line) for line in lines]))
    return
  out.mkdir(parents=True, exist_ok=True)
  rows = [tuple(r.split(":")) for r in args.only] if args.only else ROWS
  for task, variant in rows:
    result = run_row(task, variant, args.steps, out)
    with open(out / "results.jsonl", "a") as f:
      f.write(json.dumps(result) + "\n")
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
  main()
