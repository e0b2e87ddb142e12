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

The names load on first use (PEP 562), so ``import dnarch_jax.<module>`` costs only that module:
``dnarch`` restarts itself on huge pages (``hostmem``) before JAX is imported, not after.
"""

import importlib

# Public name -> the module that defines it.
_EXPORTS = {
  **dict.fromkeys(["Arch", "compute_arch", "initial_arch"], "method.arch"),
  "arch_params": "method.arch_params",
  **dict.fromkeys(["arch_sizes", "soft_kernel_taps", "soft_sizes"], "method.sizes"),
  **dict.fromkeys(["ModelConfig", "load_config"], "config"),
  "depthwise_conv": "network.conv",
  **dict.fromkeys(["budget_penalty", "flops", "params"], "method.cost"),
  "load_exported": "interfaces.exported",
  "crop_taps": "method.grids",
  **dict.fromkeys(["SIREN", "MAGNet"], "network.kernelnets"),
  "MaskedContinuousConv": "network.layers",
  **dict.fromkeys(
    ["gaussian", "gaussian_radius", "ramp", "ramp_extent", "scaled_sigmoid_gate",
     "scaled_sigmoid_gate_extent", "sigmoid_cutoff", "sigmoid_cutoff_extent", "thresholded"],
    "method.masks"),
  **dict.fromkeys(["DNArchCCNN", "compiler_options", "init_variables"], "network.model"),
  "spectral_resample": "method.spectral",
}  # fmt: skip

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
  if name not in _EXPORTS:
    raise AttributeError(f"module 'dnarch_jax' has no attribute {name!r}")
  value = getattr(importlib.import_module(f"dnarch_jax.{_EXPORTS[name]}"), name)
  globals()[name] = value  # resolved once
  return value


def __dir__():
  return sorted({*globals(), *__all__})
