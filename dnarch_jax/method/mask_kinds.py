"""Each kind of architecture mask in one home (METHOD.md §4-6).

A mask kind owns everything about its dimension's mask: its parameter (name, shape, initial
value, box in the search space), how the network applies it, the integer size of the crop its
extent gives (host floats -> ints for the static ``Arch``; traced scalars -> traced sizes), and
the size the loss's cost model sees (that crop's size as the value, the gradient of the mask's
continuous extent: straight-through, [design] in ``sizes.soft_sizes``). The model, ``arch``, the
cost and the search space ask the kind; none of them switches on a mask's name.

* :data:`KERNEL` (gaussian over tap positions, ``arch_sigma``): every continuous conv's size.
* :class:`OrderedWidthMask` (``width_mask="sigmoid_cutoff"``, ``arch_*_cutoff``): keeps the first
  channels, their count rounded up to the width bucket; :data:`DEPTH` is the same sigmoid cutoff
  over block indices (``arch_depth_cutoff``, no bucket).
* :class:`GateWidthMask` (``width_mask="scaled_sigmoid_gate"``, ``arch_*_gate``): DNAL's scaled
  sigmoid gate per channel; keeps any subset.
* :class:`SigmoidFrequencyMask` (``resolution_mask="sigmoid"``) and :class:`RampFrequencyMask`
  (``"ramp"``, DiffStride's): a block's low-pass mask over normalised frequency
  (``arch_resolution_cutoff``); the kept band sets the block's resolution.

:func:`width_mask` and :func:`resolution_mask` give a config's kinds. A new kind is one class
here and one name in ``config.WIDTH_MASKS`` / ``config.RESOLUTION_MASKS``.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from dnarch_jax.config import ModelConfig
from dnarch_jax.method import grids, masks
from dnarch_jax.method.channels import Channels, select

# --- shared arithmetic: extents -> integer sizes -----------------------------------------------
# Each works on host floats (returning ints, for the static Arch) and on traced JAX scalars (the
# loss's cost model counts the crop the current mask parameters give with the same arithmetic).


def straight_through(value, relaxed):
  """``value`` in the forward pass, the gradient of ``relaxed`` in the backward pass.

  The loss's cost model sees the integer sizes of the crop that runs (so the budget term acts on
  the cost actually computed) and differentiates their continuous relaxation [design].
  """
  return relaxed + jax.lax.stop_gradient(value - relaxed)


def index_coordinates(count: int) -> np.ndarray:
  """Normalised index ``u_i = i / (count - 1)`` of channels or blocks (0 for a single one)."""
  return np.arange(count) / max(count - 1, 1)


def kept_count(extent, count: int):
  """Elements with ``u_i <= extent``; never fewer than 1 (the first element is always kept)."""
  xp = masks.array_module(extent)
  n = xp.clip(xp.floor(extent * max(count - 1, 1) + 1e-9) + 1, 1, count)
  return int(n) if xp is np else n


def round_up(value, bucket: int, limit: int):
  xp = masks.array_module(value)
  out = xp.minimum(limit, bucket * xp.ceil(value / bucket))
  return int(out) if xp is np else out


def sigmoid_shoulder(temperature: float, threshold: float) -> float:
  """How far past its last kept element a sigmoid cutoff's box reaches: the mask is ``1 - t``
  there (``a = ln(1/t - 1) / tau``, ``search_space``)."""
  return math.log(1.0 / threshold - 1.0) / temperature


def index_mask(cutoff, count: int, used: int, temperature: float, threshold: float):
  """Thresholded sigmoid-cutoff mask over the first ``used`` of ``count`` channels or blocks.

  The first element is never thresholded, so a network keeps at least one channel and one block
  and the cutoff always receives a gradient.
  """
  u = jnp.asarray(index_coordinates(count)[:used], jnp.float32)
  m = masks.sigmoid_cutoff(u, cutoff, temperature)
  return masks.thresholded(m, threshold).at[0].set(m[0])


def gate_mask(s, delta: float, threshold: float):
  """Thresholded scaled sigmoid gates ``sigmoid(delta s)``; the largest gate is never thresholded
  (the channel a layer keeps when none reaches the threshold, ``masks.scaled_sigmoid_gate_kept``).
  """
  g = masks.scaled_sigmoid_gate(s, delta)
  largest = jnp.arange(g.shape[0]) == jnp.argmax(g)
  return jnp.where(largest, g, masks.thresholded(g, threshold))


# --- kernel size: a gaussian over tap positions ---------------------------------------------------


class GaussianKernelMask:
  """A continuous conv's size mask: ``thresholded(gaussian(p, mu, sigma))`` over its taps.

  Its extent is the radius where the gaussian falls to the threshold, cropped to whole taps of
  the layer's grid at the resolution it runs at and rounded up to the kernel bucket.
  """

  param = "arch_sigma"

  @staticmethod
  def values(p_KxD, mu_D, sigma_D, threshold: float):
    """The mask at tap positions ``p_KxD`` (``[*K]``): the application."""
    return masks.thresholded(masks.gaussian(jnp.asarray(p_KxD), mu_D, sigma_D), threshold)

  @staticmethod
  def bounds(cfg: ModelConfig, resolution=None) -> tuple[np.ndarray, np.ndarray]:
    """Sigma's box per axis at the ``resolution`` the layer runs at (the input's by default):
    from a radius of one grid step (3 taps, 2 causal) to the whole grid (radius 1, or 2 for a
    causal kernel, whose mask is centred at +1)."""
    spread = math.sqrt(-2.0 * math.log(cfg.threshold))  # radius = sigma * spread
    resolution = cfg.input_size if resolution is None else resolution
    steps = [
      grids.grid_step(cfg.grid_size(a), cfg.input_size[a], resolution[a]) for a in range(cfg.ndim)
    ]
    high = np.full(cfg.ndim, (2.0 if cfg.causal else 1.0) / spread)
    # 5% past the next tap, so its mask value clears the threshold in float32 too.
    return np.minimum(1.05 * np.asarray(steps) / spread, high), high

  @staticmethod
  def taps(sigma, n: int, input_size: int, resolution, causal: bool, threshold, bucket, limit):
    """Taps along one axis (host or traced sigma): the crop."""
    radius = masks.gaussian_radius(sigma, threshold)
    return grids.bucket_taps(
      grids.crop_taps(radius, n, input_size, resolution, causal), bucket, limit
    )

  @staticmethod
  def soft_taps(sigma, n: int, input_size: int, resolution, causal: bool, threshold, bucket):
    """The crop's taps as the value, the gradient of the extent's continuous tap count
    ``1 + 2 r / step`` (causal ``1 + r / step``)."""
    radius = masks.gaussian_radius(jnp.asarray(sigma, jnp.float32), threshold)
    limit = grids.max_taps(n, input_size, resolution, causal)
    taps = grids.bucket_taps(
      grids.crop_taps(radius, n, input_size, resolution, causal), bucket, limit
    )
    return straight_through(taps, grids.relaxed_taps(radius, n, input_size, resolution, causal))


KERNEL = GaussianKernelMask()


# --- width: which channels a layer keeps ----------------------------------------------------------


class WidthMask:
  """A width mask over ``count`` channels of the stream (``kind="stream"``) or a hidden layer."""

  name: str
  suffix: str

  def param_name(self, kind: str) -> str:
    """``arch_stream_cutoff``, ``arch_hidden_gate``...: the parameter's name in the tree."""
    return f"arch_{kind}_{self.suffix}"

  def param_shape(self, count: int) -> tuple[int, ...]:
    raise NotImplementedError

  def initial_param(self, cfg: ModelConfig, count: int) -> np.ndarray:
    raise NotImplementedError

  def values(self, param, count: int, channels: Channels, cfg: ModelConfig):
    """The thresholded mask on the ``channels`` computed (of ``count``): the application."""
    raise NotImplementedError

  def kept(self, param, cfg: ModelConfig, count: int) -> Channels:
    """What the crop keeps: a count of first channels, or channel indices."""
    raise NotImplementedError

  def soft_width(self, param, cfg: ModelConfig, count: int):
    """The loss's width: the kept count as the value, the gradient of the relaxed one."""
    raise NotImplementedError

  def bounds(self, cfg: ModelConfig) -> tuple[np.ndarray, np.ndarray]:
    """The parameter's box in the search space."""
    raise NotImplementedError

  def box_width(self, cfg: ModelConfig) -> float:
    """The scale of the architecture optimiser's steps on this parameter."""
    low, high = self.bounds(cfg)
    return float(np.max(high - low))

  # Whether a given size can be set (``crops.params_for_arch``): sizes, not subsets, are crops.
  sizes_settable: bool = True


