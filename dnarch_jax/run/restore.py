"""Restore a trained run's checkpoint for reading: eval, export and summary, any method.

``restore_run(workdir, which)`` looks the run's method up (``dnarch_jax.run.methods``) and restores
its ``best`` (by validation accuracy; the latest if none is ranked) or ``latest`` checkpoint onto
one device. It opens no data and compiles nothing: the target tree comes from ``jax.eval_shape``
of the model's initialisation and the run's optimiser. A DNArch run gives a :class:`TrainedRun`;
a DNAL run ``dnarch_jax.dnal.train.TrainedDnalRun``; both carry ``config``, ``cfg``,
``variables``, ``arch``, ``step`` and ``checkpoint``.
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
from typing import Any

import jax
import jax.numpy as jnp

from dnarch_jax.config import ModelConfig
from dnarch_jax.method.arch import Arch, initial_arch
from dnarch_jax.network.model import DNArchCCNN


@dataclasses.dataclass
class TrainedRun:
  """A run's checkpoint as the trained network: model config, variables, its ``Arch``."""

  config: Any  # ml_collections.ConfigDict of the run
  cfg: ModelConfig
  variables: dict
  arch: Arch
  step: int
  checkpoint: str
  batch_size: int


def restore_dnarch_run(workdir: str | os.PathLike, checkpoint: str = "best") -> TrainedRun:
  """The ``best`` (by validation accuracy; the latest if none is ranked) or ``latest`` checkpoint
  of a run, restored onto one device. Needs no data and compiles no model: the target tree comes
  from ``jax.eval_shape`` of the model's initialisation and the run's optimiser."""
  from dnarch_jax.run import workdir as workdir_lib
  from dnarch_jax.run.experiment import run_model_config
  from dnarch_jax.run.loop import load_run_config
  from dnarch_jax.run.optim import make_optimizer
  from dnarch_jax.run.steps import create_train_state

  workdir = pathlib.Path(workdir)
  if not workdir.is_dir():
    raise FileNotFoundError(f"{workdir}: no such workdir")
  config = load_run_config(workdir)
  method = config.get("method", "dnarch")
  if method != "dnarch":  # DNAL's CNNs: dnarch_jax.dnal.train.restore_dnal_run
    raise ValueError(f"{workdir}: a {method!r} run; this restores DNArch runs")
  # Before Orbax is opened: its start-up clean-up thread would outlive the error and print a
  # traceback at exit.
  workdir_lib.check_has_checkpoint(workdir)
  cfg = run_model_config(config, workdir)
  model = DNArchCCNN(cfg)
  x = jnp.zeros((2, *cfg.input_size, cfg.in_channels), jnp.float32)
  full = initial_arch(cfg, crop=False)

  def make_state(key):
    variables = model.init(key, x, full, train=False)
    # Schedules are closures: the optimiser state's structure does not depend on the step counts.
    tx = make_optimizer(dict(config.optim), variables["params"], 1, 1)
    return create_train_state(variables, tx, key)

  state, meta, step = restore_checkpoint(workdir, make_state, checkpoint)
  variables = {"params": state.params, "batch_stats": state.batch_stats}
  arch = Arch.from_dict(meta["arch"])
  return TrainedRun(config, cfg, variables, arch, int(step), checkpoint, config.data.batch_size)


def restore_checkpoint(workdir: pathlib.Path, make_state, which: str):
  """``(state, meta, step)`` of the workdir's ``which`` checkpoint, onto one device: the target
  tree is ``jax.eval_shape(make_state, key)`` (shapes only; nothing is computed or compiled)."""
  from dnarch_jax.run.checkpoint import Checkpointer

  abstract = jax.eval_shape(make_state, jax.random.key(0))
  device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
  abstract = jax.tree_util.tree_map(
    lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=device), abstract
  )
  checkpointer = Checkpointer(workdir / "checkpoints")
  try:
    return checkpointer.restore_for_reading(abstract, which)
  finally:
    checkpointer.close()


def restore_run(workdir: str | os.PathLike, checkpoint: str = "best"):
  """The run's checkpoint restored by its method's restorer (see the module docstring)."""
  from dnarch_jax.run.methods import method_of_run

  return method_of_run(workdir).load("restore_run")(workdir, checkpoint)
