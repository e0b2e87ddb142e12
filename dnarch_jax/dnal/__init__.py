"""DNAL (Guo et al., arXiv 2103.02126): channel pruning of conventional CNNs with scaled sigmoid
gates, learned in decoupled stages (METHOD.md §8).

Layout (imports flow downwards):

* ``gates``: pure math: the delta schedule, the sparsity loss, pruning at the threshold, stages.
* ``config``: ``NetConfig``, the static description of a VGG-style or CIFAR ResNet network.
* ``arch``: ``DnalArch``, the kept channels of every gated layer (static, hashable), and the
  cost model (MACs, parameters) from gate values: soft ones or the ``DnalArch``'s 0/1 ones.
* ``layers``, ``models``: Linen modules owning parameters at maximal shapes.
* ``steps``, ``train``: the jitted steps and the staged trainer; ``summary``: the CLI summary.
"""

from dnarch_jax.dnal.arch import DnalArch, full_arch, network_cost, prune
from dnarch_jax.dnal.config import NetConfig, net_config
from dnarch_jax.dnal.gates import delta_at, kept_channels, sparsity_loss, stage_at

__all__ = [
  "DnalArch",
  "NetConfig",
  "delta_at",
  "full_arch",
  "kept_channels",
  "net_config",
  "network_cost",
  "prune",
  "sparsity_loss",
  "stage_at",
]
