"""Tasks: views of datasets, the unit a run names (`smnist`, `cifar10`, ...).

A task says which dataset it reads (a tfds name, or a folder of arrays), which split of it each of
train/validation/test is (validation carved from train where the dataset has none, by a fixed
seeded split), what the model sees (input shape, channels last; number of classes; whether labels
are per position) and the pure numpy transform from a stored example to a model input.

Names: the built-in tasks in `TASKS`; `arrays` (a user's folder of arrays, given as `data_dir`);
and `tfds:NAME` (any tfds dataset already prepared, in array_record format, under `data_dir`).
"""

from __future__ import annotations

import dataclasses
import functools
import os
from collections.abc import Callable, Mapping
from typing import Any, Literal

import numpy as np

from dnarch_jax.data import arrays, transforms

# The seed of every validation carve-out: validation must be the same examples in every run, so it
# is fixed here rather than taken from the run's seed.
VALIDATION_SPLIT_SEED = 20230210
# pMNIST's pixel order (METHOD.md: a fixed permutation from a fixed seed, stored with the run).
PMNIST_PERMUTATION_SEED = 0
MNIST_DATASET = "dnarch_mnist"  # the project's own builder, mnist_builder.DATASET_NAME
ARRAYS_TASK = "arrays"
TFDS_PREFIX = "tfds:"
# The validation split carved from a train split without its own (arrays, tfds:NAME): a tenth,
# raised towards a floor (by at most a fifth of train) and capped; why these numbers: the module
# docstring of `dnarch_jax.data.arrays`.
VAL_FRACTION = 0.1
VAL_FLOOR = 100
VAL_FLOOR_MAX_FRACTION = 0.2
VAL_CEILING = 5000

# tfds's speech_commands label order and the ten words CCNN keeps, in CCNN's class order.
TFDS_SPEECH_LABELS = (
  "down", "go", "left", "no", "off", "on", "right", "stop", "up", "yes", "_silence_", "_unknown_",
)  # fmt: skip
CCNN_SPEECH_WORDS = ("yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go")
# tfds label -> CCNN label; -1 drops the example (silence, and the 25 other words as "unknown").
SPEECH_LABEL_MAP = tuple(
  CCNN_SPEECH_WORDS.index(w) if w in CCNN_SPEECH_WORDS else -1 for w in TFDS_SPEECH_LABELS
)

Transform = Callable[[Any, Any, np.random.Generator | None], tuple[np.ndarray, Any]]


@dataclasses.dataclass(frozen=True)
class SplitSpec:
  """Where a task split's examples come from.

  Attributes:
    source_split: the dataset's split name (`train`, `test`, `validation`, ...).
    part: `all` of it, or the `train` / `validation` part of the fixed carve-out.
  """

  source_split: str
  part: Literal["all", "train", "validation"] = "all"


_CARVED = {
  "train": SplitSpec("train", "train"),
  "validation": SplitSpec("train", "validation"),
  "test": SplitSpec("test"),
}


@dataclasses.dataclass(frozen=True)
class Task:
  """A view of a dataset as a supervised problem. See the module docstring.

  Attributes:
    name: registry name.
    dataset: tfds dataset name, or for `arrays` the folder path.
    input_shape: per-example input the model sees, (spatial..., channels).
    num_classes: output classes (for dense tasks: per position, background included).
    dense: labels are per position, shaped like `input_shape[:-1]`.
    splits: `train`, `validation`, `test` -> where each comes from.
    val_size: default number of train examples carved out for validation (0 when the dataset
      has its own validation split); `config.data.val_size=None` means this.
    transform: pure `(value, label, rng | None) -> (float32 input, int32 label)`.
    augment: whether training examples are augmented by default (`transform` gets an RNG).
    input_key, label_key: the stored example's fields.
    keep_example: optional pure `(value, label) -> bool`; examples it rejects are dropped from
      every split (found by one pass over the labels and inputs when the split is opened).
    needs_tensorflow: tfds needs TensorFlow to prepare the dataset (speech_commands: also to
      read it, its Audio feature imports TensorFlow).
    train_examples: examples in the source train split, where known, to check `val_size`.
    test_examples: examples in the test split, where known (for the run's data summary).
    metadata: facts a run stores with its results (e.g. pMNIST's permutation seed).
  """

  name: str
  dataset: str
  input_shape: tuple[int, ...]
  num_classes: int
  dense: bool
  splits: Mapping[str, SplitSpec]
  val_size: int
  transform: Transform
  augment: bool = False
  input_key: str = "image"
  label_key: str = "label"
  keep_example: Callable[[Any, Any], bool] | None = None
  needs_tensorflow: bool = False
  train_examples: int | None = None
  test_examples: int | None = None
  metadata: Mapping[str, Any] = dataclasses.field(default_factory=dict)

  @property
  def is_arrays(self) -> bool:
    return self.name == ARRAYS_TASK


