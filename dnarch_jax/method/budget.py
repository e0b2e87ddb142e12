"""The computational budget: its value from the config, feasibility, and the hard-budget projection.

``soft`` mode adds ``lambda * max(0, cost/budget - 1)^2`` to the loss (METHOD.md §6). ``hard``
mode also guarantees that no ``Arch`` the trainer computes exceeds the budget: at every
architecture refresh the mask parameters are projected, if needed, onto the largest
architecture on the segment towards the smallest one that fits (bisection; every size is
monotone in every mask parameter, so the cost is monotone along the segment) [design]. Per-channel
gates follow a path of their own: the weakest channels are dropped first, the others untouched.
"""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np

from dnarch_jax.config import ModelConfig
from dnarch_jax.method import cost, search_space
from dnarch_jax.method.arch import Arch, compute_arch
from dnarch_jax.method.arch_params import is_arch_param
from dnarch_jax.method.sizes import arch_sizes

METRICS = ("flops", "params")
MODES = ("soft", "hard")


def _check_metric(fn: str, metric: str) -> None:
  # Anything but "params" would otherwise be priced as FLOPs without a word.
  if metric not in METRICS:
    raise ValueError(f"{fn}: metric must be one of {METRICS}, got {metric!r}")


def arch_cost(arch: Arch, cfg: ModelConfig, batch_size: int, metric: str) -> float:
  """The cost of ``arch`` (``metric``: ``"flops"`` per example, or ``"params"``)."""
  _check_metric("arch_cost", metric)
  sizes = arch_sizes(arch, cfg, batch_size)
  return float(cost.params(sizes) if metric == "params" else cost.flops(sizes))


def extreme_params(params, cfg: ModelConfig, largest: bool):
  """Mask parameters at the largest (every tap, channel, block and frequency) or the smallest
  reachable architecture (one bucket of channels, 1 block, lowest resolution, the smallest
  kernels at the input's resolution; ``fit_kernel_boxes`` gives a block's at its own): the ends
  of their boxes (``dnarch_jax.method.search_space``; DNAL's unbounded gate logits at +-100);
  weights unchanged."""

  def extreme(path, leaf):
    if not is_arch_param(path):
      return leaf
    low, high = search_space.bounds(_name(path), cfg)
    end = np.clip(high if largest else low, -100.0, 100.0)
    return jnp.broadcast_to(jnp.asarray(end, leaf.dtype), leaf.shape)

  return jax.tree_util.tree_map_with_path(extreme, params)


def _name(path) -> str:
  return str(getattr(path[-1], "key", path[-1]))


def _keep_largest(s, low, fraction: float):
  """Gate logits ``s`` with all but the largest ``ceil(fraction * n)`` set to ``low``.

  The projection's path for per-channel gates: moving every logit towards ``low`` together
  would leave the kept channels' gates just above the threshold (a network scaled down to a
  tenth); dropping the weakest channels outright leaves the kept ones as they were.
  """
  keep = int(np.ceil(fraction * s.size))
  order = np.argsort(-s, kind="stable")[:keep]
  out = np.array(low, s.dtype)
  out[order] = s[order]
  return out


def fit_kernel_boxes(params, cfg: ModelConfig, batch_size: int):
  """``params`` clipped to their boxes, every kernel's sigma to its box at the resolution its
  block runs at in the architecture these parameters crop, as the train step clips them after
  every update.

  ``extreme_params``, the projection's segment and the initial parameters use the input's boxes;
  at a block's lower resolution the smallest of those is a 1-tap kernel, below the 3 taps its own
  box allows, so without this the projected start (and the smallest architecture, and a start
  configured below a block's box) would hold 1-tap kernels that the first update grows back to
  3, over the budget the projection promised. The architecture is read after the first clip (a
  block's resolution comes from its clipped cutoff, and from no sigma), so two clips suffice."""
  clipped = search_space.clip_to_bounds(params, cfg)
  return search_space.clip_to_bounds(clipped, cfg, compute_arch(clipped, cfg, batch_size))


