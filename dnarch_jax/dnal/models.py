"""VGG-style CNNs and CIFAR ResNets with DNAL gates (Linen), cropped to a ``DnalArch``.

``build_model(cfg).apply(variables, x, arch, mode, delta, train=...)`` computes the network
``arch`` describes: with ``arch.crop`` only the kept channels (the pruned network), else every
channel with pruned ones zeroed. In ``hard`` mode both give the same output (tests hold it to
1e-5). ``mode`` is static (``off``, ``soft`` or ``hard``, ``dnal.gates.MODES``); ``delta`` may be
traced, so annealing it costs no recompilation.

Parameter names are an API (checkpoints and the optimizer groups key on them): VGG convs are
``conv_l``, the classifier ``classifier_h`` / ``classifier_norm_h`` and ``head``; the ResNet has
``stem``, ``block_i/conv1``, ``block_i/conv2`` and ``head``. Every gated conv holds its gate
logits as ``arch_gate``.
"""

from __future__ import annotations

import dataclasses
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from dnarch_jax.dnal.arch import DnalArch, full_arch, gated_layers
from dnarch_jax.dnal.config import POOL, NetConfig
from dnarch_jax.dnal.layers import (
  GatedConvBN,
  IndexedBatchNorm,
  IndexedDense,
  normal_init,
  torch_linear_init,
)

_vgg_linear_init = normal_init(0.01)  # the official VGG's classifier init


def _indices(kept, channels: int):
  """Static gather indices: ``None`` when every channel is kept (no gather at all)."""
  return None if len(kept) == channels else np.asarray(kept, np.int32)


def _mask(kept, channels: int):
  if len(kept) == channels:
    return None
  m = np.zeros(channels, np.float32)
  m[list(kept)] = 1.0
  return m


def layer_plan(cfg: NetConfig, arch: DnalArch) -> list[tuple]:
  """Per gated layer ``(kept, out_idx, out_mask)``: the cropped network gathers ``out_idx``, the
  full one multiplies by ``out_mask``."""
  plan = []
  for (_, channels), kept in zip(gated_layers(cfg), arch.kept, strict=True):
    if arch.crop:
      plan.append((np.asarray(kept), _indices(kept, channels), None))
    else:
      plan.append((np.arange(channels), None, _mask(kept, channels)))
  return plan


class VGG(nn.Module):
  """3x3 conv -> BN -> gate -> ReLU per width, 2x2 max-pools, global average pooling, then
  Linear -> BN -> ReLU per classifier width and a Linear to the classes."""

  cfg: NetConfig

  @nn.compact
  def __call__(self, x, arch: DnalArch, mode: str, delta, *, train: bool = False):
    cfg = self.cfg
    plan = layer_plan(cfg, arch)
    in_idx, cin, l = None, cfg.in_channels, 0
    for v in cfg.layers:
      if v == POOL:
        x = nn.max_pool(x, (2, 2), strides=(2, 2))
        continue
      _, out_idx, out_mask = plan[l]
      conv = GatedConvBN(cin, v, name=f"conv_{l}")
      x = nn.relu(conv(x, in_idx, out_idx, out_mask, mode, delta, train=train))
      in_idx, cin, l = out_idx, v, l + 1
    x = jnp.mean(x, axis=(1, 2))  # 1x1 after VGG16's five pools on CIFAR: a plain flatten
    for h, width in enumerate(cfg.classifier):
      x = IndexedDense(cin, width, _vgg_linear_init, name=f"classifier_{h}")(x, in_idx)
      x = nn.relu(IndexedBatchNorm(width, name=f"classifier_norm_{h}")(x, train=train))
      in_idx, cin = None, width
    return IndexedDense(cin, cfg.num_classes, _vgg_linear_init, name="head")(x, in_idx)


@dataclasses.dataclass(frozen=True)
class BlockPlan:
  """Static indices of one residual block of the cropped (or full) ResNet.

  ``in_live``: the stream channels the input holds (indices of the input's stage); ``conv1`` and
  ``conv2``: ``(out_idx, out_mask)``; ``k1``: conv1's kept channels (conv2's input);
  ``shortcut_pos`` / ``k2_pos``: where the shortcut's and conv2's channels go in the output
  stream (``None``: they are the output stream, in order); ``out_live``: the output's channels.
  """

  in_live: np.ndarray
  conv1: tuple
  conv2: tuple
  k1: np.ndarray
  shortcut_pos: np.ndarray | None
  k2_pos: np.ndarray | None
  out_live: np.ndarray


def _positions(values: np.ndarray, within: np.ndarray):
  if len(values) == len(within) and np.array_equal(values, within):
    return None
  return np.searchsorted(within, values).astype(np.int32)


