"""Speech Commands, raw waveforms: 16000 samples x 1, causal, CCNN's 10 words.

Paper rows (METHOD.md §9): CCNN 4,140 SC raw 98.34%, CCNN 6,380 98.44% (arXiv 2206.03398).
CCNN's command: dropout 0.2, omega_0 1295.61, kernel grid "same" (16000), causal, sigma_0 0.075,
lr 0.02, weight decay 1e-6, 10 warm-up epochs, batch 20, 160 epochs. METHOD.md has no 6,380 row
for it: ``ccnn_6_380`` keeps these values.

Reading Speech Commands through tfds needs TensorFlow and the prepared dataset
(``pip install -e ".[tf]"`` then ``tfds build speech_commands --data_dir <dir>``); the error says
so.

Variants (``dnarch_jax.interfaces.variants``): ccnn_4_140, ccnn_6_380, dnarch_k, dnarch, dnarch_b25,
dnarch_p50, smoke.

Commands:
  dnarch train --config experiments/speech_commands_raw.py:ccnn_4_140 --workdir runs/sc_raw_ccnn
  dnarch train --config experiments/speech_commands_raw.py:dnarch --workdir runs/sc_raw_dnarch
"""

from dnarch_jax.interfaces.variants import CCNNRun, experiment_config

RUN = CCNNRun(
  omega_0=1295.61, dropout=0.2, lr=0.02, weight_decay=1e-6, warmup_epochs=10, batch_size=20,
  epochs=160,
)  # fmt: skip


def get_config(variant=None):
  # 16000-sample kernels and signals: coarse buckets keep the number of distinct Archs small.
  return experiment_config(
    "speech_commands_raw", variant, {"4_140": RUN, "6_380": RUN}, causal=True, kernel_grid=0,
    kernel_bucket=64, resolution_bucket=160,
  )  # fmt: skip
