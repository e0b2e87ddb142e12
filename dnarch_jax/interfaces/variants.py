"""The variants every experiment file offers, built from a task's CCNN hyperparameters.

An experiment file (``experiments/<task>.py``) states what is particular to its task: the CCNN
run(s) of METHOD.md §9 it reproduces (:class:`CCNNRun`) and the model fields that follow from
the data (causal or centred kernels, the kernel grid, bucket sizes). :func:`experiment_config`
turns that into the config of one variant:

* ``ccnn_4_140``, ``ccnn_6_380``: CCNN as published, with the paper's hyperparameters. Kernel
  sizes are learned by FlexConv's Gaussian mask, as CCNN does; widths, resolution and depth are
  fixed, and there is no cost term.
* ``dnarch_k``: DNArch learning kernel sizes only, under a FLOPs budget of 0.8 of the maximal
  network's (soft penalty).
* ``dnarch``: DNArch learning kernel size, width, resolution and depth under the same budget.
* ``dnarch_b25``: as ``dnarch`` with a quarter of the maximal FLOPs.
* ``dnarch_p50``: as ``dnarch`` with half the maximal network's parameters as the budget.
* ``smoke``: a tiny network learning all four dimensions on the same data: a few seconds on CPU.

DNArch variants start from the 4,140 network and its hyperparameters (the maximal network the
masks shrink). Where METHOD.md gives no 6,380 row for a task, ``ccnn_6_380`` keeps the task's
4,140 hyperparameters and changes only the size; the experiment file says so.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import ml_collections

from dnarch_jax.config import ModelConfig, add_loop_fields, learn, model_block, optim_block
from dnarch_jax.data import TASKS, default_data_config

VARIANTS = ("ccnn_4_140", "ccnn_6_380", "dnarch_k", "dnarch", "dnarch_b25", "dnarch_p50", "smoke")
ALL_DIMENSIONS = ("kernel", "width", "resolution", "depth")


@dataclasses.dataclass(frozen=True)
class CCNNRun:
  """One row of CCNN's hyperparameter table (METHOD.md §9)."""

  omega_0: float
  dropout: float
  lr: float
  weight_decay: float
  warmup_epochs: float
  batch_size: int
  epochs: float
  input_dropout: float = 0.0
  kernel_sigma_init: float = ModelConfig.kernel_sigma_init
  augment: bool | None = None  # None: the task's default


# The budgeted variants: (dimensions learned, budget metric, fraction of the maximal network).
# dnarch_k's 0.8: on the FFT routes a kernel's size barely changes its cost, so on the sequence
# tasks and STL10 half the maximal network's FLOPs lie below those of the smallest kernels
# (tests/test_experiments.py::test_every_dnarch_variant_starts_within_its_budget).
_DNARCH_VARIANTS = {
  "dnarch_k": (("kernel",), "flops", 0.8),
  "dnarch": (ALL_DIMENSIONS, "flops", 0.5),
  "dnarch_b25": (ALL_DIMENSIONS, "flops", 0.25),
  "dnarch_p50": (ALL_DIMENSIONS, "params", 0.5),
}

# A tiny network and a short loop: every task's smoke test.
SMOKE_MODEL = dict(num_blocks=2, width=16, hidden_width=16, kernel_net_hidden=8)
SMOKE_LOOP = dict(total_steps=30, log_every=5, eval_every=15, checkpoint_every=10)


def experiment_config(
  task: str,
  variant: str | None,
  runs: Mapping[str, CCNNRun],
  *,
  causal: bool,
  kernel_grid: int,
  learnable: tuple[str, ...] = ALL_DIMENSIONS,
  **model_fields: Any,
) -> ml_collections.ConfigDict:
  """The config of ``variant`` (default ``dnarch``) of ``task``.

  Args:
    task: the data task (``dnarch_jax.data.tasks``).
    variant: one of :data:`VARIANTS`.
    runs: CCNN's hyperparameters per size, ``"4_140"`` and ``"6_380"``.
    causal: causal kernels (sequences) or centred ones.
    kernel_grid: kernel samples per axis (0: the input's length, CCNN's "same").
    learnable: the dimensions DNArch may learn on this task (a task whose input length is odd
      cannot learn its resolution, for instance).
    **model_fields: further ``config.model`` fields (bucket sizes, ...).
  """
  variant = variant or "dnarch"
  if variant not in VARIANTS:
    raise ValueError(f"unknown variant {variant!r} of {task}: {', '.join(VARIANTS)}")
  size = "6_380" if variant == "ccnn_6_380" else "4_140"
  run = runs[size]
  config = ml_collections.ConfigDict()
  config.variant = variant
  config.seed = 0
  config.data = default_data_config(task)
  config.data.batch_size = run.batch_size
  config.data.eval_batch_size = run.batch_size
  if run.augment is not None:
    config.data.augment = run.augment
  config.model = model_block(
    size,
    omega_0=run.omega_0,
    dropout=run.dropout,
    causal=causal,
    kernel_grid=kernel_grid,
    input_dropout=run.input_dropout,
    kernel_sigma_init=run.kernel_sigma_init,
    **model_fields,
  )
  config.optim = optim_block(
    lr=run.lr,
    weight_decay=run.weight_decay,
    warmup_epochs=run.warmup_epochs,
    epochs=run.epochs,
    arch_lr_factor=1.0,
  )
  add_loop_fields(config)
  if variant.startswith("ccnn_"):
    learn(config.model, "kernel")
  elif variant == "smoke":
    learn(config.model, *learnable)
    config.model.update(SMOKE_MODEL)
    config.data.update(batch_size=16, eval_batch_size=200)
    if TASKS[task].val_size:  # a small carved validation split keeps smoke evaluations short
      config.data.val_size = 1000
    config.optim.update(warmup_epochs=0.0)
    config.budget.fraction = 0.5
    config.update(SMOKE_LOOP, arch_refresh_every=5)
  else:
    dimensions, metric, fraction = _DNARCH_VARIANTS[variant]
    learn(config.model, *(d for d in dimensions if d in learnable))
    # DNArch searches from the usual initial crop, whatever the CCNN row started from.
    config.model.kernel_sigma_init = ModelConfig.kernel_sigma_init
    config.budget.update(metric=metric, fraction=fraction)
  return config
