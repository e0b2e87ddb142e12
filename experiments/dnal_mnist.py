"""DNAL on real MNIST (28x28): a small VGG-style CNN pruned channel by channel, runnable on a CPU.

Not a paper row: DNAL (Guo et al., arXiv 2103.02126) reports CIFAR-10 and ImageNet; this is the
run that fits this machine. The network: 3x3 convs 32, 32, pool, 64, 64, pool, 128, pool (each
conv -> BatchNorm -> DNAL gate -> ReLU), global average pooling, Linear(128 -> 10): 21.9 M MACs,
0.14 M parameters. Stages [design, scaled down from the paper's 30 + 10 + 70 ImageNet epochs]:
8 epochs of weights (SGD 0.05, momentum 0.9, weight decay 5e-4, cosine), 2 epochs of gates
(SGD 0.01, momentum 0.9, constant, as the official code's architecture stage; delta 1 -> 1e4),
prune at 0.9 (the official code's threshold), 5 epochs of fine-tuning (SGD 0.01, cosine).

Variants:
  baseline      the unpruned CNN: the weights stage alone.
  lambda_1e-5   DNAL with lambda_a = 1e-5 (the default variant).
  lambda_1e-4   DNAL with lambda_a = 1e-4 (the paper's CIFAR-10 value).
  lambda_5e-4   DNAL with lambda_a = 5e-4.
  lambda_1e-2   DNAL with lambda_a = 1e-2, beyond the paper's values: with this CNN and short
                stages the sparsity pull of the three above is small beside the task
                gradient (experiments/README.md).
  smoke         a tiny CNN, 6 steps per stage: seconds on a CPU.

Commands (one run each, about 6,400 steps):
  dnarch train --config experiments/dnal_mnist.py:lambda_1e-4 --workdir runs/dnal_mnist_1e-4
  dnarch eval --workdir runs/dnal_mnist_1e-4
"""

from __future__ import annotations

import ml_collections

from dnarch_jax.dnal.config import experiment_config, unpruned

LAMBDAS = {"lambda_1e-5": 1e-5, "lambda_1e-4": 1e-4, "lambda_5e-4": 5e-4, "lambda_1e-2": 1e-2}


def get_config(variant: str | None = None) -> ml_collections.ConfigDict:
  variant = variant or "lambda_1e-5"
  config = experiment_config(
    task="mnist",
    model=dict(kind="vgg", layers=(32, 32, "M", 64, 64, "M", 128, "M"), classifier=()),
    lambda_a=LAMBDAS.get(variant, 1e-4),
    epochs=(8, 2, 5),
    optim=dict(
      weights=dict(lr=0.05, weight_decay=5e-4, schedule="cosine"),
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
    config.model.layers = (8, 8, "M", 16, "M")
    config.data.update(batch_size=16, eval_batch_size=1000, val_size=1000)
    for stage in ("weights", "arch", "finetune"):
      config.dnal[f"{stage}_steps"] = 6
    config.update(log_every=3, eval_every=1000, checkpoint_every=4, progress=False)
  elif variant not in LAMBDAS:
    raise ValueError(
      f"unknown variant {variant!r} of dnal_mnist: baseline, {', '.join(LAMBDAS)}, smoke"
    )
  return config
