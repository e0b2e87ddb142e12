"""The training loop: weights and architecture learned together, under a budget, resumable.

``train(config, workdir)`` runs (or resumes) a run in ``workdir``:

* one jitted train step per ``Arch`` (static argument, cached); the ``Arch`` is refreshed from the
  mask parameters every ``config.arch_refresh_every`` steps and a new one costs one compile,
  logged with its seconds; in ``hard`` budget mode the refresh projects the masks so the ``Arch``
  never exceeds the budget;
* data-parallel over every device of every process (``dnarch_jax.sharding``);
* Orbax checkpoints (state, ``Arch``, data iterator, config) every ``config.checkpoint_every``
  steps, at evaluation and at the end; the last N and the best by validation accuracy are kept;
  SIGTERM or SIGINT saves one and exits, every process at the same step (``workdir.StopSignals``);
  a run restarted on the same workdir resumes bit-identically;
* ``metrics.jsonl``, ``arch.jsonl``, ``config.json`` and ``report/`` plots in the workdir.
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

from dnarch_jax import budget as budget_lib
from dnarch_jax import hostmem, report, search_space, sharding
from dnarch_jax import workdir as workdir_lib
from dnarch_jax.arch import (
  Arch,
  bucket_boundaries,
  compute_arch,
  flat_arch_params,
  load_arch,
  params_for_arch,
)
from dnarch_jax.checkpoint import Checkpointer
from dnarch_jax.config import ModelConfig, add_loop_fields
from dnarch_jax.data import (
  pipeline_from_config,
  print_data_summary,
  split_from_config,
  validate_data_config,
)
from dnarch_jax.experiment import run_model_config
from dnarch_jax.model import init_variables
from dnarch_jax.optim import make_optimizer
from dnarch_jax.steps import (
  LossConfig,
  TrainState,
  create_train_state,
  evaluate_batches,
  make_eval_step,
  make_train_step,
  soft_cost,
)

log = logging.getLogger("dnarch")

# A soft budget's refresh adopts no architecture costing more than this times the budget.
SOFT_BUDGET_TOLERANCE = 1.05


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


def validate_train_fields(config: ml_collections.ConfigDict) -> None:
  for key in ("log_every", "eval_every", "checkpoint_every", "arch_refresh_every", "keep_last"):
    if not isinstance(config[key], int) or config[key] < 1:
      raise ValueError(f"config.{key}: must be a positive integer, got {config[key]!r}")
  if not isinstance(config.total_steps, int) or config.total_steps < 0:
    raise ValueError(
      f"config.total_steps: must be a non-negative integer, got {config.total_steps!r}"
    )
  for key in ("lr", "arch_lr_factor", "arch_lr", "weight_decay", "warmup_epochs"):
    value = config.optim.get(key)
    if value is not None and not float(value) >= 0:  # also refuses NaN
      raise ValueError(f"config.optim.{key}: must be non-negative, got {value!r}")
  if not float(config.optim.epochs) > 0:
    raise ValueError(f"config.optim.epochs: must be positive, got {config.optim.epochs!r}")
  budget = config.get("budget")
  if budget is not None:
    if not 0 <= float(budget.fraction) <= 1:
      raise ValueError(
        f"config.budget.fraction: a fraction of the maximal network's cost in [0, 1], "
        f"got {budget.fraction!r}"
      )
    for key in ("value", "weight"):
      if key in budget and not float(budget[key]) >= 0:
        raise ValueError(f"config.budget.{key}: must be non-negative, got {budget[key]!r}")


class Trainer:
  """One run. Build it, then ``run()``; see the module docstring."""

  def __init__(
    self,
    config: ml_collections.ConfigDict,
    workdir: str | pathlib.Path,
    devices=None,
    allow_config_change: bool = False,
  ):
    add_loop_fields(config)
    validate_train_fields(config)
    validate_data_config(config.data)
    self.config = config
    self.cfg: ModelConfig = run_model_config(config)  # every config error before any compile
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
    self.total_steps = config.total_steps or max(
      1, math.ceil(float(config.optim.epochs) * self.steps_per_epoch)
    )

    # The budget before anything compiles: one no architecture meets is refused here. Its costs
    # need only the parameters' shapes (the extremes of the architecture are fixed values).
    init = lambda key: init_variables(self.cfg, key)
    shapes = jax.eval_shape(init, jax.random.key(config.seed))
    self.budget_metric = config.budget.metric
    self.budget = budget_lib.resolve_budget(
      config.budget, shapes["params"], self.cfg, self.batch_size
    )
    variables = init(jax.random.key(config.seed))
    variables["params"] = search_space.clip_to_bounds(variables["params"], self.cfg)
    if config.arch_init:
      variables["params"] = params_for_arch(
        variables["params"], self.cfg, load_arch(config.arch_init), self.batch_size, "arch_init"
      )
    self.hard_budget = self.budget > 0 and config.budget.mode == "hard"
    optim = dict(config.optim)
    self.tx = make_optimizer(
      optim,
      variables["params"],
      self.total_steps,
      self.steps_per_epoch,
      search_space.dimension_ranges(self.cfg),
    )
    l2 = float(optim["weight_decay"]) if optim.get("l2_regulariser", False) else 0.0
    self.loss_cfg = loss_cfg = LossConfig(
      budget_metric=self.budget_metric,
      budget=self.budget,
      budget_weight=float(config.budget.weight),
      l2_weight=l2,
      cost_batch_size=self.batch_size,
    )
    self.train_step = make_train_step(self.cfg, self.tx, loss_cfg)
    self.eval_step = make_eval_step(self.cfg)
    state = create_train_state(variables, self.tx, jax.random.key(config.seed + 1))
    self.state: TrainState = sharding.replicate(state, self.mesh)
    self.arch: Arch = compute_arch(variables["params"], self.cfg, self.batch_size)
    self.train_iter = pipeline_from_config(config.data, "train")
    self.checkpointer = Checkpointer(self.workdir / "checkpoints", keep_last=config.keep_last)
    self.metrics = report.MetricsWriter(self.workdir / "metrics.jsonl") if self.is_main else None
    self.arch_log = report.MetricsWriter(self.workdir / "arch.jsonl") if self.is_main else None
    self.seen_archs: set[Arch] = set()
    self.compiles, self.compile_seconds = 0, 0.0
    self.max_cost = 0.0

  # --- state -----------------------------------------------------------------------------------

  def restore_or_start(self) -> int:
    """Resume from the workdir's latest readable checkpoint; else start at step 0."""
    if self.checkpointer.latest_step() is None:
      if self.is_main:
        (self.workdir / "config.json").write_text(self.config.to_json(indent=2))
        for path in (self.workdir / "metrics.jsonl", self.workdir / "arch.jsonl"):
          report.truncate_after(path, -1)
      self._refresh_arch(0, force_log=True)
      return 0
    state, meta, step = self.checkpointer.restore(self.state)
    self.state = state
    self.arch = Arch.from_dict(meta["arch"])
    self.train_iter.set_state(meta["data_state"])
    self.max_cost = float(meta.get("max_cost", 0.0))
    if self.is_main:
      report.truncate_after(self.workdir / "metrics.jsonl", step)
      # The loop refreshes the architecture at the top of step ``step``, after the checkpoint
      # of that step was saved: it rewrites that step's record.
      report.truncate_after(self.workdir / "arch.jsonl", step - 1)
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
      max_cost=self.max_cost,
    )
    self.checkpointer.save(step, self.state, meta, metrics=metrics, force=force)

  # --- architecture ----------------------------------------------------------------------------

  def _refresh_arch(self, step: int, force_log: bool = False) -> None:
    """Recompute the ``Arch`` from the mask parameters [design].

    Under a hard budget, and at step 0 under any budget, the masks are first projected into the
    budget if they exceed it, so every run starts within its budget whatever its configured
    initial architecture. Under a soft budget the penalty holds the cost; a refresh whose
    architecture would still exceed ``SOFT_BUDGET_TOLERANCE`` times the budget (the masks
    crossed a bucket boundary upwards a few steps ago and the penalty has not pulled them back
    yet) keeps the current architecture, and a later refresh adopts the masks once they fit.
    """
    check_finite(self.state.params, step, self.checkpointer.latest_step())
    params = self.state.params
    if self.hard_budget or (self.budget > 0 and step == 0):
      params, arch = budget_lib.project_to_budget(
        params, self.cfg, self.budget, self.batch_size, self.budget_metric
      )
      if arch != compute_arch(self.state.params, self.cfg, self.batch_size):
        self.state = self.state.replace(params=sharding.replicate(params, self.mesh))
    else:
      arch = compute_arch(params, self.cfg, self.batch_size)
      cost = budget_lib.arch_cost(arch, self.cfg, self.batch_size, self.budget_metric)
      if self.budget > 0 and cost > SOFT_BUDGET_TOLERANCE * self.budget:
        log.info("step %d: masks at %.3gx the budget; the architecture is kept", step,
                 cost / self.budget)  # fmt: skip
        arch = self.arch
    changed = arch != self.arch
    self.arch = arch
    cost = budget_lib.arch_cost(arch, self.cfg, self.batch_size, self.budget_metric)
    self.max_cost = max(self.max_cost, cost)
    if (changed or force_log) and self.arch_log:
      flops = budget_lib.arch_cost(arch, self.cfg, self.batch_size, "flops")
      params_count = budget_lib.arch_cost(arch, self.cfg, self.batch_size, "params")
      record = dict(step=step, flops=flops, params=params_count, arch=arch.to_dict())
      if self.budget:
        # The cost the loss sees for these mask parameters, beside the crop's (flops/params).
        host_params = jax.device_get(self.state.params)
        record["cost_soft"] = float(soft_cost(host_params, self.cfg, arch, self.loss_cfg))
        record["budget"] = self.budget
      record["buckets"] = bucket_boundaries(self.state.params, self.cfg, arch)
      self.arch_log.write(record)
      if changed:
        log.info("step %d: architecture changed, %s %.4g", step, self.budget_metric, cost)

  # --- steps -----------------------------------------------------------------------------------

  def _train_one(self, batch) -> dict:
    first_time = self.arch not in self.seen_archs
    t0 = time.perf_counter()
    if first_time:
      hostmem.compile_and_trim(self.train_step, self.state, batch, self.arch)
    self.state, metrics = self.train_step(self.state, batch, self.arch)
    if first_time:
      jax.block_until_ready(metrics)
      self.seen_archs.add(self.arch)
      self.compiles += 1
      self.compile_seconds += time.perf_counter() - t0
      if self.metrics:
        step = int(self.state.step)
        self.metrics.write(
          dict(kind="compile", step=step, seconds=time.perf_counter() - t0, compiles=self.compiles)
        )
    return metrics

  def evaluate(self, split: str) -> dict[str, float]:
    variables = {"params": self.state.params, "batch_stats": self.state.batch_stats}
    batches = pipeline_from_config(self.config.data, split)
    batches = (sharding.global_batch(local, self.mesh) for local in batches)
    return evaluate_batches(self.eval_step, variables, batches, self.arch)

  # --- the loop --------------------------------------------------------------------------------

  def run(self, stop_at: int | None = None) -> dict[str, Any]:
    """Train to ``total_steps``, or stop with a checkpoint at ``stop_at`` as a preemption would."""
    stop = workdir_lib.StopSignals(jax.process_count())
    with workdir_lib.WorkdirLock(self.workdir, self.is_main), stop:
      return self._run(stop, stop_at)

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
        # from). The checkpoint of a step comes before its architecture refresh, as always.
        if stop.check():
          if step > first:
            self.save(step, force=True)
          status = "preempted"
          break
        if step % self.config.arch_refresh_every == 0 and step > 0:
          self._refresh_arch(step)
        batch = sharding.global_batch(next(self.train_iter), self.mesh)
        metrics = self._train_one(batch)
        step += 1
        if step % self.config.log_every == 0 or step == self.total_steps:
          host = {k: float(v) for k, v in jax.device_get(metrics).items()}
          if not all(math.isfinite(v) for v in host.values()):
            raise NonFiniteLossError(
              f"non-finite training metrics at step {step} ({host}); stopped without saving, "
              f"the last good checkpoint (step {self.checkpointer.latest_step()}) is kept"
            )
          now = time.perf_counter()
          host["steps_per_s"] = (step - last_log_step) / max(now - last_log_time, 1e-9)
          last_log_time, last_log_step = now, step
          self._log_train(step, host, bar)
        if step % self.config.eval_every == 0 or step == self.total_steps:
          val = self.evaluate("validation")
          self._log(dict(kind="val", step=step, **val))
          self.save(step, metrics={"val_accuracy": val["accuracy"]}, force=True)
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
                  compile_seconds=round(self.compile_seconds, 2), max_cost=self.max_cost,
                  budget=self.budget, arch=self.arch.to_dict())  # fmt: skip
    if self.is_main:
      report.write_report(self.workdir, budget=self.budget or None)
    return result

  def _log(self, record: dict) -> None:
    if self.metrics:
      self.metrics.write(record)

  def _log_train(self, step: int, host: dict, bar) -> None:
    flops = budget_lib.arch_cost(self.arch, self.cfg, self.batch_size, "flops")
    record = dict(kind="train", step=step, flops=flops, **host)
    if self.budget:
      record["budget"] = self.budget
    self._log(record)
    self._log(dict(kind="arch_params", step=step, values=flat_arch_params(self.state.params)))
    if bar is not None:
      postfix = dict(loss=f"{host['loss']:.3f}", acc=f"{host['accuracy']:.3f}")
      if self.budget:
        cost = budget_lib.arch_cost(self.arch, self.cfg, self.batch_size, self.budget_metric)
        postfix["cost/budget"] = f"{cost / self.budget:.2f}"
      postfix["it/s"] = f"{host['steps_per_s']:.2f}"
      bar.set_postfix(postfix, refresh=False)
      bar.update(step - bar.n)

  def _progress_bar(self, step: int):
    if not (self.is_main and self.config.progress):
      return None
    from tqdm.auto import tqdm

    return tqdm(total=self.total_steps, initial=step, desc="train", unit="step", dynamic_ncols=True)


def load_run_config(workdir: str | pathlib.Path) -> ml_collections.ConfigDict:
  """The config a workdir's run was started with."""
  path = pathlib.Path(workdir) / "config.json"
  if not path.exists():
    raise FileNotFoundError(f"{workdir} holds no run (no config.json); train one with dnarch train")
  return ml_collections.ConfigDict(json.loads(path.read_text()))


def train(
  config: ml_collections.ConfigDict,
  workdir: str | pathlib.Path,
  allow_config_change: bool = False,
) -> dict[str, Any]:
  """Run (or resume) the run ``config`` in ``workdir``; returns a summary of the run.
  ``allow_config_change``: resume with settings other than the run's (``workdir`` module)."""
  return Trainer(config, workdir, allow_config_change=allow_config_change).run()