class OrderedWidthMask(WidthMask):
  """``sigmoid_cutoff(u_i, z, tau)`` over the channels' normalised index: keeps the first
  ``extent * (count - 1) + 1`` channels, rounded up to ``width_bucket``."""

  name, suffix = "sigmoid_cutoff", "cutoff"

  def param_shape(self, count):
    return ()

  def initial_param(self, cfg, count):
    return np.asarray(cfg.width_init_cutoff)

  def values(self, param, count, channels, cfg):
    return index_mask(param, count, channels, cfg.width_temperature, cfg.threshold)

  def count(self, cutoff, cfg: ModelConfig, count: int):
    """Channels kept, rounded up to the width bucket (host or traced)."""
    e = masks.sigmoid_cutoff_extent(cutoff, cfg.width_temperature, cfg.threshold)
    return round_up(kept_count(e, count), cfg.width_bucket, count)

  def kept(self, param, cfg, count):
    return self.count(float(param), cfg, count)

  def soft_width(self, param, cfg, count):
    e = masks.sigmoid_cutoff_extent(param, cfg.width_temperature, cfg.threshold)
    return straight_through(self.count(param, cfg, count), e * max(count - 1, 1) + 1)

  def bounds(self, cfg):
    a = sigmoid_shoulder(cfg.width_temperature, cfg.threshold)
    return np.asarray(-a), np.asarray(1.0 + a)


