"""DNAL's gate math and stage bookkeeping: pure functions, no Flax (METHOD.md §3 and §8).

A gated layer multiplies its channel ``i`` by ``sigmoid(delta * s_i)`` (``s_i`` learnable, init 0).
Training is decoupled into stages run one after the other on one step counter:

* ``weights``: the weights alone, gates off (the official code bypasses its scale layers);
* ``arch``: the gate logits alone, weights frozen, loss ``CE + lambda_a * sum_i sigmoid(s_i)``,
  ``delta`` annealed geometrically from 1 to 1e4;
* prune: keep the channels whose ``sigmoid(delta_end * s_i)`` is at least the threshold;
* ``finetune``: the weights of the pruned network, gates frozen at their final values.

The network's *mode* says how gates act: ``off`` (identity), ``soft`` (``sigmoid(delta s)`` on
every channel) or ``hard`` (the gate on kept channels, exactly 0 on pruned ones).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from dnarch_jax.method import masks

STAGES = ("weights", "arch", "finetune")
MODES = ("off", "soft", "hard")
STAGE_MODE = {"weights": "off", "arch": "soft", "finetune": "hard"}


def delta_at(arch_step, arch_steps: int, start: float = 1.0, end: float = 1e4):
  """``delta`` at step ``arch_step`` of an architecture stage of ``arch_steps`` steps.

  Geometric from ``start`` (the stage's first step) to ``end`` (its last step):
  ``start * (end / start) ** (t / (T - 1))``. The official code multiplies delta by
  ``(end / start) ** (1 / epochs)`` once per epoch; annealing per step is the same curve without
  the staircase [design]. Steps outside the stage are clipped to it.
  """
  if arch_steps <= 1:
    return float(end)
  xp = jnp if isinstance(arch_step, jax.Array) else np
  t = xp.clip(arch_step, 0, arch_steps - 1) / (arch_steps - 1)
  return start * (end / start) ** t


def gate_values(s, delta):
  """``sigmoid(delta * s)``, per element (``dnarch_jax.method.masks.scaled_sigmoid_gate``)."""
  return masks.scaled_sigmoid_gate(s, delta)


def sparsity_loss(gate_logits: Sequence, lambda_a: float):
  """DNAL's architecture regulariser ``lambda_a * sum_i sigmoid(s_i)`` over every gate.

  The official code sums ``sigmoid(s)``, not ``sigmoid(delta * s)``: the pull towards zero does
  not sharpen with delta, only the gates do.
  """
  total = sum(jnp.sum(jax.nn.sigmoid(s)) for s in gate_logits)
  return lambda_a * total


def kept_channels(s, delta: float, threshold: float) -> tuple[int, ...]:
  """Indices of the channels whose gate ``sigmoid(delta * s_i)`` is at least ``threshold``.

  Decided on the host in float64 by the gate's closed-form extent, ``s_i >= ln(t / (1 - t)) /
  delta`` (``masks.scaled_sigmoid_gate_kept``), so a logit exactly at the boundary is kept
  whatever the rounding of a sigmoid; a layer never loses every channel. The official code keeps
  gates strictly above the threshold; at delta 1e4 the gates are 0 or 1 to within float32, so the
  boundary never matters in practice.
  """
  return masks.scaled_sigmoid_gate_kept(s, delta, threshold)


# --- stages ----------------------------------------------------------------------------------


def stage_at(step: int, lengths: Sequence[int]) -> tuple[str, int]:
  """``(stage, step within it)`` of the step with 0-based index ``step``.

  ``lengths`` are the steps of the ``weights``, ``arch`` and ``finetune`` stages; a step past the
  end belongs to the last stage that has steps.
  """
  start = 0
  last = ("weights", 0)
  for name, length in zip(STAGES, lengths, strict=True):
    if step < start + length:
      return name, step - start
    if length > 0:
      last = (name, step - start)
    start += length
  return last


def mode_after(completed: int, lengths: Sequence[int]) -> tuple[str, int]:
  """How the network computes after ``completed`` steps: ``(mode, architecture step)``.

  ``off`` until the architecture stage has run a step; ``soft`` during it (with the delta of its
  last step, whose index is returned); ``hard`` (pruned) once it is over.
  """
  weights, arch = lengths[0], lengths[1]
  if arch > 0 and completed >= weights + arch:
    return "hard", arch - 1
  if arch > 0 and completed > weights:
    return "soft", completed - weights - 1
  return "off", 0


def check_lengths(lengths: Sequence[int]) -> None:
  """Stage lengths must be non-negative, sum to a positive number, and fine-tuning (of a pruned
  network) needs an architecture stage to prune with."""
  names = ("weights", "arch", "finetune")
  for name, length in zip(names, lengths, strict=True):
    if not isinstance(length, int) or length < 0:
      raise ValueError(f"config.dnal.{name}_steps: must be a non-negative integer, got {length!r}")
  if sum(lengths) == 0:
    raise ValueError("config.dnal: every stage has 0 steps; give at least one stage some epochs")
  if lengths[2] > 0 and lengths[1] == 0:
    raise ValueError(
      "config.dnal.finetune_epochs: fine-tuning trains a pruned network and needs an architecture "
      "stage (arch_epochs > 0) to prune with; for an unpruned network use the weights stage"
    )


def stage_steps(epochs: float, steps: int | None, steps_per_epoch: int) -> int:
  """A stage's length: ``steps`` when given (0 skips the stage), else
  ``ceil(epochs * steps_per_epoch)``."""
  if steps is not None:
    return int(steps)
  return int(math.ceil(float(epochs) * steps_per_epoch))
