"""Data units: IDX files, transforms, MFCC, tasks, config checks, user arrays, offline errors."""

import gzip
import json

import numpy as np
import pytest

from dnarch_jax.data import (
  DatasetNotAvailableError,
  audio,
  config,
  idx,
  locations,
  make_eval_pipeline,
  make_pipeline,
  mnist_builder,
  tasks,
  transforms,
)

# --- IDX ------------------------------------------------------------------------------------------


def _write_idx(path, array: np.ndarray, compress: bool = False) -> None:
  codes = {np.dtype(np.uint8): 0x08, np.dtype(">i4"): 0x0C}
  header = bytes([0, 0, codes[array.dtype], array.ndim])
  header += np.asarray(array.shape, ">u4").tobytes()
  raw = header + array.tobytes()
  path.write_bytes(gzip.compress(raw) if compress else raw)


@pytest.mark.parametrize("compress", [False, True])
def test_idx_round_trip(tmp_path, compress):
  images = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
  path = tmp_path / ("x.idx.gz" if compress else "x.idx")
  _write_idx(path, images, compress)
  np.testing.assert_array_equal(idx.read_idx(path), images)
  big_endian = np.array([1, -2, 300], ">i4")
  _write_idx(tmp_path / "y.idx", big_endian)
  np.testing.assert_array_equal(idx.read_idx(tmp_path / "y.idx"), [1, -2, 300])


def test_idx_rejects_bad_files(tmp_path):
  (tmp_path / "junk").write_bytes(b"not an idx file")
  with pytest.raises(ValueError, match="junk: not an IDX file"):
    idx.read_idx(tmp_path / "junk")
  _write_idx(tmp_path / "short", np.zeros((2, 2), np.uint8))
  (tmp_path / "short").write_bytes((tmp_path / "short").read_bytes()[:-1])
  with pytest.raises(ValueError, match=r"short: IDX header says shape \(2, 2\)"):
    idx.read_idx(tmp_path / "short")


# --- Transforms -----------------------------------------------------------------------------------


def test_pmnist_permutation_is_a_fixed_pure_function_of_the_seed():
  permutation = tasks.pmnist_permutation()
  assert sorted(permutation.tolist()) == list(range(784))
  # Golden values: any process, any resume, any numpy version must produce exactly these.
  assert permutation[:8].tolist() == [243, 456, 308, 125, 408, 567, 220, 325]
  assert int((permutation * (1 + np.arange(784))).sum()) == 120188793
  assert transforms.seeded_permutation(10, 1).tolist() == [8, 6, 7, 9, 0, 5, 1, 3, 2, 4]
  assert not np.array_equal(tasks.pmnist_permutation(1), permutation)
  metadata = tasks.TASKS["pmnist"].metadata
  assert metadata["permutation_seed"] == tasks.PMNIST_PERMUTATION_SEED
  assert list(metadata["permutation"]) == permutation.tolist()


def test_classify_image_normalises_and_flattens():
  image = np.arange(28 * 28, dtype=np.uint8).reshape(28, 28, 1)
  x, y = transforms.classify_image(image, 7, None, mean=(0.1307,), std=(0.3081,), as_sequence=True)
  assert x.shape == (784, 1) and x.dtype == np.float32 and y == 7 and y.dtype == np.int32
  np.testing.assert_allclose(x[:, 0], (image.reshape(-1) / 255 - 0.1307) / 0.3081, rtol=1e-5)
  permutation = tasks.pmnist_permutation()
  xp, _ = transforms.classify_image(
    image, 7, None, mean=(0.1307,), std=(0.3081,), as_sequence=True, permutation=permutation
  )
  np.testing.assert_array_equal(xp, x[permutation])


def test_augmentation_is_deterministic_given_the_rng_and_pads_with_black():
  image = np.full((32, 32, 3), 200, np.uint8)
  kwargs = dict(mean=transforms.CIFAR_MEAN, std=transforms.CIFAR_STD, crop_padding=4, flip=True)
  outputs = [
    transforms.classify_image(image, 1, np.random.default_rng(s), **kwargs)[0] for s in range(20)
  ]
  again = transforms.classify_image(image, 1, np.random.default_rng(3), **kwargs)[0]
  np.testing.assert_array_equal(outputs[3], again)
  assert all(o.shape == (32, 32, 3) for o in outputs)
  black = (0 - np.asarray(transforms.CIFAR_MEAN)) / np.asarray(transforms.CIFAR_STD)
  has_padding = [np.isclose(o, black, atol=1e-5).all(axis=-1).any() for o in outputs]
  assert any(has_padding) and len({o.tobytes() for o in outputs}) > 5


