"""CIFAR10 as 32x32x3 images, with CCNN's augmentation and a 45000/5000 train/validation split.

Paper rows (METHOD.md §9): CCNN 4,140 CIFAR10 92.78%, CCNN 6,380 95.20% (arXiv 2206.03398).
CCNN's 4,140 command: dropout 0.1, omega_0 4231.57, kernel grid 33, centred, sigma_0 0.75 (sic:
the released command has 0.75, so ``ccnn_4_140`` starts from it; DNArch variants start from the
usual 0.075), lr 0.02, weight decay 1e-4, 5 warm-up epochs, batch 64, 350 epochs. Its 6,380
command: dropout 0.15, omega_0 976.78, sigma_0 0.075, lr 0.01, weight decay 0, 10 warm-up
epochs, batch 50, 210 epochs. Augmentation: random crop 32 with 4 padding, horizontal flip.

CIFAR10 needs its tfds files prepared once (``pip install -e ".[tf]"`` then
``tfds build cifar10 --data_dir <dir>``, or copy a prepared folder); the error says so.

Variants (``dnarch_jax.interfaces.variants``): ccnn_4_140, ccnn_6_380, dnarch_k, dnarch, dnarch_b25,
dnarch_p50, smoke.

Commands:
  dnarch train --config experiments/cifar10.py:ccnn_4_140 --workdir runs/cifar10_ccnn_4_140
  dnarch train --config experiments/cifar10.py:dnarch --workdir runs/cifar10_dnarch
"""

from dnarch_jax.interfaces.variants import CCNNRun, experiment_config

RUNS = {
  "4_140": CCNNRun(
    omega_0=4231.57, dropout=0.1, kernel_sigma_init=0.75, lr=0.02, weight_decay=1e-4,
    warmup_epochs=5, batch_size=64, epochs=350, augment=True,
  ),
  "6_380": CCNNRun(
    omega_0=976.78, dropout=0.15, lr=0.01, weight_decay=0.0, warmup_epochs=10, batch_size=50,
    epochs=210, augment=True,
  ),
}  # fmt: skip


def get_config(variant=None):
  return experiment_config("cifar10", variant, RUNS, causal=False, kernel_grid=33)
