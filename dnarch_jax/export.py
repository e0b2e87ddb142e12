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

On disk, ``OUT/`` holds ``model.json`` (the format tag, the :class:`ExportSpec` that rebuilds the
module, the source run and checkpoint, costs, and the run's config) and ``variables.msgpack``:
the variables as ``flax.serialization`` msgpack (one portable file of plain NumPy arrays, read
without a target tree, no TensorStore; Orbax's directories fit training state better than a
deliverable). Variable collections: ``params`` (exactly what :func:`dnarch_jax.cost.params`
counts), ``batch_stats`` (BatchNorm running mean and variance) and ``constants`` (the baked
masks). Parameter names follow the trained network's (``stem_conv/kernel``, ``block_0/mixer``...).
``model.jax_export`` is the portable program described below.

Load it with one call::

    model, variables = dnarch_jax.load_exported("OUT")
    logits = model.apply(variables, x_BxSxC)

``OUT/model.jax_export`` is the same network as a portable program (:func:`portable_program`):
a serialized ``jax.export.Exported`` with the variables baked in and a symbolic batch dimension,
lowered for CPU, CUDA and TPU. A program with only ``jax`` (and its optional ``flatbuffers``)
installed runs it, without dnarch_jax::

    program = jax.export.deserialize(open("OUT/model.jax_export", "rb").read())
    logits = program.call(x_BxSxC)  # any batch size

Flax and the pure ops (``conv``, ``spectral``) are imported at module level; the training stack
(checkpoints, data, optimisers) only when a run is restored, so loading an export stays light.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import pathlib
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax import serialization

from dnarch_jax import conv, cost, spectral
from dnarch_jax.arch import Arch, arch_at_input_size, arch_sizes, initial_arch, width_param
from dnarch_jax.channels import select
from dnarch_jax.config import COMPUTE_DTYPES, HEADS, ModelConfig
from dnarch_jax.layers import SlicedBatchNorm, SlicedDense
from dnarch_jax.model import (
  DNArchCCNN,
  count_params,
  frequency_mask_fns,
  index_mask,
  width_mask_values,
)
from dnarch_jax.precision import add_in_float32, multiply_in_float32

FORMAT = "dnarch_jax.export"
FORMAT_VERSION = 1
SPEC_FILE = "model.json"
VARIABLES_FILE = "variables.msgpack"
PROGRAM_FILE = "model.jax_export"
# Every platform jax.export lowers to: the network's ops (lax.conv, FFTs, reductions) exist on each.
PROGRAM_PLATFORMS = ("cpu", "cuda", "tpu")
# The portable program's conv route: lax.conv_general_dilated is on every platform and takes a
# symbolic batch; the native routes are FFI calls into our library and the shift/fft routes chunk
# the batch by its (then unknown) size.
PROGRAM_CONV_ROUTE = "direct"


# --- the architecture of an exported network ---------------------------------------------------


@dataclasses.dataclass(frozen=True)
class ConvSpec:
  """A depthwise conv with a stored kernel: taps per axis, the route it runs by, a bias or not."""

  taps: tuple[int, ...]
  route: str
  use_bias: bool


@dataclasses.dataclass(frozen=True)
class BlockSpec:
  """A kept residual block. ``name`` is its name in the trained network (its parameters keep it);
  ``resample`` says whether it takes its input to ``resolution`` through its frequency mask."""

  name: str
  resolution: tuple[int, ...]
  resample: bool
  conv: ConvSpec
  hidden_width: int


@dataclasses.dataclass(frozen=True)
class ExportSpec:
  """Everything that rebuilds an exported network (its variables hold the numbers).

  ``width_masks``/``depth_gates``: whether the trained network multiplied activations by width
  masks / depth gates (learned width / depth), which the export then applies as constants.
  ``compute_dtype``: the trained network's ``ModelConfig.compute_dtype``; the export computes
  in it under the same rule (activations and products in it, parameters, BatchNorm and the head
  in float32). Exports written before it existed read as float32.
  """

  input_size: tuple[int, ...]
  in_channels: int
  num_classes: int
  head: str
  causal: bool
  stream_width: int
  stem: ConvSpec
  blocks: tuple[BlockSpec, ...]
  width_masks: bool
  depth_gates: bool
  bn_epsilon: float = SlicedBatchNorm.epsilon
  compute_dtype: str = "float32"

  @property
  def depth(self) -> int:
    return len(self.blocks)

  @property
  def input_shape(self) -> tuple[int, ...]:
    """One example's shape, ``(*spatial, channels)``."""
    return (*self.input_size, self.in_channels)

  def to_dict(self) -> dict[str, Any]:
    return dataclasses.asdict(self)

  @classmethod
  def from_dict(cls, d: Mapping[str, Any]) -> ExportSpec:
    """The inverse of ``to_dict``; ``ValueError``/``KeyError`` on an unknown head or route."""
    if d["head"] not in HEADS:
      raise ValueError(f"unknown head {d['head']!r}; expected one of {HEADS}")

    def conv_spec(c):
      if c["route"] not in conv.ROUTES:
        raise ValueError(f"unknown convolution route {c['route']!r}; expected one of {conv.ROUTES}")
      return ConvSpec(tuple(c["taps"]), c["route"], bool(c["use_bias"]))

    blocks = tuple(
      BlockSpec(
        b["name"],
        tuple(b["resolution"]),
        bool(b["resample"]),
        conv_spec(b["conv"]),
        int(b["hidden_width"]),
      )
      for b in d["blocks"]
    )
    return cls(
      input_size=tuple(d["input_size"]),
      in_channels=int(d["in_channels"]),
      num_classes=int(d["num_classes"]),
      head=d["head"],
      causal=bool(d["causal"]),
      stream_width=int(d["stream_width"]),
      stem=conv_spec(d["stem"]),
      blocks=blocks,
      width_masks=bool(d["width_masks"]),
      depth_gates=bool(d["depth_gates"]),
      bn_epsilon=float(d["bn_epsilon"]),
      compute_dtype=_compute_dtype(d.get("compute_dtype", "float32")),
    )

  def with_conv_route(self, route: str | Callable[[str], str]) -> ExportSpec:
    """The same network with every conv on ``route``, or on ``route(its route)`` (``"auto"``
    re-picks per device and shape; every route computes the same function, only speed differs)."""
    new_route = route if callable(route) else lambda _: route
    swap = lambda c: dataclasses.replace(c, route=new_route(c.route))
    blocks = tuple(dataclasses.replace(b, conv=swap(b.conv)) for b in self.blocks)
    return dataclasses.replace(self, stem=swap(self.stem), blocks=blocks)


def _compute_dtype(name: str) -> str:
  if name not in COMPUTE_DTYPES:
    raise ValueError(f"unknown compute_dtype {name!r}; expected one of {COMPUTE_DTYPES}")
  return name


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


# --- the exported network (Flax owns the parameters; the math is in conv and spectral) ---------


class DepthwiseConv(nn.Module):
  """Depthwise conv with a stored ``[*taps, C]`` kernel (same padding, or causal in 1D)."""

  taps: tuple[int, ...]
  causal: bool
  route: str
  use_bias: bool

  @nn.compact
  def __call__(self, x_BxSxC):
    channels = x_BxSxC.shape[-1]
    kernel = self.param("kernel", nn.initializers.zeros, (*self.taps, channels))
    y = conv.depthwise_conv(x_BxSxC, kernel, causal=self.causal, route=self.route)
    if self.use_bias:
      y = add_in_float32(y, self.param("bias", nn.initializers.zeros, (channels,)))
    return y


def _constant(module: nn.Module, name: str, shape) -> jax.Array:
  """A baked mask in the ``constants`` collection (ones, i.e. no mask, in a fresh ``init``)."""
  return module.variable("constants", name, jnp.ones, shape, jnp.float32).value


def _masked(x, mask):
  return x if mask is None else multiply_in_float32(x, mask)


def _norm(epsilon: float, name: str, x):
  """BatchNorm in eval mode on the running statistics (in float32, ``x``'s dtype out)."""
  return SlicedBatchNorm(x.shape[-1], epsilon=epsilon, name=name)(x, train=False)


def _frequency_bins(size: int, last_axis: bool) -> int:
  """DFT bins of a resampled axis: one-sided (``rfftn``) on the last spatial axis."""
  return size // 2 + 1 if last_axis else size


class ExportedBlock(nn.Module):
  """The trained block's eval pass with stored kernel and constant masks (model.Block)."""

  spec: BlockSpec
  causal: bool
  width_masks: bool
  depth_gate: bool
  bn_epsilon: float

  @nn.compact
  def __call__(self, x_BxSxC, stream_mask_C):
    b = self.spec
    if b.resample:
      ndim = len(b.resolution)
      fixed = [
        _constant(self, f"frequency_mask_{axis}", (_frequency_bins(n, axis == ndim - 1),))
        for axis, n in enumerate(b.resolution)
      ]
      x_BxSxC = spectral.spectral_resample(
        x_BxSxC, b.resolution, [lambda freq, m=m: m for m in fixed]
      )
    stream = x_BxSxC.shape[-1]
    h = _norm(self.bn_epsilon, "norm", x_BxSxC)
    h = _masked(h, stream_mask_C)
    h = DepthwiseConv(b.conv.taps, self.causal, b.conv.route, b.conv.use_bias, name="conv")(h)
    # The trained block's float32 steps (model.Block): biases, GELUs and masks in float32, the
    # products' inputs and the residual stream in the compute dtype.
    h, bias = SlicedDense(stream, b.hidden_width, name="mixer")(h, separate_bias=True)
    h = nn.gelu(h + bias)
    if self.width_masks:
      h = h * _constant(self, "hidden_mask", (b.hidden_width,))
    h, bias = SlicedDense(b.hidden_width, stream, name="linear")(
      h.astype(x_BxSxC.dtype), separate_bias=True
    )
    h = _masked(nn.gelu(h + bias), stream_mask_C)
    if self.depth_gate:
      h = h * _constant(self, "gate", ())
    return (x_BxSxC + h).astype(x_BxSxC.dtype)


class ExportedCCNN(nn.Module):
  """A discovered DNArch network at fixed shapes: ``apply(variables, x_BxSxC)`` -> logits
  ``[B, classes]`` (or ``[B, *spatial, classes]`` with the dense head). Eval mode only."""

  spec: ExportSpec

  @nn.compact
  def __call__(self, x_BxSxC):
    s = self.spec
    check_input_shape(s, x_BxSxC.shape)
    stream_mask = _constant(self, "stream_mask", (s.stream_width,)) if s.width_masks else None
    stem = s.stem
    x_BxSxC = x_BxSxC.astype(s.compute_dtype)
    h = DepthwiseConv(stem.taps, s.causal, stem.route, stem.use_bias, name="stem_conv")(x_BxSxC)
    h = SlicedDense(s.in_channels, s.stream_width, use_bias=False, name="stem_mixer")(h)
    h = _norm(s.bn_epsilon, "stem_norm", h)
    h = _masked(nn.gelu(h), stream_mask)
    for b in s.blocks:
      block = ExportedBlock(b, s.causal, s.width_masks, s.depth_gates, s.bn_epsilon, name=b.name)
      h = block(h, stream_mask)
    h = _norm(s.bn_epsilon, "head_norm", h.astype(jnp.float32))  # the head runs in float32
    h = _masked(h, stream_mask)
    head = nn.Dense(s.num_classes, name="head")
    if s.head == "dense":
      if tuple(h.shape[1:-1]) != tuple(s.input_size):
        h = spectral.spectral_resample(h, s.input_size)
      return head(h)
    return head(jnp.mean(h, axis=tuple(range(1, h.ndim - 1))))


def check_input_shape(spec: ExportSpec, shape, source: str = "input") -> None:
  """Raise ``ValueError`` naming ``source`` unless ``shape`` is ``[batch, *spatial, channels]``."""
  # The batch may be symbolic (jax.export's "batch" dimension): only the rest must be integers.
  batch, example = (shape[0], tuple(shape[1:])) if len(shape) else (0, ())
  expected = spec.input_shape
  if len(shape) != len(expected) + 1 or tuple(int(n) for n in example) != expected:
    want = ", ".join(map(str, expected))
    raise ValueError(
      f"{source}: an array of shape {list(shape)} does not match the model's input "
      f"[batch, {want}] ({len(spec.input_size)}D, {spec.in_channels} channel(s) last)"
    )
  if isinstance(batch, int) and batch < 1:
    raise ValueError(f"{source}: the batch is empty (shape {list(shape)})")


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
  if cfg.learn_width:
    constants["stream_mask"] = width_mask_values(
      params[width_param(cfg, "stream")], cfg.width, c, cfg
    )
  gates = None
  if cfg.learn_depth:
    depth_cutoff = params["arch_depth_cutoff"]
    gates = index_mask(
      depth_cutoff, cfg.num_blocks, cfg.num_blocks, cfg.depth_temperature, cfg.threshold
    )
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
      block_constants["hidden_mask"] = width_mask_values(
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
  native-route convs compiled as their XLA equivalent: ``conv.xla_countable_route``)."""
  model = model.clone(spec=model.spec.with_conv_route(conv.xla_countable_route))
  x = jax.ShapeDtypeStruct((batch_size, *model.spec.input_shape), jnp.float32)
  compiled = jax.jit(model.apply).lower(variables, x).compile()
  analysis = compiled.cost_analysis()
  if isinstance(analysis, list):  # older jax returned one dict per computation
    analysis = analysis[0]
  return float(analysis["flops"]) / batch_size


# --- files -------------------------------------------------------------------------------------


def save_exported(
  out: str | os.PathLike, spec: ExportSpec, variables, info: Mapping[str, Any] | None = None
) -> pathlib.Path:
  """Write ``OUT/model.json`` (spec and ``info``) and ``OUT/variables.msgpack``; returns OUT.

  Each file is written under a temporary name and renamed, so a crash never leaves a torn one.
  """
  out = pathlib.Path(out)
  out.mkdir(parents=True, exist_ok=True)
  host = jax.tree_util.tree_map(lambda a: np.asarray(jax.device_get(a)), dict(variables))
  document = {"format": FORMAT, "version": FORMAT_VERSION, "spec": spec.to_dict(), **(info or {})}
  _write_atomic(out / VARIABLES_FILE, serialization.msgpack_serialize(host))
  _write_atomic(out / SPEC_FILE, (json.dumps(document, indent=2) + "\n").encode())
  return out


def portable_program(spec: ExportSpec, variables) -> bytes:
  """The exported network as a serialized ``jax.export.Exported``: ``x [batch, *input_shape]``
  (float32, batch symbolic) -> logits, variables baked in as constants, every conv on
  ``PROGRAM_CONV_ROUTE``, lowered for ``PROGRAM_PLATFORMS``. The same function as
  ``ExportedCCNN(spec).apply(variables, x)`` (the conv route changes the rounding only)."""
  model = ExportedCCNN(spec.with_conv_route(PROGRAM_CONV_ROUTE))
  (batch,) = jax.export.symbolic_shape("batch")
  x = jax.ShapeDtypeStruct((batch, *spec.input_shape), jnp.float32)
  apply = jax.jit(lambda x: model.apply(variables, x))
  return jax.export.export(apply, platforms=PROGRAM_PLATFORMS)(x).serialize()


def _write_atomic(path: pathlib.Path, data: bytes) -> None:
  tmp = path.with_name(path.name + ".tmp")
  tmp.write_bytes(data)
  os.replace(tmp, path)


def _model_dir(path: str | os.PathLike) -> pathlib.Path:
  path = pathlib.Path(path)
  return path.parent if path.name == SPEC_FILE else path


def read_spec(path: str | os.PathLike) -> tuple[ExportSpec, dict[str, Any]]:
  """``(spec, document)`` of an exported model (its folder or its ``model.json``); no arrays read.

  Raises ``FileNotFoundError``/``ValueError`` naming the file when it is missing or not an export.
  """
  folder = _model_dir(path)
  spec_path = folder / SPEC_FILE
  if not folder.is_dir():
    raise FileNotFoundError(f"{folder}: no such exported model folder (see dnarch export)")
  if not spec_path.is_file():
    raise FileNotFoundError(f"{spec_path}: missing; {folder} holds no dnarch export")
  try:
    document = json.loads(spec_path.read_text())
  except (ValueError, UnicodeDecodeError) as error:
    raise ValueError(f"{spec_path}: not valid JSON ({error})") from error
  if not isinstance(document, dict) or document.get("format") != FORMAT:
    raise ValueError(f'{spec_path}: not a dnarch export (no "format": "{FORMAT}")')
  if document.get("version") != FORMAT_VERSION:
    raise ValueError(
      f"{spec_path}: export format version {document.get('version')!r}; this dnarch_jax reads "
      f"version {FORMAT_VERSION}"
    )
  try:
    spec = ExportSpec.from_dict(document["spec"])
  except (KeyError, TypeError, ValueError) as error:
    raise ValueError(f"{spec_path}: malformed spec ({type(error).__name__}: {error})") from error
  return spec, document


def load_exported(
  path: str | os.PathLike, conv_route: str | None = None
) -> tuple[ExportedCCNN, dict[str, Any]]:
  """``(model, variables)`` of an exported network; ``model.apply(variables, x)`` -> logits.

  Args:
    path: the folder ``dnarch export --out`` wrote (or its ``model.json``).
    conv_route: run every conv on this route instead of the one the trained ``Arch`` used
      (e.g. ``"auto"`` on a GPU); the function is the same, only the speed changes.

  The variables are checked against the module's own shapes before anything compiles.
  """
  spec, _ = read_spec(path)
  if conv_route is not None:
    if conv_route != "auto" and conv_route not in conv.ROUTES:
      raise ValueError(f"conv_route: unknown route {conv_route!r}; use 'auto' or {conv.ROUTES}")
    spec = spec.with_conv_route(conv_route)
  variables_path = _model_dir(path) / VARIABLES_FILE
  if not variables_path.is_file():
    raise FileNotFoundError(f"{variables_path}: missing; export the run again with dnarch export")
  try:
    restored = serialization.msgpack_restore(variables_path.read_bytes())
  except Exception as error:  # msgpack raises several unrelated types on corrupt bytes
    raise ValueError(f"{variables_path}: unreadable ({type(error).__name__}: {error})") from error
  model = ExportedCCNN(spec)
  x = jax.ShapeDtypeStruct((1, *spec.input_shape), jnp.float32)
  expected = jax.eval_shape(model.init, jax.random.key(0), x)
  _check_variables(variables_path, expected, restored)
  variables = {k: jax.tree_util.tree_map(jnp.asarray, restored[k]) for k in expected}
  return model, variables


def _check_variables(source: pathlib.Path, expected, restored) -> None:
  """Same tree and shapes as the module declares, or a ``ValueError`` naming the first misfit."""
  flat = lambda tree: {
    jax.tree_util.keystr(p): np.shape(v) for p, v in jax.tree_util.tree_flatten_with_path(tree)[0]
  }
  want, got = flat(dict(expected)), flat(restored if isinstance(restored, dict) else {})
  if want.keys() != got.keys():
    missing, extra = sorted(want.keys() - got.keys()), sorted(got.keys() - want.keys())
    raise ValueError(
      f"{source}: variables do not fit model.json (missing {missing[:3]}, unexpected {extra[:3]})"
    )
  for key, shape in want.items():
    if tuple(got[key]) != tuple(shape):
      raise ValueError(f"{source}: {key} has shape {list(got[key])}, the model needs {list(shape)}")


# --- from a workdir ------------------------------------------------------------------------------


@dataclasses.dataclass
class TrainedRun:
  """A run's checkpoint as the trained network: model config, variables, its ``Arch``."""

  config: Any  # ml_collections.ConfigDict of the run
  cfg: ModelConfig
  variables: dict
  arch: Arch
  step: int
  checkpoint: str
  batch_size: int


def restore_run(workdir: str | os.PathLike, checkpoint: str = "best") -> TrainedRun:
  """The ``best`` (by validation accuracy; the latest if none is ranked) or ``latest`` checkpoint
  of a run, restored onto one device. Needs no data and compiles no model: the target tree comes
  from ``jax.eval_shape`` of the model's initialisation and the run's optimiser."""
  from dnarch_jax import workdir as workdir_lib
  from dnarch_jax.checkpoint import Checkpointer
  from dnarch_jax.experiment import run_model_config
  from dnarch_jax.optim import make_optimizer
  from dnarch_jax.steps import create_train_state
  from dnarch_jax.train import load_run_config

  workdir = pathlib.Path(workdir)
  if not workdir.is_dir():
    raise FileNotFoundError(f"{workdir}: no such workdir")
  config = load_run_config(workdir)
  method = config.get("method", "dnarch")
  if method != "dnarch":  # e.g. DNAL's pruned CNNs: another network, without an Arch
    raise ValueError(f"{workdir}: a {method!r} run; dnarch export exports DNArch runs")
  # Before Orbax is opened: its start-up clean-up thread would outlive the error and print a
  # traceback at exit.
  workdir_lib.check_has_checkpoint(workdir)
  cfg = run_model_config(config)
  model = DNArchCCNN(cfg)
  x = jnp.zeros((2, *cfg.input_size, cfg.in_channels), jnp.float32)
  full = initial_arch(cfg, crop=False)
  key = jax.random.key(0)
  abstract_vars = jax.eval_shape(lambda r: model.init(r, x, full, train=False), key)
  # Schedules are closures: the optimiser state's structure does not depend on the step counts.
  tx = make_optimizer(dict(config.optim), abstract_vars["params"], 1, 1)
  abstract_state = jax.eval_shape(lambda v, r: create_train_state(v, tx, r), abstract_vars, key)
  device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
  abstract_state = jax.tree_util.tree_map(
    lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=device), abstract_state
  )
  ckpt = Checkpointer(workdir / "checkpoints")
  try:
    state, meta, step = ckpt.restore_for_reading(abstract_state, checkpoint)
  finally:
    ckpt.close()
  variables = {"params": state.params, "batch_stats": state.batch_stats}
  arch = Arch.from_dict(meta["arch"])
  return TrainedRun(config, cfg, variables, arch, int(step), checkpoint, config.data.batch_size)