def test_dense_labels_threshold():
  image = np.zeros((28, 28, 1), np.uint8)
  image[0, 0], image[0, 1], image[0, 2] = 127, 128, 255
  x, labels = transforms.segment_digit(image, 4, None, mean=(0.1307,), std=(0.3081,))
  assert x.shape == (28, 28, 1) and labels.shape == (28, 28) and labels.dtype == np.int32
  assert labels[0, :3].tolist() == [0, 5, 5] and labels.sum() == 10


def test_raw_audio_is_padded_and_standardised():
  samples = (np.sin(np.arange(12000) / 5) * 10000).astype(np.int16)
  x, y = transforms.classify_raw_audio(samples, 3, None)
  assert x.shape == (16000, 1) and x.dtype == np.float32 and y == 3
  assert abs(x.mean()) < 1e-4 and abs(x.std() - 1) < 1e-3
  assert np.all(x[12000:] == x[-1])  # the zero padding, standardised


def test_mfcc_matches_its_definition():
  rng = np.random.default_rng(0)
  signal = rng.normal(size=16000).astype(np.float32)
  coefficients = audio.mfcc(signal)
  assert coefficients.shape == (20, 161)  # hop 100, centred frames: 1 + 16000 // 100
  # The power spectrum of frame 7 by a direct DFT of the reflect-padded, Hann-windowed frame.
  padded = np.pad(signal, 100, mode="reflect")
  frame = padded[700:900] * (0.5 - 0.5 * np.cos(2 * np.pi * np.arange(200) / 200))
  freqs = np.arange(101)[:, None] * np.arange(200)[None, :]
  dft = (frame[None, :] * np.exp(-2j * np.pi * freqs / 200)).sum(axis=1)
  np.testing.assert_allclose(audio.power_spectrogram(signal)[7], np.abs(dft) ** 2, rtol=1e-3)
  mel = audio.power_spectrogram(signal)[7] @ audio.mel_filterbank()
  expected = np.log(mel + 1e-6) @ audio.dct_matrix()
  np.testing.assert_allclose(coefficients[:, 7], expected, rtol=1e-4, atol=1e-4)
  dct = audio.dct_matrix()
  np.testing.assert_allclose(dct.T @ dct, np.eye(20), atol=1e-5)  # orthonormal DCT-II
  filters = audio.mel_filterbank()
  assert filters.shape == (101, 64) and filters.min() >= 0 and filters.max() <= 1
  x, _ = transforms.classify_mfcc((signal * 3000).astype(np.int16), 0, None)
  assert x.shape == (161, 20) and x.dtype == np.float32
  np.testing.assert_allclose(x.mean(axis=0), 0, atol=1e-4)


# --- Tasks and config -----------------------------------------------------------------------------

EXPECTED_INFO = {
  "smnist": ((784, 1), 10, False),
  "pmnist": ((784, 1), 10, False),
  "mnist": ((28, 28, 1), 10, False),
  "mnist_dense": ((28, 28, 1), 11, True),
  "scifar10": ((1024, 3), 10, False),
  "cifar10": ((32, 32, 3), 10, False),
  "cifar100": ((32, 32, 3), 100, False),
  "stl10": ((96, 96, 3), 10, False),
  "speech_commands_raw": ((16000, 1), 10, False),
  "speech_commands_mfcc": ((161, 20), 10, False),
}


def test_task_info_of_every_builtin_task():
  assert set(tasks.TASKS) == set(EXPECTED_INFO)
  for name, expected in EXPECTED_INFO.items():
    assert tasks.task_info(name) == expected
  with pytest.raises(ValueError, match="unknown task 'nope'"):
    tasks.task_info("nope")


def test_speech_label_map_keeps_ccnn_words():
  kept = {tasks.TFDS_SPEECH_LABELS[i]: m for i, m in enumerate(tasks.SPEECH_LABEL_MAP) if m >= 0}
  assert kept == {w: i for i, w in enumerate(tasks.CCNN_SPEECH_WORDS)}
  assert tasks.SPEECH_LABEL_MAP[10:] == (-1, -1)  # _silence_, _unknown_


def test_validation_carve_out_is_fixed_disjoint_and_complete():
  train = tasks.carve_indices(1000, 100, "train")
  val = tasks.carve_indices(1000, 100, "validation")
  assert len(val) == 100 and len(train) == 900
  assert sorted(np.concatenate([train, val]).tolist()) == list(range(1000))
  np.testing.assert_array_equal(val, tasks.carve_indices(1000, 100, "validation"))
  with pytest.raises(ValueError, match="val_size=1000"):
    tasks.carve_indices(1000, 1000, "train")


