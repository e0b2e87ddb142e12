"""DNAL's staged trainer: weights, architecture, prune, fine-tune, on one resumable step counter.

``DnalTrainer(config, workdir).run()`` runs (or resumes) a DNAL run (``config.method = "dnal"``):

* stage lengths come from ``config.dnal`` (``*_epochs``, or ``*_steps`` when not None); the step
  counter runs through them in order and every stage ends with a validation pass and a checkpoint;
* ``weights`` trains the weights with the gates off; ``arch`` trains the gate logits with
  ``lambda_a * sum sigmoid(s)`` and ``delta`` annealed from ``delta_start`` to ``delta_end``;
  when it ends the network is pruned at ``config.model.threshold`` (a ``DnalArch``, logged to
  ``arch.jsonl``) and ``finetune`` trains the pruned network's weights with a fresh optimizer;
* data-parallel over every device, Orbax checkpoints holding the state, the ``DnalArch`` and the
  data iterator; a restart on the same workdir resumes bit-identically, inside a stage or at a
  boundary (the pruned architecture is a function of the frozen gate logits, and optimizer
  restarts happen at a step index, before that step runs);
* ``metrics.jsonl`` (``kind`` ``train`` / ``val``, with the stage, delta, MACs and parameters),
  ``config.json`` and ``report/`` plots. Checkpoints are ranked by validation accuracy only in the
  last stage, so ``dnarch eval`` reads the best *final* network (the pruned one for ``dnal``).

The loop (restore, stop signals, logging, evaluation, checkpoints, TensorBoard, report) is
:class:`dnarch_jax.run.loop.RunLoop`, shared with DNArch's trainer; this module is the stage machine
around DNAL's step.
"""

from __future__ import annotations

import dataclasses
import logging
import pathlib
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from dnarch_jax.config import LOOP_DEFAULTS
from dnarch_jax.data import pipeline_from_config, split_from_config
from dnarch_jax.dnal import gates as gates_lib
from dnarch_jax.dnal.arch import DnalArch, dnal_cost, full_arch, prune
from dnarch_jax.dnal.config import NetConfig, run_net_config
from dnarch_jax.dnal.models import init_dnal_variables
from dnarch_jax.dnal.steps import (
  SCHEDULES,
  DnalState,
  StageOptim,
  create_state,
  make_eval_step,
  make_train_step,
  make_tx,
  restart_optimizer,
)
from dnarch_jax.run import sharding
from dnarch_jax.run import workdir as workdir_lib
from dnarch_jax.run.loop import RunLoop, load_run_config, validate_loop_fields
from dnarch_jax.run.restore import restore_checkpoint

log = logging.getLogger("dnarch")
DNAL_FIELDS = ("lambda_a", "delta_start", "delta_end") + tuple(
  f"{stage}_{unit}" for stage in gates_lib.STAGES for unit in ("epochs", "steps")
)
OPTIM_FIELDS = ("lr", "momentum", "weight_decay", "schedule")


def validate_config(config: ml_collections.ConfigDict) -> None:
  """Check the loop, ``config.dnal`` and ``config.optim`` fields before anything is compiled."""
  for key, value in LOOP_DEFAULTS.items():
    if key not in config:
      config[key] = value
  validate_loop_fields(config, ("log_every", "eval_every", "checkpoint_every", "keep_last"))
  sections = [("dnal", DNAL_FIELDS)] + [(f"optim.{s}", OPTIM_FIELDS) for s in gates_lib.STAGES]
  for name, fields in sections:
    node = config
    for key in name.split("."):
      if key not in node:
        raise ValueError(f"config.{name}: missing (see dnarch_jax.dnal.config.experiment_config)")
      node = node[key]
    unknown = sorted(set(node.keys()) - set(fields))
    missing = sorted(set(fields) - set(node.keys()))
    if unknown or missing:
      raise ValueError(f"config.{name}: unknown fields {unknown}, missing fields {missing}")
  d = config.dnal
  if d.lambda_a < 0:
    raise ValueError(f"config.dnal.lambda_a: must be non-negative, got {d.lambda_a}")
  if not (d.delta_start > 0 and d.delta_end > 0):
    raise ValueError(
      f"config.dnal.delta_start/delta_end: must be positive, got {d.delta_start}, {d.delta_end}"
    )
  for stage in gates_lib.STAGES:
    o = config.optim[stage]
    if o.lr < 0 or not 0 <= o.momentum < 1 or o.weight_decay < 0:
      raise ValueError(f"config.optim.{stage}: need lr >= 0, 0 <= momentum < 1, weight_decay >= 0")
    if o.schedule not in SCHEDULES:
      raise ValueError(f"config.optim.{stage}.schedule: {o.schedule!r} is not one of {SCHEDULES}")


