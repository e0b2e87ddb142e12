"""grain pipelines: every task under tfds's mock data, real MNIST, sharding, resumption, padding."""

import functools
import json
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow_datasets as tfds

from dnarch_jax.data import (
  config,
  make_eval_pipeline,
  make_pipeline,
  mnist_builder,
  open_split,
  pipeline_from_config,
  pmnist_permutation,
  sources,
  tasks,
)

MNIST_TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
MNIST_TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
SINGLE = dict(process_index=0, process_count=1)


def _take(iterator, n):
  return [next(iterator) for _ in range(n)]


def _assert_batches_equal(a, b):
  assert len(a) == len(b)
  for x, y in zip(a, b, strict=True):
    assert x.keys() == y.keys()
    for key in x:
      np.testing.assert_array_equal(x[key], y[key], err_msg=key)


@pytest.fixture(scope="session")
def mnist_data_dir(tmp_path_factory):
  """The shipped MNIST files prepared once (about 5 s) into a fresh tfds data dir."""
  data_dir = tmp_path_factory.mktemp("tfds")
  mnist_builder.prepare_mnist(data_dir)
  return data_dir


# --- Every tfds-backed task under tfds.testing.mock_data ---------------------------------------

MOCKED = {
  "smnist": ((0.1307,), (0.3081,)),
  "pmnist": ((0.1307,), (0.3081,)),
  "mnist": ((0.1307,), (0.3081,)),
  "mnist_dense": ((0.1307,), (0.3081,)),
  "scifar10": ((0.4914, 0.4822, 0.4465), (0.247, 0.243, 0.261)),
  "cifar10": ((0.4914, 0.4822, 0.4465), (0.247, 0.243, 0.261)),
  "cifar100": ((0.4914, 0.4822, 0.4465), (0.247, 0.243, 0.261)),
  "stl10": ((0.44671097, 0.4398105, 0.4066468), (0.2603405, 0.25657743, 0.27126738)),
}


@pytest.mark.parametrize("name", sorted(MOCKED))
def test_task_batches_under_mock_data(name, tmp_path):
  task = tasks.get_task(name)
  mean, std = MOCKED[name]
  with tfds.testing.mock_data(num_examples=24, policy=tfds.testing.MockPolicy.USE_CODE):
    train = _take(
      make_pipeline(name, "train", batch_size=8, seed=1, data_dir=tmp_path, val_size=4, **SINGLE),
      3,
    )
    evaluation = list(
      make_eval_pipeline(name, "validation", batch_size=8, data_dir=tmp_path, val_size=4, **SINGLE)
    )
  label_shape = (8, *task.input_shape[:-1]) if task.dense else (8,)
  for batch in train + evaluation:
    assert batch["input"].shape == (8, *task.input_shape) and batch["input"].dtype == np.float32
    assert batch["label"].shape == label_shape and batch["label"].dtype == np.int32
    assert batch["mask"].shape == (8,) and batch["mask"].dtype == np.float32
    assert 0 <= batch["label"].min() and batch["label"].max() < task.num_classes
  assert [b["mask"].sum() for b in evaluation] == [4]
  # Unaugmented inputs are normalised images: undoing the normalisation gives whole uint8 steps.
  pixels = evaluation[0]["input"] * np.float32(std) + np.float32(mean)
  assert pixels.min() >= -1e-5 and pixels.max() <= 1 + 1e-5
  np.testing.assert_allclose(pixels * 255, np.round(pixels * 255), atol=2e-3)
  assert abs(float(train[0]["input"].mean())) < 2  # roughly centred


# --- Speech commands (tfds needs TensorFlow to read them, so a fake source stands in) ----------


def _fake_speech_records(n=40):
  rng = np.random.default_rng(0)
  records = []
  for i in range(n):
    length = 12000 if i % 7 == 3 else 16000  # a few short clips, which CCNN drops
    audio = (rng.normal(size=length) * 3000).astype(np.int16)
    records.append({"audio": audio, "label": np.int64(i % 12)})
  return records


