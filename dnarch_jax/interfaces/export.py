"""Export: a trained run's discovered network as a plain, fixed-shape Flax Linen network.

DNArch trains a maximal network whose masks and kernel nets decide the architecture; what it
*found* is the cropped network its ``Arch`` describes. ``export_run(workdir, out)`` takes a run's
best (or latest) checkpoint and writes that network with no masks to learn and no kernel nets:

- every continuous conv kernel is sampled once from its kernel net at the ``Arch``'s taps and
  resolution, times its thresholded size mask, and stored as a plain ``[*taps, C]`` array;
- widths are the ``Arch``'s (the first channels, as the model's keep-first index masks keep
  them): weights are sliced, nothing else is pruned, so parameters and FLOPs are the cost
  model's for that ``Arch``;
- skipped blocks (depth) are gone; resolution changes stay, as the same Fourier resampling with
  the block's frequency mask baked into constant arrays;
- the soft mask values that multiply activations in the trained network's eval pass (stream and
  hidden width masks, depth gates) are baked in as constants, so outputs match it to rounding;
- BatchNorm runs in eval mode on the running statistics, *not* folded into neighbouring weights
  (a design choice: the parameter count then equals the cost model's, and the outputs the
  trained network's op for op; folding would save 3 FLOPs per element and change both).

On disk (the format: ``dnarch_jax.interfaces.exported``), ``OUT/`` holds ``model.json`` (the format
tag, the ``ExportSpec`` that rebuilds the module, the source run and checkpoint, costs, and the
run's config) and ``variables.msgpack``: the variables as ``flax.serialization`` msgpack (one
portable file of plain NumPy arrays, read without a target tree, no TensorStore; Orbax's directories
fit training state better than a deliverable). Variable collections: ``params`` (exactly what
:func:`dnarch_jax.method.cost.params` counts), ``batch_stats`` (BatchNorm running mean and variance)
and ``constants`` (the baked masks). Parameter names follow the trained network's
(``stem_conv/kernel``, ``block_0/mixer``...).
``model.jax_export`` is the portable program described below.

Load it with one call::

    model, variables = dnarch_jax.load_exported("OUT")
    logits = model.apply(variables, x_BxSxC)

``OUT/model.jax_export`` is the same network as a portable program (``exported.write_export``):
a serialized ``jax.export.Exported`` with the variables baked in and a symbolic batch dimension,
lowered for CPU, CUDA and TPU. A program with only ``jax`` (and its optional ``flatbuffers``)
installed runs it, without dnarch_jax::

    program = jax.export.deserialize(open("OUT/model.jax_export", "rb").read())
    logits = program.call(x_BxSxC)  # any batch size

This module turns a trained run into that network; ``dnarch_jax.interfaces.exported`` is the network
and its files (what loading an export imports: Flax and the pure ops, no model, no training stack),
and ``dnarch_jax.run.restore`` reads the run's checkpoint.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import pathlib
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from dnarch_jax.config import ModelConfig
from dnarch_jax.interfaces.exported import (
  FORMAT,
  FORMAT_VERSION,
  PROGRAM_CONV_ROUTE,
  BlockSpec,
  ConvSpec,
  ExportedCCNN,
  ExportSpec,
  write_export,
)
from dnarch_jax.method import cost, mask_kinds, spectral
from dnarch_jax.method.arch import Arch, arch_at_input_size
from dnarch_jax.method.arch_params import width_param
from dnarch_jax.method.channels import select
from dnarch_jax.method.sizes import arch_sizes
from dnarch_jax.network import conv_routes
from dnarch_jax.network.model import (
  DNArchCCNN,
  count_params,
  frequency_mask_fns,
)


def export_spec(cfg: ModelConfig, arch: Arch) -> ExportSpec:
  """The fixed network ``arch`` describes: its kept blocks, with the ``Arch``'s sizes and routes."""
  blocks = tuple(
    BlockSpec(
      f"block_{l}",
      tuple(b.resolution),
      bool(b.resample),
      ConvSpec(tuple(b.conv.taps), b.conv.route, True),
      int(b.hidden_width),
    )
    for l, b in enumerate(arch.blocks)
    if b.active
  )
  return ExportSpec(
    input_size=tuple(arch.input_size),  # cfg.input_size unless exported at another size
    in_channels=cfg.in_channels,
    num_classes=cfg.num_classes,
    head=cfg.head,
    causal=cfg.causal,
    stream_width=arch.stream_width,
    # BatchNorm follows the stem's conv, so the trained stem conv has no bias (model.py).
    stem=ConvSpec(tuple(arch.stem.taps), arch.stem.route, False),
    blocks=blocks,
    width_masks=cfg.learn_width,
    depth_gates=cfg.learn_depth,
    compute_dtype=cfg.compute_dtype,
  )


