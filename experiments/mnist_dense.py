"""MNIST pixel-wise segmentation: every pixel labelled background (10) or its digit's class.

A dense-prediction task on real data (the DNArch paper's dense tasks could not be obtained): the
model keeps its resolution at the output and its dense head predicts 11 classes per pixel; pixels
brighter than ``dnarch_jax.data.transforms.FOREGROUND_THRESHOLD`` are the digit. Metrics: pixel
accuracy and mean IoU. Hyperparameters as ``experiments/mnist.py`` (CCNN's CIFAR10 rows).

Variants (``dnarch_jax.interfaces.variants``): ccnn_4_140, ccnn_6_380, dnarch_k, dnarch, dnarch_b25,
dnarch_p50, smoke.

Commands:
  dnarch train --config experiments/mnist_dense.py:dnarch --workdir runs/mnist_dense_dnarch
  dnarch eval --workdir runs/mnist_dense_dnarch
"""

from dnarch_jax.interfaces.variants import CCNNRun, experiment_config

RUNS = {
  "4_140": CCNNRun(
    omega_0=4231.57, dropout=0.1, lr=0.02, weight_decay=1e-4, warmup_epochs=5, batch_size=64,
    epochs=210,
  ),
  "6_380": CCNNRun(
    omega_0=976.78, dropout=0.15, lr=0.01, weight_decay=0.0, warmup_epochs=10, batch_size=50,
    epochs=210,
  ),
}  # fmt: skip


def get_config(variant=None):
  return experiment_config("mnist_dense", variant, RUNS, causal=False, kernel_grid=29)
