"""The run loop every training method shares: restore or start, step, log, evaluate, save, stop.

A method (DNArch's :class:`dnarch_jax.run.train.Trainer`, DNAL's
:class:`dnarch_jax.dnal.train.DnalTrainer`) subclasses :class:`RunLoop` and supplies only what
differs: its config checks, its state and architecture, its step, what happens to the
architecture around a step (DNArch's refresh, DNAL's stage machine), its log fields and its
result. The loop owns everything else, once for both:

* the workdir (writable check, lock, config-change rules; ``dnarch_jax.run.workdir``), the mesh and
  the batch-size checks, the training data's one-line summary and the steps per epoch;
* restore from the latest readable checkpoint or start at step 0 (``config.json``,
  ``metrics.jsonl`` and ``arch.jsonl`` cut back to the restored step, so a resumed run logs each
  step once);
* the step loop: SIGTERM / SIGINT on any process saves at one step on every process and exits
  (``workdir.StopSignals``), ``stop_at`` stops as a preemption would, the progress bar, the
  non-finite check at log steps and before every save, evaluation on the validation split with a
  forced checkpoint (ranked by validation accuracy where the method says so);
* the records: ``report.MetricsWriter`` for ``metrics.jsonl`` and ``arch.jsonl``, mirrored to
  TensorBoard event files (``dnarch_jax.interfaces.events``), and the ``report/`` plots at the end.
"""

from __future__ import annotations

import json
import logging
import math
import pathlib
import time
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections

from dnarch_jax.data import (
  pipeline_from_config,
  print_data_summary,
  split_from_config,
  validate_data_config,
)
from dnarch_jax.interfaces import events, report
from dnarch_jax.run import sharding
from dnarch_jax.run import workdir as workdir_lib
from dnarch_jax.run.checkpoint import Checkpointer
from dnarch_jax.run.experiment import write_data_shape

log = logging.getLogger("dnarch")


class NonFiniteLossError(RuntimeError):
  pass


@jax.jit
def _all_finite(tree) -> jax.Array:
  leaves = [jnp.isfinite(x).all() for x in jax.tree_util.tree_leaves(tree)
            if jnp.issubdtype(x.dtype, jnp.inexact)]  # fmt: skip
  return jnp.stack(leaves).all() if leaves else jnp.asarray(True)


def check_finite(params, step: int, last_good: int | None) -> None:
  """Raise before a checkpoint or an architecture refresh reads non-finite parameters.

  Training metrics are checked only at log steps; without this a step between two logs could
  save NaN weights as the latest checkpoint, which every rerun would then resume from.
  """
  if not bool(_all_finite(params)):
    kept = (
      "no checkpoint was saved"
      if last_good is None
      else f"the last good checkpoint (step {last_good}) is kept"
    )
    raise NonFiniteLossError(
      f"non-finite parameters at step {step}; stopped without saving, {kept}"
    )


def load_run_config(workdir: str | pathlib.Path) -> ml_collections.ConfigDict:
  """The config a workdir's run was started with."""
  path = pathlib.Path(workdir) / "config.json"
  if not path.exists():
    raise FileNotFoundError(f"{workdir} holds no run (no config.json); train one with dnarch train")
  return ml_collections.ConfigDict(json.loads(path.read_text()))


def validate_loop_fields(config: ml_collections.ConfigDict, keys) -> None:
  for key in keys:
    if not isinstance(config[key], int) or config[key] < 1:
      raise ValueError(f"config.{key}: must be a positive integer, got {config[key]!r}")


