"""The model's configuration: a frozen, validated, hashable view of ``config.model``.

Experiments are ml_collections files; the model is built from :class:`ModelConfig`, which
:func:`model_config` makes from ``config.model`` plus the task's input shape and classes. Every
check runs on the host before anything is traced, and its message names the config field.
"""

from __future__ import annotations

import ast
import dataclasses
import importlib.util
import os
from collections.abc import Mapping, Sequence
from typing import Any

import ml_collections

KERNEL_NETS = ("magnet", "siren")
RESOLUTION_MASKS = ("sigmoid", "ramp")
# DNArch's ordered mask keeps a prefix of the channels; DNAL's gate keeps any subset.
WIDTH_MASKS = ("sigmoid_cutoff", "scaled_sigmoid_gate")
HEADS = ("classification", "dense")
# Architecture parameter name -> the dimension it sizes (names are an API: the optimiser's
# labels, checkpoints and plots key on them).
ARCH_PARAM_DIMENSIONS = {
  "arch_sigma": "kernel",
  "arch_stream_cutoff": "width",
  "arch_hidden_cutoff": "width",
  "arch_stream_gate": "width",
  "arch_hidden_gate": "width",
  "arch_resolution_cutoff": "resolution",
  "arch_depth_cutoff": "depth",
}
# dnarch_jax.network.conv.ROUTES and "auto"
CONV_ROUTES = ("auto", "direct", "fft", "shift", "native", "native_fft")
COMPUTE_DTYPES = ("float32", "bfloat16")


@dataclasses.dataclass(frozen=True)
class ModelConfig:
  """Everything that fixes the maximal network and its masks. Field docs are in the configs."""

  input_size: tuple[int, ...]  # spatial size N per axis at the input
  in_channels: int
  num_classes: int
  head: str = "classification"
  causal: bool = False
  num_blocks: int = 4  # L_max
  width: int = 140  # stream width C_max
  hidden_width: int = 140  # block hidden width H_max (CCNN: H = C)
  kernel_grid: int = 33  # kernel samples per axis at input resolution (n); 0 means n = N
  kernel_net: str = "magnet"
  kernel_net_hidden: int = 32
  kernel_net_layers: int = 3
  omega_0: float = 2976.49
  magnet_alpha: float = 6.0
  magnet_beta: float = 1.0
  dropout: float = 0.1
  input_dropout: float = 0.0
  threshold: float = 0.1
  learn_kernel: bool = True
  learn_width: bool = False
  learn_resolution: bool = False
  learn_depth: bool = False
  kernel_sigma_init: float = 0.075
  width_mask: str = "sigmoid_cutoff"
  width_temperature: float = 20.0
  width_init_cutoff: float = 1.1
  width_gate_delta: float = 1.0  # the gate's fixed delta in sigmoid(delta * s)
  width_gate_init: float = 3.0  # initial logits s: gates sigmoid(3) = 0.95
  resolution_mask: str = "sigmoid"
  resolution_temperature: float = 20.0
  resolution_ramp: float = 4.0  # DiffStride's R, in frequency bins
  resolution_init_cutoff: float = 1.1
  # The lowest resolution a block may run at, as a fraction of the input's per axis: the bottom of
  # the resolution cutoff's box (dnarch_jax.method.search_space) [design]. 0: down to the bucket.
  resolution_min: float = 0.0
  depth_temperature: float = 20.0
  depth_init_cutoff: float = 1.1
  kernel_bucket: int = 2
  width_bucket: int = 8
  resolution_bucket: int = 2
  conv_route: str = "auto"
  # Keep only each block's input, conv and dense outputs for the backward pass and recompute
  # the norms, activations, masks and dropout (model.Block's remat regions): about half the
  # memory of keeping everything, at about the same speed on XLA:CPU
  # (benchmarks/results/README.md).
  remat: bool = True
  # The dtype of activations and convolutions (model.DNArchCCNN); parameters, optimiser state,
  # BatchNorm statistics, masks, kernel nets, the cost model and the loss stay float32.
  compute_dtype: str = "float32"

  @property
  def ndim(self) -> int:
    return len(self.input_size)

  def grid_size(self, axis: int) -> int:
    """Kernel grid n along ``axis`` at input resolution (``kernel_grid = 0``: n = N, "same")."""
    return self.kernel_grid or self.input_size[axis]


def _fail(field: str, problem: str) -> None:
  raise ValueError(f"config.model.{field}: {problem}")


