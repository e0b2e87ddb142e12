"""Speech Commands as MFCCs: 161 frames x 20 coefficients (n_fft 200, 64 mel bands), causal.

Paper rows (METHOD.md §9): CCNN 4,140 SC MFCC 95.01%, CCNN 6,380 97.98% (arXiv 2206.03398).
CCNN's command: dropout 0.2, omega_0 750.18, kernel grid "same" (161), causal, sigma_0 0.075, lr
0.02, weight decay 1e-6, 10 warm-up epochs, batch 100, 110 epochs. METHOD.md has no 6,380 row for
it: ``ccnn_6_380`` keeps these values.

161 frames is odd, and the spectral resampling behind learned resolution needs even lengths: the
DNArch variants here learn kernel size, width and depth, and keep the resolution fixed.

Reading Speech Commands through tfds needs TensorFlow and the prepared dataset
(``pip install -e ".[tf]"`` then ``tfds build speech_commands --data_dir <dir>``); the error says
so.

Variants (``dnarch_jax.interfaces.variants``): ccnn_4_140, ccnn_6_380, dnarch_k, dnarch, dnarch_b25,
dnarch_p50, smoke.

Commands:
  dnarch train --config experiments/speech_commands_mfcc.py:ccnn_4_140 --workdir runs/sc_mfcc_ccnn
  dnarch train --config experiments/speech_commands_mfcc.py:dnarch --workdir runs/sc_mfcc_dnarch
"""

from dnarch_jax.interfaces.variants import CCNNRun, experiment_config

RUN = CCNNRun(
  omega_0=750.18, dropout=0.2, lr=0.02, weight_decay=1e-6, warmup_epochs=10, batch_size=100,
  epochs=110,
)  # fmt: skip


def get_config(variant=None):
  return experiment_config(
    "speech_commands_mfcc", variant, {"4_140": RUN, "6_380": RUN}, causal=True, kernel_grid=0,
    kernel_bucket=4, learnable=("kernel", "width", "depth"),
  )  # fmt: skip
