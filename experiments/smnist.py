"""Sequential MNIST (784 steps, causal): CCNN's sMNIST row and DNArch on it.

Paper rows: CCNN 4,140 sMNIST 99.72% (arXiv 2206.03398, Table 1); DNArch's own table could not be
obtained. Hyperparameters from CCNN's sMNIST command (METHOD.md §9): dropout 0.1, omega_0 2976.49,
kernel grid "same" (784), causal, sigma_0 0.075, lr 0.01, weight decay 1e-6, 10 warm-up epochs,
batch 100, 210 epochs.

Variants:
  ccnn_4_140  CCNN-4,140 with FlexConv's learned kernel size (as CCNN runs it), everything else fixed.
  dnarch_k    DNArch learning kernel sizes only.
  dnarch      DNArch learning kernel size, width, resolution and depth.
  smoke       a tiny network on the same data: seconds on a CPU.

Command: ``dnarch summary --config experiments/smnist.py:dnarch``
"""

from __future__ import annotations

import ml_collections

from dnarch_jax.config import add_loop_fields, learn, model_block, optim_block
from dnarch_jax.data import default_data_config


def get_config(variant: str | None = None) -> ml_collections.ConfigDict:
  variant = variant or "dnarch"
  config = ml_collections.ConfigDict()
  config.variant = variant
  config.seed = 0
  config.data = default_data_config("smnist")
  # kernel_grid 0 means "same": 784 samples. Causal kernels grow in buckets of 16 taps, the
  # sequence resolution in steps of 16 samples, widths in multiples of 8.
  config.model = model_block(
    "4_140", omega_0=2976.49, dropout=0.1, causal=True, kernel_grid=0,
    kernel_bucket=16, resolution_bucket=16,
  )  # fmt: skip
  config.optim = optim_block(
    lr=0.01, weight_decay=1e-6, warmup_epochs=10, epochs=210, arch_lr_factor=1.0
  )
  # DNArch variants train under a FLOPs budget of half the maximal network's (soft penalty).
  add_loop_fields(config, budget=dict(metric="flops", mode="soft", fraction=0.0, weight=1.0))
  if variant == "ccnn_4_140":
    learn(config.model, "kernel")
  elif variant == "dnarch_k":
    learn(config.model, "kernel")
  elif variant == "dnarch":
    learn(config.model, "kernel", "width", "resolution", "depth")
    config.budget.fraction = 0.5
  elif variant == "smoke":
    learn(config.model, "kernel", "width", "resolution", "depth")
    config.data.batch_size = 16
    config.model.update(num_blocks=2, width=16, hidden_width=16, kernel_net_hidden=8)
    config.optim.update(warmup_epochs=0.0, epochs=0.01)
    config.budget.fraction = 0.5
    config.update(
      total_steps=30, log_every=5, eval_every=15, checkpoint_every=10, arch_refresh_every=5
    )
    config.data.update(eval_batch_size=200, val_size=1000)
  else:
    raise ValueError(f"unknown variant {variant!r} of smnist: ccnn_4_140, dnarch_k, dnarch, smoke")
  return config
