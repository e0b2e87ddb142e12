"""Run records (``metrics.jsonl``, ``arch.jsonl``) and the plots people read instead of logs.

A training run appends one JSON object per logged step to ``metrics.jsonl`` and one per
architecture change to ``arch.jsonl`` (ENGINEERING.md, "Command line and outputs"). This module
writes and reads those files and turns them into ``report/*.png``: learning curves, cost against
the budget, and how the architecture (kernel taps, widths, resolutions, depth) evolved.

It imports numpy, matplotlib, json and the parameter names of ``dnarch_jax.config`` only, never
JAX or the model, so a report can be drawn from the files alone: on a laptop, after the run,
while the run is still writing. Figures are built on matplotlib's Agg canvas directly (no
pyplot), so drawing them changes no global backend state and leaks no figures in a long
training process.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import pathlib
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import matplotlib
import numpy as np
from matplotlib import colors, ticker
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from dnarch_jax.config import ARCH_PARAM_DIMENSIONS

__all__ = [
  "ARCH_FILE",
  "METRICS_FILE",
  "REPORT_DIR",
  "MetricsWriter",
  "architecture_text",
  "read_jsonl",
  "truncate_after",
  "write_report",
]

METRICS_FILE = "metrics.jsonl"
ARCH_FILE = "arch.jsonl"
REPORT_DIR = "report"

_DPI = 110
_TEXT_PT = 7.5  # annotation font size inside heatmap cells
_OFF = "off"  # the key of an inactive block's cells

# --- writing and reading JSONL ---------------------------------------------------------------


def _to_json(obj: Any) -> Any:
  """``json.dumps`` fallback: numpy/JAX scalars and arrays, dataclasses (an ``Arch``), paths.

  Duck-typed (``__array__``, ``to_dict``) so that this module never imports JAX.
  """
  if isinstance(obj, np.generic):
    return obj.item()
  if hasattr(obj, "to_dict"):
    return obj.to_dict()
  if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
    return dataclasses.asdict(obj)
  if hasattr(obj, "__array__"):
    a = np.asarray(obj)
    return a.item() if a.ndim == 0 else a.tolist()
  if isinstance(obj, os.PathLike):
    return os.fspath(obj)
  raise TypeError(f"{type(obj).__name__} is not JSON serialisable")


def _dumps(record: Mapping[str, Any]) -> str:
  return json.dumps(record, default=_to_json)


def _drop_partial_tail(path: pathlib.Path) -> None:
  """Cut a crash's half-written last line, so the next record does not glue onto it.

  A last line that parses but only lacks its newline is completed instead of dropped.
  """
  with path.open("rb+") as f:
    size = f.seek(0, os.SEEK_END)
    if size == 0:
      return
    f.seek(size - 1)
    if f.read(1) == b"\n":
      return
    start = size
    while start > 0:  # scan back for the last newline, a block at a time
      block = min(start, 1 << 16)
      f.seek(start - block)
      cut = f.read(block).rfind(b"\n")
      if cut >= 0:
        start = start - block + cut + 1
        break
      start -= block
    f.seek(start)
    tail = f.read()
    try:
      json.loads(tail)
      f.write(b"\n")
    except ValueError:  # JSONDecodeError and UnicodeDecodeError
      f.truncate(start)


class MetricsWriter:
  """Append-only JSONL writer: one record per line, flushed at once.

  Flushing every line means a crash loses at most the line being written, and a report drawn
  while the run is going sees everything logged so far. Reopening an existing file appends (a
  resumed run continues the same file); :func:`truncate_after` drops what a resumed run will
  replay, before or after the writer is opened. ``mirror``, when set, is called with every
  record written (the run loop mirrors its records to TensorBoard,
  ``dnarch_jax.interfaces.events``).
  """

  mirror: Callable[[Mapping[str, Any]], None] | None = None

  def __init__(self, path: str | os.PathLike):
    self.path = pathlib.Path(path)
    self.path.parent.mkdir(parents=True, exist_ok=True)
    if self.path.exists():
      _drop_partial_tail(self.path)
    self._file = self.path.open("a", encoding="utf-8")

  def write(self, record: Mapping[str, Any]) -> None:
    """Append ``record``; numpy/JAX scalars become ``float``/``int``, arrays become lists."""
    if self._file is None:
      raise ValueError(f"write to closed MetricsWriter({self.path})")
    self._file.write(_dumps(record) + "\n")
    self._file.flush()
    if self.mirror is not None:
      self.mirror(record)

  def close(self) -> None:
    if self._file is not None:
      self._file.close()
      self._file = None

  def __enter__(self) -> MetricsWriter:
    return self

  def __exit__(self, *exc) -> None:
    self.close()


def _parsed_lines(path: pathlib.Path) -> list[tuple[str, dict]]:
  """(raw line, record) pairs; a broken last line is a crash mid-write and is skipped quietly."""
  text = path.read_text(encoding="utf-8", errors="replace")
  lines = text.removesuffix("\n").split("\n")
  out = []
  for i, line in enumerate(lines):
    if not line.strip():
      continue
    try:
      record = json.loads(line)
    except json.JSONDecodeError:
      if i < len(lines) - 1:
        warnings.warn(f"{path}:{i + 1}: skipping a line that is not JSON", stacklevel=3)
      continue
    if isinstance(record, dict):
      out.append((line, record))
  return out


def read_jsonl(path: str | os.PathLike) -> list[dict]:
  """The records of a JSONL file, in file order; ``[]`` if it does not exist yet.

  A truncated last line (a crash mid-write) is skipped, so reports work on a crashed or running
  run. A broken line elsewhere is skipped with a warning.
  """
  path = pathlib.Path(path)
  return [record for _, record in _parsed_lines(path)] if path.exists() else []


def truncate_after(path: str | os.PathLike, step: int) -> None:
  """Drop the records with ``step > step`` (and a broken tail); keep lines without a step.

  A run resumed from an earlier checkpoint replays steps it had already logged; without this the
  files would hold two histories. Kept lines are written back byte for byte. The file is cut in
  place, not replaced, so a :class:`MetricsWriter` already open on it stays valid: it appends
  (``O_APPEND``) at whatever the end of the file is.
  """
  path = pathlib.Path(path)
  if not path.exists():
    return
  kept = [line for line, r in _parsed_lines(path) if not _step_of(r) > step]
  data = "".join(line + "\n" for line in kept).encode("utf-8")
  with path.open("rb+") as f:
    f.write(data)
    f.truncate()


def _step_of(record: Mapping[str, Any]) -> float:
  step = record.get("step")
  return float(step) if isinstance(step, int | float) else -math.inf


# --- architecture records ----------------------------------------------------------------------


def _as_dict(arch: Any) -> dict:
  """An architecture as a plain dict (accepts the dict from JSON or an object with ``to_dict``)."""
  return arch.to_dict() if hasattr(arch, "to_dict") else dict(arch)


def _size(values: Sequence[int]) -> str:
  return "x".join(str(int(v)) for v in values)


def _layer_line(name: str, conv: Mapping, block: Mapping | None) -> str:
  taps = f"taps {_size(conv['taps'])}"
  if block is None:
    return f"{name:<9}{taps:<16}route {conv.get('route', '?')}"
  hidden = f"hidden {block['hidden_width']}"
  res = f"res {_size(block['resolution'])}"
  if not block.get("active", True):
    return f"{name:<9}off  ({taps}, {hidden}, {res})"
  resample = "  resample" if block.get("resample") else ""
  return f"{name:<9}{taps:<16}{hidden:<12}{res:<14}route {conv.get('route', '?')}{resample}"


def architecture_text(arch: Mapping[str, Any]) -> str:
  """One line per layer: taps per axis, hidden width, resolution, route; inactive blocks 'off'.

  For logs and READMEs, where a table is quicker to scan than the JSON.
  """
  arch = _as_dict(arch)
  blocks = arch.get("blocks", [])
  depth = sum(bool(b.get("active", True)) for b in blocks)
  lines = [
    f"input {_size(arch['input_size'])}, stream width {arch['stream_width']}, "
    f"depth {depth} of {len(blocks)} blocks",
    _layer_line("stem", arch["stem"], None),
  ]
  lines += [_layer_line(f"block {l}", b["conv"], b) for l, b in enumerate(blocks)]
  return "\n".join(lines)


@dataclasses.dataclass
class _ArchHistory:
  """The architecture records as arrays over records (n), layers and axes (D).

  Missing entries (fewer blocks in a record, or a missing cost) are NaN, so records of different
  shape still plot.
  """

  steps: np.ndarray  # (n,)
  end: float  # right edge of the last record's span
  taps: np.ndarray  # (n, 1 + L, D): stem then blocks
  hidden: np.ndarray  # (n, L)
  stream: np.ndarray  # (n,)
  resolution: np.ndarray  # (n, L, D)
  active: np.ndarray  # (n, L) bool
  flops: np.ndarray  # (n,)
  params: np.ndarray  # (n,)
  final: dict  # the last record's architecture

  @property
  def num_blocks(self) -> int:
    return self.hidden.shape[1]

  @property
  def dims(self) -> int:
    return self.taps.shape[2]

  @property
  def edges(self) -> np.ndarray:
    """Step edges of the spans each record was in force: record i from steps[i] to steps[i+1]."""
    return np.append(self.steps, self.end)


def _last_per_step(records: list[dict]) -> list[dict]:
  """Records sorted by step, keeping the last one of each step (a replay after a resume)."""
  by_step = {_step_of(r): r for r in records if _step_of(r) > -math.inf}
  return [by_step[s] for s in sorted(by_step)]


def _arch_history(records: list[dict], last_step: float) -> _ArchHistory | None:
  records = [r for r in _last_per_step(records) if isinstance(r.get("arch"), Mapping)]
  if not records:
    return None
  archs = [r["arch"] for r in records]
  n, dims = len(archs), len(archs[0]["input_size"])
  blocks = max(len(a.get("blocks", [])) for a in archs)
  h = _ArchHistory(
    steps=np.array([_step_of(r) for r in records]),
    end=0.0,
    taps=np.full((n, 1 + blocks, dims), np.nan),
    hidden=np.full((n, blocks), np.nan),
    stream=np.array([float(a["stream_width"]) for a in archs]),
    resolution=np.full((n, blocks, dims), np.nan),
    active=np.zeros((n, blocks), bool),
    flops=np.array([float(r.get("flops", np.nan)) for r in records]),
    params=np.array([float(r.get("params", np.nan)) for r in records]),
    final=archs[-1],
  )
  for i, a in enumerate(archs):
    h.taps[i, 0] = a["stem"]["taps"]
    for l, b in enumerate(a.get("blocks", [])):
      h.taps[i, 1 + l] = b["conv"]["taps"]
      h.hidden[i, l] = b["hidden_width"]
      h.resolution[i, l] = b["resolution"]
      h.active[i, l] = b.get("active", True)
  # The last record is in force until the run's last step; give it a visible span even when it
  # was written at that step, since the final architecture is the one people look for.
  span = max(last_step, h.steps[-1]) - h.steps[0]
  h.end = max(last_step, h.steps[-1] + max(0.04 * span, 1.0))
  return h


# --- metrics series ----------------------------------------------------------------------------


def _series(records: list[dict], kind: str, key: str) -> tuple[np.ndarray, np.ndarray]:
  """(steps, values) of ``key`` in the records of ``kind``, by step, the last one per step."""
  rows = _last_per_step([r for r in records if r.get("kind") == kind and key in r])
  rows = [r for r in rows if isinstance(r[key], int | float)]
  return np.array([_step_of(r) for r in rows]), np.array([float(r[key]) for r in rows])


def _smooth(values: np.ndarray) -> np.ndarray:
  """A centred moving average over ~2% of the points: the trend through noisy train metrics."""
  window = max(1, len(values) // 50) | 1
  if window == 1:
    return values
  kernel = np.ones(window)
  finite = np.isfinite(values)
  total = np.convolve(np.where(finite, values, 0.0), kernel, mode="same")
  count = np.convolve(finite.astype(float), kernel, mode="same")
  with np.errstate(invalid="ignore", divide="ignore"):
    return total / count


def _plot_train(ax, steps, values, label, color, style="-") -> None:
  """Raw train values faintly, their moving average on top, under one legend entry."""
  if len(steps) == 0:
    return
  smooth = _smooth(values)
  if smooth is not values:
    ax.plot(steps, values, style, color=color, alpha=0.25, lw=0.8)
  marker = "." if len(steps) < 30 else None  # a short run's few points must show
  ax.plot(steps, smooth, style, color=color, lw=1.6, marker=marker, label=label)


_EVAL_STYLE = {
  "val": dict(marker="o", color="tab:orange"),
  "test": dict(marker="s", color="tab:red"),
}


def _plot_evals(ax, metrics, key) -> None:
  for kind, style in _EVAL_STYLE.items():
    steps, values = _series(metrics, kind, key)
    if len(steps):
      ax.plot(steps, values, ls="--", lw=0.9, ms=5, label=f"{kind} {key}", **style)


def _step_axis(ax, label: bool = True) -> None:
  """Steps as integers (``12k``); a run with a single logged step still gets a readable axis."""
  lo, hi = ax.get_xlim()
  if hi - lo < 1:
    ax.set_xlim(lo - 1, hi + 1)
  ax.xaxis.set_major_locator(ticker.MaxNLocator(integer=True))
  ax.xaxis.set_major_formatter(ticker.EngFormatter(sep=""))
  ax.grid(alpha=0.3)
  if label:
    ax.set_xlabel("training step")


def _no_data(ax, what: str) -> None:
  ax.text(0.5, 0.5, f"no {what} recorded", ha="center", va="center", transform=ax.transAxes)
  ax.set_xticks([])
  ax.set_yticks([])


def _legend(ax, **kw) -> None:
  if ax.get_legend_handles_labels()[0]:
    ax.legend(fontsize=8, **kw)


# --- learning curves ---------------------------------------------------------------------------


def _loss_panel(ax, metrics) -> None:
  steps, loss = _series(metrics, "train", "loss")
  t_steps, task = _series(metrics, "train", "task_loss")
  # The task loss only says something new where the regulariser or the budget term makes the two
  # differ.
  same = len(task) == len(loss) and np.allclose(task, loss, equal_nan=True)
  label = "train loss" + ("" if same else " (task + L2 regulariser + budget term)")
  _plot_train(ax, steps, loss, label, "tab:blue")
  if len(task) and not same:
    _plot_train(ax, t_steps, task, "train task loss", "tab:cyan", "--")
  _plot_evals(ax, metrics, "loss")
  shown = np.concatenate([loss, task, *(_series(metrics, k, "loss")[1] for k in _EVAL_STYLE)])
  shown = shown[np.isfinite(shown)]
  if len(shown) and shown.min() > 0 and shown.max() / shown.min() > 20:
    ax.set_yscale("log")
  ax.set_ylabel("loss")
  ax.set_title("Loss")
  _legend(ax, loc="best")


def _accuracy_summary(metrics, fraction: bool) -> str:
  """``best val 98.94% (step 2000), test 98.10% (step 2000)``: the numbers people quote."""
  fmt = (lambda v: f"{v:.2%}") if fraction else (lambda v: f"{v:.4g}")
  parts = []
  v_steps, v_acc = _series(metrics, "val", "accuracy")
  if np.isfinite(v_acc).any():
    i = int(np.nanargmax(v_acc))
    parts.append(f"best val {fmt(v_acc[i])} (step {v_steps[i]:.0f})")
  t_steps, t_acc = _series(metrics, "test", "accuracy")
  if len(t_acc):
    parts.append(f"test {fmt(t_acc[-1])} (step {t_steps[-1]:.0f})")
  return ", ".join(parts)


def _accuracy_panel(ax, metrics) -> None:
  steps, acc = _series(metrics, "train", "accuracy")
  _plot_train(ax, steps, acc, "train accuracy", "tab:blue")
  _plot_evals(ax, metrics, "accuracy")
  v_steps, v_acc = _series(metrics, "val", "accuracy")
  if np.isfinite(v_acc).any():
    i = int(np.nanargmax(v_acc))
    ax.plot(v_steps[i], v_acc[i], "*", color="gold", mec="black", ms=14, zorder=5, label="best val")
  fraction = max([1.0, *acc, *v_acc]) <= 1.0
  if fraction:
    ax.yaxis.set_major_formatter(ticker.PercentFormatter(xmax=1.0))
  ax.set_ylabel("accuracy")
  ax.set_title("Accuracy")
  _legend(ax, loc="best", title=_accuracy_summary(metrics, fraction) or None, title_fontsize=8)


def _lr_panel(ax, metrics) -> None:
  steps, lr = _series(metrics, "train", "lr")
  ax.plot(steps, lr, color="tab:green", lw=1.2)
  ax.set_ylabel("learning rate")
  ax.ticklabel_format(axis="y", style="sci", scilimits=(0, 0))


def _empty_figure(title: str, what: str) -> Figure:
  fig = Figure(figsize=(10, 3), layout="constrained")
  _no_data(fig.subplots(), what)
  fig.suptitle(title)
  return fig


def _learning_curves_figure(metrics: list[dict]) -> Figure:
  if not any(r.get("kind") in ("train", "val", "test") for r in metrics):
    return _empty_figure("Learning curves", "training or eval metrics")
  has_lr = len(_series(metrics, "train", "lr")[0]) > 0
  heights = [3.0, 3.0] + ([1.2] if has_lr else [])
  fig = Figure(figsize=(10, sum(heights) + 1.0), layout="constrained")
  axes = fig.subplots(len(heights), 1, sharex=True, height_ratios=heights)
  _loss_panel(axes[0], metrics)
  _accuracy_panel(axes[1], metrics)
  if has_lr:
    _lr_panel(axes[2], metrics)
  for ax in axes:
    _step_axis(ax, label=ax is axes[-1])
  fig.suptitle("Learning curves (train: faint = logged, solid = moving average)")
  return fig


# --- cost against budget -----------------------------------------------------------------------


def _budget_series(metrics, budget) -> tuple[np.ndarray, np.ndarray]:
  """The budget over steps: ``budget`` if given (steps empty: constant), else the ``budget``
  logged with training (a schedule if it changes)."""
  if budget is not None:  # 0 disables the budget, as in the loss
    return np.array([]), np.array([float(budget)] if budget > 0 else [])
  steps, values = _series(metrics, "train", "budget")
  keep = np.isfinite(values) & (values > 0)
  steps, values = steps[keep], values[keep]
  if len(values) and np.ptp(values) == 0:
    return np.array([]), values[-1:]
  return steps, values


def _budget_at(b_steps, b_values, steps) -> np.ndarray:
  if len(b_values) == 0:
    return np.full(len(steps), np.nan)
  if len(b_steps) == 0:
    return np.full(len(steps), b_values[-1])
  return b_values[np.clip(np.searchsorted(b_steps, steps, side="right") - 1, 0, None)]


def _cost_series(metrics, history, key) -> tuple[np.ndarray, np.ndarray]:
  """Cost ``key`` of the cropped architecture over steps, as a step function (it holds until the
  architecture next changes). From ``arch.jsonl`` where it has it, since that records every change
  and so every maximum; else from the training lines, which only sample it every log step."""
  if history is not None and np.isfinite(getattr(history, key)).any():
    values = getattr(history, key)
    return history.edges, np.append(values, values[-1])
  return _series(metrics, "train", key)


def _eng(value: float, unit: str = "") -> str:
  """``207.4 MFLOPs``: four significant digits with an SI prefix."""
  exponent = min(max(int(math.floor(math.log10(abs(value)) / 3)), 0), 4) if value else 0
  return f"{value / 1000**exponent:.4g} {' kMGT'[exponent].strip()}{unit}".rstrip()


def _draw_budget(ax, b_steps, b_values, unit) -> None:
  style = dict(color="tab:red", ls="--", lw=1.5)
  if len(b_steps):
    ax.step(b_steps, b_values, where="post", label="budget (schedule)", **style)
  elif len(b_values):
    ax.axhline(b_values[-1], label=f"budget {_eng(b_values[-1], unit)}", **style)


def _annotate_max(ax, steps, values, budget_there, unit) -> None:
  """Mark the largest cost ever reached: the paper's claim is that it stays within the budget."""
  i = int(np.nanargmax(values))
  note = f"max {_eng(values[i], unit)} at step {steps[i]:.0f}"
  over = bool(values[i] > budget_there[i])  # False when there is no budget (NaN)
  if np.isfinite(budget_there[i]):
    note += f"\n= {values[i] / budget_there[i]:.3f} × budget" + (" (OVER)" if over else "")
  ax.plot(steps[i], values[i], "v", color="tab:red" if over else "black", ms=9, label="max reached")
  box = dict(boxstyle="round", fc="mistyrose" if over else "white", ec="0.6")
  ax.text(0.01, 0.04, note, transform=ax.transAxes, fontsize=9, va="bottom", bbox=box)


