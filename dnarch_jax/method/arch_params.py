"""The architecture parameters in a parameter tree: which they are (every parameter named
``arch_*``, one dimension each), their names, their initial values, and reading them out.

The model declares them (``dnarch_jax.network.model``), the optimiser labels them
(``dnarch_jax.run.optim``), the search space boxes them (``dnarch_jax.method.search_space``) and
``dnarch_jax.method.arch.compute_arch`` reads the crop they give.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax
import numpy as np

from dnarch_jax.config import ARCH_PARAM_DIMENSIONS, ModelConfig
from dnarch_jax.method.mask_kinds import width_mask

ARCH_PREFIX = "arch_"


def _leaf_name(path) -> str:
  last = path[-1]
  return str(getattr(last, "key", getattr(last, "name", last)))


def is_arch_param(path) -> bool:
  """Whether the parameter at pytree ``path`` is an architecture parameter (named ``arch_*``)."""
  return _leaf_name(path).startswith(ARCH_PREFIX)


def arch_dimension(path) -> str:
  """The dimension (kernel, width, resolution, depth) of the architecture parameter at ``path``;
  ``"other"`` for an ``arch_*`` name outside DNArch's masks (a user's own)."""
  return ARCH_PARAM_DIMENSIONS.get(_leaf_name(path), "other")


def arch_params(params) -> dict:
  """The architecture parameters of ``params`` as a nested dict of host float64 arrays."""
  out: dict = {}
  for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
    if is_arch_param(path):
      node = out
      keys = [getattr(k, "key", str(k)) for k in path]
      for k in keys[:-1]:
        node = node.setdefault(k, {})
      node[keys[-1]] = np.asarray(jax.device_get(leaf), np.float64)
  return out


def flat_arch_params(params) -> dict[str, float | list[float]]:
  """The architecture parameters as ``{"block_0/conv/arch_sigma": [0.075, 0.075], ...}`` (plain
  floats, for ``metrics.jsonl``); a parameter with one value gives a float."""
  out = {}
  for path, leaf in jax.tree_util.tree_flatten_with_path(arch_params(params))[0]:
    name = "/".join(str(getattr(k, "key", k)) for k in path)
    values = np.asarray(leaf, np.float64)
    out[name] = float(values) if values.ndim == 0 else [float(v) for v in values]
  return out


def initial_arch_params(cfg: ModelConfig) -> dict:
  """The architecture parameters' initial values, as the model's initialisers set them."""
  d = cfg.ndim
  p: dict = {}
  sigma = lambda: {"arch_sigma": np.full((d,), cfg.kernel_sigma_init)}
  if cfg.learn_kernel:
    p["stem_conv"] = sigma()
  if cfg.learn_width:
    p[width_param(cfg, "stream")] = width_mask(cfg).initial_param(cfg, cfg.width)
  if cfg.learn_depth:
    p["arch_depth_cutoff"] = np.asarray(cfg.depth_init_cutoff)
  for l in range(cfg.num_blocks):
    block: dict = {}
    if cfg.learn_kernel:
      block["conv"] = sigma()
    if cfg.learn_width:
      block[width_param(cfg, "hidden")] = width_mask(cfg).initial_param(cfg, cfg.hidden_width)
    if cfg.learn_resolution:
      block["arch_resolution_cutoff"] = np.full((d,), cfg.resolution_init_cutoff)
    if block:
      p[f"block_{l}"] = block
  return p


def width_param(cfg: ModelConfig, kind: str) -> str:
  """Name of the ``"stream"`` or ``"hidden"`` width mask's parameter (its kind's: a scalar cutoff
  ``arch_stream_cutoff`` for the ordered mask, one logit per channel ``arch_stream_gate``)."""
  return width_mask(cfg).param_name(kind)


def lookup(tree: Mapping, keys):
  node: Any = tree
  for k in keys:
    if not isinstance(node, Mapping) or k not in node:
      return None
    node = node[k]
  return node