def resnet_plan(cfg: NetConfig, arch: DnalArch) -> tuple[tuple, list[BlockPlan]]:
  """The stem's ``(out_idx, out_mask)`` and every block's :class:`BlockPlan`.

  A stream channel is live once the stem or a block's conv2 keeps it; option-A shortcuts move
  channel ``j`` of a stage to ``j + pad`` of the next. Dead channels are exactly zero in the full
  network, so the cropped one drops them (``dnal.arch.layer_costs`` counts the same widths).
  """
  layers = layer_plan(cfg, arch)
  live = layers[0][0]
  n = cfg.blocks_per_stage
  blocks = []
  for i in range(3 * n):
    stage, first = divmod(i, n)
    k1, idx1, mask1 = layers[1 + 2 * i]
    k2, idx2, mask2 = layers[2 + 2 * i]
    width = cfg.widths[stage]
    previous = cfg.widths[stage - 1] if stage > 0 and first == 0 else width
    shifted = live + (width - previous) // 2
    out_live = np.union1d(shifted, k2)
    blocks.append(
      BlockPlan(
        in_live=live,
        conv1=(idx1, mask1),
        conv2=(idx2, mask2),
        k1=k1,
        shortcut_pos=_positions(shifted, out_live),
        k2_pos=_positions(k2, out_live),
        out_live=out_live,
      )
    )
    live = out_live
  return layers[0][1:], blocks


class BasicBlock(nn.Module):
  """``relu(shortcut(x) + gate(BN(conv(relu(gate(BN(conv(x)))))))``, option-A shortcut."""

  in_features: int
  features: int
  strides: int = 1

  @nn.compact
  def __call__(self, x, plan: BlockPlan, mode: str, delta, *, train: bool):
    in_idx = _indices(plan.in_live, self.in_features)
    k1_idx = _indices(plan.k1, self.features)
    conv1 = GatedConvBN(self.in_features, self.features, self.strides, name="conv1")
    h = nn.relu(conv1(x, in_idx, *plan.conv1, mode, delta, train=train))
    conv2 = GatedConvBN(self.features, self.features, name="conv2")
    h = conv2(h, k1_idx, *plan.conv2, mode, delta, train=train)
    shortcut = x[:, :: self.strides, :: self.strides, :] if self.strides > 1 else x
    shape = (*h.shape[:-1], len(plan.out_live))
    if plan.shortcut_pos is not None:  # zero-padded channels (option A) and channels to drop
      shortcut = jnp.zeros(shape, h.dtype).at[..., plan.shortcut_pos].set(shortcut)
    if plan.k2_pos is not None:
      h = jnp.zeros(shape, h.dtype).at[..., plan.k2_pos].set(h)
    return nn.relu(shortcut + h)


class ResNet(nn.Module):
  """The CIFAR ResNet (6 n + 2 layers, option-A shortcuts) with a gate after every conv."""

  cfg: NetConfig

  @nn.compact
  def __call__(self, x, arch: DnalArch, mode: str, delta, *, train: bool = False):
    cfg = self.cfg
    stem_plan, blocks = resnet_plan(cfg, arch)
    stem = GatedConvBN(cfg.in_channels, cfg.widths[0], name="stem")
    x = nn.relu(stem(x, None, *stem_plan, mode, delta, train=train))
    n = cfg.blocks_per_stage
    for i, plan in enumerate(blocks):
      stage, first = divmod(i, n)
      strides = 2 if stage > 0 and first == 0 else 1
      cin = cfg.widths[stage - 1] if strides == 2 else cfg.widths[stage]
      block = BasicBlock(cin, cfg.widths[stage], strides, name=f"block_{i}")
      x = block(x, plan, mode, delta, train=train)
    x = jnp.mean(x, axis=(1, 2))
    head = IndexedDense(cfg.widths[-1], cfg.num_classes, torch_linear_init, name="head")
    return head(x, _indices(blocks[-1].out_live, cfg.widths[-1]))


def build_model(cfg: NetConfig) -> nn.Module:
  return VGG(cfg) if cfg.kind == "vgg" else ResNet(cfg)


@functools.cache
def _init_fn(cfg: NetConfig, batch_size: int):
  x = jnp.zeros((batch_size, *cfg.input_size, cfg.in_channels), jnp.float32)
  model, arch = build_model(cfg), full_arch(cfg)
  return jax.jit(lambda r: model.init(r, x, arch, "soft", jnp.float32(1.0), train=False))


def init_dnal_variables(cfg: NetConfig, rng, batch_size: int = 2):
  """Parameters (gate logits 0) and batch statistics at their maximal shapes. The compiled
  initialiser is cached per configuration: a resumed run in the same process reuses it."""
  return _init_fn(cfg, batch_size)(rng)
