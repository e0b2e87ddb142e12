"""Two processes over loopback (gloo), one CPU device each, train like one process with two."""

import os
import socket
import subprocess
import sys

import numpy as np
import pytest

WORKER = r"""
import os, sys
import jax
from dnarch_jax.run import sharding
sharding.initialize_distributed()
import numpy as np
from dnarch_jax.config import load_config
from dnarch_jax.run.train import Trainer
config = load_config("experiments/mnist.py:smoke", [
  "total_steps=3", "log_every=1", "progress=False", "arch_refresh_every=1000",
  "eval_every=1000", "checkpoint_every=1000", "data.eval_batch_size=200"])
trainer = Trainer(config, sys.argv[1])
assert jax.device_count() == 2, jax.devices()
trainer.run()
if jax.process_index() == 0:
  leaves = jax.tree_util.tree_leaves(jax.device_get(trainer.state.params))
  np.savez(sys.argv[2], *leaves)
"""


def free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def run_worker(tmp_path, name, env_extra, out):
  env = {**os.environ, "XLA_FLAGS": "--xla_backend_optimization_level=0", **env_extra}
  return subprocess.Popen(
    [sys.executable, "-c", WORKER, str(tmp_path / name), str(out)],
    env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
  )  # fmt: skip


@pytest.mark.slow
def test_two_processes_over_gloo_equal_one_process_with_two_devices(tmp_path):
  single = run_worker(
    tmp_path, "single", {"XLA_FLAGS": "--xla_force_host_platform_device_count=2 "
                         "--xla_backend_optimization_level=0"}, tmp_path / "single.npz",
  )  # fmt: skip
  port = free_port()
  procs = [
    run_worker(
      tmp_path,
      "multi",
      {
        "DNARCH_COORDINATOR": f"127.0.0.1:{port}",
        "DNARCH_NUM_PROCESSES": "2",
        "DNARCH_PROCESS_ID": str(i),
      },
      tmp_path / "multi.npz",
    )  # fmt: skip
    for i in range(2)
  ]
  for p in [single, *procs]:
    out, err = p.communicate(timeout=600)
    assert p.returncode == 0, err[-3000:]
  a, b = np.load(tmp_path / "single.npz"), np.load(tmp_path / "multi.npz")
  assert len(a.files) == len(b.files) > 10
  for key in a.files:
    np.testing.assert_allclose(a[key], b[key], rtol=1e-5, atol=1e-6, err_msg=key)
