"""Optimisers: architecture and weights updated separately (METHOD.md §7), via ``optax.partition``.

Weights: AdamW with linear warm-up then cosine decay [ccnn]. Architecture parameters (every
parameter named ``arch_*``): one Adam per dimension (kernel, width, resolution, depth) with the
same schedule at the architecture's peak rate times that dimension's range, and no weight decay
[design; the ranges and why: ``dnarch_jax.method.search_space``]. One labelling function decides,
and it is checked to cover every parameter.
"""

from __future__ import annotations

from collections.abc import Mapping

import jax
import jax.numpy as jnp
import optax

from dnarch_jax.method.arch_params import ARCH_PREFIX, arch_dimension, is_arch_param

ARCH, WEIGHTS = "arch", "weights"


def param_labels(params):
  """``"arch/<dimension>"`` for every parameter named ``arch_*``, ``"weights"`` for the rest."""
  return jax.tree_util.tree_map_with_path(
    lambda path, _: f"{ARCH}/{arch_dimension(path)}" if is_arch_param(path) else WEIGHTS, params
  )


def check_labels_cover(params, labels) -> None:
  """Raise unless ``labels`` gives every leaf of ``params`` a known label."""
  p_paths = {jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_flatten_with_path(params)[0]}
  l_flat = jax.tree_util.tree_flatten_with_path(labels)[0]
  l_paths = {jax.tree_util.keystr(p) for p, _ in l_flat}
  if p_paths != l_paths:
    raise ValueError(f"optimizer labels miss parameters: {sorted(p_paths ^ l_paths)[:5]}")
  bad = sorted(v for v in {v for _, v in l_flat} if v != WEIGHTS and not v.startswith(ARCH + "/"))
  if bad:
    raise ValueError(f"unknown optimizer labels {bad}")


def warmup_cosine(lr: float, total_steps: int, warmup_steps: int) -> optax.Schedule:
  """Linear warm-up from 0 to ``lr`` over ``warmup_steps``, then cosine decay to 0."""
  warmup_steps = int(min(max(warmup_steps, 0), max(total_steps - 1, 0)))
  return optax.warmup_cosine_decay_schedule(
    0.0, lr, warmup_steps=max(warmup_steps, 1), decay_steps=max(total_steps, warmup_steps + 2)
  )


def make_optimizer(
  optim: Mapping,
  params,
  total_steps: int,
  steps_per_epoch: int,
  arch_ranges: Mapping[str, float] | None = None,
) -> optax.GradientTransformation:
  """The partitioned optimiser for ``params`` from ``config.optim``.

  Fields: ``lr``, ``weight_decay`` (AdamW's decoupled decay; 0 when ``l2_regulariser`` is used,
  as CCNN does), ``warmup_epochs``, ``arch_lr_factor``, optional ``arch_lr`` (the architecture's
  peak rate; replaces ``lr * arch_lr_factor`` when set), optional ``arch_warmup_epochs`` (the
  architecture's own warm-up; the weights' when unset), optional ``arch_epochs`` (the search's
  length: the architecture's cosine schedule reaches 0 there and the architecture stays fixed
  for the rest of the run; the whole run when unset), optional ``grad_clip`` (global norm).
  ``arch_ranges`` maps a dimension to the factor its Adam steps are scaled by (its range,
  ``dnarch_jax.method.search_space.dimension_ranges``); a dimension it leaves out steps at the
  plain rate.
  """
  warmup = int(round(float(optim["warmup_epochs"]) * steps_per_epoch))
  schedule = warmup_cosine(float(optim["lr"]), total_steps, warmup)
  arch_peak = optim.get("arch_lr")
  if arch_peak is None:
    arch_peak = float(optim["lr"]) * float(optim["arch_lr_factor"])
  weight_decay = 0.0 if optim.get("l2_regulariser", False) else float(optim["weight_decay"])
  weights = optax.adamw(schedule, weight_decay=weight_decay)
  clip = float(optim.get("grad_clip", 0.0) or 0.0)
  if clip > 0:
    weights = optax.chain(optax.clip_by_global_norm(clip), weights)
  labels = param_labels(params)
  check_labels_cover(params, labels)
  if optim.get("arch_warmup_epochs") is not None:
    warmup = int(round(float(optim["arch_warmup_epochs"]) * steps_per_epoch))
  arch_steps = total_steps
  if optim.get("arch_epochs") is not None:
    arch_steps = min(total_steps, int(round(float(optim["arch_epochs"]) * steps_per_epoch)))
  transforms = {WEIGHTS: weights}
  for label in sorted(set(jax.tree_util.tree_leaves(labels)) - {WEIGHTS}):
    scale = float((arch_ranges or {}).get(label.split("/", 1)[1], 1.0))
    # After arch_steps the rate stays 0: the architecture is fixed and the weights train on.
    transforms[label] = optax.adam(warmup_cosine(float(arch_peak) * scale, arch_steps, warmup))
  return optax.partition(transforms, labels)


def l2_norm_regulariser(params, sampled_kernels, weight: float):
  """CCNN's regulariser: ``wd * (sum of unsquared L2 norms of the non-kernel-net parameters
  + of each sampled, masked kernel)``. Kernel-net and architecture parameters are excluded."""
  total = jnp.zeros(())
  for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
    keys = [str(getattr(k, "key", k)) for k in path]
    if "kernel_net" in keys or keys[-1].startswith(ARCH_PREFIX):
      continue
    total = total + optax.safe_norm(leaf.reshape(-1), 0.0)
  for kernel in jax.tree_util.tree_leaves(sampled_kernels):
    total = total + optax.safe_norm(kernel.reshape(-1), 0.0)
  return weight * total