# --- from the trained network to the exported one ----------------------------------------------


def sampled_kernels(cfg: ModelConfig, variables, arch: Arch) -> dict[str, jax.Array]:
  """Each conv's kernel as the trained network computes it for ``arch``: the kernel net at the
  kept taps times the thresholded size mask, ``[*taps, C]``, keyed by the layer's name.

  Read from what the model sows, so it is the trained code path itself; only the kernels are
  returned, so XLA drops the rest of the forward pass and the compile stays small.
  """
  model = DNArchCCNN(cfg)
  x = jnp.zeros((1, *arch.input_size, cfg.in_channels), jnp.float32)

  def kernels(variables, x):
    _, state = model.apply(variables, x, arch, train=False, mutable=["intermediates"])
    return state["intermediates"]

  sown = jax.jit(kernels)(variables, x)
  out = {"stem_conv": sown["stem_conv"]["masked_kernel"][0]}
  for l, b in enumerate(arch.blocks):
    if b.active:
      out[f"block_{l}"] = sown[f"block_{l}"]["conv"]["masked_kernel"][0]
  return out


def export_variables(cfg: ModelConfig, variables, arch: Arch) -> tuple[ExportSpec, dict]:
  """``(spec, variables)`` of the exported network for the trained ``variables`` and ``arch``.

  Weights are restricted to the channels the ``Arch`` keeps; masks are evaluated with the model's
  own functions on the trained mask parameters, restricted to what ``arch`` keeps.
  """
  spec = export_spec(cfg, arch)
  params, stats = variables["params"], variables["batch_stats"]
  kernels = sampled_kernels(cfg, variables, arch)
  c = arch.stream
  to_host = lambda a: np.asarray(jax.device_get(a), np.float32)

  def norm(name_params, name_stats):
    p = {"scale": select(name_params["scale"], c), "bias": select(name_params["bias"], c)}
    return p, {"mean": select(name_stats["mean"], c), "var": select(name_stats["var"], c)}

  out_params: dict = {
    "stem_conv": {"kernel": kernels["stem_conv"]},
    "stem_mixer": {"kernel": select(params["stem_mixer"]["kernel"], c, 1)},
  }
  out_stats: dict = {}
  constants: dict = {}
  out_params["stem_norm"], out_stats["stem_norm"] = norm(params["stem_norm"], stats["stem_norm"])
  widths = mask_kinds.width_mask(cfg)
  if cfg.learn_width:
    constants["stream_mask"] = widths.values(params[width_param(cfg, "stream")], cfg.width, c, cfg)
  gates = None
  if cfg.learn_depth:
    gates = mask_kinds.DEPTH.values(params[mask_kinds.DEPTH.param], cfg)
  for b in spec.blocks:
    l = int(b.name.split("_")[1])
    trained, h = params[b.name], arch.blocks[l].hidden
    mixer, linear = trained["mixer"], trained["linear"]
    block_params: dict = {
      "conv": {"kernel": kernels[b.name], "bias": select(trained["conv"]["bias"], c)},
      "mixer": {
        "kernel": select(select(mixer["kernel"], c, 0), h, 1),
        "bias": select(mixer["bias"], h),
      },
      "linear": {
        "kernel": select(select(linear["kernel"], h, 0), c, 1),
        "bias": select(linear["bias"], c),
      },
    }
    block_params["norm"], block_stats = norm(trained["norm"], stats[b.name]["norm"])
    out_params[b.name] = block_params
    out_stats[b.name] = {"norm": block_stats}
    block_constants: dict = {}
    if b.resample:
      fns = frequency_mask_fns(trained["arch_resolution_cutoff"], cfg)
      for axis, n in enumerate(b.resolution):
        freq = spectral.frequencies(n, onesided=axis == cfg.ndim - 1)
        block_constants[f"frequency_mask_{axis}"] = fns[axis](freq)
    if cfg.learn_width:
      block_constants["hidden_mask"] = widths.values(
        trained[width_param(cfg, "hidden")], cfg.hidden_width, h, cfg
      )
    if gates is not None:
      block_constants["gate"] = gates[l]
    if block_constants:
      constants[b.name] = block_constants
  out_params["head_norm"], out_stats["head_norm"] = norm(params["head_norm"], stats["head_norm"])
  out_params["head"] = {
    "kernel": select(params["head"]["kernel"], c, 0),
    "bias": params["head"]["bias"][: cfg.num_classes],
  }
  exported = {"params": out_params, "batch_stats": out_stats, "constants": constants}
  return spec, jax.tree_util.tree_map(to_host, exported)


