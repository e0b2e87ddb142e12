"""Sequential MNIST: 784 pixels as a causal sequence of length 784 x 1.

Paper rows (METHOD.md §9): CCNN 4,140 sMNIST 99.72%, CCNN 6,380 99.72% (arXiv 2206.03398); DNArch's
own table could not be obtained. CCNN's sMNIST command: dropout 0.1, omega_0 2976.49, kernel grid
"same" (784), causal, sigma_0 0.075, lr 0.01, weight decay 1e-6, 10 warm-up epochs, batch 100,
210 epochs. METHOD.md has no 6,380 row for sMNIST: ``ccnn_6_380`` keeps these values.

Variants (``dnarch_jax.interfaces.variants``): ccnn_4_140, ccnn_6_380, dnarch_k, dnarch, dnarch_b25,
dnarch_p50, smoke.

Commands:
  dnarch train --config experiments/smnist.py:ccnn_4_140 --workdir runs/smnist_ccnn_4_140
  dnarch train --config experiments/smnist.py:dnarch --workdir runs/smnist_dnarch
  dnarch summary --config experiments/smnist.py:dnarch
"""

from dnarch_jax.interfaces.variants import CCNNRun, experiment_config

RUN = CCNNRun(
  omega_0=2976.49, dropout=0.1, lr=0.01, weight_decay=1e-6, warmup_epochs=10, batch_size=100,
  epochs=210,
)  # fmt: skip


def get_config(variant=None):
  # Kernels grow in buckets of 16 taps and the sequence resolution in steps of 16 samples, so
  # the Arch (and the compiled step) changes rarely.
  return experiment_config(
    "smnist", variant, {"4_140": RUN, "6_380": RUN}, causal=True, kernel_grid=0,
    kernel_bucket=16, resolution_bucket=16,
  )  # fmt: skip
