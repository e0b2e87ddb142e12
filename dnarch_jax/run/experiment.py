"""A run's pieces from its config: the model configuration sized for the task's data.

A run records its data's shape in its workdir (``data_shape.json``: per-example input shape,
classes, dense or not) when it starts, so that reading a finished run (eval's model, export,
summary, ``restore_run``) sizes the network from the workdir and opens no data: a user's arrays
folder may have moved, or be large enough that reading its labels takes a while.
"""

from __future__ import annotations

import json
import pathlib

import ml_collections

from dnarch_jax.config import ModelConfig, model_config
from dnarch_jax.data import task_info

DATA_SHAPE_FILE = "data_shape.json"

DataShape = tuple[tuple[int, ...], int, bool]  # (input_shape, num_classes, dense)


def data_shape(config: ml_collections.ConfigDict, workdir=None) -> DataShape:
  """``(input_shape, num_classes, dense)`` of the run's task: from ``workdir``'s
  ``data_shape.json`` when given and present, else from the task (``data.task_info``)."""
  path = pathlib.Path(workdir) / DATA_SHAPE_FILE if workdir is not None else None
  if path is not None and path.exists():
    shape = json.loads(path.read_text())
    return tuple(shape["input_shape"]), int(shape["num_classes"]), bool(shape["dense"])
  data = config.data
  return task_info(
    data.task, data.get("data_dir"), layout=data.get("layout"), num_classes=data.get("num_classes")
  )


def write_data_shape(config: ml_collections.ConfigDict, workdir: pathlib.Path) -> None:
  input_shape, num_classes, dense = data_shape(config)
  record = dict(input_shape=list(input_shape), num_classes=num_classes, dense=dense)
  (workdir / DATA_SHAPE_FILE).write_text(json.dumps(record) + "\n")


def run_model_config(config: ml_collections.ConfigDict, workdir=None) -> ModelConfig:
  """``config.model`` validated and sized by the task's data (``data_shape``)."""
  input_shape, num_classes, dense = data_shape(config, workdir)
  return model_config(config.model.to_dict(), input_shape, num_classes, dense)