def maximal_cost(params, cfg: ModelConfig, batch_size: int, metric: str) -> float:
  """Cost of the maximal network: every dimension at its maximum."""
  arch = compute_arch(extreme_params(params, cfg, largest=True), cfg, batch_size)
  return arch_cost(arch, cfg, batch_size, metric)


def minimal_cost(params, cfg: ModelConfig, batch_size: int, metric: str) -> float:
  smallest = fit_kernel_boxes(extreme_params(params, cfg, largest=False), cfg, batch_size)
  return arch_cost(compute_arch(smallest, cfg, batch_size), cfg, batch_size, metric)


def resolve_budget(budget_cfg, params, cfg: ModelConfig, batch_size: int) -> float:
  """The budget's value: ``budget.value`` if set, else ``budget.fraction`` of the maximal cost.

  Raises ``ValueError`` naming the field when the budget is below the smallest architecture.
  """
  metric = budget_cfg.metric
  if metric not in METRICS:
    raise ValueError(f"config.budget.metric: unknown {metric!r}; expected one of {METRICS}")
  if budget_cfg.mode not in MODES:
    raise ValueError(f"config.budget.mode: unknown {budget_cfg.mode!r}; expected one of {MODES}")
  if budget_cfg.value:
    value, field = float(budget_cfg.value), "config.budget.value"
  elif budget_cfg.fraction:
    value = float(budget_cfg.fraction) * maximal_cost(params, cfg, batch_size, metric)
    field = "config.budget.fraction"
  else:
    return 0.0
  floor = minimal_cost(params, cfg, batch_size, metric)
  if value < floor:
    raise ValueError(
      f"{field}: a budget of {value:.4g} {metric} is below the smallest reachable architecture "
      f"({floor:.4g} {metric}: one block, narrowest width, smallest kernels and resolution)"
    )
  return value


def project_to_budget(
  params, cfg: ModelConfig, budget: float, batch_size: int, metric: str, iterations: int = 30
):
  """``(params, arch)`` with ``cost(arch) <= budget``: unchanged if they already fit, else the mask
  parameters moved towards the smallest architecture just far enough (bisection)."""
  _check_metric("project_to_budget", metric)
  # A budget of 0 (resolve_budget's "no budget") fits nothing: there is nothing to project to.
  chex.assert_scalar_positive(
    float(budget), custom_message=f"project_to_budget: budget must be > 0, got {budget}"
  )
  chex.assert_type(iterations, int, custom_message="project_to_budget: iterations must be an int")
  chex.assert_scalar_positive(
    int(iterations), custom_message="project_to_budget: iterations must be >= 1"
  )
  arch = compute_arch(params, cfg, batch_size)
  if arch_cost(arch, cfg, batch_size, metric) <= budget:
    return params, arch
  host = jax.device_get(params)
  low = extreme_params(host, cfg, largest=False)

  def towards_low(path, a, b, t):
    b = np.asarray(b)
    if _name(path).endswith("_gate"):
      return _keep_largest(b, np.asarray(a), t)
    return np.asarray(a + t * (b - a), b.dtype)

  mix = lambda t: fit_kernel_boxes(
    jax.tree_util.tree_map_with_path(lambda p, a, b: towards_low(p, a, b, t), low, host),
    cfg,
    batch_size,
  )
  lo, hi = 0.0, 1.0  # cost(mix(lo)) fits; cost(mix(hi)) does not
  for _ in range(iterations):
    mid = (lo + hi) / 2
    if arch_cost(compute_arch(mix(mid), cfg, batch_size), cfg, batch_size, metric) <= budget:
      lo = mid
    else:
      hi = mid
  # A little inside the last fitting point: bisection ends on a crop boundary, where float32
  # rounding (the parameters' dtype, and the loss's traced crop) could land on either side.
  lo = max(0.0, lo - 1e-3)
  projected = jax.tree_util.tree_map(lambda new, old: jnp.asarray(new, old.dtype), mix(lo), params)
  return projected, compute_arch(projected, cfg, batch_size)
