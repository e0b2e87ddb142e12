"""Per-example transforms: pure numpy functions of one example (and, for augmentation, an RNG).

Every task's transform has the signature `(value, label, rng) -> (input float32, label int32)`,
with `rng` a `np.random.Generator` when the example is to be augmented and `None` otherwise, so
evaluation is deterministic and training is deterministic given the RNG the pipeline derives from
the seed and the example's position in the stream. Channels are last everywhere.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from dnarch_jax.data import audio

MNIST_MEAN = (0.1307,)
MNIST_STD = (0.3081,)
# CCNN's CIFAR normalisation (METHOD.md section 9), also used for CIFAR100 as CCNN does.
CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.247, 0.243, 0.261)
# CCNN's STL10 normalisation (from neural-architecture-transfer's STL10 statistics).
STL10_MEAN = (0.44671097, 0.4398105, 0.4066468)
STL10_STD = (0.2603405, 0.25657743, 0.27126738)

# mnist_dense: a pixel belongs to the digit when its raw value is >= 128 (i.e. > 0.5 * 255 after
# rounding); MNIST's strokes are anti-aliased, and the midpoint splits the ramp evenly.
FOREGROUND_THRESHOLD = 128


# --- Deterministic permutations -------------------------------------------------------------------

_MASK64 = 0xFFFFFFFFFFFFFFFF


def _splitmix64(x: np.ndarray) -> np.ndarray:
  """SplitMix64 finaliser on uint64 arrays (wrapping arithmetic): a fixed, well-mixed hash."""
  x = x + np.uint64(0x9E3779B97F4A7C15)
  x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
  x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
  return x ^ (x >> np.uint64(31))


def seeded_permutation(length: int, seed: int) -> np.ndarray:
  """A permutation of `range(length)` that is a pure function of `(length, seed)`.

  Built from a fixed integer hash rather than numpy's RNG streams, so it is the same on every
  process, every resume and every numpy version. Returns int64 [length].
  """
  with np.errstate(over="ignore"):
    base = _splitmix64(np.array([seed & _MASK64], dtype=np.uint64))
    keys = _splitmix64(base + np.arange(length, dtype=np.uint64))
  return np.argsort(keys, kind="stable").astype(np.int64)


# --- Images --------------------------------------------------------------------------------------


def standardise_image(image_HxWxC: np.ndarray, mean: Sequence[float], std: Sequence[float]):
  """uint8 image -> float32 in [0, 1] -> `(x - mean) / std` per channel."""
  x = image_HxWxC.astype(np.float32) * np.float32(1.0 / 255.0)
  return (x - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)


def random_crop_with_zero_padding(
  image_HxWxC: np.ndarray, rng: np.random.Generator, padding: int
) -> np.ndarray:
  """Pads `padding` zeros on every side and crops back to the original size at a random offset.

  Applied to the raw uint8 image, like torchvision's `RandomCrop(size, padding)` before
  `Normalize`, so padded pixels are black, not the mean.
  """
  height, width = image_HxWxC.shape[:2]
  top, left = rng.integers(0, 2 * padding + 1, size=2)
  padded = np.pad(image_HxWxC, ((padding, padding), (padding, padding), (0, 0)))
  return padded[top : top + height, left : left + width]


def random_horizontal_flip(image_HxWxC: np.ndarray, rng: np.random.Generator) -> np.ndarray:
  """Mirrors the image left-right with probability 1/2."""
  return image_HxWxC[:, ::-1] if rng.random() < 0.5 else image_HxWxC


def classify_image(
  image: np.ndarray,
  label,
  rng: np.random.Generator | None,
  *,
  mean: Sequence[float],
  std: Sequence[float],
  crop_padding: int = 0,
  flip: bool = False,
  as_sequence: bool = False,
  permutation: np.ndarray | None = None,
) -> tuple[np.ndarray, np.int32]:
  """An image classification example: augment (if `rng`), standardise, optionally flatten.

  Args:
    image: uint8 [H, W, C].
    label: the class index.
    rng: augmentation RNG, or None for no augmentation.
    mean, std: per-channel normalisation of the [0, 1] image.
    crop_padding: random crop with this much zero padding (0: none).
    flip: random horizontal flips.
    as_sequence: flatten rows to a sequence [H * W, C] (sMNIST, sCIFAR10), row-major as in CCNN.
    permutation: reorder the sequence positions by this index array (pMNIST).

  Returns:
    float32 [H, W, C] (or [H * W, C]) and the int32 label.
  """
  if rng is not None:
    if crop_padding:
      image = random_crop_with_zero_padding(image, rng, crop_padding)
    if flip:
      image = random_horizontal_flip(image, rng)
  x = standardise_image(image, mean, std)
  if as_sequence:
    x = x.reshape(-1, x.shape[-1])
  if permutation is not None:
    x = x[permutation]
  return np.ascontiguousarray(x), np.int32(label)


def foreground_labels(
  image_HxWxC: np.ndarray, label, threshold: int = FOREGROUND_THRESHOLD
) -> np.ndarray:
  """Per-pixel labels: 0 where the raw pixel is below `threshold` (background), else label + 1.

  Returns int32 [H, W].
  """
  foreground = image_HxWxC[..., 0] >= threshold
  return np.where(foreground, np.int32(label) + 1, 0).astype(np.int32)


def segment_digit(
  image: np.ndarray,
  label,
  rng: np.random.Generator | None,
  *,
  mean: Sequence[float],
  std: Sequence[float],
  threshold: int = FOREGROUND_THRESHOLD,
) -> tuple[np.ndarray, np.ndarray]:
  """A dense example: the standardised image and its per-pixel labels (see `foreground_labels`).

  No augmentation (`rng` is ignored), so inputs and labels can never disagree.
  """
  del rng
  return standardise_image(image, mean, std), foreground_labels(image, label, threshold)


def scale_array(
  value: np.ndarray, label, rng: np.random.Generator | None, *, input_shape: Sequence[int]
) -> tuple[np.ndarray, np.ndarray | np.int32]:
  """A user's array example: uint8 values to [0, 1], other dtypes as float32 unchanged.

  Reshapes to `input_shape` (adds the trailing channel axis of grayscale images and scalar
  sequences). Dense labels (arrays) pass through as int32.
  """
  del rng
  if value.dtype == np.uint8:
    x = value.astype(np.float32) * np.float32(1.0 / 255.0)
  else:
    x = value.astype(np.float32)
  label = np.asarray(label)
  y = label.astype(np.int32) if label.ndim else np.int32(label)
  return x.reshape(input_shape), y


# --- Audio ---------------------------------------------------------------------------------------

SPEECH_SAMPLES = 16000  # one second at 16 kHz


def _standardise(x: np.ndarray, axis=None) -> np.ndarray:
  mean = x.mean(axis=axis, keepdims=True)
  std = x.std(axis=axis, keepdims=True)
  return (x - mean) / (std + np.float32(1e-5))


def pad_or_trim(samples: np.ndarray, length: int = SPEECH_SAMPLES) -> np.ndarray:
  """Zero-pads at the end, or cuts, a 1D signal to exactly `length` samples."""
  samples = samples[:length]
  return np.pad(samples, (0, length - samples.shape[0]))


def int16_to_float(samples: np.ndarray) -> np.ndarray:
  """int16 PCM -> float32 in [-1, 1), as CKConv's `audio / 2**15`."""
  return samples.astype(np.float32) * np.float32(1.0 / 32768.0)


