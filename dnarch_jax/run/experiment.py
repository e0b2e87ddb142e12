"""A run's pieces from its config: the model configuration sized for the task's data."""

from __future__ import annotations

import ml_collections

from dnarch_jax.config import ModelConfig, model_config
from dnarch_jax.data import task_info


def run_model_config(config: ml_collections.ConfigDict) -> ModelConfig:
  """``config.model`` validated and sized by ``config.data.task`` (input shape, classes, head)."""
  data = config.data
  input_shape, num_classes, dense = task_info(
    data.task, data.get("data_dir"), layout=data.get("layout"), num_classes=data.get("num_classes")
  )
  return model_config(config.model.to_dict(), input_shape, num_classes, dense)
