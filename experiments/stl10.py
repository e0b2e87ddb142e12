"""STL10 as 96x96x3 images (5000 labelled training images, 4500/500 train/validation).

Paper rows (METHOD.md §9): CCNN 4,140 STL10 81.80%, CCNN 6,380 83.00% (arXiv 2206.03398). CCNN's
4,140 command: dropout 0.1, omega_0 954.28, kernel grid 33, centred, sigma_0 0.075, lr 0.02,
weight decay 0, 10 warm-up epochs, batch 64, 210 epochs, with augmentation. METHOD.md has no
6,380 row for STL10: ``ccnn_6_380`` keeps these values. Differences from CCNN, by design: we keep
the native 96x96 resolution (random crop with 12 padding and flips) where CCNN resizes, and use
the same channel dropout as every other task where CCNN's STL10 run drops single units.

STL10 needs its tfds files prepared once (``pip install -e ".[tf]"`` then
``tfds build stl10 --data_dir <dir>``, or copy a prepared folder); the error says so.

Variants (``dnarch_jax.interfaces.variants``): ccnn_4_140, ccnn_6_380, dnarch_k, dnarch, dnarch_b25,
dnarch_p50, smoke.

Commands:
  dnarch train --config experiments/stl10.py:ccnn_4_140 --workdir runs/stl10_ccnn_4_140
  dnarch train --config experiments/stl10.py:dnarch --workdir runs/stl10_dnarch
"""

from dnarch_jax.interfaces.variants import CCNNRun, experiment_config

RUN = CCNNRun(
  omega_0=954.28, dropout=0.1, lr=0.02, weight_decay=0.0, warmup_epochs=10, batch_size=64,
  epochs=210, augment=True,
)  # fmt: skip


def get_config(variant=None):
  return experiment_config(
    "stl10", variant, {"4_140": RUN, "6_380": RUN}, causal=False, kernel_grid=33
  )