def _cost_panel(ax, metrics, history, key, budget, title, unit) -> np.ndarray:
  """Cost ``key`` over steps against the budget (empty when not budgeted), its maximum marked.

  Returns (steps, cost / budget) of the cropped architecture for the ratio panel.
  """
  steps, values = _cost_series(metrics, history, key)
  if not np.isfinite(values).any():
    _no_data(ax, title.lower())
    return np.empty((2, 0))
  b_steps, b_values = budget
  # The cost holds until the architecture next changes: a step function, not a ramp.
  ax.step(steps, values, where="post", color="tab:purple", lw=1.8, label="cropped architecture")
  _draw_budget(ax, b_steps, b_values, unit)
  budget_there = _budget_at(b_steps, b_values, steps)
  _annotate_max(ax, steps, values, budget_there, unit)
  ax.set_ylim(0, np.nanmax(np.concatenate([values, b_values])) * 1.2)
  ax.yaxis.set_major_formatter(ticker.EngFormatter(sep=""))
  ax.set_ylabel(title)
  ax.set_title(f"{title} of the cropped architecture" + (" vs budget" if len(b_values) else ""))
  _legend(ax, loc="best")
  return np.stack([steps, values / budget_there]) if len(b_values) else np.empty((2, 0))


def _ratio_panel(ax, metrics, cropped_ratio) -> None:
  steps, ratio = _series(metrics, "train", "cost_ratio")
  _plot_train(ax, steps, ratio, "soft cost / budget (cost_ratio in the loss)", "tab:green")
  if cropped_ratio.shape[1]:
    ax.step(*cropped_ratio, where="post", color="tab:purple", lw=1.2, label="cropped cost / budget")
  ax.axhline(1.0, color="tab:red", ls="--", lw=1.2, label="budget")
  shown = np.concatenate([ratio, cropped_ratio[1], [1.0]])
  shown = shown[np.isfinite(shown)]
  pad = 0.08 * max(shown.max() - shown.min(), 0.1)
  ax.set_ylim(shown.min() - pad, shown.max() + pad)
  ax.set_ylabel("cost / budget")
  ax.set_title("Cost relative to the budget (above 1 = over budget)")
  _legend(ax, loc="best")


