"""The jitted steps: one training update and one evaluation pass, per ``Arch``.

``Arch`` is a static argument: ``jax.jit`` compiles once per architecture and caches the result,
so an architecture refresh that does not change the ``Arch`` costs nothing. Parameters keep their
maximal shapes; the model slices them. Under a device mesh the same functions run data-parallel:
parameters replicated, the batch split along ``"data"``; reductions over the batch are global.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax

from dnarch_jax.config import ModelConfig
from dnarch_jax.method import cost, search_space
from dnarch_jax.method.arch import Arch
from dnarch_jax.method.arch_params import arch_dimension, is_arch_param
from dnarch_jax.method.sizes import arch_sizes, soft_sizes
from dnarch_jax.network.model import DNArchCCNN, compiler_options
from dnarch_jax.run.optim import l2_norm_regulariser


@flax.struct.dataclass
class TrainState:
  step: jax.Array
  params: Any
  batch_stats: Any
  opt_state: Any
  rng: jax.Array  # raw key data (uint32), so checkpoints hold plain arrays


@dataclasses.dataclass(frozen=True)
class LossConfig:
  """The objective: task loss + complexity term (+ CCNN's optional L2-norm regulariser).

  ``budget_metric`` is ``"flops"`` or ``"params"``; ``budget`` its value (per example for FLOPs;
  0 disables the term); ``budget_weight`` is lambda in ``lambda * max(0, cost/budget - 1)^2``.
  ``cost_batch_size`` is the batch the kernel nets' cost is amortised over.
  """

  budget_metric: str = "flops"
  budget: float = 0.0
  budget_weight: float = 0.0
  l2_weight: float = 0.0
  cost_batch_size: int = 1


def create_train_state(variables, tx: optax.GradientTransformation, rng) -> TrainState:
  params = variables["params"]
  return TrainState(
    step=jnp.zeros((), jnp.int32),
    params=params,
    batch_stats=variables.get("batch_stats", {}),
    opt_state=tx.init(params),
    rng=jax.random.key_data(rng),
  )


def cross_entropy(logits, labels, mask=None):
  """Mean cross-entropy and accuracy over examples (and positions, for dense labels).

  ``mask`` ([B], optional) weighs examples, e.g. 0 for the padding of a last eval batch.
  """
  log_p = jax.nn.log_softmax(logits)
  nll = -jnp.take_along_axis(log_p, labels[..., None], axis=-1)[..., 0]
  correct = (jnp.argmax(logits, -1) == labels).astype(jnp.float32)
  weights = jnp.ones(labels.shape[:1]) if mask is None else mask
  weights = jnp.broadcast_to(
    weights.reshape(weights.shape + (1,) * (labels.ndim - 1)), labels.shape
  )
  total = jnp.maximum(jnp.sum(weights), 1.0)
  return jnp.sum(nll * weights) / total, jnp.sum(correct * weights) / total


def class_overlap(logits, labels, mask=None):
  """Per class, the weighted count of positions both predicted and labelled so (intersection)
  and either (union): summed over eval batches, they give the mean IoU of a dense task."""
  num_classes = logits.shape[-1]
  predicted = jax.nn.one_hot(jnp.argmax(logits, -1), num_classes)
  labelled = jax.nn.one_hot(labels, num_classes)
  weights = jnp.ones(labels.shape[:1]) if mask is None else mask
  weights = weights.reshape(weights.shape + (1,) * labels.ndim)
  axes = tuple(range(labels.ndim))
  intersection = jnp.sum(predicted * labelled * weights, axes)
  union = jnp.sum(jnp.maximum(predicted, labelled) * weights, axes)
  return intersection, union


def mean_iou(intersection, union) -> float:
  """Mean over the classes that occur (non-zero union) of intersection / union."""
  intersection, union = np.asarray(intersection), np.asarray(union)
  present = union > 0
  return float(np.mean(intersection[present] / union[present])) if present.any() else 0.0


def soft_cost(params, cfg: ModelConfig, arch: Arch, loss_cfg: LossConfig):
  sizes = soft_sizes(params, cfg, arch, loss_cfg.cost_batch_size)
  return cost.params(sizes) if loss_cfg.budget_metric == "params" else cost.flops(sizes)


def arch_grad_norms(grads, prefix: str) -> dict:
  """L2 norms of the architecture parameters' gradients: all together (``prefix``) and per
  dimension (``prefix/kernel``, ...), for the dimensions present."""
  squares: dict[str, jax.Array] = {}
  for path, g in jax.tree_util.tree_flatten_with_path(grads)[0]:
    if is_arch_param(path):
      key = f"{prefix}/{arch_dimension(path)}"
      squares[key] = squares.get(key, 0.0) + jnp.sum(jnp.square(g))
  norms = {k: jnp.sqrt(v) for k, v in squares.items()}
  norms[prefix] = jnp.sqrt(sum(squares.values())) if squares else jnp.zeros(())
  return norms


def make_train_step(
  cfg: ModelConfig, tx: optax.GradientTransformation, loss_cfg: LossConfig
) -> Callable[[TrainState, dict, Arch], tuple[TrainState, dict]]:
  """``step(state, batch, arch) -> (state, metrics)``, jitted with ``arch`` static.

  After the update the architecture parameters are clipped to their boxes
  (``dnarch_jax.method.search_space``). The metrics hold the norms of the budget term's gradient on
  the architecture parameters (``arch_grad_budget``) and of the rest of the loss's
  (``arch_grad_task``: the task loss, with CCNN's regulariser when it is on), overall and per
  dimension: what moves the masks, and which of the two wins.
  """
  model = DNArchCCNN(cfg)
  mutable = ["batch_stats", "intermediates"] if loss_cfg.l2_weight > 0 else ["batch_stats"]

  def budget_term(params, arch):
    c = soft_cost(params, cfg, arch, loss_cfg)
    return cost.budget_penalty(c, loss_cfg.budget, loss_cfg.budget_weight), c

  def loss_fn(params, batch_stats, batch, arch, dropout_rng):
    logits, updates = model.apply(
      {"params": params, "batch_stats": batch_stats},
      batch["input"],
      arch,
      train=True,
      rngs={"dropout": dropout_rng},
      mutable=mutable,
    )
    task_loss, accuracy = cross_entropy(logits, batch["label"])
    loss = task_loss
    metrics = {"task_loss": task_loss, "accuracy": accuracy}
    if loss_cfg.budget > 0:
      penalty, c = budget_term(params, arch)
      loss = loss + penalty
      metrics.update(cost_soft=c, cost_ratio=c / loss_cfg.budget, budget_penalty=penalty)
    if loss_cfg.l2_weight > 0:
      l2 = l2_norm_regulariser(params, updates.get("intermediates", {}), loss_cfg.l2_weight)
      loss = loss + l2
      metrics["l2"] = l2
    metrics["loss"] = loss
    return loss, (metrics, updates["batch_stats"])

  def step(state: TrainState, batch: dict, arch: Arch):
    rng = jax.random.wrap_key_data(state.rng)
    rng, dropout_rng = jax.random.split(rng)
    grads, (metrics, batch_stats) = jax.grad(loss_fn, has_aux=True)(
      state.params, state.batch_stats, batch, arch, jax.random.fold_in(dropout_rng, state.step)
    )
    if loss_cfg.budget > 0:
      # The budget term reads the mask parameters only: its gradient costs a pass over the cost
      # model, and the rest of the loss's is the difference.
      budget_grads = jax.grad(lambda p: budget_term(p, arch)[0])(state.params)
      metrics.update(arch_grad_norms(budget_grads, "arch_grad_budget"))
      task_grads = jax.tree_util.tree_map(jnp.subtract, grads, budget_grads)
      metrics.update(arch_grad_norms(task_grads, "arch_grad_task"))
    else:
      metrics.update(arch_grad_norms(grads, "arch_grad_task"))
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = search_space.clip_to_bounds(optax.apply_updates(state.params, updates), cfg, arch)
    new_state = state.replace(
      step=state.step + 1,
      params=params,
      batch_stats=batch_stats,
      opt_state=opt_state,
      rng=jax.random.key_data(rng),
    )
    return new_state, metrics

  return jax.jit(step, static_argnums=2, donate_argnums=0, compiler_options=compiler_options(cfg))


def make_eval_step(cfg: ModelConfig) -> Callable[[dict, dict, Arch], dict]:
  """``eval(variables, batch, arch) -> sums`` of loss, correct predictions and example weight,
  and for a dense head the per-class intersections and unions (``class_overlap``).
  ``variables``: ``{"params", "batch_stats"}`` (a ``TrainState``'s, or a restored run's)."""
  model = DNArchCCNN(cfg)

  def evaluate(variables: dict, batch: dict, arch: Arch):
    logits = model.apply(variables, batch["input"], arch, train=False)
    mask = batch.get("mask")
    loss, accuracy = cross_entropy(logits, batch["label"], mask)
    weight = (
      jnp.sum(mask) if mask is not None else jnp.asarray(batch["label"].shape[0], jnp.float32)
    )
    sums = {"loss_sum": loss * weight, "correct_sum": accuracy * weight, "weight": weight}
    if cfg.head == "dense":
      sums["intersection"], sums["union"] = class_overlap(logits, batch["label"], mask)
    return sums

  return jax.jit(evaluate, static_argnums=2)


def evaluate_batches(eval_step, variables: dict, batches, arch: Arch) -> dict[str, float]:
  """Loss and accuracy (and mean IoU for a dense head) of ``variables`` over ``batches``, from
  ``make_eval_step``'s sums added up in float64 on the host."""
  totals: dict = {}
  for batch in batches:
    for k, v in jax.device_get(eval_step(variables, batch, arch)).items():
      totals[k] = totals.get(k, 0.0) + np.asarray(v, np.float64)
  weight = max(float(totals.get("weight", 0.0)), 1.0)
  metrics = {
    "accuracy": float(totals.get("correct_sum", 0.0)) / weight,
    "loss": float(totals.get("loss_sum", 0.0)) / weight,
  }
  if "intersection" in totals:  # dense task: accuracy is pixel accuracy
    metrics["mean_iou"] = mean_iou(totals["intersection"], totals["union"])
  return metrics


def flops_and_params(arch: Arch, cfg: ModelConfig, batch_size: int) -> dict[str, float]:
  """Reported FLOPs per example and parameters of ``arch`` (integer sizes)."""
  sizes = arch_sizes(arch, cfg, batch_size)
  return {"flops": float(cost.flops(sizes)), "params": float(cost.params(sizes))}