# Gate logits start at width_gate_init minus this much times the channel's normalised index.
GATE_INIT_TIE_BREAK = 0.01


class GateWidthMask(WidthMask):
  """DNAL's scaled sigmoid gate ``sigmoid(width_gate_delta * s_c)`` per channel: keeps the
  channels whose gate reaches the threshold (any subset; no bucket: the kept set, not its size,
  is what changes), the largest gate always."""

  name, suffix = "scaled_sigmoid_gate", "gate"
  sizes_settable = False

  def param_shape(self, count):
    return (count,)

  def initial_param(self, cfg, count):
    """Logits decrease very slightly with the channel index [design]: equal logits would cross
    the threshold together, so a hard budget's projection at initialisation (which moves every
    logit towards the smallest network) could only keep all channels or one; with the tie broken
    it removes the last channels first, as the ordered mask does, and training reorders them."""
    return cfg.width_gate_init - GATE_INIT_TIE_BREAK * index_coordinates(count)

  def values(self, param, count, channels, cfg):
    # Thresholded over all ``count`` channels, then selected: the cropped network sees the
    # values the full one does.
    return select(gate_mask(param, cfg.width_gate_delta, cfg.threshold), channels)

  def kept(self, param, cfg, count):
    return masks.scaled_sigmoid_gate_kept(param, cfg.width_gate_delta, cfg.threshold)

  def soft_width(self, param, cfg, count):
    gates = masks.scaled_sigmoid_gate(param, cfg.width_gate_delta)
    kept = jnp.maximum(jnp.sum(gates >= cfg.threshold), 1)
    return straight_through(kept, jnp.sum(gates))

  def bounds(self, cfg):
    return np.asarray(-np.inf), np.asarray(np.inf)  # the sigmoid saturates by itself

  def box_width(self, cfg):
    return 1.0  # unbounded logits keep the plain rate


WIDTH_MASKS = {kind.name: kind for kind in (OrderedWidthMask(), GateWidthMask())}


def width_mask(cfg: ModelConfig) -> WidthMask:
  return WIDTH_MASKS[cfg.width_mask]


# --- depth: which blocks the network keeps --------------------------------------------------------


class DepthMask:
  """``sigmoid_cutoff(u_l, z, tau)`` over the blocks' normalised index (``arch_depth_cutoff``):
  block ``l`` is kept while ``u_l <= extent``, block 0 always."""

  param = "arch_depth_cutoff"

  @staticmethod
  def values(cutoff, cfg: ModelConfig):
    """The gate each block's residual branch is multiplied by: the application."""
    return index_mask(cutoff, cfg.num_blocks, cfg.num_blocks, cfg.depth_temperature, cfg.threshold)

  @staticmethod
  def kept(cutoff, cfg: ModelConfig):
    """Per block, whether the crop keeps it (host or traced)."""
    e = masks.sigmoid_cutoff_extent(cutoff, cfg.depth_temperature, cfg.threshold)
    xp = masks.array_module(e)
    kept = index_coordinates(cfg.num_blocks) <= e + 1e-12
    return xp.where(np.arange(cfg.num_blocks) == 0, True, kept)

  @classmethod
  def soft_gates(cls, cutoff, cfg: ModelConfig):
    """The loss's depth gates: 1 for a kept block and 0 for a skipped one, with the gradient of
    a unit ramp per block in the continuous block count ``extent * (L - 1) + 1`` (block ``l``
    goes from off to on as the count goes from ``l`` to ``l + 1``; its ends included, so the gate
    at the edge of the kept blocks is never flat) [design]."""
    e = masks.sigmoid_cutoff_extent(cutoff, cfg.depth_temperature, cfg.threshold)
    z = e * max(cfg.num_blocks - 1, 1) + 1 - jnp.arange(cfg.num_blocks)
    # The last block's ramp goes on above 1: the cutoff's box reaches past the extent of the
    # last block (search_space), and the cost must pull it back from there too.
    last = jnp.arange(cfg.num_blocks) == cfg.num_blocks - 1
    on_ramp = jax.lax.stop_gradient(((z >= 0) & ((z <= 1) | last)).astype(jnp.float32))
    relaxed = jax.lax.stop_gradient(jnp.clip(z, 0, 1)) + on_ramp * (z - jax.lax.stop_gradient(z))
    gates = straight_through(cls.kept(cutoff, cfg).astype(jnp.float32), relaxed)
    return [gates[l] if l else jnp.ones(()) for l in range(cfg.num_blocks)]

  @staticmethod
  def bounds(cfg: ModelConfig):
    a = sigmoid_shoulder(cfg.depth_temperature, cfg.threshold)
    return np.asarray(-a), np.asarray(1.0 + a)