def classify_raw_audio(
  samples: np.ndarray, label, rng: np.random.Generator | None
) -> tuple[np.ndarray, np.int32]:
  """Raw speech: int16 [T] -> float32 [16000, 1], standardised per utterance.

  CKConv standardises with statistics of the whole training set; a per-utterance standardisation
  is a pure function of the example and needs no pass over the data.
  """
  del rng
  x = pad_or_trim(int16_to_float(np.asarray(samples).reshape(-1)))
  return _standardise(x)[:, None].astype(np.float32), np.int32(label)


def classify_mfcc(
  samples: np.ndarray, label, rng: np.random.Generator | None
) -> tuple[np.ndarray, np.int32]:
  """Speech as MFCC: int16 [T] -> float32 [161 frames, 20 coefficients].

  `audio.mfcc` reproduces torchaudio's `MFCC(log_mels=True, n_mfcc=20, melkwargs=dict(n_fft=200,
  n_mels=64))` as CKConv uses it (hop 100, centred frames: 1 + 16000 // 100 = 161). Each
  coefficient is then standardised over the frames of its utterance (cepstral mean and variance
  normalisation) instead of CKConv's training-set statistics.
  """
  del rng
  x = pad_or_trim(int16_to_float(np.asarray(samples).reshape(-1)))
  coefficients_FxK = audio.mfcc(x).T
  return _standardise(coefficients_FxK, axis=0).astype(np.float32), np.int32(label)
