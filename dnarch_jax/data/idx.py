"""The IDX file format (MNIST's), read into numpy.

An IDX file is a 4-byte magic number (two zero bytes, a type code, the number of dimensions), one
big-endian uint32 per dimension, then the values in C order. Gzip-compressed files (`.gz`) are
decompressed on the fly.
"""

from __future__ import annotations

import gzip
import os

import numpy as np

# Type codes of the IDX format; multi-byte values are big-endian.
_IDX_DTYPES = {
  0x08: np.dtype(np.uint8),
  0x09: np.dtype(np.int8),
  0x0B: np.dtype(">i2"),
  0x0C: np.dtype(">i4"),
  0x0D: np.dtype(">f4"),
  0x0E: np.dtype(">f8"),
}


def read_idx(path: str | os.PathLike) -> np.ndarray:
  """Returns the array stored in the IDX file at `path` (optionally gzip-compressed).

  Raises:
    ValueError: the file is not a well-formed IDX file (the message names it).
  """
  path = os.fspath(path)
  opener = gzip.open if path.endswith(".gz") else open
  with opener(path, "rb") as f:
    raw = f.read()
  if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
    raise ValueError(f"{path}: not an IDX file (magic number {raw[:4].hex() or 'missing'}).")
  dtype = _IDX_DTYPES[raw[2]]
  ndim = raw[3]
  header_size = 4 + 4 * ndim
  shape = tuple(int(d) for d in np.frombuffer(raw, ">u4", count=ndim, offset=4))
  expected_bytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
  if len(raw) - header_size != expected_bytes:
    raise ValueError(
      f"{path}: IDX header says shape {shape} ({expected_bytes} bytes of data) but the file "
      f"holds {len(raw) - header_size} bytes of data."
    )
  values = np.frombuffer(raw, dtype, offset=header_size).reshape(shape)
  # Native byte order, writable: callers index and transform it freely.
  return values.astype(dtype.newbyteorder("="))
