"""Permuted MNIST: sMNIST with the pixels in a fixed random order (784 x 1, causal).

The permutation is a pure function of a fixed seed (``dnarch_jax.data.pmnist_permutation``) and is
stored with every run's task metadata. Paper rows (METHOD.md §9): CCNN 4,140 pMNIST 98.82%, CCNN
6,380 98.84% (arXiv 2206.03398). CCNN's pMNIST command: dropout 0, input dropout 0.2, omega_0
2985.63, kernel grid "same" (784), causal, sigma_0 0.075, lr 0.02, weight decay 0, 10 warm-up
epochs, batch 100, 210 epochs. METHOD.md has no 6,380 row for pMNIST: ``ccnn_6_380`` keeps these.

Variants (``dnarch_jax.interfaces.variants``): ccnn_4_140, ccnn_6_380, dnarch_k, dnarch, dnarch_b25,
dnarch_p50, smoke.

Commands:
  dnarch train --config experiments/pmnist.py:ccnn_4_140 --workdir runs/pmnist_ccnn_4_140
  dnarch train --config experiments/pmnist.py:dnarch --workdir runs/pmnist_dnarch
"""

from dnarch_jax.interfaces.variants import CCNNRun, experiment_config

RUN = CCNNRun(
  omega_0=2985.63, dropout=0.0, input_dropout=0.2, lr=0.02, weight_decay=0.0, warmup_epochs=10,
  batch_size=100, epochs=210,
)  # fmt: skip


def get_config(variant=None):
  return experiment_config(
    "pmnist", variant, {"4_140": RUN, "6_380": RUN}, causal=True, kernel_grid=0,
    kernel_bucket=16, resolution_bucket=16,
  )  # fmt: skip
