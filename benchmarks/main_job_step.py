"""Median milliseconds of README command 1's training step (``experiments/mnist.py:main`` at its
step-0 architecture, search on), in this process. Run it from two checkouts back to back to tell
a change's cost from the shared host's drift:

    PYTHONPATH=CHECKOUT python benchmarks/main_job_step.py [--steps 40]

Prints one JSON line: ``{"src", "median_ms", "min_ms", "steps", "device"}``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time

import jax

import dnarch_jax
from dnarch_jax.config import load_config
from dnarch_jax.run import sharding
from dnarch_jax.run.train import Trainer


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--steps", type=int, default=40)
  args = parser.parse_args()
  trainer = Trainer(
    load_config("experiments/mnist.py:main", ["progress=False"]), tempfile.mkdtemp()
  )
  trainer._refresh_arch(0, force_log=True)  # the step-0 projection into the budget
  batch = sharding.global_batch(next(trainer.train_iter), trainer.mesh)
  for _ in range(3):  # compile and warm up
    jax.block_until_ready(trainer.train_one(0, batch))
  times = []
  for _ in range(args.steps):
    t0 = time.perf_counter()
    jax.block_until_ready(trainer.train_one(0, batch))
    times.append(time.perf_counter() - t0)
  line = dict(src=dnarch_jax.__file__, median_ms=round(1e3 * statistics.median(times), 2),
              min_ms=round(1e3 * min(times), 2), steps=args.steps,
              device=str(jax.devices()[0].device_kind))  # fmt: skip
  print(json.dumps(line))


if __name__ == "__main__":
  main()