@pytest.mark.parametrize("task", sorted(EXPECTED_INFO))
def test_default_configs_validate(task):
  cfg = config.default_data_config(task)
  config.validate_data_config(cfg)
  assert cfg.batch_size == config.DEFAULT_BATCH_SIZES[task]
  json.dumps(cfg.to_dict())


@pytest.mark.parametrize(
  "task,field,value,match",
  [
    ("smnist", "task", "smnist2", r"config.data.task='smnist2': unknown task"),
    ("smnist", "batch_size", 0, "config.data.batch_size=0: must be a positive integer"),
    ("smnist", "eval_batch_size", -1, "config.data.eval_batch_size"),
    ("smnist", "seed", -1, r"config.data.seed=-1: must be an integer in \[0, 2\*\*32\)"),
    ("smnist", "val_size", 60000, "config.data.val_size=60000: must be between 1 and 59999"),
    ("speech_commands_raw", "val_size", 10, "config.data.val_size=10: .* own validation"),
    ("smnist", "num_threads", -2, "config.data.num_threads"),
    ("arrays", "data_dir", None, "config.data.data_dir=None: task 'arrays' needs the folder"),
  ],
)
def test_bad_data_config_names_the_field(task, field, value, match):
  cfg = config.default_data_config(task)
  if task == "arrays" and field != "data_dir":
    cfg.data_dir = "/somewhere"
  with cfg.unlocked():
    cfg[field] = value
  with pytest.raises(ValueError, match=match):
    config.validate_data_config(cfg)


def test_unknown_data_field_is_named():
  cfg = config.default_data_config("mnist")
  cfg.shuffle_buffer = 10
  with pytest.raises(ValueError, match="config.data.shuffle_buffer: unknown field"):
    config.validate_data_config(cfg)


# --- A user's arrays ------------------------------------------------------------------------------


def _save_arrays(folder, n_train=40, n_test=12, shape=(6, 5), **overrides):
  rng = np.random.default_rng(0)
  files = {
    "train_x": rng.integers(0, 256, (n_train, *shape), dtype=np.uint8),
    "train_y": rng.integers(0, 3, n_train),
    "test_x": rng.integers(0, 256, (n_test, *shape), dtype=np.uint8),
    "test_y": rng.integers(0, 3, n_test),
  }
  files.update(overrides)
  folder.mkdir(exist_ok=True)
  for name, array in files.items():
    np.save(folder / f"{name}.npy", array)
  return files


def test_arrays_folder_loads_and_feeds_a_pipeline(tmp_path):
  files = _save_arrays(tmp_path)
  assert tasks.task_info("arrays", tmp_path, layout="image") == ((6, 5, 1), 3, False)
  task = tasks.get_task("arrays", tmp_path, layout="image")
  assert task.val_size == 8  # a fifth of a train set this small, carved with the fixed seed
  batches = list(
    make_eval_pipeline(
      "arrays", "test", batch_size=8, data_dir=tmp_path, process_count=1, layout="image"
    )
  )
  assert [b["input"].shape for b in batches] == [(8, 6, 5, 1)] * 2
  assert [b["mask"].sum() for b in batches] == [8, 4]
  np.testing.assert_allclose(batches[0]["input"][..., 0], files["test_x"][:8] / 255, rtol=1e-6)
  np.testing.assert_array_equal(batches[0]["label"], files["test_y"][:8])
  train = next(
    make_pipeline(
      "arrays",
      "train",
      batch_size=6,
      data_dir=tmp_path,
      process_index=0,
      process_count=1,
      layout="image",
    )
  )
  assert train["input"].shape == (6, 6, 5, 1) and train["label"].dtype == np.int32


def test_arrays_sequences_dense_labels_and_idx_files(tmp_path):
  rng = np.random.default_rng(1)
  seq = tmp_path / "seq"
  _save_arrays(
    seq,
    train_x=rng.normal(size=(20, 50)).astype(np.float32),
    test_x=rng.normal(size=(5, 50)).astype(np.float32),
    train_y=rng.integers(0, 4, (20, 50)),
    test_y=rng.integers(0, 4, (5, 50)),
  )
  assert tasks.task_info("arrays", seq) == ((50, 1), 4, True)
  idx_dir = tmp_path / "idx"
  idx_dir.mkdir()
  _write_idx(idx_dir / "train-images-idx3-ubyte.gz", np.zeros((30, 4, 4), np.uint8), True)
  _write_idx(idx_dir / "train-labels-idx1-ubyte.gz", np.arange(30, dtype=np.uint8) % 5, True)
  _write_idx(idx_dir / "t10k-images-idx3-ubyte", np.zeros((7, 4, 4), np.uint8))
  _write_idx(idx_dir / "t10k-labels-idx1-ubyte", np.arange(7, dtype=np.uint8) % 5)
  assert tasks.task_info("arrays", idx_dir, layout="image") == ((4, 4, 1), 5, False)


