"""DNAL's jitted steps: one update of one stage's parameter group, and one evaluation pass.

Each stage trains one group and freezes the other (DNAL's decoupling): ``weights`` and
``finetune`` take gradients of the weights only, ``arch`` of the gate logits only (parameters
named ``arch_*``). Gradients are taken of that group alone, so a frozen group costs no backward
pass of its own and cannot move. Both groups keep one optimizer state each in ``opt_state``;
``weights`` and ``finetune`` share the weights' slot (fine-tuning starts it afresh), so the state
is the same pytree in every stage and checkpoints restore into it whatever stage they were in.

Optimisers are SGD with momentum and PyTorch-style weight decay (added to the gradient), as in
the official code; the learning rate follows a cosine or constant schedule over the stage.
``DnalArch`` and the mode are static (one compile per stage and architecture); ``delta`` is a
traced scalar, so annealing it never recompiles. Steps are cached per configuration, so a second
trainer in the same process (a resumed run) reuses the compiled programs.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import flax
import jax
import jax.numpy as jnp
import optax
from flax import traverse_util

from dnarch_jax.dnal import gates as gates_lib
from dnarch_jax.dnal.arch import DnalArch, gate_logits, soft_gate_cost
from dnarch_jax.dnal.config import NetConfig
from dnarch_jax.dnal.models import build_model
from dnarch_jax.method.arch_params import ARCH_PREFIX
from dnarch_jax.run.optim import ARCH, WEIGHTS
from dnarch_jax.run.steps import cross_entropy

SCHEDULES = ("cosine", "constant")


@flax.struct.dataclass
class DnalState:
  step: jax.Array
  params: Any
  batch_stats: Any
  opt_state: Any  # {"weights": ..., "arch": ...}


@dataclasses.dataclass(frozen=True)
class StageOptim:
  """SGD of one stage: peak ``lr``, ``momentum``, ``weight_decay``, ``schedule`` over ``steps``."""

  lr: float
  momentum: float = 0.9
  weight_decay: float = 0.0
  schedule: str = "cosine"
  steps: int = 1


def make_tx(o: StageOptim) -> optax.GradientTransformation:
  """``add_decayed_weights`` then SGD with momentum: PyTorch's ``SGD(weight_decay=...)``.

  Every stage has this structure (a schedule even when constant, a momentum trace even at 0), so
  the optimizer states of different stages are the same pytree.
  """
  if o.schedule == "cosine":
    schedule = optax.cosine_decay_schedule(o.lr, max(o.steps, 1))
  else:
    schedule = optax.constant_schedule(o.lr)
  return optax.chain(
    optax.add_decayed_weights(o.weight_decay), optax.sgd(schedule, momentum=float(o.momentum))
  )


def group_of(stage: str) -> str:
  return ARCH if stage == "arch" else WEIGHTS


def split_params(params) -> tuple[dict, dict]:
  """``(weights, arch)``: the parameter tree split by name (``arch_*`` leaves are arch)."""
  flat = traverse_util.flatten_dict(params)
  weights = {k: v for k, v in flat.items() if not k[-1].startswith(ARCH_PREFIX)}
  arch = {k: v for k, v in flat.items() if k[-1].startswith(ARCH_PREFIX)}
  return traverse_util.unflatten_dict(weights), traverse_util.unflatten_dict(arch)


def merge_params(weights, arch) -> dict:
  flat = {**traverse_util.flatten_dict(weights), **traverse_util.flatten_dict(arch)}
  return traverse_util.unflatten_dict(flat)


def create_state(variables, weights_tx, arch_tx) -> DnalState:
  weights, arch = split_params(variables["params"])
  return DnalState(
    step=jnp.zeros((), jnp.int32),
    params=variables["params"],
    batch_stats=variables.get("batch_stats", {}),
    opt_state={WEIGHTS: weights_tx.init(weights), ARCH: arch_tx.init(arch)},
  )


def restart_optimizer(state: DnalState, stage: str, tx) -> DnalState:
  """``state`` with the optimizer slot of ``stage``'s group started afresh."""
  group = group_of(stage)
  part = split_params(state.params)[0 if group == WEIGHTS else 1]
  return state.replace(opt_state={**state.opt_state, group: tx.init(part)})


@functools.cache
def make_train_step(cfg: NetConfig, stage: str, optim: StageOptim, lambda_a: float = 0.0):
  """``step(state, batch, delta, arch) -> (state, metrics)`` for ``stage``; ``arch`` static."""
  model = build_model(cfg)
  mode = gates_lib.STAGE_MODE[stage]
  group = group_of(stage)
  tx = make_tx(optim)

  def loss_fn(trainable, frozen, batch_stats, batch, delta, arch):
    params = merge_params(trainable, frozen)
    logits, updates = model.apply(
      {"params": params, "batch_stats": batch_stats},
      batch["input"],
      arch,
      mode,
      delta,
      train=True,
      mutable=["batch_stats"],
    )
    task_loss, accuracy = cross_entropy(logits, batch["label"])
    loss = task_loss
    metrics = {"task_loss": task_loss, "accuracy": accuracy}
    if stage == "arch":
      sparsity = gates_lib.sparsity_loss(gate_logits(params, cfg), lambda_a)
      loss = loss + sparsity
      soft = soft_gate_cost(params, cfg, delta)
      metrics.update(sparsity=sparsity, macs_soft=soft["macs"], params_soft=soft["params"])
    metrics["loss"] = loss
    return loss, (metrics, updates["batch_stats"])

  def step(state: DnalState, batch: dict, delta, arch: DnalArch):
    weights, arch_params = split_params(state.params)
    trainable, frozen = (arch_params, weights) if group == ARCH else (weights, arch_params)
    grads, (metrics, batch_stats) = jax.grad(loss_fn, has_aux=True)(
      trainable, frozen, state.batch_stats, batch, delta, arch
    )
    updates, group_state = tx.update(grads, state.opt_state[group], trainable)
    trainable = optax.apply_updates(trainable, updates)
    new_state = state.replace(
      step=state.step + 1,
      params=merge_params(trainable, frozen),
      batch_stats=batch_stats,
      opt_state={**state.opt_state, group: group_state},
    )
    return new_state, metrics

  return jax.jit(step, static_argnums=3, donate_argnums=0)


@functools.cache
def make_eval_step(cfg: NetConfig, mode: str):
  """``eval(state, batch, delta, arch) -> sums`` of loss, correct predictions, example weight."""
  model = build_model(cfg)

  def evaluate(state: DnalState, batch: dict, delta, arch: DnalArch):
    variables = {"params": state.params, "batch_stats": state.batch_stats}
    logits = model.apply(variables, batch["input"], arch, mode, delta, train=False)
    mask = batch.get("mask")
    loss, accuracy = cross_entropy(logits, batch["label"], mask)
    weight = jnp.sum(mask) if mask is not None else jnp.float32(batch["label"].shape[0])
    return {"loss_sum": loss * weight, "correct_sum": accuracy * weight, "weight": weight}

  return jax.jit(evaluate, static_argnums=3)