class RunLoop:
  """One run of a method in a workdir. Build it, then ``run()``.

  Subclasses set ``progress_name`` and ``arch_record_lag`` and implement the hooks below; the
  constructor calls ``validate_config`` (static), ``configure`` (parse the model config: every
  config error before the workdir is touched), then ``build`` (state, architecture, ``total_steps``)
  once the data's size is known.
  """

  progress_name = "train"
  # Where a resumed run cuts ``arch.jsonl``: 0 keeps the restored step's record (DNAL logs a
  # step's architecture before that step's checkpoint), 1 drops it (DNArch refreshes the
  # architecture at the top of that step, after its checkpoint, and rewrites the record).
  arch_record_lag = 0

  # --- what a method supplies --------------------------------------------------------------

  @staticmethod
  def validate_config(config: ml_collections.ConfigDict) -> None:
    raise NotImplementedError

  def configure(self) -> None:
    """Set ``self.cfg`` from ``self.config``; raise on a bad config."""
    raise NotImplementedError

  def build(self) -> None:
    """Set ``total_steps``, ``state`` (replicated on ``mesh``) and ``arch``."""
    raise NotImplementedError

  def start(self) -> None:
    """A fresh run, before step 0 (e.g. log the first architecture)."""

  def restored(self, meta: dict, step: int) -> None:
    """Set the method's own fields from a restored checkpoint's ``meta``."""
    raise NotImplementedError

  def checkpoint_meta(self, step: int) -> dict:
    """The method's fields of a checkpoint's metadata (the loop adds arch, data and config)."""
    return {}

  def before_step(self, step: int) -> None:
    """Before step ``step`` (0-based) runs: architecture refresh, stage changes."""

  def train_one(self, step: int, batch) -> dict:
    """Run step ``step`` on ``batch``; the step's metrics (on device)."""
    raise NotImplementedError

  def after_step(self, completed: int) -> None:
    """After ``completed`` steps."""

  def is_boundary(self, completed: int) -> bool:
    """Whether ``completed`` ends a phase: the loop logs, evaluates and saves there."""
    return completed == self.total_steps

  def train_records(self, completed: int, host: dict) -> tuple[list[dict], dict]:
    """The records of a log step (``host``: the step's metrics and ``steps_per_s``) and the
    progress bar's extra fields."""
    raise NotImplementedError

  def evaluate(self, split: str, completed: int) -> dict[str, float]:
    raise NotImplementedError

  def val_fields(self, completed: int) -> dict:
    """Fields added to a ``val`` record."""
    return {}

  def ranks(self, completed: int) -> bool:
    """Whether a checkpoint at ``completed`` competes for ``best`` by validation accuracy."""
    return True

  def result(self) -> dict:
    """The method's fields of ``run()``'s summary."""
    return {}

  def report_options(self) -> dict:
    return {}

  # --- the loop ----------------------------------------------------------------------------

  def __init__(
    self,
    config: ml_collections.ConfigDict,
    workdir: str | pathlib.Path,
    devices=None,
    allow_config_change: bool = False,
  ):
    self.validate_config(config)
    validate_data_config(config.data)
    self.config = config
    self.configure()
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
    self.metrics = self.arch_log = None
    if self.is_main:
      self.metrics = report.MetricsWriter(self.workdir / "metrics.jsonl")
      self.arch_log = report.MetricsWriter(self.workdir / "arch.jsonl")
    self.events: events.EventLog | None = None
    self.compiles, self.compile_seconds = 0, 0.0
    self._compiled: set = set()
    self.build()
    self.train_iter = pipeline_from_config(config.data, "train")
    self.checkpointer = Checkpointer(self.workdir / "checkpoints", keep_last=config.keep_last)

  def restore_or_start(self) -> int:
    """Resume from the workdir's latest readable checkpoint; else start at step 0."""
    if self.checkpointer.latest_step() is None:
      if self.is_main:
        (self.workdir / "config.json").write_text(self.config.to_json(indent=2))
        write_data_shape(self.config, self.workdir)
        for path in (self.workdir / "metrics.jsonl", self.workdir / "arch.jsonl"):
          report.truncate_after(path, -1)
      self._open_events(None)
      self.start()
      return 0
    self.state, meta, step = self.checkpointer.restore(self.state)
    self.train_iter.set_state(meta["data_state"])
    self.restored(meta, step)
    if self.is_main:
      report.truncate_after(self.workdir / "metrics.jsonl", step)
      report.truncate_after(self.workdir / "arch.jsonl", step - self.arch_record_lag)
      workdir_lib.record_changes(self.workdir, self.config_changes, step)
      (self.workdir / "config.json").write_text(self.config.to_json(indent=2))
      write_data_shape(self.config, self.workdir)  # runs started before the record existed
    self._open_events(step + 1)
    log.warning("resumed from step %d of %s", step, self.workdir)
    return step

  def _open_events(self, purge_step: int | None) -> None:
    """Mirror the JSONL records to TensorBoard event files in the workdir; on a resume, what
    the cut-off run logged from ``purge_step`` on is hidden (the JSONL files drop it too)."""
    if self.is_main:
      self.events = events.EventLog(self.workdir, purge_step)
      self.metrics.mirror = self.events.metrics_record
      self.arch_log.mirror = self.events.arch_record

  def save(self, step: int, metrics: dict | None = None, force: bool = False) -> None:
    check_finite(self.state.params, step, self.checkpointer.latest_step())
    meta = dict(
      arch=self.arch.to_dict(),
      data_state=self.train_iter.get_state(),
      config=json.loads(self.config.to_json()),
      **self.checkpoint_meta(step),
    )
    self.checkpointer.save(step, self.state, meta, metrics=metrics, force=force)

  def first_call(self, key, call, prepare=None, **fields):
    """``call()``, timed and logged as a compile the first time ``key`` is seen (after
    ``prepare()``, inside the timing)."""
    if key in self._compiled:
      return call()
    t0 = time.perf_counter()
    if prepare is not None:
      prepare()
    out = call()
    jax.block_until_ready(out)
    self._compiled.add(key)
    seconds = time.perf_counter() - t0
    self.compiles += 1
    self.compile_seconds += seconds
    step = int(self.state.step)
    self.log(dict(kind="compile", step=step, seconds=seconds, compiles=self.compiles, **fields))
    return out

  def log(self, record: dict) -> None:
    if self.metrics:
      self.metrics.write(record)

  def run(self, stop_at: int | None = None) -> dict[str, Any]:
    """Train to ``total_steps``, or stop with a checkpoint at ``stop_at`` as a preemption would."""
    stop = workdir_lib.StopSignals(jax.process_count())
    with workdir_lib.WorkdirLock(self.workdir, self.is_main), stop:
      try:
        return self._run(stop, stop_at)
      finally:
        if self.events is not None:
          self.events.close()

  def _run(self, stop: workdir_lib.StopSignals, stop_at: int | None) -> dict[str, Any]:
    step = first = self.restore_or_start()
    end = self.total_steps if stop_at is None else min(stop_at, self.total_steps)
    bar = self._progress_bar(step)
    last_log_time, last_log_step = time.perf_counter(), step
    status = "completed"
    try:
      while step < end:
        # At the top of the iteration, so a signal during the restore or the first compile stops
        # the run before it trains on; a step that trained nothing new has nothing to save (the
        # restored checkpoint, or at step 0 the seed's initialisation, is what a rerun starts
        # from). The checkpoint of a step comes before the method's work before the next step.
        if stop.check():
          if step > first:
            self.save(step, force=True)
          status = "preempted"
          break
        self.before_step(step)
        batch = sharding.global_batch(next(self.train_iter), self.mesh)
        metrics = self.train_one(step, batch)
        step += 1
        self.after_step(step)
        boundary = self.is_boundary(step)
        if step % self.config.log_every == 0 or boundary:
          now = time.perf_counter()
          rate = (step - last_log_step) / max(now - last_log_time, 1e-9)
          last_log_time, last_log_step = now, step
          self._log_train(step, metrics, rate, bar)
        if step % self.config.eval_every == 0 or boundary:
          val = self.evaluate("validation", step)
          self.log(dict(kind="val", step=step, **self.val_fields(step), **val))
          ranked = {"val_accuracy": val["accuracy"]} if self.ranks(step) else None
          self.save(step, metrics=ranked, force=True)
        elif step % self.config.checkpoint_every == 0:
          self.save(step)
        if step == end and end < self.total_steps:
          self.save(step, force=True)
          status = "stopped"
    finally:
      self.checkpointer.wait()
      if bar is not None:
        bar.close()
    result = dict(status=status, step=step, compiles=self.compiles,
                  compile_seconds=round(self.compile_seconds, 2), **self.result())  # fmt: skip
    if self.is_main:
      images = report.write_report(self.workdir, **self.report_options())
      self.events.images(images, step)
    return result

  def _log_train(self, step: int, metrics, rate: float, bar) -> None:
    host = {k: float(v) for k, v in jax.device_get(metrics).items()}
    if not all(math.isfinite(v) for v in host.values()):
      raise NonFiniteLossError(
        f"non-finite training metrics at step {step} ({host}); stopped without saving, "
        f"the last good checkpoint (step {self.checkpointer.latest_step()}) is kept"
      )
    host["steps_per_s"] = rate
    records, postfix = self.train_records(step, host)
    for record in records:
      self.log(record)
    if bar is not None:
      fields = dict(loss=f"{host['loss']:.3f}", acc=f"{host['accuracy']:.3f}", **postfix)
      fields["it/s"] = f"{rate:.2f}"
      bar.set_postfix(fields, refresh=False)
      bar.update(step - bar.n)

  def _progress_bar(self, step: int):
    if not (self.is_main and self.config.progress):
      return None
    from tqdm.auto import tqdm

    return tqdm(
      total=self.total_steps, initial=step, desc=self.progress_name, unit="step", dynamic_ncols=True
    )