_COSTS = {"flops": ("FLOPs / example", "FLOPs"), "params": ("Parameters", "")}


def _cost_figure(metrics, history, budget, budget_metric) -> Figure:
  """FLOPs (and parameters) of the cropped architecture over steps; the budget on its metric."""
  keys = ["flops"]
  if history is not None and np.isfinite(history.params).any():
    keys.append("params")
  has_ratio = len(_series(metrics, "train", "cost_ratio")[0]) > 0
  budgeted = _budget_series(metrics, budget)
  show_ratio = has_ratio or (budget_metric in keys and len(budgeted[1]) > 0)
  heights = [3.2] * len(keys) + ([2.2] if show_ratio else [])
  fig = Figure(figsize=(10, sum(heights) + 1.0), layout="constrained")
  axes = np.atleast_1d(fig.subplots(len(heights), 1, sharex=True, height_ratios=heights))
  ratio = np.empty((2, 0))
  for ax, key in zip(axes, keys, strict=False):
    b = budgeted if key == budget_metric else (np.array([]), np.array([]))
    r = _cost_panel(ax, metrics, history, key, b, *_COSTS[key])
    ratio = r if key == budget_metric else ratio
  if show_ratio:
    _ratio_panel(axes[-1], metrics, ratio)
  for ax in axes:
    _step_axis(ax, label=ax is axes[-1])
  fig.suptitle("Cost of the cropped architecture over training (marker: the largest it ever was)")
  return fig