_LAYER_FIELDS = ("name", "kernel_taps", "width", "hidden_width", "resolution", "route", "flops")


def export_run(
  workdir: str | os.PathLike,
  out: str | os.PathLike,
  checkpoint: str = "best",
  with_xla: bool = True,
  input_size: Sequence[int] | None = None,
) -> dict[str, Any]:
  """Export a run's discovered network to ``out``; returns what ``dnarch export`` prints.

  ``input_size``: export the network for inputs of this size instead of the training one
  (:func:`dnarch_jax.arch.arch_at_input_size`: the kernels sampled on the new grid).

  Returns the folder, the checkpoint's step, parameters, FLOPs per example (``flops_model`` as
  ``dnarch summary`` counts the final ``Arch``, ``flops_exported`` without kernel sampling, and
  XLA's count of the compiled exported forward pass unless ``with_xla`` is off), and the layers.
  """
  from dnarch_jax.summary import summarize

  run = restore_run(workdir, checkpoint)
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
  flops_xla = xla_flops(model, variables, run.batch_size) if with_xla else None
  result = dict(
    out=str(pathlib.Path(out).resolve()),
    workdir=str(pathlib.Path(workdir).resolve()),
    checkpoint=checkpoint,
    step=run.step,
    **costs,
    flops_xla=flops_xla,
    batch_size=run.batch_size,
    depth=spec.depth,
    stream_width=spec.stream_width,
    layers=[{k: layer[k] for k in _LAYER_FIELDS} for layer in summary["layers"] if layer["active"]],
  )
  program = dict(
    file=PROGRAM_FILE,
    platforms=list(PROGRAM_PLATFORMS),
    input=["batch", *spec.input_shape],
    jax_version=jax.__version__,
  )
  info = dict(result, arch=run.arch.to_dict(), config=json.loads(run.config.to_json()))
  info.pop("out")
  save_exported(out, spec, variables, dict(info, program=program))
  _write_atomic(pathlib.Path(out) / PROGRAM_FILE, portable_program(spec, variables))
  return dict(result, program=str(pathlib.Path(result["out"]) / PROGRAM_FILE))