DEPTH = DepthMask()


# --- resolution: the band a block keeps -----------------------------------------------------------


class FrequencyMask:
  """A block's low-pass mask over normalised frequency ``u = f / (N / 2)`` per axis."""

  name: str

  def values(self, u, cutoff, cfg: ModelConfig, axis: int):
    """The mask at normalised frequencies ``u`` along ``axis``: the application."""
    raise NotImplementedError

  def extent(self, cutoff, cfg: ModelConfig, axis: int):
    """Largest normalised frequency kept along ``axis`` (host or traced)."""
    raise NotImplementedError

  def low(self, cfg: ModelConfig) -> np.ndarray:
    """The bottom of the cutoff's box per axis (the top is 1 + the shoulder, or 1)."""
    raise NotImplementedError

  def high(self, cfg: ModelConfig) -> np.ndarray:
    raise NotImplementedError

  def size(self, cutoff, cfg: ModelConfig, axis: int):
    """Size along ``axis`` keeping every frequency whose mask is >= t, rounded up to the bucket
    (host or traced): an even size below the input's, or the input's own size ``N``.

    An odd ``N`` has no Nyquist bin: its highest frequency ``(N - 1) / 2`` is a +-pair that only
    an odd grid of ``N`` points holds without folding it onto one real bin, so a crop that keeps
    it is ``N`` itself, never ``N - 1``."""
    big_n = cfg.input_size[axis]
    e = self.extent(cutoff, cfg, axis)
    xp = masks.array_module(e)
    size = xp.clip(2 * xp.floor(e * big_n / 2 + 1e-9), cfg.resolution_bucket, big_n)
    size = xp.where(size >= 2 * (big_n // 2), big_n, size)  # only ever changes an odd N
    return round_up(size, cfg.resolution_bucket, big_n)

  def soft_size(self, cutoff, cfg: ModelConfig, axis: int):
    """The loss's resolution along ``axis``: the crop's size as the value, the gradient of the
    continuous size ``extent * N``."""
    big_n = cfg.input_size[axis]
    return straight_through(self.size(cutoff, cfg, axis), self.extent(cutoff, cfg, axis) * big_n)


class SigmoidFrequencyMask(FrequencyMask):
  """``sigmoid_cutoff(u, z, tau)``: DNArch's resolution mask."""

  name = "sigmoid"

  def values(self, u, cutoff, cfg, axis):
    return masks.sigmoid_cutoff(u, cutoff, cfg.resolution_temperature)

  def extent(self, cutoff, cfg, axis):
    return masks.sigmoid_cutoff_extent(cutoff, cfg.resolution_temperature, cfg.threshold)

  def low(self, cfg):
    a = sigmoid_shoulder(cfg.resolution_temperature, cfg.threshold)
    return np.full(cfg.ndim, cfg.resolution_min - a)

  def high(self, cfg):
    return np.full(cfg.ndim, 1.0 + sigmoid_shoulder(cfg.resolution_temperature, cfg.threshold))


class RampFrequencyMask(FrequencyMask):
  """DiffStride's ramp ``clip((R + z - u) / R, 0, 1)`` with ``R`` = ``resolution_ramp`` bins."""

  name = "ramp"

  @staticmethod
  def ramp_width(cfg: ModelConfig, axis: int) -> float:
    """DiffStride's R (frequency bins) in normalised frequency units along ``axis``."""
    return cfg.resolution_ramp / (cfg.input_size[axis] / 2)

  def values(self, u, cutoff, cfg, axis):
    return masks.ramp(u, cutoff, self.ramp_width(cfg, axis))

  def extent(self, cutoff, cfg, axis):
    return masks.ramp_extent(cutoff, self.ramp_width(cfg, axis), cfg.threshold)

  def low(self, cfg):
    ramp = np.asarray([self.ramp_width(cfg, a) for a in range(cfg.ndim)])
    return cfg.resolution_min - ramp * (1.0 - cfg.threshold)

  def high(self, cfg):
    return np.ones(cfg.ndim)


RESOLUTION_MASKS = {kind.name: kind for kind in (SigmoidFrequencyMask(), RampFrequencyMask())}


def resolution_mask(cfg: ModelConfig) -> FrequencyMask:
  return RESOLUTION_MASKS[cfg.resolution_mask]