@pytest.mark.parametrize("name", ["speech_commands_raw", "speech_commands_mfcc"])
def test_speech_tasks_keep_ccnn_words_and_shape_inputs(name, monkeypatch):
  records = _fake_speech_records()
  monkeypatch.setattr(sources, "tfds_source", lambda *args, **kwargs: records)
  task = tasks.get_task(name)
  batches = list(make_eval_pipeline(name, "test", batch_size=8, **SINGLE))
  kept = [
    r for r in records if int(r["label"]) < 10 and r["audio"].shape[0] == 16000
  ]  # silence (10), unknown (11) and short clips dropped
  assert sum(b["mask"].sum() for b in batches) == len(kept)
  labels = np.concatenate([b["label"][b["mask"] > 0] for b in batches])
  np.testing.assert_array_equal(labels, [tasks.SPEECH_LABEL_MAP[int(r["label"])] for r in kept])
  for batch in batches:
    assert batch["input"].shape == (8, *task.input_shape) and batch["input"].dtype == np.float32
  first = batches[0]["input"][0]
  axis = None if name.endswith("raw") else 0
  np.testing.assert_allclose(first.mean(axis=axis), 0, atol=1e-3)


# --- Real MNIST --------------------------------------------------------------------------------


def _labels(view):
  ids = np.arange(len(view))
  return np.array([int(label) for _, label in view.read(ids)])


def test_real_mnist_splits_and_label_counts(mnist_data_dir):
  train = open_split("mnist", "train", data_dir=mnist_data_dir)
  val = open_split("mnist", "validation", data_dir=mnist_data_dir)
  test = open_split("mnist", "test", data_dir=mnist_data_dir)
  assert (len(train), len(val), len(test)) == (55000, 5000, 10000)
  assert not set(train.positions.tolist()) & set(val.positions.tolist())
  train_counts = np.bincount(_labels(train), minlength=10)
  val_counts = np.bincount(_labels(val), minlength=10)
  assert (train_counts + val_counts).tolist() == MNIST_TRAIN_COUNTS
  assert np.bincount(_labels(test), minlength=10).tolist() == MNIST_TEST_COUNTS
  # The validation carve-out is fixed: a new view picks the same examples.
  again = open_split("mnist", "validation", data_dir=mnist_data_dir)
  np.testing.assert_array_equal(again.positions, val.positions)


def test_prepared_mnist_is_reused(mnist_data_dir):
  prepared = next(mnist_data_dir.glob("dnarch_mnist/*"))
  stamps = {p: p.stat().st_mtime_ns for p in prepared.iterdir()}
  start = time.perf_counter()
  assert mnist_builder.prepare_mnist(mnist_data_dir) == prepared
  assert time.perf_counter() - start < 1.0
  assert {p: p.stat().st_mtime_ns for p in prepared.iterdir()} == stamps


def test_real_mnist_eval_pass_is_exact(mnist_data_dir):
  batches = list(
    make_eval_pipeline("smnist", "test", batch_size=384, data_dir=mnist_data_dir, **SINGLE)
  )
  assert len(batches) == 27  # ceil(10000 / 384)
  assert sum(b["mask"].sum() for b in batches) == 10000
  assert batches[-1]["mask"].sum() == 10000 - 26 * 384
  counts = sum(np.bincount(b["label"][b["mask"] > 0], minlength=10) for b in batches)
  assert counts.tolist() == MNIST_TEST_COUNTS


def test_same_seed_same_batches_other_seed_other_batches(mnist_data_dir):
  make = functools.partial(
    make_pipeline, "mnist", "train", batch_size=32, data_dir=mnist_data_dir, **SINGLE
  )
  _assert_batches_equal(_take(make(seed=3), 3), _take(make(seed=3), 3))
  assert not np.array_equal(next(make(seed=3))["label"], next(make(seed=4))["label"])


