"""Where data lives on disk: the prepared-datasets cache and the MNIST files shipped in the repo."""

from __future__ import annotations

import os
import pathlib

# Environment variable that moves the prepared-datasets cache (e.g. to a shared disk on a cluster).
DATA_DIR_ENV = "DNARCH_DATA_DIR"
DEFAULT_DATA_DIR = pathlib.Path("~/.cache/dnarch_jax/tfds")


def resolve_data_dir(data_dir: str | os.PathLike | None = None) -> pathlib.Path:
  """Returns the tfds data directory: `data_dir` if given, else `$DNARCH_DATA_DIR`, else
  `~/.cache/dnarch_jax/tfds`."""
  if data_dir:
    return pathlib.Path(data_dir).expanduser()
  from_env = os.environ.get(DATA_DIR_ENV)
  if from_env:
    return pathlib.Path(from_env).expanduser()
  return DEFAULT_DATA_DIR.expanduser()


def repo_root() -> pathlib.Path:
  """The repository checkout this package lives in (`dnarch_jax/data/` is two levels down).

  Only meaningful for a source checkout or an editable install; a wheel install has no `data/`
  beside it, which `default_mnist_dir` callers report.
  """
  return pathlib.Path(__file__).resolve().parents[2]


def default_mnist_dir() -> pathlib.Path:
  """The official MNIST IDX files (gzip) that ship with the repository, `data/mnist/`."""
  return repo_root() / "data" / "mnist"
