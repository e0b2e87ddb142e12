"""A run's workdir: who may write it, what a resume may change, and how a run is asked to stop.

Shared by both trainers (DNArch's and DNAL's), so a fix here holds for every run:

* :func:`check_writable` - a ``--workdir`` that is a file, or that cannot be written, is a one-line
  error naming it before anything is built;
* :class:`WorkdirLock` - one process at a time trains in a workdir. An advisory ``flock`` on
  ``WORKDIR/.lock``: the kernel drops it when its holder exits, however it exits (a SIGKILL leaves
  no stale lock to clean up by hand). On several hosts only process 0 takes it (the others write
  nothing there);
* :func:`resume_changes` - a resumed run continues the run its workdir holds. Only the loop's
  bookkeeping (``RESUMABLE_CHANGES``) may differ from the saved ``config.json``. Another model or
  data is always refused (the checkpoints would not fit it); any other change is refused naming
  the fields unless explicitly allowed, and then :func:`record_changes` appends it to
  ``WORKDIR/config_changes.jsonl`` (the step, and each field's old and new value) before
  ``config.json`` is rewritten, so no setting a run ran with is ever lost;
* :class:`StopSignals` - SIGTERM and SIGINT both ask the loop to save a checkpoint and stop at a
  step boundary; installed before the restore, so a signal during restore or compile is honoured
  at the first boundary. On several processes every process stops at the same step, whichever
  process was signalled (see the class);
* :func:`check_has_checkpoint` - a reader (``dnarch eval``) of a workdir whose run saved no
  checkpoint yet gets one line naming it.
"""

from __future__ import annotations

import errno
import fcntl
import json
import logging
import os
import pathlib
import signal
import time
from typing import Any

log = logging.getLogger("dnarch")

# Fields a resumed run may change: they steer the loop, not what is learned.
RESUMABLE_CHANGES = (
  "total_steps", "log_every", "eval_every", "checkpoint_every", "keep_last", "progress",
)  # fmt: skip
CHANGES_FILE = "config_changes.jsonl"
LOCK_FILE = ".lock"


class WorkdirError(ValueError):
  """A workdir that cannot hold this run (the CLI prints it as one line, exit status 2)."""


class WorkdirMismatchError(WorkdirError):
  """The workdir holds a run of another model or data."""


def check_writable(workdir: pathlib.Path) -> None:
  """Create ``workdir`` if needed; a one-line :class:`WorkdirError` if it cannot hold a run."""
  if workdir.exists() and not workdir.is_dir():
    raise WorkdirError(f"--workdir {workdir}: is a file, not a folder; name a folder for the run")
  try:
    workdir.mkdir(parents=True, exist_ok=True)
  except OSError as e:
    raise WorkdirError(f"--workdir {workdir}: cannot be created ({e.strerror})") from None
  if not os.access(workdir, os.W_OK | os.X_OK):
    raise WorkdirError(f"--workdir {workdir}: is not writable by this user; name another folder")


class WorkdirLock:
  """``with WorkdirLock(workdir):`` holds the workdir for this process (see the module docstring).

  ``enabled=False`` (processes other than 0) makes it a no-op.
  """

  def __init__(self, workdir: pathlib.Path, enabled: bool = True):
    self.path = pathlib.Path(workdir) / LOCK_FILE
    self.enabled = enabled
    self._fd: int | None = None

  def __enter__(self) -> WorkdirLock:
    if not self.enabled:
      return self
    fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
      holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "unknown"
      os.close(fd)
      if e.errno in (errno.EWOULDBLOCK, errno.EACCES):
        raise WorkdirError(
          f"--workdir {self.path.parent}: another process (pid {holder}) is training in it; "
          "wait for it to end, or use another --workdir"
        ) from None
      raise
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    self._fd = fd
    return self

  def __exit__(self, *exc) -> None:
    if self._fd is not None:
      os.close(self._fd)  # closing the descriptor releases the lock
      self._fd = None


def _flatten(d: dict, prefix: str = "") -> dict[str, Any]:
  out = {}
  for k, v in d.items():
    key = f"{prefix}{k}"
    if isinstance(v, dict):
      out.update(_flatten(v, key + "."))
    else:
      out[key] = v
  return out


def config_changes(saved: dict, current: dict) -> dict[str, tuple[Any, Any]]:
  """``{dotted field: (saved, current)}`` for every field that differs, bookkeeping excluded."""
  a, b = _flatten(saved), _flatten(current)
  return {
    k: (a.get(k), b.get(k))
    for k in sorted(set(a) | set(b))
    if a.get(k) != b.get(k) and k not in RESUMABLE_CHANGES
  }