def test_arrays_with_mismatched_lengths_name_the_files_and_shapes(tmp_path):
  _save_arrays(tmp_path, train_y=np.zeros(39, np.int64))
  with pytest.raises(ValueError, match=r"train_x.npy has 40 examples \(shape \(40, 6, 5\)\) but "):
    tasks.get_task("arrays", tmp_path)
  with pytest.raises(ValueError, match=r"train_y.npy has 39 labels \(shape \(39,\)\)"):
    tasks.get_task("arrays", tmp_path)


@pytest.mark.parametrize(
  "overrides,match",
  [
    (
      dict(train_x=np.zeros((40, 2, 2, 2, 2))),
      r"train_x.npy: inputs have shape \(40, 2, 2, 2, 2\)",
    ),
    (dict(test_x=np.zeros((12, 6, 4), np.uint8)), r"test_x.npy: inputs of shape \(12, 6, 4\)"),
    (dict(train_y=np.zeros((40, 3), np.int64)), r"train_y.npy: labels have shape \(40, 3\)"),
    (dict(train_y=np.zeros(40, np.float32)), "train_y.npy: labels must be integers"),
  ],
)
def test_arrays_with_unexpected_shapes_raise(tmp_path, overrides, match):
  _save_arrays(tmp_path, **overrides)
  with pytest.raises(ValueError, match=match):
    tasks.get_task("arrays", tmp_path, layout="image")


def test_arrays_missing_files(tmp_path):
  with pytest.raises(FileNotFoundError, match="no train data"):
    tasks.get_task("arrays", tmp_path)
  with pytest.raises(ValueError, match="needs data_dir"):
    tasks.get_task("arrays")


# --- Offline errors -------------------------------------------------------------------------------


def test_missing_dataset_says_how_to_provide_it(tmp_path, monkeypatch):
  monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path / "tfds_default"))
  with pytest.raises(DatasetNotAvailableError) as error:
    make_pipeline("cifar10", "train", batch_size=8, data_dir=tmp_path, process_count=1)
  message = str(error.value)
  assert "'cifar10' is not available offline" in message and str(tmp_path) in message
  assert "tfds build cifar10 --file_format=array_record --data_dir DIR" in message


def test_speech_commands_without_tensorflow_says_to_install_it(tmp_path):
  pytest.importorskip("tensorflow_datasets")
  try:
    import tensorflow  # noqa: F401

    pytest.skip("TensorFlow is installed here")
  except ImportError:
    pass
  with pytest.raises(DatasetNotAvailableError, match=r"pip install 'dnarch-jax\[tf\]'"):
    make_pipeline("speech_commands_raw", "train", batch_size=4, data_dir=tmp_path, process_count=1)


def test_mnist_files_are_verified(tmp_path):
  with pytest.raises(DatasetNotAvailableError, match="MNIST files missing from"):
    mnist_builder.prepare_mnist(tmp_path / "tfds", mnist_dir=tmp_path)
  source = mnist_builder.locations.default_mnist_dir()
  for name in ["SHA256SUMS", *mnist_builder._file_names()]:
    (tmp_path / name).write_bytes((source / name).read_bytes())
  (tmp_path / "t10k-labels-idx1-ubyte.gz").write_bytes(b"tampered")
  with pytest.raises(ValueError, match="t10k-labels-idx1-ubyte.gz: SHA-256 .* does not match"):
    mnist_builder.verify_mnist_files(tmp_path)


def test_unprepared_tfds_task_says_how_to_provide_it(tmp_path):
  with pytest.raises(DatasetNotAvailableError, match="'no_such_dataset' is not available offline"):
    tasks.get_task("tfds:no_such_dataset", tmp_path)


def test_data_dir_resolution(tmp_path, monkeypatch):
  monkeypatch.delenv("DNARCH_DATA_DIR", raising=False)
  assert str(locations.resolve_data_dir()).endswith(".cache/dnarch_jax/tfds")
  monkeypatch.setenv("DNARCH_DATA_DIR", str(tmp_path / "env"))
  assert locations.resolve_data_dir() == tmp_path / "env"
  assert locations.resolve_data_dir(tmp_path / "cfg") == tmp_path / "cfg"
  assert (locations.default_mnist_dir() / "SHA256SUMS").is_file()  # shipped with the repository
