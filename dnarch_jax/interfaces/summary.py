"""The architecture, layer by layer, with its cost from the model and from XLA.

``summarize`` returns a JSON-ready dict; ``format_table`` renders it for people. FLOPs are per
example of the forward pass (evaluation mode) at the config's batch size: ``flops_model`` from
:mod:`dnarch_jax.method.cost` on the ``Arch``, ``flops_xla`` from XLA's cost analysis of the
compiled cropped forward pass (native-route convs counted as their XLA equivalent).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from dnarch_jax.config import ModelConfig
from dnarch_jax.method import cost
from dnarch_jax.method.arch import Arch
from dnarch_jax.method.sizes import arch_sizes
from dnarch_jax.network import conv_routes
from dnarch_jax.network.model import DNArchCCNN, count_params


def xla_forward_flops(cfg: ModelConfig, variables, arch: Arch, batch_size: int) -> float:
  """FLOPs per example XLA counts for the compiled forward pass of ``arch`` (eval mode).

  Convs on the native route are compiled on the shift route for the count (same arithmetic;
  XLA counts an FFI call as 0: ``conv_routes.xla_countable_route``).
  """
  arch = arch.with_conv_routes(conv_routes.xla_countable_route)
  model = DNArchCCNN(cfg)
  x = jax.ShapeDtypeStruct((batch_size, *cfg.input_size, cfg.in_channels), jnp.float32)
  compiled = (
    jax.jit(lambda v, x: model.apply(v, x, arch, train=False)).lower(variables, x).compile()
  )
  analysis = compiled.cost_analysis()
  if isinstance(analysis, list):  # older jax returned one dict per computation
    analysis = analysis[0]
  return float(analysis["flops"]) / batch_size


def summarize(
  cfg: ModelConfig, variables, arch: Arch, batch_size: int, with_xla: bool = True
) -> dict[str, Any]:
  """Layers (taps, widths, resolution, active, route, FLOPs), parameters and FLOPs."""
  sizes = arch_sizes(arch, cfg, batch_size)
  per_layer = cost.layer_flops(sizes)
  layers = [
    dict(
      name="stem",
      kernel_taps=list(arch.stem.taps),
      width=arch.stream_width,
      hidden_width=None,
      resolution=list(arch.input_size),
      active=True,
      route=arch.stem.route,
      flops=float(per_layer["stem"]),
    )
  ]
  for l, b in enumerate(arch.blocks):
    layers.append(
      dict(
        name=f"block_{l}",
        kernel_taps=list(b.conv.taps),
        width=arch.stream_width,
        hidden_width=b.hidden_width,
        resolution=list(b.resolution),
        active=b.active,
        route=b.conv.route,
        flops=float(per_layer[f"block_{l}"]),
      )
    )
  layers.append(
    dict(
      name="head",
      kernel_taps=None,
      width=arch.stream_width,
      hidden_width=None,
      resolution=list(arch.output_resolution),
      active=True,
      route=None,
      flops=float(per_layer["head"]),
    )
  )
  out = dict(
    flops_model=float(cost.flops(sizes)),
    flops_xla=xla_forward_flops(cfg, variables, arch, batch_size) if with_xla else None,
    params=int(cost.params(sizes)),
    params_trainable=count_params(variables["params"]),
    depth=arch.depth,
    batch_size=batch_size,
    layers=layers,
    arch=arch.to_dict(),
  )
  return out


def format_table(summary: dict[str, Any]) -> str:
  """A fixed-width table of the layers and the totals."""
  fmt = lambda v: "-" if v is None else ("x".join(map(str, v)) if isinstance(v, list) else str(v))
  header = f"{'layer':<9}{'kernel':>10}{'width':>7}{'hidden':>8}{'resolution':>12}"
  header += f"{'route':>10}{'active':>8}{'MFLOPs':>10}"
  rows = [header, "-" * len(header)]
  for layer in summary["layers"]:
    rows.append(
      f"{layer['name']:<9}{fmt(layer['kernel_taps']):>10}{fmt(layer['width']):>7}"
      f"{fmt(layer['hidden_width']):>8}{fmt(layer['resolution']):>12}{fmt(layer['route']):>10}"
      f"{'yes' if layer['active'] else 'no':>8}{layer['flops'] / 1e6:>10.2f}"
    )
  rows.append("-" * len(header))
  rows.append(f"depth {summary['depth']}, parameters {summary['params']:,} in the network")
  rows.append(f"({summary['params_trainable']:,} trainable, kernel nets and masks included)")
  line = f"FLOPs per example: {summary['flops_model'] / 1e6:.2f} M (cost model)"
  if summary.get("flops_xla") is not None:
    ratio = summary["flops_model"] / summary["flops_xla"]
    line += f", {summary['flops_xla'] / 1e6:.2f} M (XLA), ratio {ratio:.3f}"
  rows.append(line + f", batch {summary['batch_size']}")
  return "\n".join(rows)


def describe_config(config, with_xla: bool = True) -> tuple[dict[str, Any], str]:
  """``dnarch summary --config``: the initial architecture's summary and its table."""
  from dnarch_jax.method.arch import initial_arch
  from dnarch_jax.network.model import init_variables
  from dnarch_jax.run.experiment import run_model_config

  cfg = run_model_config(config)
  batch_size = int(config.data.batch_size)
  arch = initial_arch(cfg, batch_size)
  variables = init_variables(cfg, jax.random.key(int(config.get("seed", 0))))
  summary = summarize(cfg, variables, arch, batch_size, with_xla=with_xla)
  title = (
    f"{cfg.ndim}D input {cfg.input_size}x{cfg.in_channels}, {cfg.num_classes} classes, "
    f"{cfg.head} head"
  )
  return summary, title + "\n" + format_table(summary)


def describe_run(workdir, which: str = "best", with_xla: bool = True) -> tuple[dict[str, Any], str]:
  """``dnarch summary --workdir``: the architecture a run's checkpoint holds, with its cost
  beside the run's budget."""
  from dnarch_jax.method import budget as budget_lib
  from dnarch_jax.run.restore import restore_run

  run = restore_run(workdir, which)
  summary = summarize(run.cfg, run.variables, run.arch, run.batch_size, with_xla=with_xla)
  budget_cfg = run.config.budget
  budget = budget_lib.resolve_budget(budget_cfg, run.variables["params"], run.cfg, run.batch_size)
  summary.update(step=run.step, checkpoint=run.checkpoint, budget_metric=budget_cfg.metric)
  summary["budget"] = budget or None
  lines = [f"{workdir}: {run.checkpoint} checkpoint, step {run.step}", format_table(summary)]
  if budget:
    cost = summary["flops_model" if budget_cfg.metric == "flops" else "params"]
    lines.append(f"budget: {budget:,.0f} {budget_cfg.metric} per example; this architecture uses "
                 f"{cost / budget:.1%} of it")  # fmt: skip
  return summary, "\n".join(lines)
