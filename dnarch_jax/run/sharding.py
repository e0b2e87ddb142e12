"""Data parallelism across devices and hosts: one ``"data"`` mesh axis, ``jit`` does the rest.

Parameters and optimizer state are replicated (``P()``); batches are split along ``"data"``
(``P("data")``). Each process feeds its own rows of the global batch and
``jax.make_array_from_process_local_data`` assembles the global array, so the compiled step sees
one logical batch and reductions over it (the loss, BatchNorm's statistics) are global.
"""

from __future__ import annotations

import os

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

DATA_AXIS = "data"


def initialize_distributed() -> None:
  """Start JAX's multi-host runtime when the environment asks for it.

  Set ``DNARCH_COORDINATOR`` (host:port), ``DNARCH_NUM_PROCESSES`` and ``DNARCH_PROCESS_ID`` for
  an explicit set-up (e.g. several processes on one machine over gloo); on TPU pods and SLURM or
  Open MPI clusters ``jax.distributed.initialize()`` discovers everything itself, which
  ``DNARCH_DISTRIBUTED=auto`` requests. The runtime's preemption service (on unless
  ``jax_enable_preemption_service`` is turned off) is what makes every process save and stop at
  the same step when one of them is sent SIGTERM (``dnarch_jax.run.workdir.StopSignals``).
  """
  if os.environ.get("DNARCH_COORDINATOR"):
    # CPU collectives across processes need gloo; the setting does nothing on GPU or TPU (and
    # asking for the backend here would start it before the distributed runtime).
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(
      coordinator_address=os.environ["DNARCH_COORDINATOR"],
      num_processes=int(os.environ["DNARCH_NUM_PROCESSES"]),
      process_id=int(os.environ["DNARCH_PROCESS_ID"]),
    )
  elif os.environ.get("DNARCH_DISTRIBUTED") == "auto":
    jax.distributed.initialize()


def enable_compilation_cache(directory: str | None = None) -> None:
  """Keep compiled programs on disk, so a resumed run (or the next process of a sweep) does not
  recompile what it already compiled: on a CPU a train step takes seconds to compile.

  ``DNARCH_COMPILATION_CACHE`` names the folder (default ``~/.cache/dnarch_jax/xla``); setting
  it to an empty string turns the cache off.
  """
  if directory is None:
    directory = os.environ.get(
      "DNARCH_COMPILATION_CACHE", os.path.expanduser("~/.cache/dnarch_jax/xla")
    )
  if directory:
    jax.config.update("jax_compilation_cache_dir", directory)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
    # On a multi-device mesh the native convs are custom_partitioning ops, which JAX keys by a
    # per-process pointer unless told to leave it out: safe here, as the ops carry their static
    # arguments in the IR (dnarch_jax.network.native._run) and dnarch runs no others.
    jax.config.update("jax_remove_custom_partitioning_ptr_from_cache_key", True)


def make_mesh(devices=None) -> Mesh:
  """A 1D mesh over ``devices`` (default: every device of every process)."""
  devices = jax.devices() if devices is None else devices
  return Mesh(np.asarray(devices), (DATA_AXIS,))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def batch_sharding(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P(DATA_AXIS))


def replicate(tree, mesh: Mesh):
  """Place a pytree of host or device arrays on every device of ``mesh``."""
  return jax.device_put(tree, replicated(mesh))


def check_batch_size(global_batch: int, mesh: Mesh, field: str = "config.data.batch_size") -> None:
  """The global batch must split evenly over the devices (and so over the processes)."""
  if global_batch % mesh.size:
    raise ValueError(
      f"{field}={global_batch} must be a multiple of the number of devices ({mesh.size})"
    )


def global_batch(local_batch: dict, mesh: Mesh) -> dict:
  """This process's rows -> one global array per key, sharded along ``"data"``."""
  sharding = batch_sharding(mesh)
  return {
    k: jax.make_array_from_process_local_data(sharding, np.asarray(v))
    for k, v in local_batch.items()
  }
