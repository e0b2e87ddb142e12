"""Preemption: a signal during the restore stops the run before it trains on, two processes stop at
the same step when only one of them is signalled, and a workdir with no checkpoint yet reads as one
line."""

import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from dnarch_jax.config import load_config
from dnarch_jax.dnal.train import DnalTrainer
from dnarch_jax.interfaces import report
from dnarch_jax.run.checkpoint import Checkpointer
from dnarch_jax.run.train import Trainer

SMOKE = "experiments/mnist.py:smoke"
DNAL_SMOKE = "experiments/dnal_mnist.py:smoke"
FAST = ["arch_refresh_every=1000", "progress=False", "eval_every=1000", "checkpoint_every=1000"]


def signal_during_restore(monkeypatch, trainer_cls, signum=signal.SIGTERM):
  """The signal arrives while ``trainer_cls`` restores (its handlers are installed by then)."""
  restore = trainer_cls.restore_or_start

  def restore_then_signal(self):
    step = restore(self)
    os.kill(os.getpid(), signum)
    return step

  monkeypatch.setattr(trainer_cls, "restore_or_start", restore_then_signal)


def train_steps(workdir):
  return [r["step"] for r in report.read_jsonl(workdir / "metrics.jsonl") if r["kind"] == "train"]


def test_a_signal_during_the_restore_stops_the_run_before_it_trains_on(tmp_path, monkeypatch):
  config = lambda: load_config(SMOKE, [*FAST, "total_steps=5", "log_every=1"])
  with monkeypatch.context() as patch:
    signal_during_restore(patch, Trainer)
    result = Trainer(config(), tmp_path).run()
  # Nothing was trained, so nothing is saved: a rerun starts from the seed's initialisation, as
  # this run did. The workdir holds the run's config, so `dnarch train --workdir` resumes it.
  assert (result["status"], result["step"], result["compiles"]) == ("preempted", 0, 0)
  assert Checkpointer(tmp_path / "checkpoints").latest_step() is None
  assert (tmp_path / "config.json").exists()
  assert Trainer(config(), tmp_path).run(stop_at=2)["step"] == 2
  # A resumed run signalled while it restores keeps its checkpoint, and logs no step twice.
  with monkeypatch.context() as patch:
    signal_during_restore(patch, Trainer)
    result = Trainer(config(), tmp_path).run()
  assert (result["status"], result["step"], result["compiles"]) == ("preempted", 2, 0)
  assert Checkpointer(tmp_path / "checkpoints").all_steps() == [2]
  assert train_steps(tmp_path) == [1, 2]


@pytest.mark.parametrize("trainer_cls", [Trainer, DnalTrainer], ids=["dnarch", "dnal"])
def test_sigint_during_the_restore_stops_both_trainers_before_anything_compiles(
  tmp_path, monkeypatch, trainer_cls
):
  signal_during_restore(monkeypatch, trainer_cls, signal.SIGINT)
  config = load_config(SMOKE if trainer_cls is Trainer else DNAL_SMOKE, ["progress=False"])
  result = trainer_cls(config, tmp_path).run()
  assert (result["status"], result["step"], result["compiles"]) == ("preempted", 0, 0)
  assert Checkpointer(tmp_path / "checkpoints").latest_step() is None


def test_eval_of_a_workdir_without_checkpoint_is_one_line_and_status_2(tmp_path):
  # What a run killed before its first save leaves: its config and an empty checkpoints/.
  workdir = tmp_path / "run"
  (workdir / "checkpoints").mkdir(parents=True)
  (workdir / "config.json").write_text(load_config(SMOKE).to_json(indent=2))
  proc = subprocess.run(
    [sys.executable, "-m", "dnarch_jax", "eval", "--workdir", str(workdir)],
    capture_output=True, text=True, timeout=300,
  )  # fmt: skip
  # Nothing else on stderr: no traceback, and no Orbax thread's absl error at exit.
  assert proc.returncode == 2 and proc.stdout == "", proc.stderr
  assert proc.stderr.splitlines() == [
    f"dnarch eval: error: --workdir {workdir}: holds no checkpoint yet (its run stopped before "
    f"the first save); continue it with: dnarch train --workdir {workdir}"
  ], proc.stderr


def free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def start_two_processes(workdir, total_steps, logs):
  """``dnarch train`` as two processes over loopback (gloo), one CPU device each. Their output
  goes to files in ``logs``: a pipe nobody reads while the test waits could fill and stall them."""
  port = free_port()
  cmd = [sys.executable, "-m", "dnarch_jax", "train", "--config", SMOKE, "--workdir", str(workdir),
         f"--config.total_steps={total_steps}", "--config.log_every=1", "--config.progress=False",
         "--config.eval_every=100000", "--config.checkpoint_every=100000",
         "--config.arch_refresh_every=100000", "--config.data.eval_batch_size=200",
         # One block learning only its kernel: a third less to compile, the same loop.
         "--config.model.num_blocks=1", "--config.model.learn_width=False",
         "--config.model.learn_resolution=False", "--config.model.learn_depth=False"]  # fmt: skip
  procs = []
  for i in range(2):
    env = {**os.environ, "XLA_FLAGS": "--xla_backend_optimization_level=0",
           "DNARCH_COORDINATOR": f"127.0.0.1:{port}", "DNARCH_NUM_PROCESSES": "2",
           "DNARCH_PROCESS_ID": str(i)}  # fmt: skip
    paths = [logs / f"{total_steps}.{i}.{name}" for name in ("out", "err")]
    with open(paths[0], "w") as out, open(paths[1], "w") as err:
      procs.append(subprocess.Popen(cmd, env=env, stdout=out, stderr=err, text=True))
    procs[-1].logs = paths
  return procs


def finish(procs, timeout=240):
  """``(returncode, last JSON line, stderr)`` of each process; kills both if either hangs."""
  deadline = time.time() + timeout
  try:
    for p in procs:
      p.wait(timeout=max(deadline - time.time(), 1))
  finally:
    for p in procs:
      if p.poll() is None:
        p.kill()
        p.wait()
  results = []
  for p in procs:
    out, err = (path.read_text() for path in p.logs)
    lines = out.strip().splitlines()
    results.append((p.returncode, json.loads(lines[-1]) if lines else None, err))
  return results


@pytest.mark.slow
def test_two_processes_stop_at_the_same_step_when_only_one_is_signalled(tmp_path):
  workdir = tmp_path / "run"
  procs = start_two_processes(workdir, 10000, tmp_path)
  deadline = time.time() + 240
  while time.time() < deadline and len(train_steps(workdir)) < 3:
    if any(p.poll() is not None for p in procs):
      break
    time.sleep(0.2)
  procs[1].send_signal(signal.SIGTERM)  # not process 0: the coordinator, the metrics writer
  results = finish(procs)
  for code, result, err in results:
    assert code == 3 and result is not None and result["status"] == "preempted", err[-3000:]
  steps = {result["step"] for _, result, _ in results}
  assert len(steps) == 1, results
  (stopped,) = steps
  assert stopped >= 3 and Checkpointer(workdir / "checkpoints").latest_step() == stopped
  # Both resume from it and complete.
  results = finish(start_two_processes(workdir, stopped + 2, tmp_path))
  for code, result, err in results:
    assert code == 0 and result["status"] == "completed", err[-3000:]
    assert result["step"] == stopped + 2
  assert train_steps(workdir) == list(range(1, stopped + 3))
