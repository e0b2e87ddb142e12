"""MFCC in numpy, matching torchaudio's `transforms.MFCC` with the settings CKConv/CCNN use.

torchaudio's defaults for `MFCC(sample_rate=16000, n_mfcc=20, log_mels=True,
melkwargs=dict(n_fft=200, n_mels=64))`: window length = n_fft = 200, hop length = 200 // 2 = 100,
periodic Hann window, frames centred on their sample (reflect padding of n_fft // 2 on both sides),
power spectrum, HTK mel filters from 0 Hz to 8 kHz without area normalisation, `log(mel + 1e-6)`,
and an orthonormal DCT-II. One second of audio (16,000 samples) gives 1 + 16000 // 100 = 161
frames. With 64 mel bands over 101 frequency bins some filters are empty; their log is log(1e-6),
as in torchaudio.
"""

from __future__ import annotations

import functools

import numpy as np

SAMPLE_RATE = 16000
N_FFT = 200
HOP_LENGTH = 100  # torchaudio's default win_length // 2; gives 161 frames per second of audio.
N_MELS = 64
N_MFCC = 20
LOG_OFFSET = 1e-6  # torchaudio adds this before the log when log_mels=True


def _hz_to_mel(hz):
  return 2595.0 * np.log10(1.0 + np.asarray(hz, np.float64) / 700.0)


def _mel_to_hz(mel):
  return 700.0 * (10.0 ** (np.asarray(mel, np.float64) / 2595.0) - 1.0)


@functools.cache
def mel_filterbank(
  n_freqs: int = N_FFT // 2 + 1, n_mels: int = N_MELS, sample_rate: int = SAMPLE_RATE
) -> np.ndarray:
  """Triangular HTK mel filters from 0 Hz to sample_rate / 2: float32 [n_freqs, n_mels]."""
  all_freqs = np.linspace(0.0, sample_rate // 2, n_freqs)
  mel_points = np.linspace(_hz_to_mel(0.0), _hz_to_mel(sample_rate / 2), n_mels + 2)
  hz_points = _mel_to_hz(mel_points)
  hz_gaps = np.diff(hz_points)
  slopes = hz_points[None, :] - all_freqs[:, None]
  rising = -slopes[:, :-2] / hz_gaps[:-1]
  falling = slopes[:, 2:] / hz_gaps[1:]
  return np.maximum(0.0, np.minimum(rising, falling)).astype(np.float32)


@functools.cache
def dct_matrix(n_mfcc: int = N_MFCC, n_mels: int = N_MELS) -> np.ndarray:
  """Orthonormal DCT-II as a matrix: float32 [n_mels, n_mfcc] (torchaudio's `create_dct`)."""
  n = np.arange(n_mels, dtype=np.float64)
  k = np.arange(n_mfcc, dtype=np.float64)[:, None]
  dct = np.cos(np.pi / n_mels * (n + 0.5) * k)
  dct[0] *= 1.0 / np.sqrt(2.0)
  dct *= np.sqrt(2.0 / n_mels)
  return dct.T.astype(np.float32)


@functools.cache
def _periodic_hann(length: int) -> np.ndarray:
  return (0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(length) / length)).astype(np.float32)


def power_spectrogram(
  signal_T: np.ndarray, n_fft: int = N_FFT, hop_length: int = HOP_LENGTH
) -> np.ndarray:
  """|STFT|^2 of centred, Hann-windowed frames: float32 [frames, n_fft // 2 + 1]."""
  padded = np.pad(signal_T.astype(np.float32), n_fft // 2, mode="reflect")
  frames_FxN = np.lib.stride_tricks.sliding_window_view(padded, n_fft)[::hop_length]
  spectrum = np.fft.rfft(frames_FxN * _periodic_hann(n_fft), axis=-1)
  return (spectrum.real**2 + spectrum.imag**2).astype(np.float32)


def mfcc(signal_T: np.ndarray) -> np.ndarray:
  """MFCCs of a 16 kHz signal, torchaudio's layout: float32 [20 coefficients, frames]."""
  mel_FxM = power_spectrogram(signal_T) @ mel_filterbank()
  return (np.log(mel_FxM + LOG_OFFSET) @ dct_matrix()).T