def validate(cfg: ModelConfig) -> ModelConfig:
  """Raise ``ValueError`` naming the first impossible field; return ``cfg`` otherwise."""
  if cfg.ndim not in (1, 2):
    _fail("input_size", f"1 or 2 spatial axes are supported, got {cfg.input_size}")
  for name in ("in_channels", "num_classes", "num_blocks", "width", "hidden_width"):
    value = getattr(cfg, name)
    if not isinstance(value, int) or value < 1:
      _fail(name, f"must be a positive integer, got {value!r}")
  if any(n < 1 for n in cfg.input_size):
    _fail("input_size", f"sizes must be positive, got {cfg.input_size}")
  if cfg.causal and cfg.ndim != 1:
    _fail("causal", "causal kernels exist for 1D sequences only")
  if cfg.kernel_grid < 0 or cfg.kernel_grid == 1:
    _fail("kernel_grid", f"must be 0 (n = input size) or at least 2, got {cfg.kernel_grid}")
  for axis in range(cfg.ndim):
    if not cfg.causal and cfg.grid_size(axis) % 2 == 0:
      _fail(
        "kernel_grid",
        f"centred kernels need an odd grid, got {cfg.grid_size(axis)} on axis {axis}",
      )
  if cfg.kernel_net not in KERNEL_NETS:
    _fail("kernel_net", f"unknown kernel net {cfg.kernel_net!r}; expected one of {KERNEL_NETS}")
  if cfg.resolution_mask not in RESOLUTION_MASKS:
    _fail(
      "resolution_mask",
      f"unknown mask {cfg.resolution_mask!r}; expected one of {RESOLUTION_MASKS}",
    )
  if cfg.width_mask not in WIDTH_MASKS:
    _fail("width_mask", f"unknown mask {cfg.width_mask!r}; expected one of {WIDTH_MASKS}")
  if cfg.head not in HEADS:
    _fail("head", f"unknown head {cfg.head!r}; expected one of {HEADS}")
  if cfg.conv_route not in CONV_ROUTES:
    _fail("conv_route", f"unknown route {cfg.conv_route!r}; expected one of {CONV_ROUTES}")
  if cfg.compute_dtype not in COMPUTE_DTYPES:
    _fail("compute_dtype", f"unknown dtype {cfg.compute_dtype!r}; expected one of {COMPUTE_DTYPES}")
  if not 0.0 < cfg.threshold < 1.0:
    _fail("threshold", f"must lie in (0, 1), got {cfg.threshold}")
  for name in ("dropout", "input_dropout"):
    if not 0.0 <= getattr(cfg, name) < 1.0:
      _fail(name, f"must lie in [0, 1), got {getattr(cfg, name)}")
  if not 0.0 <= cfg.resolution_min < 1.0:
    _fail("resolution_min", f"must lie in [0, 1), got {cfg.resolution_min}")
  if cfg.kernel_sigma_init <= 0:
    _fail("kernel_sigma_init", f"must be positive, got {cfg.kernel_sigma_init}")
  for name in (
    "width_temperature",
    "width_gate_delta",
    "resolution_temperature",
    "depth_temperature",
    "resolution_ramp",
  ):
    if getattr(cfg, name) <= 0:
      _fail(name, f"must be positive, got {getattr(cfg, name)}")
  for name in ("kernel_bucket", "width_bucket", "resolution_bucket", "kernel_net_hidden"):
    if not isinstance(getattr(cfg, name), int) or getattr(cfg, name) < 1:
      _fail(name, f"must be a positive integer, got {getattr(cfg, name)!r}")
  if not cfg.causal and cfg.kernel_bucket % 2:
    _fail(
      "kernel_bucket",
      f"centred kernels keep odd sizes, so the bucket must be even, got {cfg.kernel_bucket}",
    )
  if cfg.resolution_bucket % 2:
    _fail(
      "resolution_bucket",
      f"resolutions are even sizes, so the bucket must be even, got {cfg.resolution_bucket}",
    )
  return cfg


