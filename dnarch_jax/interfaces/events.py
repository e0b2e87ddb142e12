"""TensorBoard event files beside ``metrics.jsonl``: ``tensorboard --logdir runs/``.

The JSONL files stay the record of a run (the report and the tests read them); every record
written to them is mirrored here as it is written (``report.MetricsWriter.mirror``):

* ``metrics.jsonl``: a ``train`` record's numbers as ``train/<field>`` (loss, accuracy, the
  budget penalty, gradient norms, steps per second, ...), ``val`` as ``val/<field>``,
  ``compile`` as ``compile/seconds``, ``arch_params`` as ``arch_params/<parameter>``; the cost
  against the budget as ``cost/<metric>``, ``cost/budget`` and ``cost/over_budget`` (their ratio);
* ``arch.jsonl``: ``arch/flops``, ``arch/params``, ``arch/cost_soft``, ``arch/budget`` and the
  architecture's sizes per layer (``arch/<layer>/kernel`` or ``kernel_<axis>``, ``width``,
  ``hidden``, ``resolution`` or ``resolution_<axis>``, ``active``; DNAL: ``arch/<layer>/width``);
* the ``report/`` PNGs as images (``report/<name>``) at the run's last step.

The writer is tensorboardX's (protobuf only, no TensorFlow) [design: the lightest well-kept
writer; ``flax.metrics.tensorboard`` and ``tf.summary`` need TensorFlow, ``clu`` pulls it in
too]. A resumed run opens a new event file (its name carries the time in nanoseconds and the
process id, so a resume within the same second cannot overwrite the first) with TensorBoard's
purge step at the step after the restored one: what the interrupted run logged after its
checkpoint is hidden, as the JSONL files cut it. :func:`read_scalars` reads the files back
without TensorBoard.
"""

from __future__ import annotations

import os
import pathlib
import struct
import time
from collections.abc import Iterable, Mapping
from typing import Any

# Numbers that are not a scalar's value: bookkeeping of the record.
_SKIP = frozenset({"kind", "step"})


def _number(value: Any) -> float | None:
  if isinstance(value, bool):
    return float(value)
  if isinstance(value, int | float):
    return float(value)
  return None


def _axes(name: str, values) -> dict[str, float]:
  """``kernel`` for one axis, ``kernel_0``, ``kernel_1`` for several."""
  values = list(values)
  if len(values) == 1:
    return {name: float(values[0])}
  return {f"{name}_{i}": float(v) for i, v in enumerate(values)}


def layer_sizes(record: Mapping[str, Any]) -> dict[str, float]:
  """An ``arch.jsonl`` record's architecture as ``{"<layer>/<size>": value}``."""
  sizes: dict[str, float] = {}
  if "widths" in record:  # DNAL: kept channels per gated layer
    for i, width in enumerate(record["widths"]):
      sizes[f"layer_{i}/width"] = float(width)
    return sizes
  arch = record.get("arch")
  if not arch:
    return sizes
  sizes.update({f"stem/{k}": v for k, v in _axes("kernel", arch["stem"]["taps"]).items()})
  sizes["stream/width"] = float(arch["stream_width"])
  for b, block in enumerate(arch["blocks"]):
    layer = f"block_{b}"
    sizes.update({f"{layer}/{k}": v for k, v in _axes("kernel", block["conv"]["taps"]).items()})
    sizes.update({f"{layer}/{k}": v for k, v in _axes("resolution", block["resolution"]).items()})
    sizes[f"{layer}/hidden"] = float(block["hidden_width"])
    sizes[f"{layer}/active"] = float(block["active"])
  return sizes