# --- prediction ----------------------------------------------------------------------------------


def load_input(path: str | os.PathLike, spec: ExportSpec) -> np.ndarray:
  """A ``.npy`` batch ``[B, *spatial, C]`` (floats, normalised as in training), checked against
  ``spec`` before anything compiles; ``ValueError`` naming the file and the shape otherwise."""
  path = pathlib.Path(path)
  if not path.is_file():
    raise FileNotFoundError(f"{path}: no such input file")
  try:
    x = np.load(path, allow_pickle=False)
  except (ValueError, OSError) as error:  # NumPy reads any non-.npy bytes as a pickle
    raise ValueError(f"{path}: not a .npy array (write the batch with numpy.save)") from error
  if not isinstance(x, np.ndarray):  # an .npz archive
    raise ValueError(f"{path}: expected one .npy array, got an archive of {list(x.keys())}")
  if not np.issubdtype(x.dtype, np.floating):
    raise ValueError(
      f"{path}: dtype {x.dtype}; the model takes float inputs normalised as in training"
    )
  check_input_shape(spec, x.shape, source=str(path))
  return x.astype(np.float32, copy=False)


def predict_logits(model: ExportedCCNN, variables, x: np.ndarray, batch_size: int) -> np.ndarray:
  """Logits for ``x`` in batches of ``batch_size`` (the last one padded: one compile)."""
  if batch_size < 1:
    raise ValueError(f"--batch-size: must be positive, got {batch_size}")
  check_input_shape(model.spec, x.shape)
  n = x.shape[0]
  size = min(batch_size, n)
  apply = jax.jit(model.apply)
  outputs = []
  for start in range(0, n, size):
    chunk = x[start : start + size]
    real = chunk.shape[0]
    if real < size:  # BatchNorm is in eval mode: padded rows do not touch the real ones
      chunk = np.concatenate([chunk, np.zeros((size - real, *chunk.shape[1:]), chunk.dtype)])
    outputs.append(np.asarray(apply(variables, jnp.asarray(chunk)))[:real])
  return np.concatenate(outputs)


def prediction_paths(output: str | os.PathLike) -> tuple[pathlib.Path, pathlib.Path]:
  """Where ``dnarch predict --output FILE.npy`` writes classes and logits (``FILE.logits.npy``)."""
  out = pathlib.Path(output)
  if out.suffix != ".npy":
    out = out.with_name(out.name + ".npy")  # np.save would append it anyway
  return out, out.with_name(out.name[: -len(".npy")] + ".logits.npy")
