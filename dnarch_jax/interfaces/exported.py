"""An exported network: a discovered architecture as a plain, fixed-shape Flax Linen network.

What ``dnarch export`` writes (``dnarch_jax.interfaces.export``) and what reads it back, with no
masks to learn, no kernel nets and no training stack: the :class:`ExportSpec` that rebuilds the
module (:class:`ExportedCCNN`; DNAL's pruned CNNs have their own spec, ``dnarch_jax.dnal.export``),
the files (``model.json``, ``variables.msgpack``, the portable ``model.jax_export`` program),
:func:`load_exported` and the helpers of ``dnarch predict``. Load an export with one call::

    model, variables = dnarch_jax.load_exported("OUT")
    logits = model.apply(variables, x_BxSxC)

or, with only ``jax`` installed::

    program = jax.export.deserialize(open("OUT/model.jax_export", "rb").read())
    logits = program.call(x_BxSxC)  # any batch size
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
from collections.abc import Callable, Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax import serialization

from dnarch_jax.config import COMPUTE_DTYPES, HEADS
from dnarch_jax.method import spectral
from dnarch_jax.network import conv
from dnarch_jax.network.conv_routes import ROUTES
from dnarch_jax.network.layers import SlicedBatchNorm, SlicedDense
from dnarch_jax.precision import add_in_float32, multiply_in_float32

FORMAT = "dnarch_jax.interfaces.export"
FORMAT_VERSION = 1
# DNAL's pruned CNNs (dnarch_jax.dnal.export), read by the same loader and ``dnarch predict``.
DNAL_FORMAT = "dnarch_jax.dnal_export"
DNAL_FORMAT_VERSION = 1
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
      if c["route"] not in ROUTES:
        raise ValueError(f"unknown convolution route {c['route']!r}; expected one of {ROUTES}")
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


# --- files -------------------------------------------------------------------------------------


def save_exported(
  out: str | os.PathLike,
  spec,
  variables,
  info: Mapping[str, Any] | None = None,
  format: str = FORMAT,
  version: int = FORMAT_VERSION,
) -> pathlib.Path:
  """Write ``OUT/model.json`` (format, spec and ``info``) and ``OUT/variables.msgpack``; returns
  OUT. ``spec``: an :class:`ExportSpec`, or DNAL's ``DnalExportSpec`` with its own format tag.

  Each file is written under a temporary name and renamed, so a crash never leaves a torn one.
  """
  out = pathlib.Path(out)
  out.mkdir(parents=True, exist_ok=True)
  host = jax.tree_util.tree_map(lambda a: np.asarray(jax.device_get(a)), dict(variables))
  document = {"format": format, "version": version, "spec": spec.to_dict(), **(info or {})}
  write_atomic(out / VARIABLES_FILE, serialization.msgpack_serialize(host))
  write_atomic(out / SPEC_FILE, (json.dumps(document, indent=2) + "\n").encode())
  return out


def portable_program(model: nn.Module, variables) -> bytes:
  """``model`` (an exported network, with its ``spec``) as a serialized ``jax.export.Exported``:
  ``x [batch, *input_shape]`` (float32, batch symbolic) -> logits, variables baked in as
  constants, lowered for ``PROGRAM_PLATFORMS``."""
  (batch,) = jax.export.symbolic_shape("batch")
  x = jax.ShapeDtypeStruct((batch, *model.spec.input_shape), jnp.float32)
  apply = jax.jit(lambda x: model.apply(variables, x))
  return jax.export.export(apply, platforms=PROGRAM_PLATFORMS)(x).serialize()


def write_export(
  out,
  spec,
  variables,
  info: Mapping[str, Any],
  program_model: nn.Module,
  format: str = FORMAT,
  version: int = FORMAT_VERSION,
) -> pathlib.Path:
  """Write a whole export to ``out``: ``model.json`` (``spec``, ``info`` and the program's
  description), ``variables.msgpack`` and ``model.jax_export`` (``program_model``'s portable
  program, with ``variables``); returns the program's path."""
  program = dict(
    file=PROGRAM_FILE,
    platforms=list(PROGRAM_PLATFORMS),
    input=["batch", *spec.input_shape],
    jax_version=jax.__version__,
  )
  save_exported(out, spec, variables, dict(info, program=program), format, version)
  path = pathlib.Path(out) / PROGRAM_FILE
  write_atomic(path, portable_program(program_model, variables))
  return path.resolve()


def write_atomic(path: pathlib.Path, data: bytes) -> None:
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
  formats = {FORMAT: FORMAT_VERSION, DNAL_FORMAT: DNAL_FORMAT_VERSION}
  if not isinstance(document, dict) or document.get("format") not in formats:
    raise ValueError(f'{spec_path}: not a dnarch export (no "format": "{FORMAT}")')
  version = formats[document["format"]]
  if document["format"] == DNAL_FORMAT:  # imported only for DNAL models: its config reads data
    from dnarch_jax.dnal.export import DnalExportSpec as spec_class
  else:
    spec_class = ExportSpec
  if document.get("version") != version:
    raise ValueError(
      f"{spec_path}: export format version {document.get('version')!r}; this dnarch_jax reads "
      f"version {version}"
    )
  try:
    spec = spec_class.from_dict(document["spec"])
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
  if not isinstance(spec, ExportSpec):  # a DNAL network: discrete kernels, no conv routes
    from dnarch_jax.dnal.export import ExportedDnalNetwork

    return _load_variables(path, ExportedDnalNetwork(spec))
  if conv_route is not None:
    if conv_route != "auto" and conv_route not in ROUTES:
      raise ValueError(f"conv_route: unknown route {conv_route!r}; use 'auto' or {ROUTES}")
    spec = spec.with_conv_route(conv_route)
  return _load_variables(path, ExportedCCNN(spec))


def _load_variables(path: str | os.PathLike, model: nn.Module) -> tuple[nn.Module, dict[str, Any]]:
  """``(model, variables)``: the variables file, checked against ``model``'s own shapes."""
  variables_path = _model_dir(path) / VARIABLES_FILE
  if not variables_path.is_file():
    raise FileNotFoundError(f"{variables_path}: missing; export the run again with dnarch export")
  try:
    restored = serialization.msgpack_restore(variables_path.read_bytes())
  except Exception as error:  # msgpack raises several unrelated types on corrupt bytes
    raise ValueError(f"{variables_path}: unreadable ({type(error).__name__}: {error})") from error
  x = jax.ShapeDtypeStruct((1, *model.spec.input_shape), jnp.float32)
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