# --- architecture over steps -------------------------------------------------------------------


@dataclasses.dataclass
class _Heat:
  """One heatmap panel: a row per layer, a column per architecture record."""

  title: str
  rows: list[str]
  values: np.ndarray  # (rows, n)
  off: np.ndarray  # (rows, n) bool: block switched off
  norm: colors.Normalize
  cmap: str
  unit: str


def _norm(values: np.ndarray) -> colors.Normalize:
  """Colour scale for sizes: logarithmic when they span a wide range (causal kernels: 5..784)."""
  finite = values[np.isfinite(values)]
  lo, hi = (finite.min(), finite.max()) if len(finite) else (0.0, 1.0)
  if lo == hi:
    return colors.Normalize(lo - 1, hi + 1)
  if lo > 0 and hi / lo > 16:
    return colors.LogNorm(lo, hi)
  return colors.Normalize(lo, hi)


def _axis_name(d: int, dims: int) -> str:
  names = {0: "vertical", 1: "horizontal"} if dims == 2 else {}
  return f", axis {d}" + (f" ({names[d]})" if d in names else "")


def _per_axis(title: str, values: np.ndarray, **fields) -> list[_Heat]:
  """One panel per spatial axis of ``values`` (n, rows, D), or one when every axis agrees at every
  step (square kernels, isotropic resolution): a second identical panel only costs attention."""
  dims = values.shape[2]
  if dims == 1 or all(np.array_equal(values[..., 0], values[..., d], True) for d in range(dims)):
    suffix = "" if dims == 1 else " (the same on every axis)"
    return [_Heat(title + suffix, values=values[..., 0].T, **fields)]
  return [
    _Heat(title + _axis_name(d, dims), values=values[..., d].T, **fields) for d in range(dims)
  ]