def test_pmnist_same_permutation_in_every_process_and_after_resume(mnist_data_dir):
  permutation = pmnist_permutation()
  common = dict(batch_size=16, seed=5, data_dir=mnist_data_dir, process_count=2)
  for process in (0, 1):
    plain = _take(make_pipeline("smnist", "train", process_index=process, **common), 4)
    permuted_it = make_pipeline("pmnist", "train", process_index=process, **common)
    permuted = _take(permuted_it, 2)
    state = json.loads(json.dumps(permuted_it.get_state()))
    resumed_it = make_pipeline("pmnist", "train", process_index=process, **common)
    resumed_it.set_state(state)
    permuted += _take(resumed_it, 2)
    for p, s in zip(permuted, plain, strict=True):
      np.testing.assert_array_equal(p["input"], s["input"][:, permutation])
      np.testing.assert_array_equal(p["label"], s["label"])


# --- Sharding, resumption and padding (on a user's arrays: every example carries its id) ------


@pytest.fixture
def numbered_arrays(tmp_path):
  """50 train / 23 test sequences whose every value is the example's id."""
  for split, n in (("train", 50), ("test", 23)):
    np.save(tmp_path / f"{split}_x.npy", np.repeat(np.arange(n, dtype=np.float32)[:, None], 3, 1))
    np.save(tmp_path / f"{split}_y.npy", np.arange(n) % 4)
  return tmp_path


def _ids(batch):
  return batch["input"][:, 0, 0].astype(int)


def test_two_processes_read_disjoint_shards_that_cover_an_epoch(numbered_arrays):
  common = dict(batch_size=10, seed=2, data_dir=numbered_arrays, val_size=5, num_epochs=1)
  per_process = [
    list(make_pipeline("arrays", "train", process_index=p, process_count=2, **common))
    for p in (0, 1)
  ]
  assert [len(batches) for batches in per_process] == [4, 4]  # 45 examples, global batch 10
  shard0 = np.concatenate([_ids(b) for b in per_process[0]])
  shard1 = np.concatenate([_ids(b) for b in per_process[1]])
  assert not set(shard0) & set(shard1)
  whole = list(make_pipeline("arrays", "train", process_index=0, process_count=1, **common))
  seen = np.concatenate([_ids(b) for b in whole])
  # Process-local batches put side by side are the single-process global batches.
  for b0, b1, b in zip(per_process[0], per_process[1], whole, strict=True):
    np.testing.assert_array_equal(np.concatenate([_ids(b0), _ids(b1)]), _ids(b))
  train_ids = set(open_split("arrays", "train", data_dir=numbered_arrays, val_size=5).positions)
  assert set(shard0) | set(shard1) == set(seen) and len(seen) == 40
  assert set(seen) <= train_ids and len(train_ids) == 45  # 5 dropped with the remainder


def test_epochs_are_reshuffled_and_each_covers_the_split(numbered_arrays):
  batches = list(
    make_pipeline(
      "arrays",
      "train",
      batch_size=9,
      seed=0,
      data_dir=numbered_arrays,
      val_size=5,
      num_epochs=2,
      **SINGLE,
    )
  )
  ids = np.concatenate([_ids(b) for b in batches])
  assert len(batches) == 10 and sorted(ids[:45]) == sorted(ids[45:]) and len(set(ids[:45])) == 45
  assert not np.array_equal(ids[:45], ids[45:])


def test_resumed_pipeline_yields_the_uninterrupted_batches(numbered_arrays):
  make = functools.partial(
    make_pipeline,
    "arrays",
    "train",
    batch_size=8,
    seed=9,
    data_dir=numbered_arrays,
    val_size=5,
    process_index=1,
    process_count=2,
  )
  uninterrupted = _take(make(), 15)  # crosses epoch boundaries
  interrupted = make()
  first = _take(interrupted, 6)
  state = json.dumps(interrupted.get_state())
  resumed = make()
  resumed.set_state(json.loads(state))
  _assert_batches_equal(first + _take(resumed, 9), uninterrupted)


def test_resumed_augmented_pipeline_repeats_its_augmentation():
  make = functools.partial(
    make_pipeline, "cifar10", "train", batch_size=4, seed=1, val_size=4, **SINGLE
  )
  with tfds.testing.mock_data(num_examples=12, policy=tfds.testing.MockPolicy.USE_CODE):
    uninterrupted = _take(make(), 6)
    interrupted = make()
    _take(interrupted, 4)
    resumed = make()
    resumed.set_state(json.loads(json.dumps(interrupted.get_state())))
    _assert_batches_equal(_take(resumed, 2), uninterrupted[4:])
    plain = _take(make(augment=False), 6)
  assert any(
    not np.array_equal(a["input"], p["input"]) for a, p in zip(uninterrupted, plain, strict=True)
  )


