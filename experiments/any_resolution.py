"""A trained network's test accuracy at input sizes other than its training size.

    python experiments/any_resolution.py --workdir runs/mnist --sizes 14 28 42 56

For each size S, evaluates the run's best checkpoint on the test split resized to S (x S for
images; ``dnarch eval --input_size``, :mod:`dnarch_jax.run.evaluate`) and appends one JSON line per
size to ``--out`` (default ``experiments/results/any_resolution.jsonl``) with the command, the
workdir, its training input size, the accuracy, loss and FLOPs per example.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import shlex
import sys
import time

DEFAULT_OUT = pathlib.Path(__file__).parent / "results" / "any_resolution.jsonl"


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--workdir", required=True, help="a DNArch run's workdir")
  parser.add_argument("--sizes", type=int, nargs="+", required=True, help="sizes per axis")
  parser.add_argument("--checkpoint", default="best", choices=["best", "latest"])
  parser.add_argument("--out", type=pathlib.Path, default=DEFAULT_OUT)
  args = parser.parse_args(argv)

  from dnarch_jax.run.evaluate import evaluate_run
  from dnarch_jax.run.experiment import run_model_config
  from dnarch_jax.run.loop import load_run_config

  cfg = run_model_config(load_run_config(args.workdir))
  command = shlex.join(["python", "experiments/any_resolution.py", *sys.argv[1:]])
  args.out.parent.mkdir(parents=True, exist_ok=True)
  for size in args.sizes:
    start = time.perf_counter()
    result = evaluate_run(args.workdir, "test", args.checkpoint, (size,) * cfg.ndim)
    line = dict(
      workdir=args.workdir,
      trained_input_size=list(cfg.input_size),
      wall_s=round(time.perf_counter() - start, 1),
      command=command,
      **result,
    )
    print(json.dumps(line), flush=True)
    with args.out.open("a") as f:
      f.write(json.dumps(line) + "\n")
  return 0


if __name__ == "__main__":
  raise SystemExit(main())
