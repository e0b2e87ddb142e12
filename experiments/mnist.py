"""MNIST as 28x28 images (2D): CCNN-4,140 and DNArch on real MNIST, the README's main job.

Not a paper row: CCNN and DNArch report MNIST only as sequences. Design choices: the kernel grid
has 29 samples per axis (odd, one more than the image, as CCNN uses 33 for 32x32), omega_0 is
CCNN's CIFAR10 4,140 value (4231.57) with the usual sigma_0 0.075, and the optimiser follows
CCNN's CIFAR10 4,140 command (lr 0.02, weight decay 1e-4, 5 warm-up epochs, batch 64).

Variants:
  ccnn_4_140  CCNN-4,140 with FlexConv's learned kernel size, everything else fixed.
  dnarch_k    DNArch learning kernel sizes only.
  dnarch      DNArch learning kernel size, width, resolution and depth.
  smoke       a tiny network on the same data: seconds on a CPU.

Command: ``dnarch summary --config experiments/mnist.py:dnarch``
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
  config.data = default_data_config("mnist")
  config.data.batch_size = 64
  config.model = model_block(
    "4_140", omega_0=4231.57, dropout=0.1, causal=False, kernel_grid=29, resolution_bucket=2
  )
  config.optim = optim_block(
    lr=0.02, weight_decay=1e-4, warmup_epochs=5, epochs=210, arch_lr_factor=1.0
  )
  # DNArch variants train under a FLOPs budget of half the maximal network's (soft penalty).
  add_loop_fields(config, budget=dict(metric="flops", mode="soft", fraction=0.0, weight=1.0))
  if variant in ("ccnn_4_140", "dnarch_k"):
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
    raise ValueError(f"unknown variant {variant!r} of mnist: ccnn_4_140, dnarch_k, dnarch, smoke")
  return config
