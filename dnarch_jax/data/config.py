"""The data block of a run's config, its defaults per task, and its validation.

Fields (`default_data_config(task)`):

* `task`: task name (`dnarch_jax.data.tasks`: `smnist`, `cifar10`, ..., `arrays`, `tfds:NAME`).
* `data_dir`: tfds data directory; None means `$DNARCH_DATA_DIR`, else `~/.cache/dnarch_jax/tfds`.
  For `arrays`, the folder holding the arrays (required).
* `mnist_dir`: folder with the MNIST IDX files; None means the repository's `data/mnist/`.
* `batch_size`: global training batch (split evenly over processes); CCNN's per task.
* `eval_batch_size`: global batch for validation/test passes (last batch padded and masked).
* `seed`: shuffling and augmentation seed, in [0, 2**32).
* `val_size`: train examples carved out for validation (a fixed seeded split); 0 for datasets
  with their own validation split; None (the default) means the task's: 5000 for MNIST and
  CIFAR, 500 for STL10, for `arrays` and `tfds:NAME` without validation files a tenth of train
  with a floor and a ceiling (`tasks.default_val_size`).
* `layout`: how `arrays` inputs are read: `sequence`, `image` or None (`dnarch_jax.data.arrays`).
  Set from the built-in task's kind (smnist's configs say `sequence`, mnist's `image`), so a
  config switched to `arrays` reads the data as its experiment's model expects; None for
  `arrays` and `tfds:NAME` (their shape is fixed; they ignore it).
* `num_classes`: for `arrays`, the number of classes (every label must be below it); None means
  the largest train label + 1. Other tasks have their own and accept only that or None.
* `augment`: augment training examples (random crop + flip for CIFAR/STL10); None: task default.
* `shuffle`: shuffle the training stream. grain shuffles indices globally (a permutation, no
  buffer), reshuffling each epoch, so there is no shuffle-buffer size to tune.
* `num_threads`, `prefetch_batches`: grain's read threads and how many batches they work ahead.
"""

from __future__ import annotations

import ml_collections
from ml_collections import config_dict

from dnarch_jax.data import arrays, pipeline, tasks

# Training batch sizes of CCNN's runs (METHOD.md section 9); CIFAR10 follows the 4,140 row.
DEFAULT_BATCH_SIZES = {
  "smnist": 100,
  "pmnist": 100,
  "mnist": 100,
  "mnist_dense": 100,
  "scifar10": 50,
  "cifar10": 64,
  "cifar100": 50,
  "stl10": 64,
  "speech_commands_raw": 20,
  "speech_commands_mfcc": 100,
}
_FALLBACK_BATCH_SIZE = 64
# Fields newer than some stored runs' configs: a config without them reads as None.
_ADDED_FIELDS = ("layout", "num_classes")

FIELDS = (
  "task",
  "data_dir",
  "mnist_dir",
  "batch_size",
  "eval_batch_size",
  "seed",
  "val_size",
  "layout",
  "num_classes",
  "augment",
  "shuffle",
  "num_threads",
  "prefetch_batches",
)


def default_data_config(task: str) -> ml_collections.ConfigDict:
  """The data block for `task`: CCNN's batch size, the task's augmentation and layout."""
  builtin = tasks.TASKS.get(task)
  batch_size = DEFAULT_BATCH_SIZES.get(task, _FALLBACK_BATCH_SIZE)
  return ml_collections.ConfigDict(
    {
      "task": task,
      "data_dir": config_dict.placeholder(str),
      "mnist_dir": config_dict.placeholder(str),
      "batch_size": batch_size,
      "eval_batch_size": batch_size,
      "seed": 0,
      "val_size": config_dict.placeholder(int),
      "layout": (
        config_dict.placeholder(str) if builtin is None else tasks.task_layout(builtin.input_shape)
      ),
      "num_classes": config_dict.placeholder(int),
      "augment": config_dict.placeholder(bool) if builtin is None else builtin.augment,
      "shuffle": True,
      "num_threads": pipeline.DEFAULT_NUM_THREADS,
      "prefetch_batches": pipeline.DEFAULT_PREFETCH_BATCHES,
    }
  )


def _is_int(value) -> bool:
  return isinstance(value, int) and not isinstance(value, bool)


def validate_data_config(cfg: ml_collections.ConfigDict, prefix: str = "config.data") -> None:
  """Checks a data block before anything is loaded or compiled.

  Args:
    cfg: the block (`default_data_config` with overrides).
    prefix: how the block is named in the enclosing config, for messages (`config.data.seed`).

  Raises:
    ValueError: naming the first bad field and why.
  """

  def bad(field: str, why: str) -> ValueError:
    return ValueError(f"{prefix}.{field}={cfg.get(field)!r}: {why}")

  unknown = sorted(set(cfg.keys()) - set(FIELDS))
  if unknown:
    raise ValueError(f"{prefix}.{unknown[0]}: unknown field; the data fields are {FIELDS}.")
  missing = [f for f in FIELDS if f not in cfg and f not in _ADDED_FIELDS]
  if missing:
    raise ValueError(f"{prefix}.{missing[0]}: missing field (start from default_data_config).")
  task_name = cfg.task
  known = task_name in tasks.TASKS or task_name == tasks.ARRAYS_TASK
  tfds_named = isinstance(task_name, str) and task_name.startswith(tasks.TFDS_PREFIX)
  if not (known or (tfds_named and len(task_name) > len(tasks.TFDS_PREFIX))):
    raise bad("task", f"unknown task; use one of {', '.join(tasks.task_names())}.")
  if task_name == tasks.ARRAYS_TASK and not cfg.data_dir:
    raise bad("data_dir", "task 'arrays' needs the folder that holds the arrays.")
  for field in ("batch_size", "eval_batch_size"):
    if not _is_int(cfg[field]) or cfg[field] <= 0:
      raise bad(field, "must be a positive integer (the global batch size).")
  if not _is_int(cfg.seed) or not 0 <= cfg.seed < 2**32:
    raise bad("seed", "must be an integer in [0, 2**32).")
  if not _is_int(cfg.num_threads) or cfg.num_threads < 0:
    raise bad("num_threads", "must be an integer >= 0 (0 reads in the consumer's thread).")
  if not _is_int(cfg.prefetch_batches) or cfg.prefetch_batches < 0:
    raise bad("prefetch_batches", "must be an integer >= 0.")
  if cfg.get("layout") not in (None, *arrays.LAYOUTS):
    raise bad("layout", "must be 'sequence', 'image' or None (how arrays inputs are read).")
  num_classes = cfg.get("num_classes")
  if num_classes is not None and (not _is_int(num_classes) or num_classes < 1):
    raise bad("num_classes", "must be a positive integer, or None to count the train labels.")
  task = tasks.TASKS.get(task_name)
  if cfg.val_size is not None and task is not None:
    carved = task.splits["validation"].part == "validation"
    if not carved and cfg.val_size != 0:
      raise bad("val_size", f"{task_name} has its own validation split; set it to 0.")
    if carved and not (_is_int(cfg.val_size) and 0 < cfg.val_size < task.train_examples):
      raise bad(
        "val_size",
        f"must be between 1 and {task.train_examples - 1} ({task.dataset} has "
        f"{task.train_examples} training examples); set config.data.val_size=None for the "
        f"default ({task.val_size}) or a number below {task.train_examples}.",
      )
  elif cfg.val_size is not None and (not _is_int(cfg.val_size) or cfg.val_size < 0):
    raise bad("val_size", "must be a non-negative integer, or None for the task's default.")