def test_eval_pass_pads_the_last_batch_in_every_process(numbered_arrays):
  per_process = [
    list(
      make_eval_pipeline(
        "arrays", "test", batch_size=10, data_dir=numbered_arrays, process_index=p, process_count=2
      )
    )
    for p in (0, 1)
  ]
  assert [len(b) for b in per_process] == [3, 3]  # every process steps equally often
  real = np.concatenate([_ids(b)[b["mask"] > 0] for batches in per_process for b in batches])
  assert sorted(real) == list(range(23))
  assert [b["mask"].sum() for b in per_process[0]] == [5, 5, 3]
  assert [b["mask"].sum() for b in per_process[1]] == [5, 5, 0]


def test_batch_size_must_split_over_processes(numbered_arrays):
  with pytest.raises(ValueError, match="batch_size=9 must be a positive multiple"):
    make_pipeline(
      "arrays", "train", batch_size=9, data_dir=numbered_arrays, process_index=0, process_count=2
    )


def test_pipeline_from_config(numbered_arrays):
  cfg = config.default_data_config("arrays")
  cfg.data_dir = str(numbered_arrays)
  cfg.batch_size, cfg.eval_batch_size, cfg.val_size = 6, 20, 10
  config.validate_data_config(cfg)
  assert next(pipeline_from_config(cfg, "train", **SINGLE))["input"].shape == (6, 3, 1)
  validation = list(pipeline_from_config(cfg, "validation", **SINGLE))
  assert len(validation) == 1 and validation[0]["mask"].sum() == 10


# --- Any tfds dataset already prepared on disk -------------------------------------------------

_PREPARE_USER_DATASET = """
import sys
import numpy as np
import tensorflow_datasets as tfds

class UserDigits(tfds.core.GeneratorBasedBuilder):
  VERSION = tfds.core.Version("1.0.0")

  def _info(self):
    return tfds.core.DatasetInfo(
      builder=self,
      features=tfds.features.FeaturesDict({
        "image": tfds.features.Tensor(shape=(8, 8, 1), dtype=np.uint8),
        "label": tfds.features.ClassLabel(num_classes=3),
      }),
      supervised_keys=("image", "label"),
    )

  def _split_generators(self, dl_manager):
    return {"train": self._generate_examples(30), "test": self._generate_examples(10)}

  def _generate_examples(self, n):
    for i in range(n):
      yield i, {"image": np.full((8, 8, 1), i, np.uint8), "label": i % 3}

UserDigits(data_dir=sys.argv[1], file_format="array_record").download_and_prepare()
"""


def test_a_tfds_dataset_prepared_elsewhere_is_a_task(tmp_path):
  # Prepared in another process, so this one reads it from its files alone, as a user's would be.
  subprocess.run(
    [sys.executable, "-c", _PREPARE_USER_DATASET, str(tmp_path)], check=True, capture_output=True
  )
  assert tasks.task_info("tfds:user_digits", tmp_path) == ((8, 8, 1), 3, False)
  batches = list(
    make_eval_pipeline("tfds:user_digits", "test", batch_size=4, data_dir=tmp_path, **SINGLE)
  )
  assert len(batches) == 3 and sum(b["mask"].sum() for b in batches) == 10
  pixels = np.concatenate([b["input"][b["mask"] > 0, 0, 0, 0] for b in batches]) * 255
  labels = np.concatenate([b["label"][b["mask"] > 0] for b in batches])
  np.testing.assert_array_equal(np.round(pixels).astype(int) % 3, labels)
  train = next(
    make_pipeline("tfds:user_digits", "train", batch_size=5, data_dir=tmp_path, **SINGLE)
  )
  assert train["input"].shape == (5, 8, 8, 1)
  with pytest.raises(ValueError, match="unknown task 'tfds:'"):
    tasks.get_task("tfds:")