def _heat_panels(h: _ArchHistory) -> list[_Heat]:
  """Kernel taps (stem and blocks), widths (stream and hidden), resolutions: rows over records."""
  blocks = [f"block {l}" for l in range(h.num_blocks)]
  off = ~h.active.T
  with_stem_off = np.vstack([np.zeros((1, len(h.steps)), bool), off])
  widths = np.vstack([h.stream[None], h.hidden.T])
  return [
    *_per_axis("Kernel taps per layer", h.taps, rows=["stem", *blocks], off=with_stem_off,
               norm=_norm(h.taps), cmap="viridis", unit="taps"),
    _Heat("Width: residual stream and hidden width per block", rows=["stream", *blocks],
          values=widths, off=with_stem_off, norm=_norm(widths), cmap="cividis", unit="channels"),
    *_per_axis("Resolution per block", h.resolution, rows=blocks, off=off,
               norm=_norm(h.resolution), cmap="plasma", unit="samples"),
  ]  # fmt: skip


def _runs(keys: list) -> list[tuple[int, int]]:
  """Maximal [start, stop) runs of equal consecutive keys."""
  starts = [0] + [i for i in range(1, len(keys)) if keys[i] != keys[i - 1]]
  return list(zip(starts, [*starts[1:], len(keys)], strict=True))


