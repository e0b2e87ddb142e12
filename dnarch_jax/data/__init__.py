"""Data input: tasks as views of tfds datasets (or a user's arrays), read by grain pipelines.

The data code never imports the model. Typical use:

    cfg = default_data_config("smnist")
    input_shape, num_classes, dense = task_info(cfg.task)
    print(describe_data(cfg))  # one line: splits, shapes, layout, classes
    train_batches = pipeline_from_config(cfg, "train")
"""

from dnarch_jax.data.config import default_data_config, validate_data_config
from dnarch_jax.data.describe import describe_data, print_data_summary
from dnarch_jax.data.errors import DatasetNotAvailableError
from dnarch_jax.data.mnist_builder import prepare_mnist
from dnarch_jax.data.pipeline import (
  make_eval_pipeline,
  make_pipeline,
  num_batches,
  pipeline_from_config,
  split_from_config,
)
from dnarch_jax.data.sources import open_split
from dnarch_jax.data.tasks import TASKS, Task, get_task, pmnist_permutation, task_info

__all__ = [
  "TASKS",
  "DatasetNotAvailableError",
  "Task",
  "default_data_config",
  "describe_data",
  "get_task",
  "make_eval_pipeline",
  "make_pipeline",
  "num_batches",
  "open_split",
  "pipeline_from_config",
  "pmnist_permutation",
  "print_data_summary",
  "prepare_mnist",
  "split_from_config",
  "task_info",
  "validate_data_config",
]
