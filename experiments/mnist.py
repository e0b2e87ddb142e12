"""MNIST as 28x28 images (2D): CCNN and DNArch on real MNIST, shipped with the repository.

Not a paper row: CCNN and DNArch report MNIST only as sequences. Design choices: the kernel grid
has 29 samples per axis (odd, one more than the image, as CCNN uses 33 for 32x32), and the
hyperparameters are CCNN's CIFAR10 ones (METHOD.md §9): for 4,140 omega_0 4231.57, dropout 0.1,
lr 0.02, weight decay 1e-4, 5 warm-up epochs, batch 64 (sigma_0 the usual 0.075, 210 epochs);
for 6,380 omega_0 976.78, dropout 0.15, lr 0.01, weight decay 0, 10 warm-up epochs, batch 50.

Variants (``dnarch_jax.variants``): ccnn_4_140, ccnn_6_380, dnarch_k, dnarch, dnarch_b25,
dnarch_p50, smoke.

Commands:
  dnarch train --config experiments/mnist.py:dnarch --workdir runs/mnist_dnarch
  dnarch summary --config experiments/mnist.py:dnarch
"""

from dnarch_jax.variants import CCNNRun, experiment_config

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
  return experiment_config("mnist", variant, RUNS, causal=False, kernel_grid=29)