def _cell_keys(values: np.ndarray, off: np.ndarray) -> list:
  return [
    _OFF if o else (None if not np.isfinite(v) else int(round(v)))
    for v, o in zip(values, off, strict=True)
  ]


def _draw_heat(ax, cax, p: _Heat, edges: np.ndarray) -> None:
  shown = np.ma.masked_array(p.values, mask=p.off | ~np.isfinite(p.values))
  mesh = ax.pcolormesh(edges, np.arange(len(p.rows) + 1), shown, cmap=p.cmap, norm=p.norm)
  for r in range(len(p.rows)):
    keys = _cell_keys(p.values[r], p.off[r])
    for i, j in _runs(keys):
      if keys[i] == _OFF:
        ax.add_patch(
          Rectangle((edges[i], r), edges[j] - edges[i], 1, fc="0.93", ec="0.6", hatch="////", lw=0)
        )
  ax.set_yticks(np.arange(len(p.rows)) + 0.5, p.rows, fontsize=8)
  ax.set_ylim(len(p.rows), 0)  # first layer on top, data flows downward
  ax.set_title(p.title, fontsize=10)
  cbar = ax.figure.colorbar(mesh, cax=cax)
  cbar.set_label(p.unit, fontsize=8)
  cbar.ax.tick_params(labelsize=7)


def _label_heat(ax, p: _Heat, edges: np.ndarray) -> None:
  """Write each constant run's value in its cells where it fits (after layout, in pixels)."""
  width_px = ax.get_window_extent().width
  x0, x1 = ax.get_xlim()
  px_per_char = _TEXT_PT * 0.62 * ax.figure.dpi / 72
  for r in range(len(p.rows)):
    keys = _cell_keys(p.values[r], p.off[r])
    for i, j in _runs(keys):
      if keys[i] is None:
        continue
      text = str(keys[i])
      if (edges[j] - edges[i]) / (x1 - x0) * width_px < len(text) * px_per_char + 6:
        continue
      color = "0.45" if keys[i] == _OFF else _text_color(p, keys[i])
      t = ax.text(
        (edges[i] + edges[j]) / 2,
        r + 0.5,
        text,
        ha="center",
        va="center",
        fontsize=_TEXT_PT,
        color=color,
        clip_on=True,
      )
      t.set_in_layout(False)


def _text_color(p: _Heat, value: float) -> str:
  """Black on light cells, white on dark ones."""
  r, g, b, _ = matplotlib.colormaps[p.cmap](p.norm(value))
  return "black" if 0.299 * r + 0.587 * g + 0.114 * b > 0.5 else "white"


def _draw_depth(ax, cax, h: _ArchHistory) -> None:
  depth = h.active.sum(1).astype(float)
  ax.step(
    h.edges,
    np.append(depth, depth[-1]),
    where="post",
    color="tab:blue",
    lw=1.8,
    label="active blocks",
  )
  ax.fill_between(h.edges, np.append(depth, depth[-1]), step="post", color="tab:blue", alpha=0.15)
  ax.axhline(h.num_blocks, color="0.4", ls=":", lw=1.2, label=f"L_max = {h.num_blocks}")
  ax.set_ylim(0, h.num_blocks + 0.7)
  ax.yaxis.set_major_locator(ticker.MaxNLocator(integer=True))
  ax.set_ylabel("blocks")
  ax.set_title("Depth: number of active blocks", fontsize=10)
  _legend(ax, loc="best")
  cax.set_axis_off()


def _draw_final(ax, h: _ArchHistory) -> None:
  """The final architecture as text: exact numbers where the heatmap's last run is too narrow."""
  ax.set_axis_off()
  text = f"Architecture at step {h.steps[-1]:.0f} (last record):\n" + architecture_text(h.final)
  ax.text(0.0, 1.0, text, family="monospace", fontsize=8.5, va="top", transform=ax.transAxes)


def _stage_at(metrics: list[dict], step: float) -> str | None:
  """The stage a DNAL ``train`` record names at or after ``step`` (the stage that ran it)."""
  stages = [(r["step"], r["stage"]) for r in metrics if r.get("kind") == "train" and "stage" in r]
  later = [stage for at, stage in sorted(stages) if at >= step]
  return later[0] if later else (stages[-1][1] if stages else None)


