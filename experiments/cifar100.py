"""CIFAR100 as 32x32x3 images, with a 45000/5000 train/validation split.

Paper rows (METHOD.md §9): CCNN 4,140 CIFAR100 66.86%, CCNN 6,380 73.16% (arXiv 2206.03398).
CCNN's 4,140 command: dropout 0.1, omega_0 3521.55, kernel grid 33, centred, sigma_0 0.075, lr
0.02, weight decay 1e-4, 10 warm-up epochs, batch 50, 210 epochs, no augmentation. METHOD.md has
no 6,380 row for CIFAR100: ``ccnn_6_380`` keeps these values.

CIFAR100 needs its tfds files prepared once (``pip install -e ".[tf]"`` then
``tfds build cifar100 --data_dir <dir>``, or copy a prepared folder); the error says so.

Variants (``dnarch_jax.interfaces.variants``): ccnn_4_140, ccnn_6_380, dnarch_k, dnarch, dnarch_b25,
dnarch_p50, smoke.

Commands:
  dnarch train --config experiments/cifar100.py:ccnn_4_140 --workdir runs/cifar100_ccnn_4_140
  dnarch train --config experiments/cifar100.py:dnarch --workdir runs/cifar100_dnarch
"""

from dnarch_jax.interfaces.variants import CCNNRun, experiment_config

RUN = CCNNRun(
  omega_0=3521.55, dropout=0.1, lr=0.02, weight_decay=1e-4, warmup_epochs=10, batch_size=50,
  epochs=210, augment=False,
)  # fmt: skip


def get_config(variant=None):
  return experiment_config(
    "cifar100", variant, {"4_140": RUN, "6_380": RUN}, causal=False, kernel_grid=33
  )
