"""A DNAL network layer by layer: widths, MACs and parameters, beside XLA's FLOP count.

``summarize`` returns a JSON-ready dict with top-level ``macs``, ``flops`` (2 MACs) and
``params`` per image (the counts of DNAL's tables, :mod:`dnarch_jax.dnal.arch`), and
``flops_xla``: what XLA counts for the compiled forward pass of the same network (batch 1,
evaluation mode). XLA skips the taps that fall on zero padding (a third of them in VGG16's 4x4 and
2x2 layers) and adds BatchNorm, gates, ReLUs and pooling: ``flops_inside`` (2 MACs over taps
inside the image) is the count to hold it against.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from dnarch_jax.dnal.arch import DnalArch, arch_gates, network_cost
from dnarch_jax.dnal.config import NetConfig
from dnarch_jax.dnal.models import build_model


def network_mode(arch: DnalArch) -> str:
  """The mode a network is summarised in: pruned networks gate hard, unpruned ones not at all."""
  return "hard" if arch.crop else "off"


def xla_forward_flops(cfg: NetConfig, variables, arch: DnalArch) -> float:
  """FLOPs XLA counts for one image through the compiled forward pass of ``arch``."""
  model = build_model(cfg)
  x = jax.ShapeDtypeStruct((1, *cfg.input_size, cfg.in_channels), jnp.float32)
  mode = network_mode(arch)
  fn = jax.jit(lambda v, x: model.apply(v, x, arch, mode, jnp.float32(1e4), train=False))
  analysis = fn.lower(variables, x).compile().cost_analysis()
  if isinstance(analysis, list):  # older jax returned one dict per computation
    analysis = analysis[0]
  return float(analysis["flops"])


def summarize(cfg: NetConfig, variables, arch: DnalArch, with_xla: bool = True) -> dict[str, Any]:
  """Layers (widths, resolution, MACs, parameters) and the totals of the network ``arch``."""
  cost = network_cost(cfg, arch_gates(cfg, arch))
  layers = [
    dict(
      name=e["name"],
      resolution=list(e["resolution"]),
      in_channels=int(round(float(e["in_channels"]))),
      out_channels=int(round(float(e["out_channels"]))),
      macs=float(e["macs"]),
      params=int(round(float(e["params"]))),
    )
    for e in cost["layers"]
  ]
  macs = float(cost["macs"])
  stored = sum(int(np.prod(p.shape)) for p in jax.tree_util.tree_leaves(variables["params"]))
  return dict(
    method="dnal",
    network=cfg.kind,
    input=[*cfg.input_size, cfg.in_channels],
    num_classes=cfg.num_classes,
    macs=macs,
    flops=2.0 * macs,
    flops_inside=2.0 * float(cost["macs_inside"]),
    params=int(round(float(cost["params"]))),
    flops_xla=xla_forward_flops(cfg, variables, arch) if with_xla else None,
    params_stored=stored,
    pruned=arch.crop,
    widths=list(arch.widths),
    layers=layers,
    arch=arch.to_dict(),
  )


def format_table(summary: dict[str, Any]) -> str:
  """A fixed-width table of the layers and the totals."""
  header = f"{'layer':<18}{'resolution':>12}{'in':>7}{'out':>7}{'MMACs':>10}{'params':>11}"
  rows = [header, "-" * len(header)]
  for e in summary["layers"]:
    res = "x".join(map(str, e["resolution"]))
    rows.append(
      f"{e['name']:<18}{res:>12}{e['in_channels']:>7}{e['out_channels']:>7}"
      f"{e['macs'] / 1e6:>10.2f}{e['params']:>11,}"
    )
  rows.append("-" * len(header))
  state = "pruned" if summary["pruned"] else "unpruned"
  rows.append(
    f"{summary['network']} ({state}): {summary['macs'] / 1e6:.2f} M MACs "
    f"({summary['flops'] / 1e6:.2f} M FLOPs), {summary['params'] / 1e6:.3f} M parameters per image"
  )
  if summary.get("flops_xla") is not None:
    ratio = summary["flops_inside"] / summary["flops_xla"]
    rows.append(
      f"XLA counts {summary['flops_xla'] / 1e6:.2f} M FLOPs; 2 MACs over taps inside the image "
      f"{summary['flops_inside'] / 1e6:.2f} M (ratio {ratio:.3f})"
    )
  stored = summary["params_stored"]
  rows.append(f"({stored:,} parameters stored, gates and pruned channels included)")
  return "\n".join(rows)


def describe_config(config, with_xla: bool = True) -> tuple[dict[str, Any], str]:
  """``dnarch summary --config`` of a DNAL config: the unpruned network's widths, MACs and
  parameters."""
  from dnarch_jax.dnal.arch import full_arch
  from dnarch_jax.dnal.config import run_net_config
  from dnarch_jax.dnal.models import init_dnal_variables

  cfg = run_net_config(config)
  variables = init_dnal_variables(cfg, jax.random.key(int(config.get("seed", 0))))
  summary = summarize(cfg, variables, full_arch(cfg), with_xla=with_xla)
  title = f"DNAL {cfg.kind}, input {cfg.input_size}x{cfg.in_channels}, {cfg.num_classes} classes"
  return summary, title + "\n" + format_table(summary)


def describe_run(workdir, which: str = "best", with_xla: bool = True) -> tuple[dict[str, Any], str]:
  """``dnarch summary --workdir`` of a DNAL run: the network its checkpoint holds (pruned once
  the architecture stage is over)."""
  from dnarch_jax.run.restore import restore_run

  run = restore_run(workdir, which)
  summary = summarize(run.cfg, run.variables, run.arch, with_xla=with_xla)
  summary.update(step=run.step, checkpoint=which)
  return summary, f"{workdir}: {which} checkpoint, step {run.step}\n" + format_table(summary)