def model_config(
  model: Mapping[str, Any], input_shape: Sequence[int], num_classes: int, dense: bool = False
) -> ModelConfig:
  """Build and validate a :class:`ModelConfig` from ``config.model`` and the task's shapes.

  ``input_shape`` is ``(*spatial, channels)``. Unknown keys in ``config.model`` are errors.
  """
  fields = {f.name for f in dataclasses.fields(ModelConfig)}
  values = dict(model)
  unknown = sorted(set(values) - fields)
  if unknown:
    raise ValueError(f"config.model: unknown field(s) {unknown}; known fields: {sorted(fields)}")
  for name, value in values.items():
    if isinstance(value, list):
      values[name] = tuple(value)
  values.setdefault("input_size", tuple(int(s) for s in input_shape[:-1]))
  values.setdefault("in_channels", int(input_shape[-1]))
  values.setdefault("num_classes", int(num_classes))
  values.setdefault("head", "dense" if dense else "classification")
  return validate(ModelConfig(**values))


# --- experiment files --------------------------------------------------------------------------


def load_config(spec: str, overrides: Sequence[str] = ()) -> ml_collections.ConfigDict:
  """Load ``path/to/file.py[:variant]`` (its ``get_config(variant)``) and apply overrides.

  Overrides are ``a.b=value`` strings (the CLI's ``--config.a.b=value`` without the prefix); the
  key must exist and the value is parsed as a Python literal and cast to the existing type
  (``None`` is allowed anywhere; validation then says whether the field accepts it).
  """
  path, _, variant = spec.partition(":")
  if not os.path.isfile(path):
    raise FileNotFoundError(f"--config: no such config file {path!r}")
  if not path.endswith(".py"):
    raise ValueError(f"--config: {path!r} is not a Python config (experiments/<task>.py[:variant])")
  module_spec = importlib.util.spec_from_file_location(f"dnarch_config_{abs(hash(path))}", path)
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  if not hasattr(module, "get_config"):
    raise ValueError(f"--config: {path} defines no get_config(variant)")
  config = module.get_config(variant or None)
  for override in overrides:
    apply_override(config, override)
  return config


def apply_override(config: ml_collections.ConfigDict, override: str) -> None:
  """Set ``a.b=value`` in ``config``; an unknown key or an incompatible value is an error."""
  key, sep, raw = override.partition("=")
  if not sep:
    raise ValueError(f"--config.{override}: expected --config.KEY=VALUE")
  *parents, leaf = key.split(".")
  node = config
  for i, name in enumerate(parents):
    if name not in node or not isinstance(node[name], ml_collections.ConfigDict):
      raise ValueError(f"--config.{key}: unknown config key {'.'.join(parents[: i + 1])!r}")
    node = node[name]
  if leaf not in node:
    raise ValueError(f"--config.{key}: unknown config key; known here: {sorted(node.keys())}")
  try:
    value = ast.literal_eval(raw)
  except (ValueError, SyntaxError):
    value = raw
  current = node[leaf]
  if value is None:  # None restores a field's "default" meaning (val_size, data_dir, ...)
    with node.ignore_type():
      node[leaf] = None
    return
  if isinstance(current, bool) and not isinstance(value, bool):
    raise ValueError(f"--config.{key}: expected True or False, got {raw!r}")
  if isinstance(current, float) and isinstance(value, int) and not isinstance(value, bool):
    value = float(value)
  if isinstance(current, tuple) and isinstance(value, list):
    value = tuple(value)
  if current is not None and type(value) is not type(current):
    name = type(current).__name__
    kind = {"int": "an integer", "float": "a number", "str": "a string"}.get(name, f"a {name}")
    raise ValueError(f"--config.{key}: expected {kind}, got {raw!r}")
  with node.ignore_type():
    node[leaf] = value


# CCNN sizes (METHOD.md §9): "4,140" = 4 blocks x 140 channels, MAGNet hidden 32;
# "6,380" = 6 blocks x 380 channels, MAGNet hidden 64.
CCNN_SIZES = {"4_140": (4, 140, 32), "6_380": (6, 380, 64)}


_NOT_IN_MODEL_BLOCK = ("head", "magnet_alpha", "magnet_beta", "resolution_ramp")


def model_block(
  size: str, *, omega_0: float, dropout: float, causal: bool, kernel_grid: int, **overrides
) -> ml_collections.ConfigDict:
  """``config.model`` for a CCNN of the given size (fields: ``dnarch_jax.config.ModelConfig``)."""
  blocks, width, kernel_hidden = CCNN_SIZES[size]
  # Every other field at ModelConfig's default, written there once. The data's fields come from
  # the task; the few fields no experiment sets stay out of the config files (a run's config.json
  # is compared on resume, so adding them would refuse to resume older runs).
  defaults = {
    f.name: f.default
    for f in dataclasses.fields(ModelConfig)
    if f.name not in _NOT_IN_MODEL_BLOCK and f.default is not dataclasses.MISSING
  }
  model = ml_collections.ConfigDict(defaults)
  model.update(
    num_blocks=blocks,
    width=width,
    hidden_width=width,
    kernel_grid=kernel_grid,
    causal=causal,
    kernel_net_hidden=kernel_hidden,
    omega_0=omega_0,
    dropout=dropout,
  )
  model.update(overrides)
  return model


