"""A user's own data: a folder of NumPy or IDX arrays, checked and served as a random-access source.

The folder holds, for each of `train` and `test` (and optionally `val`):

* NumPy: `{split}_x.npy` and `{split}_y.npy`, or
* IDX (MNIST's format, optionally `.gz`): `{prefix}-images-idx3-ubyte` and
  `{prefix}-labels-idx1-ubyte` with prefix `train`, `t10k` or `test` (`val` for validation).

Inputs `x` are read by `config.data.layout` (`sequence`, `image` or None); a trailing size of 1
is never taken as a hint:

* [N, L]: sequences of scalars, (L, 1), whatever the layout;
* [N, A, B]: (L, C) = (A, B) sequences under `sequence`, (H, W, 1) = (A, B, 1) grayscale images
  under `image`; with no layout it is an error that says to set one;
* [N, H, W, C]: images; an error under `sequence`.

uint8 values are scaled to [0, 1], other numeric dtypes are used as float32 unchanged. Labels `y`
are integers: [N] for one class per example, or one per position ([N, L] for sequences,
[N, H, W] for images) for dense labels.

Checked once per folder, before anything compiles (the result is cached by folder and by the
files' size, modification time and inode, so a run's several opens read the files once): equal
lengths, integer labels >= 0, finite inputs in every split (memory-mapped files are scanned in
chunks, never loaded whole), and no class in `val` or `test` that `train` lacks. The number of
classes is `config.data.num_classes` when given (every label must be below it), else the largest
train label + 1; a class below it with no train example is allowed and named in the run's data
summary (`dnarch_jax.data.describe`).

Without `val` files, the validation split is carved from train (`dnarch_jax.data.tasks.
default_val_size`): a tenth of train, raised towards 100 examples (by at most a fifth of train)
because a smaller validation split moves by over a point per example and picks the best
checkpoint by noise, and capped at 5000 (MNIST's and CIFAR's), where the accuracy's standard
error is under 0.7 points and more examples only slow every evaluation. A 50-example train set
gives 10 for validation, 40 for training.
"""

from __future__ import annotations

import collections
import dataclasses
import os
import pathlib
from collections.abc import Callable

import numpy as np

from dnarch_jax.data import idx

LAYOUTS = ("sequence", "image")
SPLITS = ("train", "val", "test")
_IDX_PREFIXES = {"train": ("train",), "test": ("t10k", "test"), "val": ("val",)}
# Bytes read per chunk by the scans of inputs and labels: bounded memory whatever the file size.
_SCAN_BYTES = 64 * 2**20


def _find(folder: pathlib.Path, names: list[str]) -> pathlib.Path | None:
  for name in names:
    if (folder / name).is_file():
      return folder / name
  return None


def _locate_split(folder: pathlib.Path, split: str) -> tuple[pathlib.Path, pathlib.Path] | None:
  """The (inputs, labels) files of `split`, or None when the folder has neither."""
  x_path = _find(folder, [f"{split}_x.npy"])
  y_path = _find(folder, [f"{split}_y.npy"])
  if x_path is None and y_path is None:
    images = [f"{p}-images-idx3-ubyte{gz}" for p in _IDX_PREFIXES[split] for gz in ("", ".gz")]
    labels = [f"{p}-labels-idx1-ubyte{gz}" for p in _IDX_PREFIXES[split] for gz in ("", ".gz")]
    x_path, y_path = _find(folder, images), _find(folder, labels)
  if x_path is None and y_path is None:
    return None
  if x_path is None or y_path is None:
    present = x_path or y_path
    raise ValueError(
      f"{present}: found the {split} {'inputs' if x_path else 'labels'} but not the "
      f"matching {'labels' if x_path else 'inputs'} in {folder}."
    )
  return x_path, y_path