def _dnal_widths_figure(archs: list[dict], metrics: list[dict]) -> Figure:
  """DNAL: kept channels of every gated layer, one line per architecture the run logged (the
  unpruned network at step 0, the pruned one when the architecture stage ends)."""
  records = [r for r in _last_per_step(archs) if "widths" in r]
  fig = Figure(figsize=(10, 3.6), layout="constrained")
  ax = fig.subplots()
  for record in records:
    stage = _stage_at(metrics, record["step"] + 1)
    label = f"step {int(record['step'])}" + (f", {stage} stage on" if stage else "")
    if "macs" in record:
      label += f": {record['macs'] / 1e6:.2f} MMACs, {record['params'] / 1e6:.3f} M params"
    ax.step(range(len(record["widths"])), record["widths"], where="mid", marker=".", label=label)
  ax.set_xlabel("gated layer")
  ax.set_ylabel("kept channels")
  ax.legend(loc="best", fontsize="small")
  ax.grid(alpha=0.3)
  fig.suptitle("DNAL widths per stage")
  return fig


def _architecture_figure(history: _ArchHistory | None, archs=(), metrics=()) -> Figure:
  if history is None and any("widths" in r for r in archs):
    return _dnal_widths_figure(list(archs), list(metrics))
  if history is None:
    return _empty_figure("Architecture over training", "architecture (arch.jsonl)")
  panels = _heat_panels(history)
  heights = [0.55 + 0.24 * len(p.rows) for p in panels] + [1.5]
  text_height = 0.2 + 0.16 * (3 + history.num_blocks)
  fig = Figure(figsize=(11, sum(heights) + text_height + 0.9), dpi=_DPI, layout="constrained")
  grid = fig.add_gridspec(
    len(heights) + 1, 2, width_ratios=[1, 0.015], height_ratios=[*heights, text_height]
  )
  axes = [fig.add_subplot(grid[0, 0])]
  axes += [fig.add_subplot(grid[i, 0], sharex=axes[0]) for i in range(1, len(heights))]
  caxes = [fig.add_subplot(grid[i, 1]) for i in range(len(heights))]
  for ax, cax, p in zip(axes, caxes, panels, strict=False):
    _draw_heat(ax, cax, p, history.edges)
  _draw_depth(axes[-1], caxes[-1], history)
  _draw_final(fig.add_subplot(grid[-1, :]), history)
  axes[0].set_xlim(history.edges[0], history.edges[-1])
  for ax in axes:
    _step_axis(ax, label=ax is axes[-1])
  for ax in axes[:-1]:
    ax.grid(False)  # grid lines over a heatmap read as cell borders
  fig.suptitle(
    "Architecture over training: a row per layer, a new column at each change;"
    " hatched = block switched off"
  )
  fig.draw_without_rendering()  # lay out first: the labels need the panels' sizes in pixels
  fig.set_layout_engine("none")  # and keep that layout: the labels were placed for it
  for ax, p in zip(axes, panels, strict=False):
    _label_heat(ax, p, history.edges)
  return fig


# --- architecture parameters against their bucket boundaries ------------------------------------

_PARAM_COLUMNS = ("kernel", "width", "resolution", "depth")
_AXIS_STYLE = ("-", "--")


def _param_cell(name: str) -> tuple[str, str] | None:
  """(row, column) of a flat parameter name: the layer, or "network" for network-wide masks."""
  parts = name.split("/")
  column = ARCH_PARAM_DIMENSIONS.get(parts[-1])
  if column is None:
    return None
  return ("network" if len(parts) == 1 else parts[0]), column


def _param_trajectories(metrics: list[dict]) -> tuple[np.ndarray, dict[str, np.ndarray]]:
  records = [r for r in _last_per_step(metrics) if r.get("kind") == "arch_params"]
  steps = np.asarray([_step_of(r) for r in records], float)
  series: dict[str, list] = {}
  for i, r in enumerate(records):
    for name, value in r.get("values", {}).items():
      series.setdefault(name, [None] * len(records))[i] = np.atleast_1d(np.asarray(value, float))
  out = {}
  for name, values in series.items():
    width = max(len(v) for v in values if v is not None)
    out[name] = np.asarray([v if v is not None else np.full(width, np.nan) for v in values])
  return steps, out


def _draw_boundaries(ax, archs: list[dict], name: str, last_step: float, lim) -> None:
  """Grey lines at the values where the parameter's crop changes, per architecture interval;
  the sizes of the last interval's bands written at the right edge."""
  records = [r for r in _last_per_step(archs) if name in r.get("buckets", {})]
  for i, r in enumerate(records):
    end = _step_of(records[i + 1]) if i + 1 < len(records) else last_step
    for a, axis in enumerate(r["buckets"][name][:2]):
      for v in axis["at"]:
        if lim[0] <= v <= lim[1]:
          ax.hlines(v, _step_of(r), end, color="0.6", lw=0.6, ls=_AXIS_STYLE[a], zorder=1)
  if not records:
    return
  axis = records[-1]["buckets"][name][0]
  edges = [lim[0], *[v for v in axis["at"] if lim[0] < v < lim[1]], lim[1]]
  first = sum(v <= lim[0] for v in axis["at"])
  for j in range(len(edges) - 1):
    label = axis["sizes"][first + j]
    ax.annotate(
      str(label), (1.0, (edges[j] + edges[j + 1]) / 2), xycoords=("axes fraction", "data"),
      xytext=(2, 0), textcoords="offset points", va="center", fontsize=6, color="0.35",
    )  # fmt: skip


def _param_limits(values: np.ndarray, boundaries: list[float]) -> tuple[float, float]:
  """The trajectory's range widened to the nearest boundary beyond each end (one band more)."""
  lo, hi = float(np.nanmin(values)), float(np.nanmax(values))
  below = [v for v in boundaries if v < lo]
  above = [v for v in boundaries if v > hi]
  pad = max(hi - lo, 1e-3) * 0.1
  return (max(below) if below else lo) - pad, (min(above) if above else hi) + pad


