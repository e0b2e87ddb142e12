"""Examples per second of the training input pipeline on real MNIST (sMNIST and 2D MNIST).

Prints one JSON object per line: {"task", "batch_size", "num_threads", "examples_per_s"}.

    python benchmarks/input_pipeline.py [--data_dir DIR] [--threads 0,1,2] [--batches 200]

MNIST is prepared into DIR first (default: a temporary folder, so the timing includes no stale
cache). Each measurement skips warm-up batches, then times `--batches` batches and keeps the best
of `--repeats` runs: the machine is shared, and the best run is the least disturbed one.
"""

import argparse
import json
import tempfile
import time

from dnarch_jax.data import make_pipeline, prepare_mnist
from dnarch_jax.data.pipeline import DEFAULT_NUM_THREADS

WARMUP_BATCHES = 10


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
  args = parser.parse_args()
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


if __name__ == "__main__":
  main()
