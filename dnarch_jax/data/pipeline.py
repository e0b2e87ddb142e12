"""grain pipelines over a task split: deterministic, sharded per process, checkpointable.

The stream is defined globally, the same in every process: the split's example ids, shuffled by
grain's index shuffle (reshuffled each epoch), repeated, and cut into *global* batches of
`batch_size`. Process `p` of `P` reads only its slice `[p * b, (p + 1) * b)` of every global batch
(`b = batch_size // P`), so processes read disjoint shards, their union is the global batch, and
`jax.make_array_from_process_local_data` assembles the same global batch for any process count:
a 2-process run sees exactly the batches of a 1-process run. The stream is repeated before it is
batched, so training batches run across epoch boundaries and are always full.

Augmentation draws from a `np.random.Generator` seeded by `(seed, position in the global stream)`,
so it is deterministic, independent of the process layout and of threads, and different in every
epoch. The iterator's state is grain's `{"next_index": batches consumed}` (JSON-serialisable); a
pipeline rebuilt with the same arguments and given that state yields exactly the batches the
uninterrupted one would. (The state holds only that position: resuming with another seed, batch
size or task silently gives another stream, so keep those in the run's stored config.)

Every batch is `{"input": float32 [b, *input_shape], "label": int32 [b] or [b, *spatial],
"mask": float32 [b]}`; the mask is 0 only for the padding that completes the last batch of a
finite, non-dropping (evaluation) pipeline, so metrics weighted by it are exact.
"""

from __future__ import annotations

import math
import os
from typing import Any

import grain
import numpy as np

from dnarch_jax.data import sources, tasks

# Threads that prepare batches ahead of the consumer. Measured on this 2-core machine (sMNIST,
# batch 100; benchmarks/input_pipeline.py): 0 threads ~9k, 1 ~12k, 2 ~18k, 4 ~14k examples/s;
# grain's multiprocessing (mp_prefetch) reached ~15k with 2 workers. Threads idle once the prefetch
# buffer is full, so they do not compete with the train step in steady state.
DEFAULT_NUM_THREADS = 2
DEFAULT_PREFETCH_BATCHES = 4
# Separates the augmentation RNG streams from anything else seeded by the run's seed.
_AUGMENT_SALT = 0x0A06


class _LoadLocalBatch:
  """Maps (global batch index, example ids of that global batch) to this process's batch."""

  def __init__(self, view, *, global_batch, process_index, process_count, seed, augment):
    self.view = view
    self.global_batch = global_batch
    self.local_batch = global_batch // process_count
    self.offset = process_index * self.local_batch
    self.seed = seed
    self.augment = augment

  def __call__(self, batch_index: int, ids_B: np.ndarray) -> dict[str, np.ndarray]:
    local_ids = ids_B[self.offset : self.offset + self.local_batch]
    local_real = len(local_ids)
    # Padding (the last batch of an evaluation pass) repeats a real example, masked out, so
    # every batch has one static shape.
    local_ids = np.concatenate(
      [local_ids, np.full(self.local_batch - local_real, ids_B[0], dtype=ids_B.dtype)]
    )
    mask = (np.arange(self.local_batch) < local_real).astype(np.float32)
    first_position = batch_index * self.global_batch + self.offset
    inputs, labels = [], []
    transform = self.view.task.transform
    for j, (value, label) in enumerate(self.view.read(local_ids)):
      rng = None
      if self.augment:
        rng = np.random.default_rng([self.seed, _AUGMENT_SALT, first_position + j])
      x, y = transform(value, label, rng)
      inputs.append(x)
      labels.append(y)
    return {
      "input": np.stack(inputs).astype(np.float32, copy=False),
      "label": np.stack(labels).astype(np.int32, copy=False),
      "mask": mask,
    }


def _process_layout(process_index, process_count) -> tuple[int, int]:
  if process_index is None or process_count is None:
    import jax  # Only for the defaults; the data code itself never needs JAX.

    process_index = jax.process_index() if process_index is None else process_index
    process_count = jax.process_count() if process_count is None else process_count
  if not 0 <= process_index < process_count:
    raise ValueError(f"process_index={process_index} must be in [0, {process_count}).")
  return process_index, process_count


def num_batches(
  num_examples: int, batch_size: int, *, num_epochs: int | None, drop_remainder: bool
) -> int | None:
  """How many batches a pipeline over `num_examples` yields (None: endless)."""
  if num_epochs is None:
    return None
  total = num_examples * num_epochs
  return total // batch_size if drop_remainder else math.ceil(total / batch_size)