def _arch_params_figure(metrics: list[dict], archs: list[dict]) -> Figure:
  steps, series = _param_trajectories(metrics)
  cells: dict[tuple[str, str], list[str]] = {}
  for name in series:
    cell = _param_cell(name)
    if cell:
      cells.setdefault(cell, []).append(name)
  if not cells:
    return _empty_figure("Architecture parameters", "architecture parameters (metrics.jsonl)")
  rows = sorted({r for r, _ in cells}, key=lambda r: (r != "network", r != "stem_conv", r))
  columns = [c for c in _PARAM_COLUMNS if any(col == c for _, col in cells)]
  fig = Figure(
    figsize=(3.1 * len(columns) + 0.6, 1.45 * len(rows) + 1.0), dpi=_DPI, layout="constrained"
  )
  grid = fig.add_gridspec(len(rows), len(columns))
  last_step = float(steps.max()) if steps.size else 0.0
  first_ax = None
  for i, row in enumerate(rows):
    for j, column in enumerate(columns):
      names = cells.get((row, column))
      if not names:
        continue
      ax = fig.add_subplot(grid[i, j], sharex=first_ax)
      first_ax = first_ax or ax
      boundaries = []
      for r in archs:
        for name in names:
          for axis in r.get("buckets", {}).get(name, [])[:2]:
            boundaries += axis["at"]
      values = np.concatenate([series[n].ravel() for n in names])
      lim = _param_limits(values[np.isfinite(values)], boundaries)
      for name in names:
        v = series[name]
        gate = name.endswith("_gate")
        for a in range(v.shape[1]):
          style = dict(lw=0.5, alpha=0.4, color="tab:blue") if gate else dict(
            lw=1.3, ls=_AXIS_STYLE[a % 2], color=f"C{names.index(name)}",
            label=(name.rsplit("/", 1)[-1] + (f" axis {a}" if v.shape[1] > 1 else "")),
          )  # fmt: skip
          ax.plot(steps, v[:, a], zorder=2, **style)
        if not gate:
          _draw_boundaries(ax, archs, name, last_step, lim)
      ax.set_ylim(*lim)
      ax.set_title(f"{row}: {column}", fontsize=8)
      ax.tick_params(labelsize=7)
      if not any(n.endswith("_gate") for n in names):
        ax.legend(fontsize=6, loc="best")
      _step_axis(ax, label=i == len(rows) - 1)
  fig.suptitle(
    "Architecture parameters over training; grey: values where the crop changes"
    " (sizes at the right: taps, channels, samples, blocks)"
  )
  return fig


# --- the report --------------------------------------------------------------------------------


def _save(fig: Figure, path: pathlib.Path) -> pathlib.Path:
  """Write atomically, so a viewer refreshing the report never shows half a PNG."""
  FigureCanvasAgg(fig)
  tmp = path.with_name(path.name + ".tmp")
  fig.savefig(tmp, dpi=_DPI, format="png")
  os.replace(tmp, path)
  return path


def _configured_budget_metric(workdir: pathlib.Path) -> str:
  """``budget.metric`` of the run's ``config.json`` (``"flops"`` when it says nothing)."""
  try:
    config = json.loads((workdir / "config.json").read_text())
    return str(config["budget"]["metric"])
  except (OSError, ValueError, KeyError, TypeError):
    return "flops"


def write_report(
  workdir: str | os.PathLike, budget: float | None = None, *, budget_metric: str | None = None
) -> list[pathlib.Path]:
  """Draw ``report/{learning_curves,cost,architecture,arch_params}.png`` from a workdir's JSONL
  files (``arch_params.png``: every architecture parameter's trajectory with the values where its
  crop changes).

  Args:
    workdir: the run's directory, holding ``metrics.jsonl`` and/or ``arch.jsonl``.
    budget: the cost budget; ``None`` takes the ``budget`` logged on the training lines (and
      draws no budget if there is none).
    budget_metric: ``"flops"`` (per example) or ``"params"``: which cost the budget bounds;
      ``None`` reads ``budget.metric`` from the workdir's ``config.json`` (default ``"flops"``).

  Returns:
    The paths of the four PNGs (always four; a panel without data says so).
  """
  workdir = pathlib.Path(workdir)
  budget_metric = budget_metric or _configured_budget_metric(workdir)
  if budget_metric not in _COSTS:
    raise ValueError(f"budget_metric must be one of {sorted(_COSTS)}, got {budget_metric!r}")
  metrics = read_jsonl(workdir / METRICS_FILE)
  archs = read_jsonl(workdir / ARCH_FILE)
  if not metrics and not archs:
    raise FileNotFoundError(f"no records in {workdir / METRICS_FILE} or {workdir / ARCH_FILE}")
  steps = [_step_of(r) for r in metrics + archs if _step_of(r) > -math.inf]
  history = _arch_history(archs, max(steps, default=0.0))
  out = workdir / REPORT_DIR
  out.mkdir(parents=True, exist_ok=True)
  figures = {
    "learning_curves.png": lambda: _learning_curves_figure(metrics),
    "cost.png": lambda: _cost_figure(metrics, history, budget, budget_metric),
    "architecture.png": lambda: _architecture_figure(history, archs, metrics),
    "arch_params.png": lambda: _arch_params_figure(metrics, archs),
  }
  return [_save(make(), out / name) for name, make in figures.items()]
