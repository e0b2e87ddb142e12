"""A trained DNArch run's metrics on a split, at its own input size or at any other.

``evaluate_run(workdir)`` restores a checkpoint with :func:`dnarch_jax.run.restore.restore_run` (no
optimiser steps, no training data opened) and runs the model's eval step over one split. With
``input_size``, the split's inputs are resized to it (``jax.image.resize``, linear with
antialiasing when shrinking: what a user's other-resolution images look like) and the network
runs there as :func:`dnarch_jax.method.arch.arch_at_input_size` describes: every continuous kernel
sampled on the new grid, every layer at its trained resolution times the size ratio.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import jax
import jax.numpy as jnp

from dnarch_jax.method.arch import arch_at_input_size
from dnarch_jax.run.steps import evaluate_batches, flops_and_params, make_eval_step


def parse_input_size(text: str) -> tuple[int, ...]:
  """``"42,42"`` or ``"151"`` -> sizes; ``ValueError`` naming ``--input_size`` otherwise."""
  try:
    sizes = tuple(int(part) for part in text.split(","))
  except ValueError:
    sizes = ()
  if not sizes or min(sizes) < 1:
    raise ValueError(
      f"--input_size: expected positive integers separated by commas (H,W or L), got {text!r}"
    )
  return sizes


def evaluate_run(
  workdir: str | os.PathLike,
  split: str = "test",
  which: str = "best",
  input_size: Sequence[int] | None = None,
) -> dict:
  """Loss and accuracy (and mean IoU for dense heads) of a run's ``best`` or ``latest``
  checkpoint on ``split``, with the evaluated network's FLOPs and parameters per example.

  ``input_size``: evaluate on inputs resized to it (any size; see the module docstring);
  ``None`` keeps the data's. Raises ``ValueError`` naming ``input_size`` for a dense-head run
  (its labels are per position of the data's size) or a size of the wrong rank.
  """
  from dnarch_jax.data import pipeline_from_config
  from dnarch_jax.run.restore import restore_run

  run = restore_run(workdir, which)
  cfg, arch = run.cfg, run.arch
  resize = None
  if input_size is not None and tuple(input_size) != tuple(cfg.input_size):
    if cfg.head == "dense":
      raise ValueError(
        f"input_size: {list(input_size)} is for pooled heads; this run's dense head predicts "
        f"per position of its {list(cfg.input_size)} labels"
      )
    arch = arch_at_input_size(run.variables["params"], cfg, input_size, run.batch_size)
    shape = (*arch.input_size, cfg.in_channels)
    resize = jax.jit(lambda x: jax.image.resize(x, (x.shape[0], *shape), "linear"))

  def batches():
    for batch in pipeline_from_config(run.config.data, split):
      batch = {k: jnp.asarray(v) for k, v in batch.items()}
      if resize is not None:
        batch["input"] = resize(batch["input"])
      yield batch

  metrics = evaluate_batches(make_eval_step(cfg), run.variables, batches(), arch)
  return dict(
    split=split,
    step=run.step,
    checkpoint=which,
    input_size=list(arch.input_size),
    **flops_and_params(arch, cfg, run.batch_size),
    **metrics,
  )
