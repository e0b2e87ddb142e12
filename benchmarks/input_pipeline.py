"""Examples per second of the training input pipeline on real MNIST (sMNIST and 2D MNIST).

Prints one JSON object per line: {"task", "batch_size", "num_threads", "examples_per_s"}, then
per task what one training process consumes: {"task", "step_case", "step_median_ms",
"train_examples_per_s", "pipeline_over_train"}. The consumption is measured here, by timing the
CCNN-4,140 training step at the task's shapes and batch (``benchmarks/step.py``'s cases
``smnist_4_140_crop`` and ``mnist_4_140_crop``, at the initial crop, the cheapest step a run
takes before its masks shrink), so the ratio compares two numbers taken on the same machine.

    python benchmarks/input_pipeline.py [--data_dir DIR] [--threads 0,1,2] [--batches 200]

MNIST is prepared into DIR first (default: a temporary folder, so the timing includes no stale
cache). Each measurement skips warm-up batches, then times `--batches` batches and keeps the best
of `--repeats` runs: the machine is shared, and the best run is the least disturbed one.
"""

import argparse
import json
import pathlib
import subprocess
import sys
import tempfile
import time

from dnarch_jax.data import make_pipeline, prepare_mnist
from dnarch_jax.data.pipeline import DEFAULT_NUM_THREADS

WARMUP_BATCHES = 10
# The training step each task feeds, and its batch size (experiments/<task>.py's CCNN-4,140).
STEP_CASES = {"smnist": ("smnist_4_140_crop", 100), "mnist": ("mnist_4_140_crop", 64)}


def examples_per_second(task, batch_size, num_threads, data_dir, batches, repeats) -> float:
  best = 0.0
  for repeat in range(repeats):
    iterator = make_pipeline(
      task,
      "train",
      batch_size=batch_size,
      seed=repeat,
      data_dir=data_dir,
      process_index=0,
      process_count=1,
      num_threads=num_threads,
    )
    for _ in range(WARMUP_BATCHES):
      next(iterator)
    start = time.perf_counter()
    for _ in range(batches):
      next(iterator)
    best = max(best, batches * batch_size / (time.perf_counter() - start))
  return best


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--data_dir", default=None)
  parser.add_argument(
    "--threads",
    default=str(DEFAULT_NUM_THREADS),
    help="comma-separated grain read thread counts (default: the pipeline's default)",
  )
  parser.add_argument("--batches", type=int, default=200)
  parser.add_argument("--repeats", type=int, default=3)
  parser.add_argument("--step-runs", type=int, default=5, help="timed training steps per task")
  args = parser.parse_args()
  slowest = {}
  with tempfile.TemporaryDirectory() as scratch:
    data_dir = args.data_dir or scratch
    prepare_mnist(data_dir)
    for task in ("smnist", "mnist"):
      for batch_size in (100, 64):
        for num_threads in (int(t) for t in args.threads.split(",")):
          rate = examples_per_second(
            task, batch_size, num_threads, data_dir, args.batches, args.repeats
          )
          record = dict(task=task, batch_size=batch_size, num_threads=num_threads)
          print(json.dumps({**record, "examples_per_s": round(rate)}), flush=True)
          if batch_size == STEP_CASES[task][1]:
            slowest[task] = min(slowest.get(task, rate), rate)
  for task, (case, batch_size) in STEP_CASES.items():
    step = train_step_ms(case, args.step_runs)
    consumed = batch_size / (step / 1e3)
    record = dict(task=task, step_case=case, step_median_ms=step)
    record.update(train_examples_per_s=round(consumed, 1))
    print(json.dumps({**record, "pipeline_over_train": round(slowest[task] / consumed, 1)}))


def train_step_ms(case: str, runs: int) -> float:
  """Median ms of the training step ``case`` of benchmarks/step.py, in its own process."""
  script = pathlib.Path(__file__).with_name("step.py")
  cmd = [sys.executable, str(script), "--child", case, "train", "--runs", str(runs)]
  out = subprocess.run(cmd, capture_output=True, text=True, check=True)
  return json.loads(out.stdout.strip().splitlines()[-1])["median_ms"]


if __name__ == "__main__":
  main()
