"""Export a DNAL run's network: the pruned CNN its checkpoint holds, for ``dnarch predict`` and
for programs with only JAX installed.

``dnarch_jax.interfaces.export.export_run(workdir, out)`` writes, with :func:`export_dnal_network`
as the converter:

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
would need a second set of layers for ResNets, whose shortcuts mix stream channels). The portable
program holds the same whole arrays as constants and gathers from them as it runs.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from dnarch_jax.dnal.arch import DnalArch, dnal_cost
from dnarch_jax.dnal.config import NetConfig
from dnarch_jax.dnal.models import VGG, ResNet
from dnarch_jax.interfaces.exported import DNAL_FORMAT as FORMAT
from dnarch_jax.interfaces.exported import DNAL_FORMAT_VERSION as FORMAT_VERSION


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


def export_dnal_network(run, with_xla: bool, input_size: Sequence[int] | None):
  """DNAL's converter for ``dnarch_jax.interfaces.export.export_run``: the checkpoint's network
  (pruned once the architecture stage is over) as an :class:`ExportedDnalNetwork`. Fields: the
  network mode, the kept widths, MACs, FLOPs and parameters, and XLA's FLOPs unless ``with_xla`` is
  off."""
  from dnarch_jax.dnal import gates as gates_lib
  from dnarch_jax.dnal.summary import xla_forward_flops
  from dnarch_jax.dnal.train import stage_delta
  from dnarch_jax.interfaces.export import NetworkExport

  if input_size is not None:
    raise ValueError("--input_size: DNAL's CNNs run at their training size only")
  mode, arch_step = gates_lib.mode_after(run.step, run.lengths)
  delta = stage_delta(run.config, run.lengths, "soft" if mode == "soft" else "hard", arch_step)
  spec = DnalExportSpec(run.cfg, run.arch, mode, float(delta))
  fields = dict(
    network=mode,
    widths=list(run.arch.widths),
    **dnal_cost(run.cfg, run.arch),
    flops_xla=xla_forward_flops(run.cfg, run.variables, run.arch) if with_xla else None,
  )
  model = ExportedDnalNetwork(spec)
  arch = run.arch.to_dict()
  return NetworkExport(spec, _nest(run.variables), arch, fields, model, FORMAT, FORMAT_VERSION)
