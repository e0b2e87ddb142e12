"""DNAL on VGG16 for CIFAR-10: the paper's (arXiv 2103.02126) VGG16 rows of its CIFAR-10 table.

Rows (the official README): baseline 313.47 M MACs ("FLOPs" there), 14.99 M parameters, 93.77 %;
DNAL lambda_a = 1e-4: 161.97 M MACs, 2.10 M parameters, 93.75 %.

VGG16 for CIFAR: 13 3x3 convs (64, 64, M, 128, 128, M, 256 x3, M, 512 x3, M, 512 x3, M), each
conv -> BatchNorm -> DNAL gate -> ReLU, then Linear(512 -> 512) -> BatchNorm -> ReLU ->
Linear(512 -> 10): 313.46 M MACs and 14.99 M parameters per 32x32 image, the paper's sizes.
Gates follow every conv (not the classifier), as in the official code.

The official repository ships only its ImageNet scripts (30 + 10 + 70 epochs, SGD 0.01); the
CIFAR-10 schedule here is ours [design]: 160 epochs of weights (SGD 0.1, momentum 0.9, weight
decay 5e-4, cosine, batch 128), 10 epochs of gates (SGD 0.01, momentum 0.9, constant, no decay:
the official architecture stage; delta 1 -> 1e4), prune at 0.9 (the official threshold_arch),
100 epochs of fine-tuning (SGD 0.01, cosine). The baseline is the weights stage alone.

Variants: baseline, dnal (lambda_a = 1e-4), smoke (a 5-conv VGG with VGG16's five pools at
widths 4 to 32, 2 steps per stage, for tests under tfds.testing.mock_data).

Commands:
  dnarch summary --config experiments/dnal_vgg16_cifar10.py:baseline --json
  dnarch train --config experiments/dnal_vgg16_cifar10.py:dnal --workdir runs/dnal_vgg16
  dnarch eval --workdir runs/dnal_vgg16
"""

from __future__ import annotations

import ml_collections

from dnarch_jax.dnal.config import VGG16_LAYERS, experiment_config, unpruned


def get_config(variant: str | None = None) -> ml_collections.ConfigDict:
  variant = variant or "dnal"
  config = experiment_config(
    task="cifar10",
    model=dict(kind="vgg", layers=VGG16_LAYERS, classifier=(512,)),
    lambda_a=1e-4,
    epochs=(160, 10, 100),
    optim=dict(
      weights=dict(lr=0.1, weight_decay=5e-4, schedule="cosine"),
      arch=dict(lr=0.01, weight_decay=0.0, schedule="constant"),
      finetune=dict(lr=0.01, weight_decay=5e-4, schedule="cosine"),
    ),
    batch_size=128,
  )
  config.data.eval_batch_size = 1000
  config.variant = variant
  if variant == "baseline":
    unpruned(config)
  elif variant == "smoke":
    config.model.layers = (4, "M", 8, "M", 16, "M", 32, "M", 32, "M")
    config.model.classifier = (32,)
    config.data.update(batch_size=8, eval_batch_size=8, val_size=8)
    for stage in ("weights", "arch", "finetune"):
      config.dnal[f"{stage}_steps"] = 2
    config.update(log_every=1, progress=False)
  elif variant != "dnal":
    raise ValueError(f"unknown variant {variant!r} of dnal_vgg16_cifar10: baseline, dnal, smoke")
  return config