class DnalTrainer(RunLoop):
  """One DNAL run: the shared run loop (``dnarch_jax.run.loop``) with DNAL's stage machine. Build
  it, then ``run()``; see the module docstring."""

  progress_name = "dnal"

  validate_config = staticmethod(validate_config)

  def configure(self) -> None:
    self.cfg: NetConfig = run_net_config(self.config)

  def build(self) -> None:
    config = self.config
    self.lengths = stage_lengths(config, self.steps_per_epoch)
    gates_lib.check_lengths(self.lengths)
    self.total_steps = sum(self.lengths)
    self.stage_ends = set(np.cumsum(self.lengths).tolist())
    self.final_stage = gates_lib.stage_at(self.total_steps - 1, self.lengths)[0]
    self.optims = stage_optims(config, self.lengths)
    self.lambda_a = float(config.dnal.lambda_a)
    variables = init_dnal_variables(self.cfg, jax.random.key(config.seed))
    self.state: DnalState = sharding.replicate(create_state_for(variables, self.optims), self.mesh)
    self.arch: DnalArch = full_arch(self.cfg)

  # --- stages ----------------------------------------------------------------------------------

  def delta_for(self, stage: str, arch_step: int) -> np.float32:
    """The delta of step ``arch_step`` of the architecture stage (``stage`` "arch", or the mode
    "soft"); ``delta_end`` after it (the pruned network's frozen gates) and before it (unused)."""
    return stage_delta(self.config, self.lengths, stage, arch_step)

  def _sync_arch(self, completed: int) -> None:
    """After the architecture stage the network is the pruned one (computed once: the gate
    logits are frozen from then on, so it is the same whenever it is computed)."""
    mode, _ = gates_lib.mode_after(completed, self.lengths)
    if mode != "hard" or self.arch.crop:
      return
    params = jax.device_get(self.state.params)
    self.arch = prune(params, self.cfg, float(self.config.dnal.delta_end))
    self._log_arch(completed)
    log.info("step %d: pruned to widths %s", completed, self.arch.widths)

  def _log_arch(self, step: int) -> None:
    if self.arch_log:
      cost = dnal_cost(self.cfg, self.arch)
      # The key is "dnal_arch", not "arch": the report's CCNN plots read "arch" records.
      record = dict(step=step, **cost, widths=list(self.arch.widths), dnal_arch=self.arch.to_dict())
      self.arch_log.write(record)

  # --- what the loop asks ----------------------------------------------------------------------

  def start(self) -> None:
    self._log_arch(0)

  def restored(self, meta: dict, step: int) -> None:
    self.arch = DnalArch.from_dict(meta["arch"])

  def checkpoint_meta(self, step: int) -> dict:
    # The stage lengths, so that a reader knows the network and its delta without the data.
    return dict(network=gates_lib.mode_after(step, self.lengths)[0], stages=list(self.lengths))

  def before_step(self, step: int) -> None:
    self._sync_arch(step)

  def train_one(self, step: int, batch) -> dict:
    stage, stage_step = gates_lib.stage_at(step, self.lengths)
    if stage == "finetune" and stage_step == 0:
      state = restart_optimizer(self.state, stage, make_tx(self.optims[stage]))
      self.state = sharding.replicate(state, self.mesh)
    step_fn = make_train_step(self.cfg, stage, self.optims[stage], self.lambda_a)
    delta = self.delta_for(stage, stage_step)

    def call():
      self.state, metrics = step_fn(self.state, batch, delta, self.arch)
      return metrics

    return self.first_call((stage, self.arch), call, stage=stage)

  def after_step(self, completed: int) -> None:
    self._sync_arch(completed)

  def is_boundary(self, completed: int) -> bool:
    return completed in self.stage_ends

  def train_records(self, completed: int, host: dict) -> tuple[list[dict], dict]:
    stage, stage_step = gates_lib.stage_at(completed - 1, self.lengths)
    cost = dnal_cost(self.cfg, self.arch)
    if stage != "weights":  # the gates are off in the weights stage
      host["delta"] = float(self.delta_for(stage, stage_step))
    record = dict(kind="train", step=completed, stage=stage, **cost, **host)
    return [record], dict(stage=stage, MMACs=f"{cost['macs'] / 1e6:.2f}")

  def evaluate(self, split: str, completed: int) -> dict[str, float]:
    """Metrics on ``split`` of the network as it is after ``completed`` steps."""
    place = lambda local: sharding.global_batch(local, self.mesh)
    return evaluate_network(
      self.cfg, self.config, self.lengths, self.state, self.arch, split, completed, place
    )

  def val_fields(self, completed: int) -> dict:
    return dict(stage=gates_lib.stage_at(completed - 1, self.lengths)[0])

  def ranks(self, completed: int) -> bool:
    # Ranked only in the last stage, so "best" is a final (pruned) network.
    return gates_lib.stage_at(completed - 1, self.lengths)[0] == self.final_stage

  def result(self) -> dict:
    return dict(
      stages=dict(zip(gates_lib.STAGES, self.lengths, strict=True)),
      widths=list(self.arch.widths),
      **dnal_cost(self.cfg, self.arch),
    )


