"""Export a DNAL run's network: the pruned CNN its checkpoint holds, for ``dnarch predict`` and
for programs with only JAX installed.

``export_run(workdir, out)`` writes, like DNArch's export (``dnarch_jax.export``):

* ``model.json``: the format tag ``dnarch_jax.dnal_export``, the :class:`DnalExportSpec` (the
  unpruned ``NetConfig``, the ``DnalArch`` of kept channels, the frozen gates' ``delta``), the
  network's MACs, FLOPs and parameters, the source run and checkpoint, the run's config;
* ``variables.msgpack``: the checkpoint's ``params`` and ``batch_stats`` as trained;
* ``model.jax_export``: the network as a serialized ``jax.export`` program with a symbolic batch.

The network is DNAL's own module run cropped (``arch.crop``: only the kept channels are computed,
``dnal.models``) with the gates in ``hard`` mode: after the architecture stage, exactly what
``dnarch eval`` measures. Before that stage ends (a checkpoint of the weights or architecture
stage) the network is the unpruned one in the checkpoint's mode. The variables file holds the
trained arrays whole [design]: the cropped network gathers the kept channels' weights at its
static indices, so the pruned channels' weights are stored but never read (slicing them out
would need a second set of layers for ResNets, whose shortcuts mix stream channels; the portable
program bakes the gathered weights in).
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
from collections.abc import Mapping, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from dnarch_jax.dnal.arch import DnalArch, arch_cost
from dnarch_jax.dnal.config import NetConfig
from dnarch_jax.dnal.models import VGG, ResNet
from dnarch_jax.exported import DNAL_FORMAT as FORMAT
from dnarch_jax.exported import DNAL_FORMAT_VERSION as FORMAT_VERSION


@dataclasses.dataclass(frozen=True)
class DnalExportSpec:
  """What rebuilds an exported DNAL network: its config, kept channels, gate mode and delta."""

  cfg: NetConfig
  arch: DnalArch
  mode: str
  delta: float

  @property
  def input_size(self) -> tuple[int, ...]:
    return tuple(self.cfg.input_size)

  @property
  def in_channels(self) -> int:
    return self.cfg.in_channels

  @property
  def input_shape(self) -> tuple[int, ...]:
    return (*self.cfg.input_size, self.cfg.in_channels)

  def to_dict(self) -> dict[str, Any]:
    return dict(
      cfg=dataclasses.asdict(self.cfg), arch=self.arch.to_dict(), mode=self.mode, delta=self.delta
    )

  @classmethod
  def from_dict(cls, d: Mapping[str, Any]) -> DnalExportSpec:
    cfg = {k: tuple(v) if isinstance(v, list) else v for k, v in d["cfg"].items()}
    return cls(NetConfig(**cfg), DnalArch.from_dict(d["arch"]), str(d["mode"]), float(d["delta"]))


class ExportedDnalNetwork(nn.Module):
  """``apply(variables, x_BxHxWxC) -> logits`` of an exported DNAL network (eval mode)."""

  spec: DnalExportSpec

  @nn.compact
  def __call__(self, x):
    cfg = self.spec.cfg
    network = (VGG if cfg.kind == "vgg" else ResNet)(cfg, name="network")
    return network(x, self.spec.arch, self.spec.mode, jnp.float32(self.spec.delta), train=False)


def _nest(variables) -> dict:
  """The trained variables under the wrapper's ``network`` scope."""
  return {k: {"network": v} for k, v in variables.items()}


def export_run(
  workdir: str | os.PathLike,
  out: str | os.PathLike,
  checkpoint: str = "best",
  with_xla: bool = True,
  input_size: Sequence[int] | None = None,
) -> dict[str, Any]:
  """Export a DNAL run's network to ``out``; returns what ``dnarch export`` prints."""
  from dnarch_jax import exported
  from dnarch_jax.dnal import gates as gates_lib
  from dnarch_jax.dnal.summary import xla_forward_flops
  from dnarch_jax.dnal.train import stage_delta
  from dnarch_jax.restore import restore_run

  if input_size is not None:
    raise ValueError("--input_size: DNAL's CNNs run at their training size only")
  run = restore_run(workdir, checkpoint)
  mode, arch_step = gates_lib.mode_after(run.step, run.lengths)
  delta = stage_delta(run.config, run.lengths, "soft" if mode == "soft" else "hard", arch_step)
  spec = DnalExportSpec(run.cfg, run.arch, mode, float(delta))
  variables = _nest(run.variables)
  costs = arch_cost(run.cfg, run.arch)
  result = dict(
    out=str(pathlib.Path(out).resolve()),
    workdir=str(pathlib.Path(workdir).resolve()),
    checkpoint=checkpoint,
    step=run.step,
    network=mode,
    widths=list(run.arch.widths),
    **costs,
    flops_xla=xla_forward_flops(run.cfg, run.variables, run.arch) if with_xla else None,
  )
  program = dict(
    file=exported.PROGRAM_FILE,
    platforms=list(exported.PROGRAM_PLATFORMS),
    input=["batch", *spec.input_shape],
    jax_version=jax.__version__,
  )
  info = {k: v for k, v in result.items() if k != "out"}
  info.update(program=program, config=json.loads(run.config.to_json()))
  exported.save_exported(out, spec, variables, info, FORMAT, FORMAT_VERSION)
  program_path = pathlib.Path(out) / exported.PROGRAM_FILE
  exported.write_atomic(program_path, portable_program(spec, variables))
  return dict(result, program=str(program_path.resolve()))


def portable_program(spec: DnalExportSpec, variables) -> bytes:
  """The network as a serialized ``jax.export.Exported`` (batch symbolic, variables baked in)."""
  from dnarch_jax.exported import PROGRAM_PLATFORMS

  model = ExportedDnalNetwork(spec)
  (batch,) = jax.export.symbolic_shape("batch")
  x = jax.ShapeDtypeStruct((batch, *spec.input_shape), jnp.float32)
  apply = jax.jit(lambda x: model.apply(variables, x))
  return jax.export.export(apply, platforms=PROGRAM_PLATFORMS)(x).serialize()