def _locate(folder: pathlib.Path) -> dict[str, tuple[pathlib.Path, pathlib.Path]]:
  """Every split's (inputs, labels) files; train and test are required."""
  found = {}
  for split in SPLITS:
    paths = _locate_split(folder, split)
    if paths is not None:
      found[split] = paths
    elif split != "val":
      raise FileNotFoundError(
        f"arrays task: no {split} data in {folder}; expected {split}_x.npy and "
        f"{split}_y.npy, or IDX files {_IDX_PREFIXES[split][0]}-images-idx3-ubyte[.gz] "
        f"and {_IDX_PREFIXES[split][0]}-labels-idx1-ubyte[.gz]."
      )
  return found


def _load(path: pathlib.Path) -> np.ndarray:
  if path.suffix == ".npy":
    # Memory-mapped: a large array is paged in as batches touch it.
    return np.load(path, mmap_mode="r", allow_pickle=False)
  return idx.read_idx(path)


@dataclasses.dataclass(frozen=True)
class ArraysSplit:
  """One split of a user's arrays: random access to `{"input": x[i], "label": y[i]}`."""

  x: np.ndarray
  y: np.ndarray

  def __len__(self) -> int:
    return self.x.shape[0]

  def __getitem__(self, index: int) -> dict[str, np.ndarray]:
    return {"input": np.asarray(self.x[index]), "label": np.asarray(self.y[index])}

  def __getitems__(self, indices) -> list[dict[str, np.ndarray]]:
    return [self[i] for i in indices]


@dataclasses.dataclass(frozen=True)
class CheckedFiles:
  """A folder's splits after the checks that do not depend on the layout or the class count.

  Attributes:
    splits: `train`, `test` and, when present, `val`.
    paths: each split's (inputs, labels) files.
    label_counts: each split's {class: how many labels} (positions, for dense labels).
  """

  folder: pathlib.Path
  splits: dict[str, ArraysSplit]
  paths: dict[str, tuple[pathlib.Path, pathlib.Path]]
  label_counts: dict[str, dict[int, int]]


@dataclasses.dataclass(frozen=True)
class ArraysDataset:
  """A checked folder of arrays read with a layout: what the model sees, and the classes.

  Attributes:
    layout: how the inputs are read, `sequence` or `image` (for [N, L] inputs `sequence`,
      whatever the configured layout).
    num_classes: `config.data.num_classes` when given, else the largest train label + 1.
    num_classes_given: whether `num_classes` came from the config.
    train_counts: train's {class: labels}, every class in [0, num_classes) included (0 for a
      class train lacks).
  """

  folder: pathlib.Path
  splits: dict[str, ArraysSplit]
  input_shape: tuple[int, ...]
  num_classes: int
  num_classes_given: bool
  dense: bool
  layout: str
  train_counts: dict[int, int]