def pmnist_permutation(seed: int = PMNIST_PERMUTATION_SEED) -> np.ndarray:
  """pMNIST's pixel permutation: int64 [784], a pure function of `seed` (store it with a run)."""
  return transforms.seeded_permutation(28 * 28, seed)


def carve_indices(
  num_examples: int,
  val_size: int,
  part: Literal["train", "validation"],
  seed: int = VALIDATION_SPLIT_SEED,
) -> np.ndarray:
  """Positions (sorted, int64) of the `part` of a fixed random train/validation carve-out.

  The validation part is `val_size` positions chosen by `seeded_permutation(num_examples, seed)`;
  the train part is the rest. Both are pure functions of their arguments.
  """
  if not 0 < val_size < num_examples:
    raise ValueError(
      f"val_size={val_size} must be between 1 and {num_examples - 1} (the split has "
      f"{num_examples} examples)."
    )
  order = transforms.seeded_permutation(num_examples, seed)
  chosen = order[:val_size] if part == "validation" else order[val_size:]
  return np.sort(chosen)


def _speech_keep(samples: np.ndarray, label) -> bool:
  # CCNN keeps the ten words and discards the few clips shorter than one second.
  return SPEECH_LABEL_MAP[int(label)] >= 0 and np.shape(samples)[0] == transforms.SPEECH_SAMPLES


def _speech_transform(inner: Transform, samples, label, rng):
  return inner(samples, SPEECH_LABEL_MAP[int(label)], rng)


def _builtin_tasks() -> dict[str, Task]:
  mnist_norm = dict(mean=transforms.MNIST_MEAN, std=transforms.MNIST_STD)
  cifar_norm = dict(mean=transforms.CIFAR_MEAN, std=transforms.CIFAR_STD)
  cifar_aug = dict(crop_padding=4, flip=True)
  mnist = dict(
    dataset=MNIST_DATASET, splits=_CARVED, val_size=5000, train_examples=60000,
    test_examples=10000,
  )  # fmt: skip
  cifar = dict(
    splits=_CARVED, val_size=5000, train_examples=50000, test_examples=10000,
    needs_tensorflow=True,
  )  # fmt: skip
  speech = dict(
    dataset="speech_commands",
    num_classes=10,
    dense=False,
    splits={s: SplitSpec(s) for s in ("train", "validation", "test")},
    val_size=0,
    input_key="audio",
    keep_example=_speech_keep,
    needs_tensorflow=True,
  )
  classify = transforms.classify_image
  tasks = [
    Task(
      name="smnist",
      input_shape=(784, 1),
      num_classes=10,
      dense=False,
      transform=functools.partial(classify, **mnist_norm, as_sequence=True),
      **mnist,
    ),
    Task(
      name="pmnist",
      input_shape=(784, 1),
      num_classes=10,
      dense=False,
      transform=functools.partial(
        classify, **mnist_norm, as_sequence=True, permutation=pmnist_permutation()
      ),
      # The permutation itself too, so a stored run can be checked against this code.
      metadata={
        "permutation_seed": PMNIST_PERMUTATION_SEED,
        "permutation": tuple(pmnist_permutation().tolist()),
      },
      **mnist,
    ),
    Task(
      name="mnist",
      input_shape=(28, 28, 1),
      num_classes=10,
      dense=False,
      transform=functools.partial(classify, **mnist_norm),
      **mnist,
    ),
    Task(
      name="mnist_dense",
      input_shape=(28, 28, 1),
      num_classes=11,
      dense=True,
      transform=functools.partial(transforms.segment_digit, **mnist_norm),
      metadata={"foreground_threshold": transforms.FOREGROUND_THRESHOLD},
      **mnist,
    ),
    Task(
      name="scifar10",
      dataset="cifar10",
      input_shape=(1024, 3),
      num_classes=10,
      dense=False,
      transform=functools.partial(classify, **cifar_norm, **cifar_aug, as_sequence=True),
      augment=True,
      **cifar,
    ),
    Task(
      name="cifar10",
      dataset="cifar10",
      input_shape=(32, 32, 3),
      num_classes=10,
      dense=False,
      transform=functools.partial(classify, **cifar_norm, **cifar_aug),
      augment=True,
      **cifar,
    ),
    Task(
      name="cifar100",
      dataset="cifar100",
      input_shape=(32, 32, 3),
      num_classes=100,
      dense=False,
      transform=functools.partial(classify, **cifar_norm, **cifar_aug),
      # METHOD.md's CCNN table trains CIFAR100 without augmentation; `augment` turns it on.
      augment=False,
      **cifar,
    ),
    Task(
      name="stl10",
      dataset="stl10",
      input_shape=(96, 96, 3),
      num_classes=10,
      dense=False,
      # Crop padding 12 = 96 / 8, CIFAR's 4 / 32 ratio (CCNN's STL10 resizes to 256 and
      # rotates instead; we keep the native 96 x 96).
      transform=functools.partial(
        classify,
        mean=transforms.STL10_MEAN,
        std=transforms.STL10_STD,
        crop_padding=12,
        flip=True,
      ),
      augment=True,
      splits=_CARVED,
      val_size=500,  # CCNN's 4500/500
      train_examples=5000,
      test_examples=8000,
      needs_tensorflow=True,
    ),
    Task(
      name="speech_commands_raw",
      input_shape=(transforms.SPEECH_SAMPLES, 1),
      transform=functools.partial(_speech_transform, transforms.classify_raw_audio),
      **speech,
    ),
    Task(
      name="speech_commands_mfcc",
      input_shape=(161, 20),
      transform=functools.partial(_speech_transform, transforms.classify_mfcc),
      **speech,
    ),
  ]
  return {t.name: t for t in tasks}


