"""Random access to a task split: tfds data sources (array_record) and a user's arrays.

`open_split` turns a (task, split) into a `SplitView`: the stored records, the positions of the
split's examples among them (after the task's filter and the validation carve-out), and a batched
read. Datasets that are not on disk raise `DatasetNotAvailableError` with the steps to provide them.
"""

from __future__ import annotations

import dataclasses
import os
import threading
from collections.abc import Sequence
from typing import Any

import numpy as np
import tensorflow_datasets as tfds

from dnarch_jax.data import arrays, errors, locations, mnist_builder, tasks


def _candidate_data_dirs(data_dir) -> list[str]:
  """Our data dir first, then tfds's own default (where `tfds build` puts datasets)."""
  dirs = [os.fspath(locations.resolve_data_dir(data_dir))]
  tfds_default = os.path.expanduser(os.environ.get("TFDS_DATA_DIR") or "~/tensorflow_datasets")
  if tfds_default not in dirs:
    dirs.append(tfds_default)
  return dirs


def _tensorflow_missing(error: BaseException) -> bool:
  while error is not None:
    if isinstance(error, ImportError) and "tensorflow" in str(error):
      return True
    error = error.__cause__ or error.__context__
  return False


def _explain(name: str, dirs: Sequence[str], error: Exception, needs_tensorflow: bool):
  """The `DatasetNotAvailableError` for `name`, with the likeliest reason `error` happened."""
  if _tensorflow_missing(error):
    return errors.dataset_not_available(
      name, dirs, needs_tensorflow=True, reason=f"TensorFlow is not installed ({error})."
    )
  reason = f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"
  for data_dir in dirs:
    try:
      builder = tfds.builder(name, data_dir=data_dir)
    except Exception:  # Unknown name or unreadable metadata: not prepared there.
      continue
    if builder.is_prepared():
      reason = (
        f"it is prepared in {builder.data_dir} as {builder.info.file_format}, which has no "
        "random access; rebuild it with `--file_format=array_record`, or convert it with "
        f"`tfds convert_format --dataset_version_dir {builder.data_dir} --out_file_format "
        "array_record` (reading tfrecord needs TensorFlow)."
      )
  return errors.dataset_not_available(name, dirs, needs_tensorflow=needs_tensorflow, reason=reason)


def tfds_source(
  name: str, split: str, data_dir=None, *, needs_tensorflow: bool = False
) -> Sequence[Any]:
  """`tfds.data_source(name, split)` from our data dir or tfds's default one; never downloads.

  Raises:
    DatasetNotAvailableError: not prepared (in array_record format) in either directory.
  """
  dirs = _candidate_data_dirs(data_dir)
  first_error = None
  for candidate in dirs:
    try:
      return tfds.data_source(name, split=split, data_dir=candidate, download=False)
    except Exception as error:  # Explained below, with the first cause chained.
      first_error = first_error or error
  raise _explain(name, dirs, first_error, needs_tensorflow) from first_error


def dataset_info(name: str, data_dir=None):
  """The `tfds.core.DatasetInfo` of a dataset prepared in our data dir or tfds's default one."""
  dirs = _candidate_data_dirs(data_dir)
  first_error = None
  for candidate in dirs:
    try:
      builder = tfds.builder(name, data_dir=candidate)
      if builder.is_prepared():
        return builder.info
    except Exception as error:  # Explained below, as in `tfds_source`.
      first_error = first_error or error
  error = first_error or FileNotFoundError("no prepared version found")
  raise _explain(name, dirs, error, needs_tensorflow=False) from first_error


@dataclasses.dataclass(frozen=True)
class DecodedRecords:
  """Serialized records with a dataset-specific decoder applied on read."""

  serialized: Any
  decode: Any

  def __len__(self) -> int:
    return len(self.serialized)

  def __getitem__(self, index: int):
    return self.decode(self.serialized[index])

  def __getitems__(self, indices: Sequence[int]) -> list[Any]:
    return [self.decode(r) for r in self.serialized.__getitems__(indices)]


def open_records(
  task: tasks.Task, source_split: str, *, data_dir=None, mnist_dir=None
) -> Sequence[Any]:
  """The stored examples of one split of the task's dataset, with random access.

  For MNIST tasks this prepares `dnarch_mnist` into the data dir on first use.
  """
  if task.is_arrays:
    return arrays.checked_files(task.dataset).splits[source_split]
  if task.dataset == mnist_builder.DATASET_NAME:
    mnist_builder.prepare_mnist(data_dir, mnist_dir)
    serialized = tfds.data_source(
      task.dataset,
      split=source_split,
      data_dir=os.fspath(locations.resolve_data_dir(data_dir)),
      download=False,
      deserialize_method=tfds.decode.DeserializeMethod.RAW_BYTES,
    )
    return DecodedRecords(serialized, mnist_builder.decode_record)
  return tfds_source(task.dataset, source_split, data_dir, needs_tensorflow=task.needs_tensorflow)


