"""The error raised when a dataset cannot be read offline, with the steps that provide it."""

from __future__ import annotations

import os
from collections.abc import Sequence


class DatasetNotAvailableError(FileNotFoundError):
  """A dataset is neither prepared in the data directory nor buildable on this machine."""


def dataset_not_available(
  dataset: str,
  searched: Sequence[str | os.PathLike],
  *,
  needs_tensorflow: bool = False,
  reason: str = "",
) -> DatasetNotAvailableError:
  """Builds the error for `dataset`, naming where it was looked for and how to provide it."""
  where = ", ".join(str(p) for p in searched) or "(no data directory)"
  lines = [f"Dataset {dataset!r} is not available offline: not prepared under {where}."]
  if reason:
    lines.append(f"Reason: {reason}")
  # array_record: the random-access format `tfds.data_source` (and so grain) needs; `tfds build`
  # defaults to tfrecord.
  lines.append(
    "To provide it, on a machine with network access run\n"
    f"    tfds build {dataset} --file_format=array_record --data_dir DIR\n"
    f"then copy DIR/{dataset} to this machine, into a folder D, and point the config's "
    "`data_dir` (or $DNARCH_DATA_DIR) at D."
  )
  if needs_tensorflow:
    lines.append(
      f"Preparing (and for some datasets reading) {dataset!r} needs TensorFlow: install it "
      "with `pip install 'dnarch-jax[tf]'` (tensorflow-cpu) first."
    )
  return DatasetNotAvailableError("\n".join(lines))