TASKS: dict[str, Task] = _builtin_tasks()


def task_layout(input_shape: tuple[int, ...]) -> str:
  """`sequence` for a (length, channels) input, `image` for (height, width, channels)."""
  return "sequence" if len(input_shape) == 2 else "image"


def default_val_size(train_examples: int) -> int:
  """Examples carved from a train split without its own validation split (see `VAL_FRACTION`).

  Raises:
    ValueError: fewer than 2 train examples, nothing to carve a validation split from.
  """
  if train_examples < 2:
    raise ValueError(
      f"a train split of {train_examples} example(s) cannot give a validation split; add "
      "examples or validation files."
    )
  floor = min(VAL_FLOOR, int(VAL_FLOOR_MAX_FRACTION * train_examples))
  return max(1, min(VAL_CEILING, max(int(VAL_FRACTION * train_examples), floor)))


def task_names() -> list[str]:
  """Every task name a config may use (`tfds:NAME` stands for any prepared tfds dataset)."""
  return [*TASKS, ARRAYS_TASK, TFDS_PREFIX + "NAME"]


def arrays_task(
  folder: str | os.PathLike, *, layout: str | None = None, num_classes: int | None = None
) -> Task:
  """The `arrays` task over a user's folder, read with `layout`, with `num_classes` classes (None:
  the largest train label + 1); see `dnarch_jax.data.arrays` for the rules and checks."""
  loaded = arrays.load_arrays(folder, layout=layout, num_classes=num_classes)
  train_examples = len(loaded.splits["train"])
  has_val = "val" in loaded.splits
  own_splits = {
    "train": SplitSpec("train"),
    "validation": SplitSpec("val"),
    "test": SplitSpec("test"),
  }
  return Task(
    name=ARRAYS_TASK,
    dataset=os.fspath(loaded.folder),
    input_shape=loaded.input_shape,
    num_classes=loaded.num_classes,
    dense=loaded.dense,
    splits=own_splits if has_val else _CARVED,
    val_size=0 if has_val else default_val_size(train_examples),
    transform=functools.partial(transforms.scale_array, input_shape=loaded.input_shape),
    input_key="input",
    train_examples=train_examples,
    test_examples=len(loaded.splits["test"]),
    metadata={"layout": loaded.layout},
  )


