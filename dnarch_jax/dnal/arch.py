"""``DnalArch``: which channels every gated layer keeps, and what the network costs.

The pruned network is a static, hashable value the compiled step takes as a static argument
(ENGINEERING.md, "The architecture is a static value"): per gated layer the sorted indices of the
channels it keeps. Parameters keep their maximal shapes; the model gathers the kept rows and
columns, so optimizer state and checkpoints stay the same pytree through every stage.
``crop=False`` is the *full* counterpart: every channel computed, pruned ones multiplied by 0.

The cost model is one formula of per-channel gate vectors, evaluated on two kinds of input:

* soft gates ``sigmoid(delta * s)`` (JAX arrays): differentiable MACs and parameters;
* 0/1 indicator vectors of a ``DnalArch`` (NumPy): the integer sizes the cropped network runs at.

Widths are sums of gate values. A ResNet stream channel is *live* when any layer writing it (the
stem, or a block's second conv; option-A shortcuts carry it across stages) keeps it; its soft
liveness is ``1 - prod_w (1 - g_w)``, which is that union on 0/1 gates. MACs count the
multiply-accumulates of convs and linear layers per image (the convention of DNAL's tables);
parameters count conv kernels, linear weights and biases, and BatchNorm scales and biases.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from dnarch_jax.dnal import gates as gates_lib
from dnarch_jax.dnal.config import POOL, NetConfig

GATE_PARAM = "arch_gate"  # the gate logits s of a layer; "arch_*" puts them in the arch group


@dataclasses.dataclass(frozen=True)
class DnalArch:
  """Kept channel indices per gated layer (the order of :func:`gated_layers`)."""

  kept: tuple[tuple[int, ...], ...]
  crop: bool = True

  @property
  def widths(self) -> tuple[int, ...]:
    return tuple(len(k) for k in self.kept)

  def uncropped(self) -> DnalArch:
    """The full network with the same kept channels: pruned ones computed and zeroed."""
    return dataclasses.replace(self, crop=False)

  def to_dict(self) -> dict[str, Any]:
    return {"kept": [list(k) for k in self.kept], "crop": self.crop}

  def to_json(self) -> str:
    return json.dumps(self.to_dict(), sort_keys=True)

  @classmethod
  def from_dict(cls, d: Mapping[str, Any]) -> DnalArch:
    return cls(tuple(tuple(int(i) for i in k) for k in d["kept"]), bool(d["crop"]))


def gated_layers(cfg: NetConfig) -> list[tuple[tuple[str, ...], int]]:
  """``(module path, channels)`` of every gated conv, in network order."""
  if cfg.kind == "vgg":
    widths = [v for v in cfg.layers if v != POOL]
    return [((f"conv_{l}",), w) for l, w in enumerate(widths)]
  out = [(("stem",), cfg.widths[0])]
  for i in range(3 * cfg.blocks_per_stage):
    w = cfg.widths[i // cfg.blocks_per_stage]
    out += [((f"block_{i}", "conv1"), w), ((f"block_{i}", "conv2"), w)]
  return out


def full_arch(cfg: NetConfig) -> DnalArch:
  """The unpruned network: every channel of every layer."""
  return DnalArch(tuple(tuple(range(c)) for _, c in gated_layers(cfg)), crop=False)


def gate_logits(params, cfg: NetConfig) -> list:
  """The gate logits ``s`` of every gated layer, in network order."""
  out = []
  for path, _ in gated_layers(cfg):
    node = params
    for key in path:
      node = node[key]
    out.append(node[GATE_PARAM])
  return out


def prune(params, cfg: NetConfig, delta: float) -> DnalArch:
  """The pruned network: each layer keeps the channels with ``sigmoid(delta s) >= threshold``."""
  return DnalArch(
    tuple(gates_lib.kept_channels(s, delta, cfg.threshold) for s in gate_logits(params, cfg))
  )


# --- gate vectors ------------------------------------------------------------------------------


def arch_gates(cfg: NetConfig, arch: DnalArch) -> list[np.ndarray]:
  """0/1 vectors of what ``arch`` computes: all ones uncropped, the kept channels cropped."""
  out = []
  for (_, channels), kept in zip(gated_layers(cfg), arch.kept, strict=True):
    g = np.ones(channels) if not arch.crop else np.zeros(channels)
    g[list(kept)] = 1.0
    out.append(g)
  return out


def soft_gates(params, cfg: NetConfig, delta) -> list:
  """``sigmoid(delta s)`` of every gated layer (differentiable in ``s``)."""
  return [gates_lib.gate_values(s, delta) for s in gate_logits(params, cfg)]


def stage_input(live, width: int):
  """Option-A shortcut on a liveness vector: channel ``j`` moves to ``j + pad`` in a stage of
  ``width`` channels (zero padding before and after, the extra odd channel after)."""
  xp = jnp if isinstance(live, jax.Array) else np
  pad = (width - live.shape[0]) // 2
  return xp.pad(live, (pad, width - live.shape[0] - pad))


def union(a, b):
  """Soft union of liveness vectors, ``1 - (1 - a)(1 - b)``: the set union on 0/1 values."""
  return 1.0 - (1.0 - a) * (1.0 - b)


# --- the cost model ------------------------------------------------------------------------------


def taps_inside(n: int, k: int = 3, stride: int = 1) -> int:
  """(output, tap) pairs along one axis whose input lies inside the image (padding (k - 1) / 2):
  the multiply-accumulates XLA counts, which skip the zero padding."""
  pad = (k - 1) // 2
  out = -(-n // stride)
  return sum(0 <= o * stride + t - pad < n for o in range(out) for t in range(k))


def _conv(name, in_resolution, cin, cout, stride=1, k=3):
  """A kxk conv (padding (k - 1) / 2, no bias: BatchNorm follows) and its BatchNorm.

  ``macs`` counts every tap at every output position (the convention of DNAL's tables);
  ``macs_inside`` only taps inside the image, as XLA's cost analysis does.
  """
  resolution = tuple(-(-n // stride) for n in in_resolution)
  inside = taps_inside(in_resolution[0], k, stride) * taps_inside(in_resolution[1], k, stride)
  return dict(
    name=name,
    resolution=resolution,
    in_channels=cin,
    out_channels=cout,
    macs=resolution[0] * resolution[1] * k * k * cin * cout,
    macs_inside=inside * cin * cout,
    params=k * k * cin * cout + 2 * cout,
  )


def _linear(name, cin, cout, batch_norm: bool):
  return dict(
    name=name,
    resolution=(1, 1),
    in_channels=cin,
    out_channels=cout,
    macs=cin * cout,
    macs_inside=cin * cout,
    params=cin * cout + cout + (2 * cout if batch_norm else 0),
  )


def layer_costs(cfg: NetConfig, gate_vectors: Sequence) -> list[dict[str, Any]]:
  """MACs and parameters per layer for per-channel gate values ``gate_vectors``.

  Each entry's ``in_channels`` / ``out_channels`` are the (soft) widths the layer runs at.
  """
  names = ["/".join(path) for path, _ in gated_layers(cfg)]
  out = []
  res = tuple(cfg.input_size)
  if cfg.kind == "vgg":
    cin, l = cfg.in_channels, 0
    for v in cfg.layers:
      if v == POOL:
        res = tuple(n // 2 for n in res)
        continue
      cout = gate_vectors[l].sum()
      out.append(_conv(names[l], res, cin, cout))
      cin, l = cout, l + 1
    for h, width in enumerate(cfg.classifier):
      out.append(_linear(f"classifier_{h}", cin, width, batch_norm=True))
      cin = width
    out.append(_linear("head", cin, cfg.num_classes, batch_norm=False))
    return out
  g = list(gate_vectors)
  out.append(_conv(names[0], res, cfg.in_channels, g[0].sum()))
  live = g[0]
  n = cfg.blocks_per_stage
  for i in range(3 * n):
    stage, first = divmod(i, n)
    g1, g2 = g[1 + 2 * i], g[2 + 2 * i]
    shortcut, stride = live, 1
    if stage > 0 and first == 0:
      shortcut, stride = stage_input(live, cfg.widths[stage]), 2
    out.append(_conv(names[1 + 2 * i], res, live.sum(), g1.sum(), stride))
    res = out[-1]["resolution"]
    out.append(_conv(names[2 + 2 * i], res, g1.sum(), g2.sum()))
    live = union(shortcut, g2)
  out.append(_linear("head", live.sum(), cfg.num_classes, batch_norm=False))
  return out


def network_cost(cfg: NetConfig, gate_vectors: Sequence) -> dict[str, Any]:
  """``{"macs", "macs_inside", "params", "layers"}`` of the network the gate vectors describe."""
  layers = layer_costs(cfg, gate_vectors)
  out = {key: sum(e[key] for e in layers) for key in ("macs", "macs_inside", "params")}
  return dict(out, layers=layers)


def dnal_cost(cfg: NetConfig, arch: DnalArch) -> dict[str, float]:
  """Integer MACs (and FLOPs = 2 MACs) and parameters per image of what ``arch`` computes."""
  cost = network_cost(cfg, arch_gates(cfg, arch))
  macs = float(cost["macs"])
  return {"macs": macs, "flops": 2.0 * macs, "params": float(cost["params"])}


def soft_gate_cost(params, cfg: NetConfig, delta) -> dict[str, Any]:
  """Differentiable MACs and parameters from the gates ``sigmoid(delta s)``."""
  cost = network_cost(cfg, soft_gates(params, cfg, delta))
  return {"macs": cost["macs"], "params": cost["params"]}
