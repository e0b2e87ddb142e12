"""Sequential CIFAR10: each image as a causal sequence of 1024 pixels x 3 channels.

Paper rows (METHOD.md §9): CCNN 4,140 sCIFAR10 90.30%, CCNN 6,380 93.08% (arXiv 2206.03398).
CCNN's sCIFAR10 command: dropout 0, omega_0 2386.49, kernel grid "same" (1024), causal, sigma_0
0.075, lr 0.02, weight decay 0, 10 warm-up epochs, batch 50, 210 epochs, with augmentation
(random crop with 4 padding, horizontal flip). METHOD.md has no 6,380 row for sCIFAR10:
``ccnn_6_380`` keeps these values.

CIFAR10 needs its tfds files prepared once (``pip install -e ".[tf]"`` then
``tfds build cifar10 --data_dir <dir>``, or copy a prepared folder); the error says so.

Variants (``dnarch_jax.interfaces.variants``): ccnn_4_140, ccnn_6_380, dnarch_k, dnarch, dnarch_b25,
dnarch_p50, smoke.

Commands:
  dnarch train --config experiments/scifar10.py:ccnn_4_140 --workdir runs/scifar10_ccnn_4_140
  dnarch train --config experiments/scifar10.py:dnarch --workdir runs/scifar10_dnarch
"""

from dnarch_jax.interfaces.variants import CCNNRun, experiment_config

RUN = CCNNRun(
  omega_0=2386.49, dropout=0.0, lr=0.02, weight_decay=0.0, warmup_epochs=10, batch_size=50,
  epochs=210, augment=True,
)  # fmt: skip


def get_config(variant=None):
  return experiment_config(
    "scifar10", variant, {"4_140": RUN, "6_380": RUN}, causal=True, kernel_grid=0,
    kernel_bucket=16, resolution_bucket=16,
  )  # fmt: skip