def resume_changes(
  workdir: pathlib.Path, config_json: str, allow_changes: bool = False
) -> dict[str, tuple[Any, Any]]:
  """The changes of ``config_json`` against the workdir's run, refused unless allowed.

  A workdir without ``config.json`` holds no run yet: nothing to compare, no changes.
  """
  saved_path = workdir / "config.json"
  if not saved_path.exists():
    return {}
  changes = config_changes(json.loads(saved_path.read_text()), json.loads(config_json))
  for section in ("model", "data"):
    fields = [k.split(".", 1)[1] for k in changes if k.split(".", 1)[0] == section]
    if fields:
      raise WorkdirMismatchError(
        f"workdir {workdir} holds a run of a different {section} (config.{section} differs in "
        f"{fields}); use a new --workdir, or the saved config: {saved_path}"
      )
  if changes and not allow_changes:
    shown = ", ".join(f"{k} ({old!r} -> {new!r})" for k, (old, new) in list(changes.items())[:6])
    more = f" and {len(changes) - 6} more" if len(changes) > 6 else ""
    raise WorkdirError(
      f"--workdir {workdir} holds a run with other settings: {shown}{more}; resume it without "
      "these changes, use a new --workdir, or pass --allow_config_change to continue the run "
      f"with them (recorded in {CHANGES_FILE})"
    )
  return changes


def record_changes(workdir: pathlib.Path, changes: dict[str, tuple[Any, Any]], step: int) -> None:
  """Append the allowed ``changes`` a run resumed at ``step`` with to ``config_changes.jsonl``."""
  if not changes:
    return
  record = dict(step=step, time=time.time(), changes={k: list(v) for k, v in changes.items()})
  with (workdir / CHANGES_FILE).open("a") as f:
    f.write(json.dumps(record) + "\n")
  log.warning(
    "continuing %s at step %d with changed settings: %s", workdir, step, ", ".join(changes)
  )


def check_has_checkpoint(workdir: pathlib.Path) -> None:
  """A one-line :class:`WorkdirError` when ``workdir``'s run saved no checkpoint yet.

  Checked before anything is built: Orbax names a step's folder by its number and renames it so
  only once complete, so a run stopped before its first save leaves no such folder.
  """
  folder = pathlib.Path(workdir) / "checkpoints"
  if not (folder.is_dir() and any(p.name.isdigit() for p in folder.iterdir() if p.is_dir())):
    raise WorkdirError(
      f"--workdir {workdir}: holds no checkpoint yet (its run stopped before the first save); "
      f"continue it with: dnarch train --workdir {workdir}"
    )


class StopSignals:
  """``with StopSignals(processes) as stop:`` and once per loop iteration ``if stop.check():``,
  which says when to save a checkpoint and stop. SIGTERM and SIGINT both ask for it.

  One process: the handlers set a flag, read by :meth:`check`. The previous handlers come back on
  exit; outside the main thread (where Python allows no handlers) it does nothing.

  Several processes (``processes > 1``): each must save (a collective in Orbax) at the same step,
  whichever process was signalled, or the others hang in the save or in the next step. The
  agreement is JAX's preemption sync service (``multihost_utils.reached_preemption_sync_point``,
  started by ``jax.distributed.initialize``): its C++ SIGTERM handler, installed when JAX's
  distributed runtime starts (so before any restore or compile), notifies the coordination
  service; every process's background thread then publishes how many times it has called
  :meth:`check`, and all agree to stop at the largest count plus one. Chosen over gathering each
  process's flag (``process_allgather``) every K steps because it costs no collective and no
  device-to-host sync in the loop (:meth:`check` reads a counter under a mutex) and stops within
  about a second (the notifier polls once a second) plus one step, not up to K steps; tested with
  two processes on loopback (``tests/test_preemption.py``). Consequences: Python must not
  install its own SIGTERM handler there (it would replace JAX's, which then never hears of the
  signal), so only SIGINT gets one, which re-sends the signal as SIGTERM to this process; and
  every process must call :meth:`check` exactly once per iteration, from the first iteration. The
  service is on unless ``jax_enable_preemption_service`` was turned off; then the first
  :meth:`check` raises JAX's one-line RuntimeError naming that option, before any step.
  """

  SIGNALS = (signal.SIGTERM, signal.SIGINT)

  def __init__(self, processes: int = 1):
    self.processes = processes
    self.requested = False
    self.calls = 0
    self._previous: dict[int, Any] = {}

  def _handle(self, signum, frame) -> None:
    log.warning("%s: saving a checkpoint and stopping", signal.Signals(signum).name)
    self.requested = True

  def _forward_as_sigterm(self, signum, frame) -> None:
    log.warning("SIGINT: passed on as SIGTERM, for every process to stop at the same step")
    os.kill(os.getpid(), signal.SIGTERM)

  def __enter__(self) -> StopSignals:
    handlers = {signal.SIGINT: self._forward_as_sigterm} if self.processes > 1 else {
      s: self._handle for s in self.SIGNALS
    }  # fmt: skip
    try:
      for s, handler in handlers.items():
        self._previous[s] = signal.signal(s, handler)
    except ValueError:  # not the main thread
      pass
    return self

  def __exit__(self, *exc) -> None:
    for s, handler in self._previous.items():
      signal.signal(s, handler)
    self._previous.clear()

  def check(self) -> bool:
    """Whether to save a checkpoint and stop now. Call it once per loop iteration, at the same
    point of the iteration on every process; the first call comes before any step is trained,
    so a signal received during restore or compile stops the run there."""
    self.calls += 1
    if self.processes > 1 and not self.requested:
      from jax.experimental import multihost_utils

      if multihost_utils.reached_preemption_sync_point(self.calls):
        log.warning("SIGTERM on one of %d processes: all save and stop here", self.processes)
        self.requested = True
    return self.requested