def tfds_task(name: str, data_dir: str | os.PathLike | None = None) -> Task:
  """A task over any tfds classification dataset already prepared under `data_dir`.

  Uses the dataset's supervised keys (else `image`/`label`); the label must be a `ClassLabel`
  and the input's shape fully known. uint8 inputs are scaled to [0, 1].
  """
  from dnarch_jax.data import sources  # tfds is imported only when a tfds task is asked for.

  info = sources.dataset_info(name, data_dir)
  input_key, label_key = info.supervised_keys or ("image", "label")
  features = info.features
  if input_key not in features or label_key not in features:
    raise ValueError(
      f"tfds:{name}: needs an input and a label feature; it has {list(features)} and "
      f"supervised keys {info.supervised_keys}."
    )
  num_classes = getattr(features[label_key], "num_classes", None)
  shape = tuple(features[input_key].shape)
  if num_classes is None or None in shape or not shape:
    raise ValueError(
      f"tfds:{name}: label {label_key!r} must be a ClassLabel and input {input_key!r} must "
      f"have a fixed shape; got {features[label_key]!r} and shape {shape}."
    )
  input_shape = shape if len(shape) >= 2 else (*shape, 1)
  has_val = "validation" in info.splits
  train_examples = info.splits["train"].num_examples
  return Task(
    name=TFDS_PREFIX + name,
    dataset=name,
    input_shape=input_shape,
    num_classes=int(num_classes),
    dense=False,
    splits={s: SplitSpec(s) for s in ("train", "validation", "test")} if has_val else _CARVED,
    val_size=0 if has_val else default_val_size(train_examples),
    transform=functools.partial(transforms.scale_array, input_shape=input_shape),
    input_key=input_key,
    label_key=label_key,
    train_examples=train_examples,
    test_examples=info.splits["test"].num_examples if "test" in info.splits else None,
  )


def _check_num_classes(task: Task, num_classes: int | None) -> Task:
  # The labels of built-in and tfds tasks are fixed: another class count would misread them.
  if num_classes is not None and num_classes != task.num_classes:
    raise ValueError(
      f"config.data.num_classes={num_classes}: task {task.name} has {task.num_classes} "
      "classes; set it to None (it is for the arrays task)."
    )
  return task


def get_task(
  name: str | Task,
  data_dir: str | os.PathLike | None = None,
  *,
  layout: str | None = None,
  num_classes: int | None = None,
) -> Task:
  """Returns the task called `name` (a `Task` passes through).

  Args:
    name: a key of `TASKS`, `arrays`, or `tfds:NAME`.
    data_dir: for `arrays` the folder of arrays (required); for `tfds:NAME` the tfds data
      directory; unused by the built-in tasks.
    layout: how `arrays` inputs are read, `sequence`, `image` or None (`config.data.layout`);
      built-in and tfds tasks have a fixed shape and ignore it.
    num_classes: for `arrays` the number of classes (None: the largest train label + 1); for
      other tasks None or their own count.

  Raises:
    ValueError: unknown name, `arrays` without a folder, or a failed check of the arrays.
  """
  if isinstance(name, Task):
    return name
  if name in TASKS:
    return _check_num_classes(TASKS[name], num_classes)
  if name == ARRAYS_TASK:
    if not data_dir:
      raise ValueError("task 'arrays' needs data_dir: the folder that holds the arrays.")
    return arrays_task(data_dir, layout=layout, num_classes=num_classes)
  if name.startswith(TFDS_PREFIX) and len(name) > len(TFDS_PREFIX):
    return _check_num_classes(tfds_task(name[len(TFDS_PREFIX) :], data_dir), num_classes)
  raise ValueError(f"unknown task {name!r}; known tasks: {', '.join(task_names())}.")


def task_info(
  task: str | Task,
  data_dir: str | os.PathLike | None = None,
  *,
  layout: str | None = None,
  num_classes: int | None = None,
) -> tuple[tuple[int, ...], int, bool]:
  """What the model needs to size itself: `(input_shape, num_classes, dense)`.

  `input_shape` is per example, channels last, e.g. `(784, 1)` for smnist. `layout` and
  `num_classes` as in `get_task`.
  """
  task = get_task(task, data_dir, layout=layout, num_classes=num_classes)
  return task.input_shape, task.num_classes, task.dense
