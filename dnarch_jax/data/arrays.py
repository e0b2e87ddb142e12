"""A user's own data: a folder of NumPy or IDX arrays, checked and served as a random-access source.

The folder holds, for each of `train` and `test` (and optionally `val`):

* NumPy: `{split}_x.npy` and `{split}_y.npy`, or
* IDX (MNIST's format, optionally `.gz`): `{prefix}-images-idx3-ubyte` and
  `{prefix}-labels-idx1-ubyte` with prefix `train`, `t10k` or `test` (`val` for validation).

Inputs `x` are [N, L] (sequences of scalars), [N, H, W] (grayscale images) or [N, H, W, C]
(images); uint8 values are scaled to [0, 1], other dtypes are used as float32 unchanged. Labels
`y` are integers: [N] for one class per example, or [N, *spatial] matching `x` for dense
(per-position) labels. Without `val` files, the validation split is carved from train.
"""

from __future__ import annotations

import dataclasses
import os
import pathlib

import numpy as np

from dnarch_jax.data import idx

_IDX_PREFIXES = {"train": ("train",), "test": ("t10k", "test"), "val": ("val",)}


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
class ArraysDataset:
  """A checked folder of arrays: its splits, the input shape the model sees, and the classes."""

  folder: pathlib.Path
  splits: dict[str, ArraysSplit]
  input_shape: tuple[int, ...]
  num_classes: int
  dense: bool


def _input_shape(x_shape: tuple[int, ...], path: pathlib.Path) -> tuple[int, ...]:
  """The per-example shape the model sees, channels last."""
  if len(x_shape) == 2:
    return (x_shape[1], 1)
  if len(x_shape) == 3:
    return (x_shape[1], x_shape[2], 1)
  if len(x_shape) == 4:
    return tuple(x_shape[1:])
  raise ValueError(
    f"{path}: inputs have shape {x_shape}; expected [N, L] sequences, [N, H, W] grayscale "
    "images or [N, H, W, C] images."
  )


def _check_pair(x: np.ndarray, y: np.ndarray, x_path: pathlib.Path, y_path: pathlib.Path) -> bool:
  """Checks one split's inputs against its labels; returns whether the labels are dense."""
  if x.shape[0] != y.shape[0]:
    raise ValueError(
      f"{x_path} has {x.shape[0]} examples (shape {x.shape}) but {y_path} has "
      f"{y.shape[0]} labels (shape {y.shape}); they must have the same length."
    )
  if not np.issubdtype(y.dtype, np.integer):
    raise ValueError(f"{y_path}: labels must be integers, got dtype {y.dtype} (shape {y.shape}).")
  spatial = x.shape[1:-1] if x.ndim == 4 else x.shape[1:]
  if y.ndim == 1:
    return False
  if y.shape[1:] == spatial:
    return True
  raise ValueError(
    f"{y_path}: labels have shape {y.shape}; expected [{x.shape[0]}] (one per example) or "
    f"[{x.shape[0]}, {', '.join(map(str, spatial))}] (one per position of {x_path}, shape "
    f"{x.shape})."
  )


def load_arrays(folder: str | os.PathLike) -> ArraysDataset:
  """Opens and checks a folder of arrays (see the module docstring for the layout).

  Raises:
    FileNotFoundError: the folder or its train/test files are missing.
    ValueError: mismatched lengths, unexpected shapes or non-integer labels; the message names
      the file and the shapes.
  """
  folder = pathlib.Path(folder).expanduser()
  if not folder.is_dir():
    raise FileNotFoundError(f"arrays task: data folder {folder} does not exist.")
  splits: dict[str, ArraysSplit] = {}
  shapes, dense_flags, max_label = {}, {}, -1
  for split in ("train", "val", "test"):
    paths = _locate_split(folder, split)
    if paths is None:
      if split == "val":
        continue
      raise FileNotFoundError(
        f"arrays task: no {split} data in {folder}; expected {split}_x.npy and "
        f"{split}_y.npy, or IDX files {_IDX_PREFIXES[split][0]}-images-idx3-ubyte[.gz] "
        f"and {_IDX_PREFIXES[split][0]}-labels-idx1-ubyte[.gz]."
      )
    x_path, y_path = paths
    x, y = _load(x_path), _load(y_path)
    shapes[split] = (_input_shape(x.shape, x_path), x_path, x.shape)
    dense_flags[split] = _check_pair(x, y, x_path, y_path)
    if y.size:
      low, high = int(np.min(y)), int(np.max(y))
      if low < 0:
        raise ValueError(f"{y_path}: labels must be >= 0, found {low} (shape {y.shape}).")
      max_label = max(max_label, high)
    splits[split] = ArraysSplit(x, y)
  train_shape, train_path, train_x_shape = shapes["train"]
  for split, (shape, path, x_shape) in shapes.items():
    if shape != train_shape or dense_flags[split] != dense_flags["train"]:
      raise ValueError(
        f"{path}: inputs of shape {x_shape} do not match {train_path} (shape "
        f"{train_x_shape}): every split needs the same per-example shape and label kind."
      )
  return ArraysDataset(
    folder=folder,
    splits=splits,
    input_shape=train_shape,
    num_classes=max_label + 1,
    dense=dense_flags["train"],
  )
