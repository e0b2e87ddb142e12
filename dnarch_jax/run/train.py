"""The training loop: weights and architecture learned together, under a budget, resumable.

``train(config, workdir)`` runs (or resumes) a run in ``workdir``:

* one jitted train step per ``Arch`` (static argument, cached); the ``Arch`` is refreshed from the
  mask parameters every ``config.arch_refresh_every`` steps and a new one costs one compile,
  logged with its seconds; in ``hard`` budget mode the refresh projects the masks so the ``Arch``
  never exceeds the budget;
* data-parallel over every device of every process (``dnarch_jax.run.sharding``);
* Orbax checkpoints (state, ``Arch``, data iterator, config) every ``config.checkpoint_every``
  steps, at evaluation and at the end; the last N and the best by validation accuracy are kept;
  SIGTERM or SIGINT saves one and exits, every process at the same step (``workdir.StopSignals``);
  a run restarted on the same workdir resumes bit-identically;
* ``metrics.jsonl``, ``arch.jsonl``, ``config.json``, TensorBoard event files and ``report/``
  plots in the workdir.

The loop itself (restore, stop signals, logging, evaluation, checkpoints) is
:class:`dnarch_jax.run.loop.RunLoop`, shared with DNAL; this module is what DNArch adds to it.
"""

from __future__ import annotations

import logging
import math
import pathlib
from typing import Any

import jax
import ml_collections

from dnarch_jax.config import ModelConfig, add_loop_fields
from dnarch_jax.data import pipeline_from_config
from dnarch_jax.method import budget as budget_lib
from dnarch_jax.method import search_space
from dnarch_jax.method.arch import Arch, compute_arch, load_arch
from dnarch_jax.method.arch_params import flat_arch_params
from dnarch_jax.method.crops import bucket_boundaries, params_for_arch
from dnarch_jax.network.model import init_variables
from dnarch_jax.run import hostmem, sharding
from dnarch_jax.run.experiment import run_model_config
from dnarch_jax.run.loop import RunLoop, check_finite, validate_loop_fields
from dnarch_jax.run.optim import make_optimizer
from dnarch_jax.run.steps import (
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


def validate_train_fields(config: ml_collections.ConfigDict) -> None:
  validate_loop_fields(
    config, ("log_every", "eval_every", "checkpoint_every", "arch_refresh_every", "keep_last")
  )
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


class Trainer(RunLoop):
  """One DNArch run: the shared run loop (``dnarch_jax.run.loop``) with DNArch's state, step and
  architecture refresh. Build it, then ``run()``; see the module docstring."""

  # The refresh at the top of a step rewrites that step's arch.jsonl record after its checkpoint.
  arch_record_lag = 1

  @staticmethod
  def validate_config(config: ml_collections.ConfigDict) -> None:
    add_loop_fields(config)
    validate_train_fields(config)

  def configure(self) -> None:
    self.cfg: ModelConfig = run_model_config(self.config)  # every config error before compiling

  def build(self) -> None:
    config = self.config
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
    # Every mask parameter in its box, each kernel in its block's, as the train step clips after
    # every update: step 0 crops what step 1 would.
    variables["params"] = budget_lib.fit_kernel_boxes(
      variables["params"], self.cfg, self.batch_size
    )
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
    self.max_cost = 0.0

  # --- state -----------------------------------------------------------------------------------

  def start(self) -> None:
    self._refresh_arch(0, force_log=True)

  def restored(self, meta: dict, step: int) -> None:
    self.arch = Arch.from_dict(meta["arch"])
    self.max_cost = float(meta.get("max_cost", 0.0))

  def checkpoint_meta(self, step: int) -> dict:
    return dict(max_cost=self.max_cost)

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

  def before_step(self, step: int) -> None:
    if step % self.config.arch_refresh_every == 0 and step > 0:
      self._refresh_arch(step)

  # --- steps -----------------------------------------------------------------------------------

  def train_one(self, step: int, batch) -> dict:
    def prepare():
      hostmem.compile_and_trim(self.train_step, self.state, batch, self.arch)

    def call():
      self.state, metrics = self.train_step(self.state, batch, self.arch)
      return metrics

    return self.first_call(self.arch, call, prepare)

  def evaluate(self, split: str, completed: int | None = None) -> dict[str, float]:
    variables = {"params": self.state.params, "batch_stats": self.state.batch_stats}
    batches = pipeline_from_config(self.config.data, split)
    batches = (sharding.global_batch(local, self.mesh) for local in batches)
    return evaluate_batches(self.eval_step, variables, batches, self.arch)

  def train_records(self, completed: int, host: dict) -> tuple[list[dict], dict]:
    flops = budget_lib.arch_cost(self.arch, self.cfg, self.batch_size, "flops")
    record = dict(kind="train", step=completed, flops=flops, **host)
    postfix = {}
    if self.budget:
      record["budget"] = self.budget
      cost = budget_lib.arch_cost(self.arch, self.cfg, self.batch_size, self.budget_metric)
      postfix["cost/budget"] = f"{cost / self.budget:.2f}"
    params = dict(kind="arch_params", step=completed, values=flat_arch_params(self.state.params))
    return [record, params], postfix

  def result(self) -> dict:
    return dict(max_cost=self.max_cost, budget=self.budget, arch=self.arch.to_dict())

  def report_options(self) -> dict:
    return dict(budget=self.budget or None)


def train(
  config: ml_collections.ConfigDict,
  workdir: str | pathlib.Path,
  allow_config_change: bool = False,
) -> dict[str, Any]:
  """Run (or resume) the run ``config`` in ``workdir``; returns a summary of the run.
  ``allow_config_change``: resume with settings other than the run's (``workdir`` module)."""
  return Trainer(config, workdir, allow_config_change=allow_config_change).run()