def make_pipeline(
  task: tasks.Task | str,
  split: str,
  *,
  batch_size: int,
  seed: int = 0,
  data_dir: str | os.PathLike | None = None,
  process_index: int | None = None,
  process_count: int | None = None,
  shuffle: bool = True,
  num_epochs: int | None = None,
  drop_remainder: bool = True,
  augment: bool | None = None,
  val_size: int | None = None,
  mnist_dir: str | os.PathLike | None = None,
  layout: str | None = None,
  num_classes: int | None = None,
  num_threads: int = DEFAULT_NUM_THREADS,
  prefetch_batches: int = DEFAULT_PREFETCH_BATCHES,
) -> grain.DatasetIterator:
  """An iterator of numpy batches of `task`'s `split` (see the module docstring).

  Args:
    task: a task name (`dnarch_jax.data.tasks`) or `Task`.
    split: `train`, `validation` or `test`.
    batch_size: the global batch size; each process gets `batch_size // process_count`.
    seed: shuffling and augmentation seed, in [0, 2**32).
    data_dir: tfds data directory (default `$DNARCH_DATA_DIR` or `~/.cache/dnarch_jax/tfds`);
      for the `arrays` task, the folder of arrays.
    process_index, process_count: this process and how many read; default JAX's.
    shuffle: shuffle the examples (reshuffled every epoch).
    num_epochs: passes over the split; None repeats forever.
    drop_remainder: drop the last incomplete batch; otherwise it is padded and masked.
    augment: augment examples (training); default the task's default on `train`, else False.
    val_size: examples carved from train for validation; default the task's.
    mnist_dir: where the MNIST IDX files are, if not the repository's `data/mnist/`.
    layout, num_classes: how `arrays` are read (`tasks.get_task`).
    num_threads, prefetch_batches: grain's read threads and how many batches they work ahead.

  Returns:
    A `grain.DatasetIterator`: `next(it)` is a batch; `it.get_state()` / `it.set_state(s)`
    checkpoint and restore the position (JSON-serialisable; `grain.checkpoint.CheckpointSave`
    stores it with Orbax).
  """
  process_index, process_count = _process_layout(process_index, process_count)
  if batch_size <= 0 or batch_size % process_count:
    raise ValueError(
      f"batch_size={batch_size} must be a positive multiple of the process count ({process_count})."
    )
  if not 0 <= seed < 2**32:
    raise ValueError(f"seed={seed} must be in [0, 2**32).")
  if num_epochs is not None and num_epochs <= 0:
    raise ValueError(f"num_epochs={num_epochs} must be positive or None (endless).")
  view = sources.open_split(
    task,
    split,
    data_dir=data_dir,
    val_size=val_size,
    mnist_dir=mnist_dir,
    layout=layout,
    num_classes=num_classes,
  )
  if len(view) == 0:
    raise ValueError(f"task {view.task.name}: split {split!r} has no examples.")
  if augment is None:
    augment = view.task.augment and split == "train"

  ids = grain.MapDataset.range(len(view))
  if shuffle:
    ids = ids.shuffle(seed=seed)
  if num_epochs != 1:
    ids = ids.repeat(num_epochs)
  global_batches = ids.batch(batch_size, drop_remainder=drop_remainder)
  batches = global_batches.map_with_index(
    _LoadLocalBatch(
      view,
      global_batch=batch_size,
      process_index=process_index,
      process_count=process_count,
      seed=seed,
      augment=augment,
    )
  )
  read_options = grain.ReadOptions(num_threads=num_threads, prefetch_buffer_size=prefetch_batches)
  return iter(batches.to_iter_dataset(read_options))


def make_eval_pipeline(
  task: tasks.Task | str,
  split: str,
  *,
  batch_size: int,
  data_dir: str | os.PathLike | None = None,
  process_index: int | None = None,
  process_count: int | None = None,
  **kwargs: Any,
) -> grain.DatasetIterator:
  """One ordered pass over `split` without augmentation; the last batch padded and masked."""
  return make_pipeline(
    task,
    split,
    batch_size=batch_size,
    data_dir=data_dir,
    process_index=process_index,
    process_count=process_count,
    shuffle=False,
    num_epochs=1,
    drop_remainder=False,
    augment=False,
    **kwargs,
  )


def _source_args(cfg) -> dict[str, Any]:
  """What a data config says about where a split's examples come from."""
  return dict(
    data_dir=cfg.data_dir,
    val_size=cfg.val_size,
    mnist_dir=cfg.mnist_dir,
    # Fields newer than some stored runs' configs: absent means None.
    layout=cfg.get("layout"),
    num_classes=cfg.get("num_classes"),
  )


def split_from_config(cfg, split: str) -> sources.SplitView:
  """The split a data config (`config.default_data_config`) describes, e.g. to count it."""
  return sources.open_split(cfg.task, split, **_source_args(cfg))


def pipeline_from_config(
  cfg, split: str, *, process_index: int | None = None, process_count: int | None = None
) -> grain.DatasetIterator:
  """The pipeline a data config (`config.default_data_config`) describes for `split`.

  `train` gets the endless, shuffled, augmented training stream; `validation` and `test` one
  padded, masked evaluation pass with `eval_batch_size`.
  """
  common = dict(
    process_index=process_index,
    process_count=process_count,
    num_threads=cfg.num_threads,
    prefetch_batches=cfg.prefetch_batches,
    **_source_args(cfg),
  )
  if split == "train":
    return make_pipeline(
      cfg.task,
      split,
      batch_size=cfg.batch_size,
      seed=cfg.seed,
      shuffle=cfg.shuffle,
      augment=cfg.augment,
      **common,
    )
  return make_eval_pipeline(cfg.task, split, batch_size=cfg.eval_batch_size, **common)
