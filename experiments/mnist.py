"""MNIST as 28x28 images (2D): CCNN and DNArch on real MNIST, shipped with the repository.

Not a paper row: CCNN and DNArch report MNIST only as sequences. Design choices: the kernel grid
has 29 samples per axis (odd, one more than the image, as CCNN uses 33 for 32x32), and the
hyperparameters are CCNN's CIFAR10 ones (METHOD.md §9): for 4,140 omega_0 4231.57, dropout 0.1,
lr 0.02, weight decay 1e-4, 5 warm-up epochs, batch 64 (sigma_0 the usual 0.075, 210 epochs);
for 6,380 omega_0 976.78, dropout 0.15, lr 0.01, weight decay 0, 10 warm-up epochs, batch 50.

Variants (``dnarch_jax.interfaces.variants``): ccnn_4_140, ccnn_6_380, dnarch_k, dnarch, dnarch_b25,
dnarch_p50, smoke; ``main``, the README's main job; and ``width``, DNArch learning widths alone
(the DNAL comparison of experiments/README.md).

``main`` is DNArch searching all four dimensions under a FLOPs budget of 15% of its maximal
network's (18.0 MFLOPs per example), sized to train within 10 minutes on a 2-core CPU [design; the
paper trains 210 epochs]: 4 blocks of 32 channels (hidden 64, widths in buckets of 4), no dropout,
AdamW at lr 0.003 with a warm-up of a tenth of an epoch and cosine decay over 4 epochs. The
architecture is searched during the first 1.5 epochs: the masks' Adam at 0.002 of each dimension's
box per step at its peak (a quarter-epoch warm-up, cosine to 0 at 1.5 epochs: about 1.3 boxes of
travel for a consistent gradient), the architecture refreshed every 200 steps (each new one is one
compile); then it is fixed and the weights train on. Kernels start at sigma 0.15, twice CCNN's
0.075: at 0.075 a block at 18x18 samples its kernel 1.5 sigma apart, so the Gaussian mask scales its
neighbouring taps, and the gradient that reaches them, by 0.33 (diagonals 0.11): a block starts
close to a 1x1 conv. Measured (experiments/README.md, "Kernels start wider"): over seeds 0-3
validation 98.70% (loss 0.043) against 98.47% (0.052), every seed better; 0.25 was worse on seeds 0
and 1 (98.38, 98.28%). The configured start (blocks at 18x18, full widths, 4 blocks, stem 9x9, block
kernels 5x5: 25.9 MFLOPs) is over the budget, so the run starts from it projected into the budget (3
blocks, stream 28, hidden 60, stem 7x7: 17.2 MFLOPs). Resolutions may grow up to 28x28 but not fall
below 18x18 (``resolution_min`` 0.65): on this task the task loss's gradient lowers every block's
resolution cutoff from the first steps, far below the budget, and the networks it leaves were 0.4 to
0.8 points less accurate (experiments/README.md, "The search"). Measured: with weight 1 the task's
gradient on the widths kept the cost 2.6% over the budget for 850 steps; the default weight is 10.

``width`` learns only the stream and hidden widths (ordered masks) of 4 blocks of at most 48
channels (hidden 96) at full resolution, with fixed 5x5 continuous kernels (kernel grid 5, the
crop sigma 0.075 gives at 28x28), under a *hard* FLOPs budget (half the maximal 71.6 MFLOPs unless
``budget.value`` is given): the Arch never exceeds it, and the soft penalty pulls towards it. One
epoch, masks at the weights' learning rate (widths must travel from 100% to the budget within it),
``model.width_mask`` selects DNArch's ordered mask (default) or DNAL's scaled sigmoid gate.

Commands:
  dnarch train --config experiments/mnist.py:dnarch --workdir runs/mnist_dnarch
  dnarch summary --config experiments/mnist.py:dnarch
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


MAIN = dict(
  model=dict(
    width=32, hidden_width=64, dropout=0.0, resolution_init_cutoff=0.6, resolution_min=0.65,
    width_bucket=4, kernel_sigma_init=0.15,
  ),
  optim=dict(
    lr=0.003, warmup_epochs=0.1, epochs=4.0, arch_lr=0.002, arch_warmup_epochs=0.25,
    arch_epochs=1.5,
  ),
  loop=dict(arch_refresh_every=200, log_every=50, eval_every=860, checkpoint_every=860),
  budget=dict(fraction=0.15),
)  # fmt: skip


WIDTH = dict(
  model=dict(
    width=48, hidden_width=96, dropout=0.0, kernel_grid=5, learn_kernel=False,
    learn_resolution=False, learn_depth=False,
  ),
  optim=dict(lr=0.003, warmup_epochs=0.1, epochs=1.0, arch_lr_factor=1.0),
  loop=dict(arch_refresh_every=200, log_every=50, eval_every=430, checkpoint_every=430),
  budget=dict(mode="hard"),
)  # fmt: skip

OWN_VARIANTS = {"main": MAIN, "width": WIDTH}


def get_config(variant=None):
  own = OWN_VARIANTS.get(variant)
  config = experiment_config(
    "mnist", "dnarch" if own else variant, RUNS, causal=False, kernel_grid=29
  )
  if own is None:
    return config
  config.variant = variant
  config.model.update(own["model"])
  config.optim.update(own["optim"])
  config.update(own["loop"])
  config.budget.update(own.get("budget", {}))
  return config