# --- costs ---------------------------------------------------------------------------------------


def kernel_sampling_flops(sizes: cost.NetworkSizes) -> float:
  """FLOPs per example the trained network spends sampling its kernels (kernel nets and size
  masks, once per batch, amortised over it): the part of the cost model an export no longer
  computes. Mirrors ``cost._conv_layer_flops``'s per-batch term, block gates included."""
  total = 0.0
  layers = [(sizes.stem, 1)] + [(b.conv, b.gate) for b in sizes.blocks]
  for c, gate in layers:
    positions, dims = math.prod(c.taps), len(c.taps)
    kind, hidden, num_layers = sizes.kernel_net, sizes.kernel_net_hidden, sizes.kernel_net_layers
    per_batch = cost.kernel_net_flops(positions, dims, c.channels, kind, hidden, num_layers)
    if sizes.learn_kernel:
      per_batch = per_batch + cost.kernel_mask_flops(positions, dims, c.channels)
    total = total + gate * per_batch / sizes.batch_size
  return float(total)


def exported_costs(cfg: ModelConfig, arch: Arch, batch_size: int) -> dict[str, float]:
  """Parameters and FLOPs per example from the cost model on the final ``Arch``.

  ``flops_model`` is what ``dnarch summary`` reports for ``arch`` (kernel nets amortised over
  ``batch_size`` included); ``flops_exported`` is the same count without the kernel sampling,
  which the exported network no longer does. ``params`` is what the export stores in ``params``.
  """
  sizes = arch_sizes(arch, cfg, batch_size)
  flops_model = float(cost.flops(sizes))
  return dict(
    flops_model=flops_model,
    flops_exported=flops_model - kernel_sampling_flops(sizes),
    params=int(round(float(cost.params(sizes)))),
  )


def xla_flops(model: ExportedCCNN, variables, batch_size: int) -> float:
  """FLOPs per example XLA counts for the compiled forward pass of the exported network (its
  native-route convs compiled as their XLA equivalent: ``conv_routes.xla_countable_route``)."""
  model = model.clone(spec=model.spec.with_conv_route(conv_routes.xla_countable_route))
  x = jax.ShapeDtypeStruct((batch_size, *model.spec.input_shape), jnp.float32)
  compiled = jax.jit(model.apply).lower(variables, x).compile()
  analysis = compiled.cost_analysis()
  if isinstance(analysis, list):  # older jax returned one dict per computation
    analysis = analysis[0]
  return float(analysis["flops"]) / batch_size