def stage_optims(config: ml_collections.ConfigDict, lengths) -> dict[str, StageOptim]:
  return {
    s: StageOptim(steps=n, **{k: config.optim[s][k] for k in OPTIM_FIELDS})
    for s, n in zip(gates_lib.STAGES, lengths, strict=True)
  }


def create_state_for(variables, optims: dict[str, StageOptim]) -> DnalState:
  return create_state(variables, make_tx(optims["weights"]), make_tx(optims["arch"]))


def stage_delta(config: ml_collections.ConfigDict, lengths, stage: str, arch_step: int):
  """The delta of step ``arch_step`` of the architecture stage (``stage`` "arch", or the mode
  "soft"); ``delta_end`` after it (the pruned network's frozen gates) and before it (unused)."""
  d = config.dnal
  if stage in ("arch", "soft"):
    return np.float32(gates_lib.delta_at(arch_step, lengths[1], d.delta_start, d.delta_end))
  return np.float32(d.delta_end)


def evaluate_network(cfg, config, lengths, state, arch, split, completed, place) -> dict:
  """Loss and accuracy on ``split`` of the network as it is after ``completed`` steps
  (``place``: a host batch onto the state's devices)."""
  mode, arch_step = gates_lib.mode_after(completed, lengths)
  eval_step = make_eval_step(cfg, mode)
  delta = stage_delta(config, lengths, "soft" if mode == "soft" else "hard", arch_step)
  totals = {"loss_sum": 0.0, "correct_sum": 0.0, "weight": 0.0}
  for local in pipeline_from_config(config.data, split):
    for k, v in jax.device_get(eval_step(state, place(local), delta, arch)).items():
      totals[k] += float(v)
  weight = max(totals["weight"], 1.0)
  return {"accuracy": totals["correct_sum"] / weight, "loss": totals["loss_sum"] / weight}


