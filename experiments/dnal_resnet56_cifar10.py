"""DNAL on ResNet56 for CIFAR-10: the paper's (arXiv 2103.02126) ResNet56 rows of its CIFAR-10
table.

Rows (the official README): baseline 125.49 M MACs ("FLOPs" there), 0.85 M parameters, 94.15 %;
DNAL lambda_a = 1e-4: 36.94 M MACs, 0.25 M parameters, 93.20 %.

ResNet56 (He et al.'s CIFAR ResNet): a 3x3 stem (16), three stages of 9 basic blocks (16, 32, 64
channels; the first block of stages 2 and 3 at stride 2), option-A shortcuts (subsample, zero-pad
channels), global average pooling, Linear(64 -> 10): 125.49 M MACs, 0.85 M parameters. A DNAL
gate follows every conv's BatchNorm, both convs of every block included, as in the official
ResNet code; a stream channel is dropped when no layer writing it keeps it.

Schedule [design; the official repository ships only ImageNet scripts]: 160 epochs of weights
(SGD 0.1, momentum 0.9, weight decay 1e-4, cosine, batch 128), 10 epochs of gates (SGD 0.01,
momentum 0.9, constant, no decay; delta 1 -> 1e4), prune at 0.9, 100 epochs of fine-tuning (SGD
0.01, cosine). The baseline is the weights stage alone.

Variants: baseline, dnal (lambda_a = 1e-4), smoke (ResNet8 at widths 4, 8, 16, 2 steps per
stage, for tests under tfds.testing.mock_data).

Commands:
  dnarch summary --config experiments/dnal_resnet56_cifar10.py:baseline --json
  dnarch train --config experiments/dnal_resnet56_cifar10.py:dnal --workdir runs/dnal_resnet56
  dnarch eval --workdir runs/dnal_resnet56
"""

from __future__ import annotations

import ml_collections

from dnarch_jax.dnal.config import experiment_config, unpruned


def get_config(variant: str | None = None) -> ml_collections.ConfigDict:
  variant = variant or "dnal"
  config = experiment_config(
    task="cifar10",
    model=dict(kind="resnet", depth=56, widths=(16, 32, 64)),
    lambda_a=1e-4,
    epochs=(160, 10, 100),
    optim=dict(
      weights=dict(lr=0.1, weight_decay=1e-4, schedule="cosine"),
      arch=dict(lr=0.01, weight_decay=0.0, schedule="constant"),
      finetune=dict(lr=0.01, weight_decay=1e-4, schedule="cosine"),
    ),
    batch_size=128,
  )
  config.data.eval_batch_size = 1000
  config.variant = variant
  if variant == "baseline":
    unpruned(config)
  elif variant == "smoke":
    config.model.update(depth=8, widths=(4, 8, 16))
    config.data.update(batch_size=8, eval_batch_size=8, val_size=8)
    for stage in ("weights", "arch", "finetune"):
      config.dnal[f"{stage}_steps"] = 2
    config.update(log_every=1, progress=False)
  elif variant != "dnal":
    raise ValueError(f"unknown variant {variant!r} of dnal_resnet56_cifar10: baseline, dnal, smoke")
  return config
