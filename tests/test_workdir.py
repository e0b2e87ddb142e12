"""The workdir guard: unusable folders, one process per run, resume changes, stop signals."""

import json
import os
import signal
import subprocess
import sys
import textwrap

import pytest

from dnarch_jax.run import workdir as workdir_lib
from dnarch_jax.run.workdir import WorkdirError, WorkdirLock, WorkdirMismatchError


def test_a_file_or_unwritable_workdir_is_one_line_naming_it(tmp_path):
  afile = tmp_path / "afile"
  afile.write_text("x")
  with pytest.raises(WorkdirError, match=f"--workdir {afile}: is a file"):
    workdir_lib.check_writable(afile)
  with pytest.raises(WorkdirError, match="cannot be created"):
    workdir_lib.check_writable(afile / "run")
  if os.geteuid() != 0:  # root writes anywhere
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    with pytest.raises(WorkdirError, match="is not writable"):
      workdir_lib.check_writable(locked)
  workdir_lib.check_writable(tmp_path / "new" / "run")
  assert (tmp_path / "new" / "run").is_dir()


def test_one_process_at_a_time_and_a_killed_holder_leaves_no_lock(tmp_path):
  with WorkdirLock(tmp_path):
    with pytest.raises(WorkdirError, match=f"another process \\(pid {os.getpid()}\\)"):
      WorkdirLock(tmp_path).__enter__()
  with WorkdirLock(tmp_path):  # released on exit
    pass
  holder = textwrap.dedent(f"""
    import sys, time
    from dnarch_jax.run.workdir import WorkdirLock
    with WorkdirLock({str(tmp_path)!r}):
      print("held", flush=True)
      time.sleep(600)
  """)
  proc = subprocess.Popen([sys.executable, "-c", holder], stdout=subprocess.PIPE, text=True)
  assert proc.stdout.readline().strip() == "held"
  with pytest.raises(WorkdirError, match=f"pid {proc.pid}"):
    WorkdirLock(tmp_path).__enter__()
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  with WorkdirLock(tmp_path):  # the kernel dropped the killed holder's lock
    pass
  with WorkdirLock(tmp_path, enabled=False), WorkdirLock(tmp_path, enabled=False):
    pass  # processes other than 0 take no lock


def _saved(tmp_path, **sections):
  config = {"total_steps": 10, "seed": 0, "budget": {"fraction": 0.25, "weight": 1.0}}
  config |= {"model": {"width": 16}, "data": {"task": "mnist"}} | sections
  (tmp_path / "config.json").write_text(json.dumps(config))
  return config


def test_a_resume_with_other_settings_is_refused_or_recorded(tmp_path):
  saved = _saved(tmp_path)
  assert workdir_lib.resume_changes(tmp_path / "empty", json.dumps(saved)) == {}
  loop_only = saved | {"total_steps": 20, "log_every": 5}
  assert workdir_lib.resume_changes(tmp_path, json.dumps(loop_only)) == {}
  changed = saved | {"budget": {"fraction": 0.5, "weight": 1.0}, "seed": 1}
  with pytest.raises(WorkdirError, match=r"budget.fraction \(0.25 -> 0.5\), seed \(0 -> 1\)"):
    workdir_lib.resume_changes(tmp_path, json.dumps(changed))
  changes = workdir_lib.resume_changes(tmp_path, json.dumps(changed), allow_changes=True)
  assert changes == {"budget.fraction": (0.25, 0.5), "seed": (0, 1)}
  workdir_lib.record_changes(tmp_path, changes, step=30)
  (record,) = [json.loads(line) for line in (tmp_path / workdir_lib.CHANGES_FILE).open()]
  assert record["step"] == 30 and record["changes"] == {"budget.fraction": [0.25, 0.5],
                                                        "seed": [0, 1]}  # fmt: skip
  other_model = saved | {"model": {"width": 24}}
  with pytest.raises(WorkdirMismatchError, match=r"different model .*\['width'\]"):
    workdir_lib.resume_changes(tmp_path, json.dumps(other_model), allow_changes=True)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_sigterm_and_sigint_ask_to_stop_and_the_handlers_come_back(signum):
  before = signal.getsignal(signum)
  with workdir_lib.StopSignals() as stop:
    assert not stop.requested
    os.kill(os.getpid(), signum)  # SIGINT would raise KeyboardInterrupt without the handler
    assert stop.requested
  assert signal.getsignal(signum) is before