@dataclasses.dataclass
class TrainedDnalRun:
  """A DNAL run's checkpoint restored for reading (:func:`restore_dnal_run`)."""

  config: ml_collections.ConfigDict
  cfg: NetConfig
  state: DnalState
  arch: DnalArch
  lengths: tuple[int, ...]
  step: int
  checkpoint: str

  @property
  def network(self) -> str:
    """``off``, ``soft`` or ``hard`` (pruned): how the checkpoint's network computes."""
    return gates_lib.mode_after(self.step, self.lengths)[0]

  @property
  def variables(self) -> dict:
    return {"params": self.state.params, "batch_stats": self.state.batch_stats}


def restore_dnal_run(workdir: str | pathlib.Path, which: str = "best") -> TrainedDnalRun:
  """A DNAL run's ``best`` (by validation accuracy in its last stage; the latest if none is
  ranked) or ``latest`` checkpoint and that checkpoint's network, on one device. Opens no data
  and compiles nothing: the target tree comes from ``jax.eval_shape``, the stage lengths from
  the checkpoint (checkpoints written before they were recorded: from the data's size)."""
  workdir = pathlib.Path(workdir)
  config = load_run_config(workdir)
  validate_config(config)
  workdir_lib.check_has_checkpoint(workdir)
  cfg = run_net_config(config, workdir)
  # Schedules are closures: the optimiser state's structure does not depend on the step counts.
  optims = stage_optims(config, (1,) * len(gates_lib.STAGES))
  make_state = lambda r: create_state_for(init_dnal_variables(cfg, r), optims)
  state, meta, step = restore_checkpoint(workdir, make_state, which)
  lengths = tuple(meta["stages"]) if "stages" in meta else _lengths_from_data(config)
  arch = DnalArch.from_dict(meta["arch"])
  return TrainedDnalRun(config, cfg, state, arch, lengths, step, which)


def stage_lengths(config: ml_collections.ConfigDict, steps_per_epoch: int) -> tuple[int, ...]:
  """Steps of the weights, arch and finetune stages (``*_steps``, else ``*_epochs``)."""
  d = config.dnal
  return tuple(
    gates_lib.stage_steps(d[f"{s}_epochs"], d[f"{s}_steps"], steps_per_epoch)
    for s in gates_lib.STAGES
  )


def _lengths_from_data(config: ml_collections.ConfigDict) -> tuple[int, ...]:
  train_examples = len(split_from_config(config.data, "train"))
  return stage_lengths(config, max(1, train_examples // config.data.batch_size))


def evaluate_dnal_run(
  workdir: str | pathlib.Path, split: str = "test", which: str = "best", input_size=None
) -> dict:
  """Metrics of a DNAL run's ``best`` or ``latest`` checkpoint (:func:`restore_dnal_run`) on
  ``split``, with the MACs and parameters of the network it holds. ``input_size`` must be
  ``None``: DNAL's discrete-kernel CNNs run at their training size only."""
  if input_size is not None:
    raise ValueError("--input_size: DNAL's CNNs run at their training size only")
  run = restore_dnal_run(workdir, which)
  place = lambda batch: {k: jnp.asarray(v) for k, v in batch.items()}
  metrics = evaluate_network(
    run.cfg, run.config, run.lengths, run.state, run.arch, split, run.step, place
  )
  return dict(
    split=split,
    step=run.step,
    checkpoint=which,
    network=run.network,
    widths=list(run.arch.widths),
    **dnal_cost(run.cfg, run.arch),
    **metrics,
  )


def train(
  config: ml_collections.ConfigDict,
  workdir: str | pathlib.Path,
  allow_config_change: bool = False,
) -> dict[str, Any]:
  """Run (or resume) the DNAL run ``config`` in ``workdir``; returns a summary of the run."""
  return DnalTrainer(config, workdir, allow_config_change=allow_config_change).run()