def _supports_batched_reads(records) -> bool:
  # tfds's array_record sources read a batch about 3x faster than record by record; the mocked
  # sources of `tfds.testing.mock_data` lack a working `__getitems__`, so probe once.
  getitems = getattr(records, "__getitems__", None)
  if getitems is None or len(records) == 0:
    return False
  try:
    getitems([0])
  except Exception:
    return False
  return True


def read_records(records, ids: Sequence[int], batched: bool) -> list[Any]:
  """The records at `ids`, in order, read as one batch where the source supports it."""
  ids = [int(i) for i in ids]
  if batched:
    return list(records.__getitems__(ids))
  return [records[i] for i in ids]


_kept_cache: dict[tuple, np.ndarray] = {}
_kept_lock = threading.Lock()


def _kept_positions(task: tasks.Task, records, cache_key: tuple, batched: bool) -> np.ndarray:
  """Positions of the records `task.keep_example` accepts: one pass, cached per process."""
  with _kept_lock:
    if cache_key in _kept_cache:
      return _kept_cache[cache_key]
  keep = []
  chunk = 1024
  for start in range(0, len(records), chunk):
    ids = range(start, min(start + chunk, len(records)))
    for i, example in zip(ids, read_records(records, ids, batched), strict=True):
      if task.keep_example(example[task.input_key], example[task.label_key]):
        keep.append(i)
  positions = np.asarray(keep, dtype=np.int64)
  with _kept_lock:
    _kept_cache[cache_key] = positions
  return positions


@dataclasses.dataclass(frozen=True)
class SplitView:
  """A task split: `len(view)` examples at `positions` of `records`."""

  task: tasks.Task
  records: Any
  positions: np.ndarray
  batched: bool

  def __len__(self) -> int:
    return len(self.positions)

  def read(self, view_ids: Sequence[int]) -> list[tuple[Any, Any]]:
    """(value, label) of the examples at `view_ids` (positions within this split)."""
    examples = read_records(self.records, self.positions[np.asarray(view_ids)], self.batched)
    return [(e[self.task.input_key], e[self.task.label_key]) for e in examples]


def open_split(
  task: tasks.Task | str,
  split: str,
  *,
  data_dir=None,
  val_size: int | None = None,
  mnist_dir=None,
  layout: str | None = None,
  num_classes: int | None = None,
) -> SplitView:
  """Opens `split` (`train`, `validation` or `test`) of `task`.

  Args:
    task: a `Task` or task name.
    split: the task's split name.
    data_dir: tfds data directory (for `arrays`, the folder of arrays).
    val_size: examples carved from train for validation; default the task's.
    mnist_dir: where the MNIST IDX files are, if not the repository's `data/mnist/`.
    layout, num_classes: how `arrays` are read (`tasks.get_task`).

  Raises:
    ValueError: an unknown split, or a `val_size` the split cannot give (naming the fix).
  """
  task = tasks.get_task(task, data_dir, layout=layout, num_classes=num_classes)
  if split not in task.splits:
    raise ValueError(f"task {task.name}: unknown split {split!r}; use one of {list(task.splits)}.")
  if val_size and task.splits["validation"].part == "all":
    raise ValueError(
      f"config.data.val_size={val_size}: task {task.name} has its own validation split; set "
      "config.data.val_size=None (or 0)."
    )
  spec = task.splits[split]
  records = open_records(task, spec.source_split, data_dir=data_dir, mnist_dir=mnist_dir)
  batched = _supports_batched_reads(records)
  positions = np.arange(len(records), dtype=np.int64)
  if task.keep_example is not None:
    cache_key = (task.name, task.dataset, spec.source_split, str(data_dir), len(records))
    positions = _kept_positions(task, records, cache_key, batched)
  if spec.part != "all":
    carved = task.val_size if val_size is None else val_size
    if not 0 < carved < len(positions):
      raise ValueError(
        f"config.data.val_size={val_size}: must be between 1 and {len(positions) - 1} for the "
        f"{len(positions)} train examples of task {task.name}; set config.data.val_size=None "
        f"for the default ({task.val_size}) or a number below {len(positions)}."
      )
    positions = positions[tasks.carve_indices(len(positions), carved, spec.part)]
  return SplitView(task=task, records=records, positions=positions, batched=batched)