def learn(model: ml_collections.ConfigDict, *dimensions: str) -> None:
  """Switch learning on for the named dimensions (kernel, width, resolution, depth), off else."""
  for name in ("kernel", "width", "resolution", "depth"):
    model[f"learn_{name}"] = name in dimensions


def optim_block(
  *, lr: float, weight_decay: float, warmup_epochs: float, epochs: float, arch_lr_factor: float
) -> ml_collections.ConfigDict:
  """Optimiser settings: AdamW + warm-up + cosine for weights (CCNN), Adam for the masks.

  ``arch_lr_factor`` multiplies ``lr`` for the architecture parameters. CCNN meant 0.1 for its
  mask parameters but its filter matched none, so its released runs used 1.0 (METHOD.md §7);
  the factor is explicit in every config. ``arch_lr`` (None) sets the architecture's rate
  outright (a fraction of each dimension's range per step: ``dnarch_jax.method.search_space``);
  ``arch_warmup_epochs`` (None: the weights' ``warmup_epochs``) its own linear warm-up, and
  ``arch_epochs`` (None: the whole run) the length of the search, after which the architecture
  stays fixed and the weights train on.
  ``l2_regulariser`` is CCNN's: ``weight_decay`` weighs the sum of the L2 norms of the weights
  and sampled kernels, and AdamW's own decay is 0 (as in CCNN's runs).
  """
  return ml_collections.ConfigDict(
    dict(
      lr=float(lr),
      weight_decay=float(weight_decay),
      warmup_epochs=float(warmup_epochs),
      epochs=float(epochs),
      arch_lr_factor=float(arch_lr_factor),
      arch_lr=ml_collections.config_dict.placeholder(float),
      arch_warmup_epochs=ml_collections.config_dict.placeholder(float),
      arch_epochs=ml_collections.config_dict.placeholder(float),
      l2_regulariser=True,
      grad_clip=0.0,
    )
  )


# The run loop's fields (``dnarch_jax.run.loop``) every method shares, with their defaults.
LOOP_DEFAULTS = dict(
  seed=0, log_every=50, eval_every=1000, checkpoint_every=1000, keep_last=3, progress=True
)


def add_loop_fields(config: ml_collections.ConfigDict, **values) -> ml_collections.ConfigDict:
  """The training loop's and the budget's fields, with defaults for those not set yet.

  Loop: ``total_steps`` (0: ``optim.epochs`` epochs), ``log_every``, ``eval_every``,
  ``checkpoint_every``, ``arch_refresh_every`` (steps between recomputing the ``Arch``),
  ``keep_last`` (checkpoints), ``progress`` (a progress bar), ``arch_init`` (a JSON file holding
  an ``Arch``, e.g. a run's ``arch.jsonl`` or ``dnarch summary --json`` output: the masks start at
  that architecture; with ``optim.arch_lr`` 0 and no budget the run trains it fixed).
  Budget (``config.budget``): ``metric`` ("flops" per example, or "params"), ``mode`` ("soft":
  the penalty only; "hard": the ``Arch`` never exceeds it either), ``value`` (absolute; 0: use
  ``fraction``), ``fraction`` (of the maximal network's cost; 0 and ``value`` 0: no budget),
  ``weight`` (lambda in ``lambda * max(0, cost/budget - 1)^2``).
  """
  defaults = dict(LOOP_DEFAULTS, total_steps=0, arch_refresh_every=50, arch_init="")
  defaults.update({k: v for k, v in values.items() if k != "budget"})
  for key, value in defaults.items():
    if key not in config:
      config[key] = value
  # lambda 10 [design, measured]: at 1.0 the main job's task gradient on the widths outweighed a
  # penalty 2.6% over the budget for 850 steps (budget gradient norm 0.05 on the widths, task
  # 0.17); the penalty is 0 within the budget, so a large lambda costs nothing there.
  budget = dict(metric="flops", mode="soft", value=0.0, fraction=0.0, weight=10.0)
  budget.update(values.get("budget", {}))
  if "budget" not in config:
    config.budget = ml_collections.ConfigDict(budget)
  return config
