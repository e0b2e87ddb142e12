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

It reuses the project's pieces: data pipelines, sharding, the checkpointer and the metrics
writer; what differs from ``dnarch_jax.train.Trainer`` is the stage machine around the step.
"""

from __future__ import annotations

import json
import logging
import math
import pathlib
import time
from typing import Any

import jax
import ml_collections
import numpy as np

from dnarch_jax import report, sharding
from dnarch_jax import workdir as workdir_lib
from dnarch_jax.checkpoint import Checkpointer
from dnarch_jax.data import (
  pipeline_from_config,
  print_data_summary,
  split_from_config,
  validate_data_config,
)
from dnarch_jax.dnal import gates as gates_lib
from dnarch_jax.dnal.arch import DnalArch, arch_cost, full_arch, prune
from dnarch_jax.dnal.config import NetConfig, run_net_config
from dnarch_jax.dnal.models import init_variables
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
from dnarch_jax.train import NonFiniteLossError, check_finite, load_run_config

log = logging.getLogger("dnarch")

LOOP_DEFAULTS = dict(
  seed=0, log_every=50, eval_every=1000, checkpoint_every=1000, keep_last=3, progress=True
)
DNAL_FIELDS = ("lambda_a", "delta_start", "delta_end") + tuple(
  f"{stage}_{unit}" for stage in gates_lib.STAGES for unit in ("epochs", "steps")
)
OPTIM_FIELDS = ("lr", "momentum", "weight_decay", "schedule")


def validate_config(config: ml_collections.ConfigDict) -> None:
  """Check the loop, ``config.dnal`` and ``config.optim`` fields before anything is compiled."""
  for key, value in LOOP_DEFAULTS.items():
    if key not in config:
      config[key] = value
  for key in ("log_every", "eval_every", "checkpoint_every", "keep_last"):
    if not isinstance(config[key], int) or config[key] < 1:
      raise ValueError(f"config.{key}: must be a positive integer, got {config[key]!r}")
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


class DnalTrainer:
  """One DNAL run. Build it, then ``run()``; see the module docstring."""

  def __init__(
    self,
    config: ml_collections.ConfigDict,
    workdir: str | pathlib.Path,
    devices=None,
    allow_config_change: bool = False,
  ):
    validate_config(config)
    validate_data_config(config.data)
    self.config = config
    self.cfg: NetConfig = run_net_config(config)
    self.workdir = pathlib.Path(workdir)
    workdir_lib.check_writable(self.workdir)
    self.config_changes = workdir_lib.resume_changes(
      self.workdir, config.to_json(), allow_config_change
    )
    self.is_main = jax.process_index() == 0

    self.mesh = sharding.make_mesh(devices)
    self.batch_size = int(config.data.batch_size)
    sharding.check_batch_size(self.batch_size, self.mesh)
    sharding.check_batch_size(
      int(config.data.eval_batch_size), self.mesh, "config.data.eval_batch_size"
    )
    train_examples = len(split_from_config(config.data, "train"))
    print_data_summary(config.data, enabled=self.is_main)
    self.steps_per_epoch = max(1, train_examples // self.batch_size)
    self.lengths = tuple(
      gates_lib.stage_steps(
        config.dnal[f"{s}_epochs"], config.dnal[f"{s}_steps"], self.steps_per_epoch
      )
      for s in gates_lib.STAGES
    )
    gates_lib.check_lengths(self.lengths)
    self.total_steps = sum(self.lengths)
    self.final_stage = gates_lib.stage_at(self.total_steps - 1, self.lengths)[0]
    self.optims = {
      s: StageOptim(steps=n, **{k: config.optim[s][k] for k in OPTIM_FIELDS})
      for s, n in zip(gates_lib.STAGES, self.lengths, strict=True)
    }
    self.lambda_a = float(config.dnal.lambda_a)

    variables = init_variables(self.cfg, jax.random.key(config.seed))
    state = create_state(variables, make_tx(self.optims["weights"]), make_tx(self.optims["arch"]))
    self.state: DnalState = sharding.replicate(state, self.mesh)
    self.arch: DnalArch = full_arch(self.cfg)
    self.train_iter = pipeline_from_config(config.data, "train")
    self.checkpointer = Checkpointer(self.workdir / "checkpoints", keep_last=config.keep_last)
    self.metrics = report.MetricsWriter(self.workdir / "metrics.jsonl") if self.is_main else None
    self.arch_log = report.MetricsWriter(self.workdir / "arch.jsonl") if self.is_main else None
    self.compiles: set = set()

  # --- stages ----------------------------------------------------------------------------------

  def delta_for(self, stage: str, arch_step: int) -> np.float32:
    """The delta of step ``arch_step`` of the architecture stage (``stage`` "arch", or the mode
    "soft"); ``delta_end`` after it (the pruned network's frozen gates) and before it (unused)."""
    d = self.config.dnal
    if stage in ("arch", "soft"):
      return np.float32(gates_lib.delta_at(arch_step, self.lengths[1], d.delta_start, d.delta_end))
    return np.float32(d.delta_end)

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
      cost = arch_cost(self.cfg, self.arch)
      # The key is "dnal_arch", not "arch": the report's architecture plots read CCNN records.
      record = dict(step=step, **cost, widths=list(self.arch.widths), dnal_arch=self.arch.to_dict())
      self.arch_log.write(record)

  # --- state -----------------------------------------------------------------------------------

  def restore_or_start(self) -> int:
    """Resume from the workdir's latest readable checkpoint; else start at step 0."""
    if self.checkpointer.latest_step() is None:
      if self.is_main:
        (self.workdir / "config.json").write_text(self.config.to_json(indent=2))
        for path in (self.workdir / "metrics.jsonl", self.workdir / "arch.jsonl"):
          report.truncate_after(path, -1)
      self._log_arch(0)
      return 0
    state, meta, step = self.checkpointer.restore(self.state)
    self.state = state
    self.arch = DnalArch.from_dict(meta["arch"])
    self.train_iter.set_state(meta["data_state"])
    if self.is_main:
      # DNAL logs a step's architecture before that step's checkpoint: both files end at it.
      for path in (self.workdir / "metrics.jsonl", self.workdir / "arch.jsonl"):
        report.truncate_after(path, step)
      workdir_lib.record_changes(self.workdir, self.config_changes, step)
      (self.workdir / "config.json").write_text(self.config.to_json(indent=2))
    log.warning("resumed from step %d of %s", step, self.workdir)
    return step

  def save(self, step: int, metrics: dict | None = None, force: bool = False) -> None:
    check_finite(self.state.params, step, self.checkpointer.latest_step())
    meta = dict(
      arch=self.arch.to_dict(),
      data_state=self.train_iter.get_state(),
      config=json.loads(self.config.to_json()),
      network=gates_lib.mode_after(step, self.lengths)[0],
    )
    self.checkpointer.save(step, self.state, meta, metrics=metrics, force=force)

  # --- steps -----------------------------------------------------------------------------------

  def _train_one(self, stage: str, stage_step: int, batch) -> dict:
    if stage == "finetune" and stage_step == 0:
      state = restart_optimizer(self.state, stage, make_tx(self.optims[stage]))
      self.state = sharding.replicate(state, self.mesh)
    step_fn = make_train_step(self.cfg, stage, self.optims[stage], self.lambda_a)
    key = (stage, self.arch)
    t0 = time.perf_counter()
    self.state, metrics = step_fn(self.state, batch, self.delta_for(stage, stage_step), self.arch)
    if key not in self.compiles:
      jax.block_until_ready(metrics)
      self.compiles.add(key)
      seconds = time.perf_counter() - t0
      self._log(dict(kind="compile", step=int(self.state.step), stage=stage, seconds=seconds))
    return metrics

  def evaluate(self, split: str, completed: int) -> dict[str, float]:
    """Metrics on ``split`` of the network as it is after ``completed`` steps."""
    mode, arch_step = gates_lib.mode_after(completed, self.lengths)
    eval_step = make_eval_step(self.cfg, mode)
    delta = self.delta_for("soft" if mode == "soft" else "hard", arch_step)
    totals = {"loss_sum": 0.0, "correct_sum": 0.0, "weight": 0.0}
    for local in pipeline_from_config(self.config.data, split):
      batch = sharding.global_batch(local, self.mesh)
      for k, v in jax.device_get(eval_step(self.state, batch, delta, self.arch)).items():
        totals[k] += float(v)
    weight = max(totals["weight"], 1.0)
    return {"accuracy": totals["correct_sum"] / weight, "loss": totals["loss_sum"] / weight}

  # --- the loop --------------------------------------------------------------------------------

  def run(self, stop_at: int | None = None) -> dict[str, Any]:
    """Train to the end of the last stage, or stop with a checkpoint at ``stop_at``."""
    stop = workdir_lib.StopSignals(jax.process_count())
    with workdir_lib.WorkdirLock(self.workdir, self.is_main), stop:
      return self._run(stop, stop_at)

  def _run(self, stop: workdir_lib.StopSignals, stop_at: int | None) -> dict[str, Any]:
    step = first = self.restore_or_start()
    end = self.total_steps if stop_at is None else min(stop_at, self.total_steps)
    stage_ends = set(np.cumsum(self.lengths).tolist())
    bar = self._progress_bar(step)
    last_time, last_step = time.perf_counter(), step
    status = "completed"
    try:
      while step < end:
        # As in dnarch_jax.train: at the top, so a signal during restore or compile is honoured
        # before training on, with nothing to save if this run trained nothing.
        if stop.check():
          if step > first:
            self.save(step, force=True)
          status = "preempted"
          break
        self._sync_arch(step)
        stage, stage_step = gates_lib.stage_at(step, self.lengths)
        batch = sharding.global_batch(next(self.train_iter), self.mesh)
        metrics = self._train_one(stage, stage_step, batch)
        step += 1
        self._sync_arch(step)
        if step % self.config.log_every == 0 or step in stage_ends:
          now = time.perf_counter()
          rate = (step - last_step) / max(now - last_time, 1e-9)
          last_time, last_step = now, step
          self._log_train(step, stage, stage_step, metrics, rate, bar)
        if step % self.config.eval_every == 0 or step in stage_ends:
          val = self.evaluate("validation", step)
          self._log(dict(kind="val", step=step, stage=stage, **val))
          ranked = stage == self.final_stage
          self.save(step, metrics={"val_accuracy": val["accuracy"]} if ranked else None, force=True)
        elif step % self.config.checkpoint_every == 0:
          self.save(step)
        if step == end and end < self.total_steps:
          self.save(step, force=True)
          status = "stopped"
    finally:
      self.checkpointer.wait()
      if bar is not None:
        bar.close()
    result = dict(
      status=status,
      step=step,
      stages=dict(zip(gates_lib.STAGES, self.lengths, strict=True)),
      compiles=len(self.compiles),
      widths=list(self.arch.widths),
      **arch_cost(self.cfg, self.arch),
    )
    if self.is_main:
      report.write_report(self.workdir)
    return result

  def _log(self, record: dict) -> None:
    if self.metrics:
      self.metrics.write(record)

  def _log_train(self, step, stage, stage_step, metrics, rate, bar) -> None:
    host = {k: float(v) for k, v in jax.device_get(metrics).items()}
    if not all(math.isfinite(v) for v in host.values()):
      raise NonFiniteLossError(
        f"non-finite training metrics at step {step} ({host}); stopped without saving, "
        f"the last good checkpoint (step {self.checkpointer.latest_step()}) is kept"
      )
    cost = arch_cost(self.cfg, self.arch)
    if stage != "weights":  # the gates are off in the weights stage
      host["delta"] = float(self.delta_for(stage, stage_step))
    self._log(dict(kind="train", step=step, stage=stage, steps_per_s=rate, **cost, **host))
    if bar is not None:
      postfix = dict(stage=stage, loss=f"{host['loss']:.3f}", acc=f"{host['accuracy']:.3f}")
      postfix.update(MMACs=f"{cost['macs'] / 1e6:.2f}", it_s=f"{rate:.2f}")
      bar.set_postfix(postfix, refresh=False)
      bar.update(step - bar.n)

  def _progress_bar(self, step: int):
    if not (self.is_main and self.config.progress):
      return None
    from tqdm.auto import tqdm

    return tqdm(total=self.total_steps, initial=step, desc="dnal", unit="step", dynamic_ncols=True)


def restore_run(workdir: str | pathlib.Path, which: str = "best") -> tuple[DnalTrainer, int]:
  """A DNAL run's trainer holding its ``best`` (by validation accuracy in its last stage; the
  latest if none is ranked) or ``latest`` checkpoint and that checkpoint's network, and the step."""
  config = load_run_config(workdir)
  workdir_lib.check_has_checkpoint(pathlib.Path(workdir))
  trainer = DnalTrainer(config, workdir)
  trainer.state, meta, step = trainer.checkpointer.restore_for_reading(trainer.state, which)
  trainer.arch = DnalArch.from_dict(meta["arch"])
  return trainer, step


def evaluate_run(workdir: str | pathlib.Path, split: str = "test", which: str = "best") -> dict:
  """Metrics of a DNAL run's ``best`` or ``latest`` checkpoint (:func:`restore_run`) on
  ``split``, with the MACs and parameters of the network it holds."""
  trainer, step = restore_run(workdir, which)
  metrics = trainer.evaluate(split, step)
  mode = gates_lib.mode_after(step, trainer.lengths)[0]
  return dict(
    split=split,
    step=step,
    checkpoint=which,
    network=mode,
    widths=list(trainer.arch.widths),
    **arch_cost(trainer.cfg, trainer.arch),
    **metrics,
  )


def train(
  config: ml_collections.ConfigDict,
  workdir: str | pathlib.Path,
  allow_config_change: bool = False,
) -> dict[str, Any]:
  """Run (or resume) the DNAL run ``config`` in ``workdir``; returns a summary of the run."""
  return DnalTrainer(config, workdir, allow_config_change=allow_config_change).run()