def _chunks(array: np.ndarray):
  """(first example index, examples) chunks of about `_SCAN_BYTES` each."""
  example_bytes = max(1, array.dtype.itemsize * int(np.prod(array.shape[1:], dtype=np.int64)))
  step = max(1, _SCAN_BYTES // example_bytes)
  for start in range(0, array.shape[0], step):
    yield start, np.asarray(array[start : start + step])


def _first_example(array: np.ndarray, bad: Callable[[np.ndarray], np.ndarray]):
  """(index, value) of the first example holding an element `bad` flags, or None."""
  for start, chunk in _chunks(array):
    flagged = bad(chunk).reshape(len(chunk), -1)
    rows = np.flatnonzero(flagged.any(axis=1))
    if rows.size:
      row = rows[0]
      return start + int(row), chunk.reshape(len(chunk), -1)[row][flagged[row]][0]
  return None


def _check_inputs(x: np.ndarray, path: pathlib.Path) -> None:
  if x.dtype == np.bool_ or np.issubdtype(x.dtype, np.integer):
    return
  if not np.issubdtype(x.dtype, np.floating):
    raise ValueError(f"{path}: inputs must be integers or floats, got dtype {x.dtype}.")
  found = _first_example(x, lambda chunk: ~np.isfinite(chunk))
  if found is not None:
    index, value = found
    raise ValueError(
      f"{path}: example {index} holds {value}; every input must be finite (replace NaN and "
      "inf before training)."
    )


def _count_labels(y: np.ndarray, path: pathlib.Path) -> dict[int, int]:
  """{class: count} of integer labels >= 0."""
  if not np.issubdtype(y.dtype, np.integer):
    raise ValueError(f"{path}: labels must be integers, got dtype {y.dtype} (shape {y.shape}).")
  counts: dict[int, int] = {}
  for _, chunk in _chunks(y):
    for label, count in zip(*np.unique(chunk, return_counts=True), strict=True):
      counts[int(label)] = counts.get(int(label), 0) + int(count)
  if counts and min(counts) < 0:
    index, value = _first_example(y, lambda chunk: chunk < 0)
    raise ValueError(f"{path}: labels must be >= 0; example {index} has label {value}.")
  return dict(sorted(counts.items()))


def _check_files(folder: pathlib.Path, paths: dict) -> CheckedFiles:
  splits, label_counts = {}, {}
  for split, (x_path, y_path) in paths.items():
    x, y = _load(x_path), _load(y_path)
    if x.ndim == 0 or x.shape[0] == 0:
      raise ValueError(f"{x_path}: no examples (shape {x.shape}); the {split} split needs some.")
    if y.ndim == 0 or x.shape[0] != y.shape[0]:
      raise ValueError(
        f"{x_path} has {x.shape[0]} examples (shape {x.shape}) but {y_path} has "
        f"{y.shape[0] if y.ndim else 0} labels (shape {y.shape}); they must have the same length."
      )
    label_counts[split] = _count_labels(y, y_path)
    _check_inputs(x, x_path)
    splits[split] = ArraysSplit(x, y)
  return CheckedFiles(folder, splits, paths, label_counts)


# Folder -> (its files' identities, the checked splits). A run reads one folder; the bound keeps
# a long session (tests, a notebook) from holding every folder's memory maps open.
_checked_cache: collections.OrderedDict[str, tuple[tuple, CheckedFiles]] = collections.OrderedDict()
_CACHED_FOLDERS = 4


def _file_identity(path: pathlib.Path) -> tuple:
  # Size and modification time tell a rewritten file; the inode, one replaced by another.
  stat = path.stat()
  return os.fspath(path), stat.st_size, stat.st_mtime_ns, stat.st_ino


def checked_files(folder: str | os.PathLike) -> CheckedFiles:
  """The folder's splits, checked (see the module docstring); cached while the files are unchanged.

  Raises:
    FileNotFoundError: the folder or its train/test files are missing.
    ValueError: mismatched lengths, empty splits, non-integer or negative labels, non-numeric
      or non-finite inputs; the message names the file (and the first bad example).
  """
  folder = pathlib.Path(folder).expanduser()
  if not folder.is_dir():
    raise FileNotFoundError(f"arrays task: data folder {folder} does not exist.")
  paths = _locate(folder)
  key = os.fspath(folder.resolve())
  identities = tuple(_file_identity(path) for pair in paths.values() for path in pair)
  cached = _checked_cache.pop(key, None)
  if cached is None or cached[0] != identities:
    cached = identities, _check_files(folder, paths)
  _checked_cache[key] = cached
  while len(_checked_cache) > _CACHED_FOLDERS:
    _checked_cache.popitem(last=False)
  return cached[1]


def _input_shape(
  x_shape: tuple[int, ...], path: pathlib.Path, layout: str | None
) -> tuple[tuple[int, ...], str]:
  """The per-example shape the model sees (channels last), and the layout it is read with."""
  if len(x_shape) == 2:
    return (x_shape[1], 1), "sequence"
  if len(x_shape) == 3 and layout == "sequence":
    return tuple(x_shape[1:]), "sequence"
  if len(x_shape) == 3 and layout == "image":
    return (*x_shape[1:], 1), "image"
  if len(x_shape) == 3:
    raise ValueError(
      f"{path}: inputs of shape {x_shape} are [N, L, C] sequences or [N, H, W] grayscale "
      "images; say which with config.data.layout=sequence or config.data.layout=image."
    )
  if len(x_shape) == 4 and layout == "sequence":
    raise ValueError(
      f"{path}: inputs of shape {x_shape} are [N, H, W, C] images, not sequences; set "
      "config.data.layout=image (or reshape them to [N, L, C] sequences)."
    )
  if len(x_shape) == 4:
    return tuple(x_shape[1:]), "image"
  raise ValueError(
    f"{path}: inputs have shape {x_shape}; expected [N, L] or [N, L, C] sequences, [N, H, W] "
    "grayscale images or [N, H, W, C] images."
  )


def _dense_labels(
  y_shape: tuple[int, ...], spatial: tuple[int, ...], x_path: pathlib.Path, y_path: pathlib.Path
) -> bool:
  """Whether one split's labels are dense (one per position of `spatial`), else one per example."""
  if len(y_shape) == 1:
    return False
  if tuple(y_shape[1:]) == tuple(spatial):
    return True
  raise ValueError(
    f"{y_path}: labels have shape {y_shape}; expected [{y_shape[0]}] (one per example) or "
    f"[{y_shape[0]}, {', '.join(map(str, spatial))}] (one per position of {x_path})."
  )


def _check_classes(files: CheckedFiles, num_classes: int | None) -> int:
  """The number of classes; every split's labels checked against it and against train's."""
  if num_classes is not None:
    for split, counts in files.label_counts.items():
      if counts and max(counts) >= num_classes:
        y_path = files.paths[split][1]
        index, value = _first_example(files.splits[split].y, lambda c: c >= num_classes)
        raise ValueError(
          f"{y_path}: example {index} has label {value}, not below config.data.num_classes="
          f"{num_classes}; raise it (or set it to None to count the classes from train)."
        )
  train = files.label_counts["train"]
  for split in ("val", "test"):
    missing = sorted(set(files.label_counts.get(split, {})) - set(train))
    if missing:
      raise ValueError(
        f"{files.paths[split][1]}: class(es) {missing} never occur in the train labels "
        f"{files.paths['train'][1]}; a model cannot learn them."
      )
  return num_classes if num_classes is not None else max(train) + 1


def load_arrays(
  folder: str | os.PathLike, *, layout: str | None = None, num_classes: int | None = None
) -> ArraysDataset:
  """Opens and checks a folder of arrays, read with `layout` (see the module docstring).

  Args:
    folder: the folder of arrays.
    layout: `sequence`, `image` or None (`config.data.layout`).
    num_classes: the number of classes, or None for the largest train label + 1.

  Raises:
    FileNotFoundError: the folder or its train/test files are missing.
    ValueError: any failed check; the message names the file, what is wrong and the fix.
  """
  if layout not in (None, *LAYOUTS):
    raise ValueError(f"config.data.layout={layout!r}: must be 'sequence', 'image' or None.")
  files = checked_files(folder)
  read = {}  # split -> (input shape, dense labels, layout read with)
  for split, (x_path, y_path) in files.paths.items():
    arrays = files.splits[split]
    shape, split_layout = _input_shape(arrays.x.shape, x_path, layout)
    dense = _dense_labels(arrays.y.shape, shape[:-1], x_path, y_path)
    read[split] = (shape, dense, split_layout)
  train_read, train_x_path = read["train"], files.paths["train"][0]
  for split, split_read in read.items():
    if split_read != train_read:
      x_path = files.paths[split][0]
      raise ValueError(
        f"{x_path}: inputs of shape {files.splits[split].x.shape} do not match {train_x_path} "
        f"(shape {files.splits['train'].x.shape}): every split needs the same per-example "
        "shape and label kind."
      )
  count = _check_classes(files, num_classes)
  train_counts = files.label_counts["train"]
  return ArraysDataset(
    folder=files.folder,
    splits=files.splits,
    input_shape=train_read[0],
    num_classes=count,
    num_classes_given=num_classes is not None,
    dense=train_read[1],
    layout=train_read[2],
    train_counts={c: train_counts.get(c, 0) for c in range(count)},
  )
