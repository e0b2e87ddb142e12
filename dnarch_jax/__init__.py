"""dnarch_jax: DNArch in JAX/Flax.

CNNs with continuous kernels that learn kernel size, width, resolution and depth by
backpropagation under a compute budget. The public API:

Masks (pure functions, NumPy or JAX) and their closed-form extents:
  ``gaussian``, ``gaussian_radius``, ``sigmoid_cutoff``, ``sigmoid_cutoff_extent``, ``ramp``,
  ``ramp_extent``, ``scaled_sigmoid_gate``, ``scaled_sigmoid_gate_extent``, ``thresholded``.
Operations: ``depthwise_conv`` (direct/FFT/... routes), ``spectral_resample``.
Layers and models (Flax Linen): ``MAGNet``, ``SIREN``, ``MaskedContinuousConv``, ``DNArchCCNN``
  (``compiler_options(cfg)``: the XLA options its rematerialised gradient needs under ``jit``).
Architecture: ``ModelConfig``, ``Arch``, ``compute_arch``, ``initial_arch``, ``arch_params``.
Cost: ``flops``, ``params``, ``budget_penalty``, ``soft_sizes``, ``arch_sizes``,
  ``soft_kernel_taps``, ``crop_taps``.
Export: ``load_exported(path)`` -> ``(model, variables)``, a trained run's discovered network as
  a plain fixed-shape Linen module (written by ``dnarch export``); ``model.apply(variables, x)``.
"""

from dnarch_jax.arch import (
  Arch,
  arch_params,
  arch_sizes,
  compute_arch,
  initial_arch,
  soft_kernel_taps,
  soft_sizes,
)
from dnarch_jax.config import ModelConfig, load_config
from dnarch_jax.conv import depthwise_conv
from dnarch_jax.cost import budget_penalty, flops, params
from dnarch_jax.export import load_exported
from dnarch_jax.grids import crop_taps
from dnarch_jax.kernelnets import SIREN, MAGNet
from dnarch_jax.layers import MaskedContinuousConv
from dnarch_jax.masks import (
  gaussian,
  gaussian_radius,
  ramp,
  ramp_extent,
  scaled_sigmoid_gate,
  scaled_sigmoid_gate_extent,
  sigmoid_cutoff,
  sigmoid_cutoff_extent,
  thresholded,
)
from dnarch_jax.model import DNArchCCNN, compiler_options, init_variables
from dnarch_jax.spectral import spectral_resample

__all__ = [
  "MAGNet",
  "SIREN",
  "Arch",
  "DNArchCCNN",
  "MaskedContinuousConv",
  "ModelConfig",
  "arch_params",
  "arch_sizes",
  "budget_penalty",
  "compiler_options",
  "compute_arch",
  "crop_taps",
  "depthwise_conv",
  "flops",
  "gaussian",
  "gaussian_radius",
  "init_variables",
  "initial_arch",
  "load_config",
  "load_exported",
  "params",
  "ramp",
  "ramp_extent",
  "scaled_sigmoid_gate",
  "scaled_sigmoid_gate_extent",
  "sigmoid_cutoff",
  "sigmoid_cutoff_extent",
  "soft_kernel_taps",
  "soft_sizes",
  "spectral_resample",
  "thresholded",
]
