"""DNAL against DNArch's own width learning on real MNIST, at the same final FLOPs.

For each lambda_a in {1e-4, 5e-4, 1e-5, 1e-2}: DNAL on ``experiments/dnal_mnist.py``'s CNN with
its stages shortened to fit a 2-core CPU (1 epoch of weights, 0.5 of gates, 0.5 of fine-tuning,
batch 128: 860 steps). Then DNArch learning widths alone (``experiments/mnist.py:width``, 860
steps of batch 64) under a hard budget equal to a DNAL run's final FLOPs, once per distinct
FLOPs (DNAL runs within 2% of each other share the run at the smaller budget). Then the
unpruned CNN trained for as many steps as DNAL's three stages (2 epochs). Last, DNArch's width
learning with DNAL's scaled sigmoid gates in place of its ordered masks, at DNAL 5e-4's budget. Every run is the plain command line
(``dnarch train``, then ``dnarch eval`` on the 10,000 test images); its output goes to
``OUT/<run>.train.log`` (ending with the wall time) and ``OUT/<run>.eval.log``. A run whose logs
are complete is not run again, so the script resumes where it stopped.

FLOPs are per example: DNAL's are twice its multiply-accumulates of convs and linear layers (its
tables' convention); DNArch's cost model counts every FLOP of its forward pass (convs, mixers,
BatchNorm, GELU, amortised kernel nets), so at equal numbers DNArch does fewer multiply-adds.

    python experiments/dnal_vs_dnarch.py --out runs/dnal_sweep
    python experiments/dnal_vs_dnarch.py --out runs/dnal_sweep --table \\
        --plot experiments/results/dnal_vs_dnarch.png --jsonl experiments/results/dnal_vs_dnarch.jsonl
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import platform
import subprocess
import sys
import time

LAMBDAS = ("1e-4", "5e-4", "1e-5", "1e-2")
DNAL_STAGES = (
  "--config.dnal.weights_epochs=1.0",
  "--config.dnal.arch_epochs=0.5",
  "--config.dnal.finetune_epochs=0.5",
)
QUIET = "--config.progress=False"


def dnal_run(lam: str) -> tuple[str, list[str]]:
  config = f"experiments/dnal_mnist.py:lambda_{lam}"
  return f"dnal_lambda_{lam}", ["--config", config, *DNAL_STAGES, QUIET]


def dnarch_run(lam: str, budget_flops: float, gates: bool = False) -> tuple[str, list[str]]:
  overrides = [f"--config.budget.value={budget_flops:.1f}", QUIET]
  if gates:
    overrides.insert(0, "--config.model.width_mask=scaled_sigmoid_gate")
  name = f"dnarch_{'gate_' if gates else ''}width_at_{lam}"
  return name, ["--config", "experiments/mnist.py:width", *overrides]


# DNAL's gate in place of DNArch's ordered mask in the CCNN, at this DNAL run's budget.
GATES_AT = "5e-4"


BASELINE = (
  "dnal_baseline",
  ["--config", "experiments/dnal_mnist.py:baseline", "--config.dnal.weights_epochs=2.0", QUIET],
)


def last_json(text: str) -> dict:
  lines = [line for line in text.splitlines() if line.startswith("{")]
  if not lines:
    raise RuntimeError(f"no JSON line in:\n{text[-3000:]}")
  return json.loads(lines[-1])


def run(name: str, train_args: list[str], out: pathlib.Path, train: bool = True) -> dict | None:
  """Train and evaluate one run unless its logs say it is done (``train=False``: never; ``None``
  if it is not done), and return its record for the table."""
  workdir = out / name
  train_log, eval_log = out / f"{name}.train.log", out / f"{name}.eval.log"
  command = ["dnarch", "train", *train_args, "--workdir", str(workdir)]
  # Run as `python -m dnarch_jax` of this interpreter: the same CLI, found without PATH.
  cli = [sys.executable, "-m", "dnarch_jax"]
  done = eval_log.exists() and "accuracy" in eval_log.read_text()
  if not done and not train:
    return None
  if not done:
    start = time.time()
    trained = subprocess.run([*cli, *command[1:]], capture_output=True, text=True)
    train_log.write_text(trained.stdout + trained.stderr + f"wall {time.time() - start:.2f}\n")
    if trained.returncode:
      raise RuntimeError(f"{' '.join(command)} failed; see {train_log}")
    evaluated = subprocess.run(
      [*cli, "eval", "--workdir", str(workdir)], capture_output=True, text=True
    )
    eval_log.write_text(evaluated.stdout + evaluated.stderr)
  log = train_log.read_text()
  wall = [float(line.split()[1]) for line in log.splitlines() if line.startswith("wall ")]
  test = last_json(eval_log.read_text())
  if "widths" not in test:  # a DNArch run: its widths from the discovered architecture
    summary = subprocess.run(
      [*cli, "summary", "--workdir", str(workdir), "--json", "--no-xla"],
      capture_output=True,
      text=True,
    )
    layers = last_json(summary.stdout)["layers"]
    hidden = "/".join(str(layer["hidden_width"]) for layer in layers if layer["hidden_width"])
    test["widths"] = f"stream {layers[0]['width']}, hidden {hidden}"
  return dict(
    run=name,
    test=test,
    steps=last_json(log)["step"],
    batch=json.loads((workdir / "config.json").read_text())["data"]["batch_size"],
    wall_s=wall[-1] if wall else None,
    hardware=f"{os.cpu_count()}-core {platform.machine()} CPU",
    command=" ".join(command),
  )


def shared_budgets(dnal: dict[str, dict], tolerance: float = 0.02) -> dict[str, str]:
  """For each lambda, the lambda whose DNAL FLOPs set its DNArch budget: runs whose FLOPs lie
  within ``tolerance`` of a smaller one share that one's DNArch run (at most 2% apart, one
  run at the smaller budget answers both, and the CPU time goes to a further lambda)."""
  order = sorted(dnal, key=lambda lam: dnal[lam]["test"]["flops"])
  owner: dict[str, str] = {}
  for lam in order:
    flops = dnal[lam]["test"]["flops"]
    previous = next(
      (o for o in owner.values() if flops <= (1 + tolerance) * dnal[o]["test"]["flops"]), None
    )
    owner[lam] = previous or lam
  return owner


def run_all(out: pathlib.Path, train: bool = True) -> list[dict]:
  """Every DNAL run, then DNArch at each distinct final FLOPs, then the unpruned CNN; without
  ``train`` only the finished ones are read."""
  out.mkdir(parents=True, exist_ok=True)
  dnal = {}
  for lam in LAMBDAS:
    result = run(*dnal_run(lam), out, train)
    if result is not None:
      dnal[lam] = result
  results = list(dnal.values())
  owner = shared_budgets(dnal)
  for lam in sorted(set(owner.values()), key=LAMBDAS.index):
    result = run(*dnarch_run(lam, dnal[lam]["test"]["flops"]), out, train)
    if result is not None:
      shared = [other for other, o in owner.items() if o == lam and other != lam]
      results.append(dict(result, budget=dnal[lam]["test"]["flops"], also_for=shared))
  baseline = run(*BASELINE, out, train)
  if baseline is not None:
    results.append(baseline)
  if GATES_AT in dnal:
    budget = dnal[GATES_AT]["test"]["flops"]
    result = run(*dnarch_run(GATES_AT, budget, gates=True), out, train)
    if result is not None:
      results.append(dict(result, budget=budget, also_for=[]))
  return results


def describe(r: dict) -> tuple[str, str]:
  name = r["run"]
  if name == "dnal_baseline":
    return "unpruned CNN", "-"
  lam = name.rsplit("_", 1)[1]
  if name.startswith("dnal_"):
    return "DNAL (CNN)", f"lambda_a {lam}"
  if name.startswith("dnarch_gate_"):
    return (
      "DNArch widths, DNAL's gates (CCNN)",
      f"hard budget {r['budget'] / 1e6:.2f} M = DNAL {lam}'s",
    )
  also = "".join(f", within 2% of {other}'s" for other in r["also_for"])
  return "DNArch widths (CCNN)", f"hard budget {r['budget'] / 1e6:.2f} M = DNAL {lam}'s{also}"


def markdown_table(results: list[dict]) -> str:
  lines = [
    "| method | setting | test acc % | MFLOPs/ex | params | widths | steps x batch | wall "
    "| hardware |",
    "|---|---|---|---|---|---|---|---|---|",
  ]
  for r in results:
    test = r["test"]
    method, setting = describe(r)
    widths = test["widths"]
    if isinstance(widths, list):
      widths = "/".join(map(str, widths))
    wall = "-" if r["wall_s"] is None else f"{r['wall_s'] / 60:.1f} min"
    lines.append(
      f"| {method} | {setting} | {100 * test['accuracy']:.2f} | {test['flops'] / 1e6:.2f} "
      f"| {int(test['params']):,} | {widths} | {r['steps']} x {r['batch']} | {wall} "
      f"| {r['hardware']} |"
    )
  return "\n".join(lines)


def plot(results: list[dict], path: pathlib.Path) -> None:
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  fig, ax = plt.subplots(figsize=(6.4, 4.2))
  series = {
    "DNAL (CNN)": ("o", "tab:blue"),
    "DNArch widths (CCNN)": ("s", "tab:orange"),
    "DNArch widths, DNAL's gates (CCNN)": ("^", "tab:green"),
  }
  for method, (marker, color) in series.items():
    rows = sorted(
      (r for r in results if describe(r)[0] == method), key=lambda r: r["test"]["flops"]
    )
    x = [r["test"]["flops"] / 1e6 for r in rows]
    y = [100 * r["test"]["accuracy"] for r in rows]
    ax.plot(x, y, marker=marker, color=color, label=method)
    prefix = "λ " if method.startswith("DNAL ") else "budget of DNAL "
    # Runs that ended at the same point (lambdas that pruned the same channels) share one label.
    labels: dict[tuple[float, float], list[str]] = {}
    for r, xi, yi in zip(rows, x, y, strict=True):
      labels.setdefault((xi, yi), []).append(r["run"].rsplit("_", 1)[1])
    for (xi, yi), names in labels.items():
      label = prefix + ", ".join(names)
      ax.annotate(label, (xi, yi), textcoords="offset points", xytext=(4, 4), fontsize=8)
  for r in results:
    if r["run"] == "dnal_baseline":
      test = r["test"]
      ax.plot(test["flops"] / 1e6, 100 * test["accuracy"], "k*", ms=10, label="unpruned CNN")
  ax.set_xlabel("final MFLOPs per example")
  ax.set_ylabel("MNIST test accuracy (%)")
  ax.set_title("DNAL vs DNArch width learning at the same final FLOPs")
  ax.grid(alpha=0.3)
  ax.legend(loc="upper left", fontsize=8)
  fig.tight_layout()
  path.parent.mkdir(parents=True, exist_ok=True)
  fig.savefig(path, dpi=120)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--out", default="runs/dnal_sweep")
  parser.add_argument("--table", action="store_true", help="print the table of OUT's runs")
  parser.add_argument("--plot", help="write the accuracy-vs-FLOPs plot here (with --table)")
  parser.add_argument("--jsonl", help="write one JSON line per run here (with --table)")
  args = parser.parse_args()
  out = pathlib.Path(args.out)
  if not args.table:
    run_all(out)
    return
  results = run_all(out, train=False)
  print(markdown_table(results))
  if args.plot:
    plot(results, pathlib.Path(args.plot))
  if args.jsonl:
    pathlib.Path(args.jsonl).write_text("".join(json.dumps(r) + "\n" for r in results))


if __name__ == "__main__":
  main()
