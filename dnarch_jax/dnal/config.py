"""``NetConfig``: the static description of a conventional CNN that DNAL prunes.

Two families, as in DNAL's CIFAR-10 experiments:

* ``vgg``: 3x3 convs (each conv -> BatchNorm -> gate -> ReLU) and 2x2 max-pools given by
  ``layers`` (widths and ``"M"``), global average pooling, then a classifier with ``classifier``
  hidden widths (Linear -> BatchNorm -> ReLU each) and a Linear to the classes. VGG16 for CIFAR is
  ``VGG16_LAYERS`` with classifier ``(512,)``: 14.99 M parameters, 313.47 M MACs.
* ``resnet``: the CIFAR ResNet of He et al. (``depth = 6 n + 2``: a 3x3 stem, three stages of
  ``n`` basic blocks with ``widths`` channels, the first block of stages 2 and 3 at stride 2,
  option-A shortcuts: subsample and zero-pad channels), global average pooling, a Linear.
  ResNet56 is depth 56, widths (16, 32, 64): 0.85 M parameters, 125.49 M MACs.

Every conv is followed by BatchNorm and a DNAL gate (the official code's ``ScaleLayer2d``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import ml_collections

from dnarch_jax.data import default_data_config
from dnarch_jax.run.experiment import data_shape

KINDS = ("vgg", "resnet")
POOL = "M"
VGG16_LAYERS = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512,
                "M")  # fmt: skip


@dataclasses.dataclass(frozen=True)
class NetConfig:
  """Everything that fixes the unpruned network. Built by :func:`net_config`."""

  kind: str
  input_size: tuple[int, int]
  in_channels: int
  num_classes: int
  layers: tuple = ()  # vgg: conv widths and "M" (2x2 max-pool, stride 2)
  classifier: tuple[int, ...] = ()  # vgg: hidden widths of the classifier
  depth: int = 56  # resnet: 6 n + 2
  widths: tuple[int, ...] = (16, 32, 64)  # resnet: channels of the three stages
  threshold: float = 0.9  # prune gates below it (the official code's threshold_arch)

  @property
  def blocks_per_stage(self) -> int:
    return (self.depth - 2) // 6


def _fail(field: str, problem: str) -> None:
  raise ValueError(f"config.model.{field}: {problem}")


def _positive_ints(field: str, values) -> None:
  if not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in values):
    _fail(field, f"widths must be positive integers, got {values!r}")


def validate(cfg: NetConfig) -> NetConfig:
  """Raise ``ValueError`` naming the first impossible field; return ``cfg`` otherwise."""
  if cfg.kind not in KINDS:
    _fail("kind", f"unknown network {cfg.kind!r}; expected one of {KINDS}")
  if len(cfg.input_size) != 2:
    _fail("kind", f"DNAL's CNNs take 2D images; the task's input is {cfg.input_size}")
  if not 0.0 < cfg.threshold < 1.0:
    _fail("threshold", f"must lie in (0, 1), got {cfg.threshold}")
  if cfg.kind == "vgg":
    convs = [v for v in cfg.layers if v != POOL]
    if not convs:
      _fail("layers", f"a VGG needs at least one conv width, got {cfg.layers!r}")
    _positive_ints("layers", convs)
    _positive_ints("classifier", cfg.classifier)
    pools = sum(v == POOL for v in cfg.layers)
    if min(cfg.input_size) < 2**pools:
      _fail("layers", f"{pools} max-pools shrink a {cfg.input_size} input to nothing")
  else:
    if not isinstance(cfg.depth, int) or cfg.depth < 8 or (cfg.depth - 2) % 6:
      _fail("depth", f"a CIFAR ResNet has depth 6 n + 2 with n >= 1, got {cfg.depth!r}")
    if len(cfg.widths) != 3:
      _fail("widths", f"three stage widths, got {cfg.widths!r}")
    _positive_ints("widths", cfg.widths)
    if any(b < a for a, b in zip(cfg.widths, cfg.widths[1:], strict=False)):
      _fail("widths", f"option-A shortcuts zero-pad channels: widths must not shrink, {cfg.widths}")
  return cfg


FIELDS = ("kind", "layers", "classifier", "depth", "widths", "threshold")


def net_config(model: Mapping[str, Any], input_shape: Sequence[int], num_classes: int) -> NetConfig:
  """Build and validate a :class:`NetConfig` from ``config.model`` and the task's shapes.

  ``input_shape`` is ``(height, width, channels)``. Unknown keys in ``config.model`` are errors.
  """
  values = dict(model)
  unknown = sorted(set(values) - set(FIELDS))
  if unknown:
    raise ValueError(f"config.model: unknown field(s) {unknown}; DNAL's fields: {list(FIELDS)}")
  for name in ("layers", "classifier", "widths"):
    if name in values:
      values[name] = tuple(values[name])
  return validate(
    NetConfig(
      input_size=tuple(int(s) for s in input_shape[:-1]),
      in_channels=int(input_shape[-1]),
      num_classes=int(num_classes),
      **values,
    )
  )


def run_net_config(config: ml_collections.ConfigDict, workdir=None) -> NetConfig:
  """``config.model`` sized by the task's data (``run.experiment.data_shape``: from ``workdir``'s
  record when given, without opening the data); a dense task is an error."""
  input_shape, num_classes, dense = data_shape(config, workdir)
  if dense:
    raise ValueError(f"config.data.task: DNAL's CNNs classify; {config.data.task} is dense")
  return net_config(config.model.to_dict(), input_shape, num_classes)


def is_dnal(config: ml_collections.ConfigDict) -> bool:
  """Whether a run config is a DNAL run (``config.method == "dnal"``)."""
  return config.get("method", "dnarch") == "dnal"


# --- experiment files ----------------------------------------------------------------------------


def experiment_config(
  *,
  task: str,
  model: Mapping[str, Any],
  lambda_a: float,
  epochs: tuple[float, float, float],
  optim: Mapping[str, Mapping[str, Any]],
  batch_size: int,
  delta: tuple[float, float] = (1.0, 1e4),
) -> ml_collections.ConfigDict:
  """A DNAL run's config (``config.method = "dnal"``), the block the experiment files share.

  Fields: ``model`` (:data:`FIELDS`); ``dnal``: ``lambda_a``, ``delta_start``/``delta_end``, and
  per stage (``weights``, ``arch``, ``finetune``) ``*_epochs``, or ``*_steps`` when set (not
  None; 0 skips the stage); ``optim.<stage>``: ``lr``, ``momentum``, ``weight_decay``,
  ``schedule`` (``cosine`` or ``constant`` over the stage); the loop's ``log_every``,
  ``eval_every``, ``checkpoint_every``, ``keep_last``, ``progress``.
  """
  config = ml_collections.ConfigDict()
  config.method = "dnal"
  config.seed = 0
  config.data = default_data_config(task)
  config.data.batch_size = batch_size
  config.model = ml_collections.ConfigDict(
    dict(kind="vgg", layers=(), classifier=(), depth=56, widths=(16, 32, 64), threshold=0.9)
  )
  config.model.update(dict(model))
  config.dnal = ml_collections.ConfigDict(
    dict(lambda_a=float(lambda_a), delta_start=float(delta[0]), delta_end=float(delta[1]))
  )
  for stage, n in zip(("weights", "arch", "finetune"), epochs, strict=True):
    config.dnal[f"{stage}_epochs"] = float(n)
    config.dnal[f"{stage}_steps"] = ml_collections.config_dict.placeholder(int)
  config.optim = ml_collections.ConfigDict()
  for stage in ("weights", "arch", "finetune"):
    defaults = dict(lr=0.01, momentum=0.9, weight_decay=0.0, schedule="cosine")
    defaults.update(optim.get(stage, {}))
    for key in ("lr", "weight_decay"):
      defaults[key] = float(defaults[key])
    config.optim[stage] = ml_collections.ConfigDict(defaults)
  config.update(
    dict(log_every=50, eval_every=1000, checkpoint_every=1000, keep_last=3, progress=True)
  )
  return config


def unpruned(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """The ``baseline`` of a DNAL config: its weights stage alone (the unpruned network)."""
  for stage in ("arch", "finetune"):
    config.dnal[f"{stage}_epochs"] = 0.0
    config.dnal[f"{stage}_steps"] = 0
  return config
