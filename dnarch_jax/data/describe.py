"""The one-line data summary a run prints when it starts: splits, shapes, layout, classes.

For a user's arrays it also gives the class balance of train (from the label counts the load
checks already made); built-in and tfds tasks are described from what the task knows, without
reading their examples.
"""

from __future__ import annotations

import sys

from dnarch_jax.data import arrays, tasks

# Classes named one by one in the summary; more are counted.
_NAMED_CLASSES = 10


def _size(count: int | None) -> str:
  return "unknown" if count is None else str(count)


def _splits(task: tasks.Task, val_size: int | None, dataset: arrays.ArraysDataset | None) -> str:
  train = task.train_examples
  if task.splits["validation"].part == "validation":
    val = task.val_size if val_size is None else val_size
    train_text = _size(None if train is None else train - val)
    val_text = f"{val} (carved from train)"
  else:
    train_text = _size(train)
    val_count = len(dataset.splits["val"]) if dataset is not None else None
    val_text = f"{_size(val_count)} (own split)"
  return f"train {train_text}, validation {val_text}, test {_size(task.test_examples)}"


def _class_list(classes: list[int]) -> str:
  named = ", ".join(map(str, classes[:_NAMED_CLASSES]))
  more = len(classes) - _NAMED_CLASSES
  return f"{named} and {more} more" if more > 0 else named


def _balance(dataset: arrays.ArraysDataset) -> str:
  unit = "position" if dataset.dense else "example"
  present = {c: n for c, n in dataset.train_counts.items() if n}
  total = sum(present.values())
  smallest, largest = min(present, key=present.get), max(present, key=present.get)
  share = lambda c: f"{100 * present[c] / total:.1f}%"
  if present[smallest] == present[largest]:
    text = f"train {unit}s balanced, {share(smallest)} per class"
  else:
    text = (
      f"class shares of train {unit}s {share(smallest)} (class {smallest}) to "
      f"{share(largest)} (class {largest})"
    )
  absent = [c for c, n in dataset.train_counts.items() if not n]
  if absent:
    text += f"; no train {unit} of class {_class_list(absent)}"
  return text


def describe_data(cfg) -> str:
  """One line: the task, its splits and sizes, the example shape and layout, the classes.

  Args:
    cfg: a data config (`default_data_config`, validated).
  """
  layout, num_classes = cfg.get("layout"), cfg.get("num_classes")
  task = tasks.get_task(cfg.task, cfg.data_dir, layout=layout, num_classes=num_classes)
  dataset = None
  if task.is_arrays:  # checked and cached when the task was made: no second read
    dataset = arrays.load_arrays(cfg.data_dir, layout=layout, num_classes=num_classes)
  shape = f"example {task.input_shape}, {tasks.task_layout(task.input_shape)} layout"
  if task.dense:
    shape += ", a label per position"
  classes = f"{task.num_classes} classes"
  if dataset is not None:
    how = "config.data.num_classes" if dataset.num_classes_given else "largest train label + 1"
    classes += f" ({how}); {_balance(dataset)}"
  name = f"{task.name} {task.dataset}" if task.is_arrays else task.name
  return f"data: {name}; {_splits(task, cfg.val_size, dataset)}; {shape}; {classes}"


def print_data_summary(cfg, *, enabled: bool = True) -> None:
  """Prints `describe_data(cfg)` to stderr (stdout carries the commands' JSON) when `enabled`
  (a run's main process)."""
  if enabled:
    print(describe_data(cfg), file=sys.stderr, flush=True)