class EventLog:
  """One run's TensorBoard writer; see the module docstring."""

  def __init__(self, log_dir: str | os.PathLike, purge_step: int | None = None):
    from tensorboardX import SummaryWriter

    self._writer = SummaryWriter(
      str(log_dir),
      purge_step=purge_step or None,
      # Files sort by name (TensorBoard reads them in that order): tensorboardX's name starts
      # with the second, this orders files opened within one second, across processes too.
      filename_suffix=f".{time.time_ns()}.{os.getpid()}",
      flush_secs=30,
    )

  def _scalars(self, prefix: str, values: Mapping[str, Any], step: int) -> None:
    for key, value in values.items():
      number = _number(value)
      if key not in _SKIP and number is not None:
        self._writer.add_scalar(f"{prefix}/{key}", number, step)

  def metrics_record(self, record: Mapping[str, Any]) -> None:
    step, kind = record.get("step"), record.get("kind", "train")
    if step is None:
      return
    if kind == "arch_params":
      self._scalars("arch_params", record["values"], step)
      return
    self._scalars(kind, record, step)
    if kind == "train" and "budget" in record:
      metric = "params" if "params" in record and "flops" not in record else "flops"
      cost = _number(record.get(metric))
      if cost is not None and record["budget"]:
        self._writer.add_scalar(f"cost/{metric}", cost, step)
        self._writer.add_scalar("cost/budget", float(record["budget"]), step)
        self._writer.add_scalar("cost/over_budget", cost / float(record["budget"]), step)

  def arch_record(self, record: Mapping[str, Any]) -> None:
    step = record.get("step")
    if step is None:
      return
    costs = {
      k: record[k] for k in ("flops", "params", "macs", "cost_soft", "budget") if k in record
    }
    self._scalars("arch", costs, step)
    self._scalars("arch", layer_sizes(record), step)

  def images(self, paths: Iterable[pathlib.Path], step: int) -> None:
    """Each PNG as ``report/<name>``, passed through encoded (not decoded and re-encoded)."""
    from tensorboardX.proto.summary_pb2 import Summary

    for path in paths:
      data = pathlib.Path(path).read_bytes()
      width, height = struct.unpack(">II", data[16:24])  # the PNG header's IHDR chunk
      image = Summary.Image(height=height, width=width, colorspace=4, encoded_image_string=data)
      summary = Summary(value=[Summary.Value(tag=f"report/{pathlib.Path(path).stem}", image=image)])
      self._writer._get_file_writer().add_summary(summary, step)

  def close(self) -> None:
    if self._writer is not None:
      self._writer.close()
      self._writer = None


def _records(path: pathlib.Path):
  """The serialized events of one TFRecord file (length, its CRC, data, its CRC)."""
  data = path.read_bytes()
  offset = 0
  while offset + 12 <= len(data):
    (length,) = struct.unpack("<Q", data[offset : offset + 8])
    start = offset + 12
    yield data[start : start + length]
    offset = start + length + 4


def read_events(log_dir: str | os.PathLike) -> list:
  """Every event of every event file in ``log_dir`` (not its subfolders), in file order."""
  from tensorboardX.proto.event_pb2 import Event

  files = sorted(pathlib.Path(log_dir).glob("events.out.tfevents.*"))
  return [Event.FromString(raw) for path in files for raw in _records(path)]


def read_scalars(log_dir: str | os.PathLike) -> dict[str, dict[int, float]]:
  """``{tag: {step: value}}`` as TensorBoard shows it: a later file's purge step hides what an
  earlier file logged at or after it, and a later value at a step replaces an earlier one."""
  scalars: dict[str, dict[int, float]] = {}
  for event in read_events(log_dir):
    if event.HasField("session_log") and event.session_log.status == event.session_log.START:
      for values in scalars.values():
        for step in [s for s in values if s >= event.step]:
          del values[step]
    for value in event.summary.value:
      if value.HasField("simple_value"):
        scalars.setdefault(value.tag, {})[event.step] = value.simple_value
  return scalars


def image_tags(log_dir: str | os.PathLike) -> list[str]:
  return [v.tag for e in read_events(log_dir) for v in e.summary.value if v.HasField("image")]