_LAYER_FIELDS = ("name", "kernel_taps", "width", "hidden_width", "resolution", "route", "flops")


@dataclasses.dataclass(frozen=True)
class NetworkExport:
  """What a method's converter gives :func:`export_run`: the exported network's spec, variables
  and architecture (as recorded in ``model.json``), the fields it prints (and records), the
  module its portable program runs, and the format tag of its ``model.json``."""

  spec: Any
  variables: dict
  arch: dict
  fields: dict
  program_model: nn.Module
  format: str = FORMAT
  version: int = FORMAT_VERSION


def export_run(
  workdir: str | os.PathLike,
  out: str | os.PathLike,
  checkpoint: str = "best",
  with_xla: bool = True,
  input_size: Sequence[int] | None = None,
) -> dict[str, Any]:
  """Export a run's discovered network to ``out``, for any method (its ``export_network``, looked
  up in ``dnarch_jax.run.methods``); returns what ``dnarch export`` prints: the folder, the source
  and its step, the method's fields and the portable program's path.

  ``input_size``: export the network for inputs of this size instead of the training one
  (DNArch: :func:`dnarch_jax.method.arch.arch_at_input_size`, the kernels sampled on the new grid).
  """
  from dnarch_jax.run.methods import method_of_run
  from dnarch_jax.run.restore import restore_run

  convert = method_of_run(workdir).load("export_network")
  run = restore_run(workdir, checkpoint)
  network = convert(run, with_xla, input_size)
  result = dict(
    out=str(pathlib.Path(out).resolve()),
    workdir=str(pathlib.Path(workdir).resolve()),
    checkpoint=checkpoint,
    step=run.step,
    **network.fields,
  )
  info = {k: v for k, v in result.items() if k != "out"}
  info.update(arch=network.arch, config=json.loads(run.config.to_json()))
  program = write_export(
    out, network.spec, network.variables, info, network.program_model, network.format,
    network.version,
  )  # fmt: skip
  return dict(result, program=str(program))


def export_network(run, with_xla: bool, input_size: Sequence[int] | None) -> NetworkExport:
  """DNArch's converter: the run's ``Arch`` (at ``input_size`` if given) as an
  :class:`ExportedCCNN`. Fields: parameters, FLOPs per example (``flops_model`` as ``dnarch
  summary`` counts the final ``Arch``, ``flops_exported`` without kernel sampling, and XLA's
  count of the compiled exported forward pass unless ``with_xla`` is off), and the layers."""
  from dnarch_jax.interfaces.summary import summarize

  if input_size is not None:
    arch = arch_at_input_size(run.variables["params"], run.cfg, input_size, run.batch_size)
    run = dataclasses.replace(run, arch=arch)
  spec, variables = export_variables(run.cfg, run.variables, run.arch)
  costs = exported_costs(run.cfg, run.arch, run.batch_size)
  summary = summarize(run.cfg, run.variables, run.arch, run.batch_size, with_xla=False)
  model = ExportedCCNN(spec)
  stored = count_params(variables["params"])
  if stored != costs["params"]:  # the cost model describes what is stored, or it is wrong
    raise RuntimeError(f"exported {stored} parameters, the cost model counts {costs['params']}")
  fields = dict(
    **costs,
    flops_xla=xla_flops(model, variables, run.batch_size) if with_xla else None,
    batch_size=run.batch_size,
    depth=spec.depth,
    stream_width=spec.stream_width,
    layers=[{k: layer[k] for k in _LAYER_FIELDS} for layer in summary["layers"] if layer["active"]],
  )
  program_model = ExportedCCNN(spec.with_conv_route(PROGRAM_CONV_ROUTE))
  return NetworkExport(spec, variables, run.arch.to_dict(), fields, program_model)
