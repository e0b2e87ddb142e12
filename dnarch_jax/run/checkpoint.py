"""Checkpoints: one small wrapper around Orbax's ``CheckpointManager`` (ENGINEERING.md,
"Checkpoints and resumption").

A checkpoint is one step directory holding two items:

- ``state``: the train-state pytree, saved with ``StandardSave`` (TensorStore/OCDBT). Arrays come
  back bit-identical, sharding-aware, and in multi-process runs Orbax coordinates which process
  writes what, so this module never touches files itself.
- ``meta``: a JSON dict (architecture, data-iterator state, config, ...).

Orbax writes each step into ``<step>.orbax-checkpoint-tmp-*`` and renames it only when complete, so
a crash mid-save never leaves a half-written step behind; leftovers are removed on start-up.
Retention: the last ``keep_last`` steps plus the ``keep_best`` best by ``best_metric`` (Orbax
preservation policies). Saves are synchronous: a ~1 MB state takes ~0.1 s, and a synchronous save
is finished when ``save`` returns, which is what a SIGTERM handler needs.

Restoring the latest checkpoint skips unreadable ones (truncated or deleted files, garbled JSON)
with a warning, so a run pre-empted while its disk misbehaved still resumes. Silent bit flips
inside array data are *not* detected: OCDBT checksums its index, not the array chunks.
"""

from __future__ import annotations

import contextlib
import json
import logging
import operator
import os
from typing import Any

import jax
import orbax.checkpoint as ocp
from orbax.checkpoint.checkpoint_managers import preservation_policy as preservation_lib
from orbax.checkpoint.checkpoint_managers import save_decision_policy as save_decision_lib

_log = logging.getLogger(__name__)

STATE_ITEM = "state"
META_ITEM = "meta"
_MAX_ERROR_CHARS = 400


class Checkpointer:
  """Saves and restores ``(train state, meta)`` per step in ``directory``.

  Args:
    directory: where step directories go; created if missing (a local path or an Orbax/epath URL).
    keep_last: how many of the most recent steps to keep (at least 1: the one just saved).
    keep_best: how many best steps by ``best_metric`` to keep besides them (0: none).
    best_metric: the key of ``metrics`` (passed to ``save``) that ranks checkpoints.
    best_mode: ``"max"`` if larger ``best_metric`` is better, ``"min"`` if smaller is.
  """

  def __init__(
    self,
    directory: str | os.PathLike,
    *,
    keep_last: int = 3,
    keep_best: int = 1,
    best_metric: str = "val_accuracy",
    best_mode: str = "max",
  ):
    _check_retention(keep_last, keep_best, best_mode)
    self.directory = _absolute(directory)
    self.best_metric = best_metric
    self._unreadable_steps: set[int] = set()
    self._manager = _TolerantCheckpointManager(
      self.directory, options=_manager_options(keep_last, keep_best, best_metric, best_mode)
    )

  # -- saving --------------------------------------------------------------------------------------

  def save(
    self,
    step: int,
    state,
    meta: dict,
    *,
    metrics: dict | None = None,
    force: bool = False,
  ) -> bool:
    """Saves ``state`` and ``meta`` as ``step``; returns whether a checkpoint was written.

    A step that is already saved is left alone (returns False), so a SIGTERM handler may call
    ``save(step, ..., force=True)`` right after a periodic save of the same step. Without
    ``force``, steps not after the latest saved one are refused, as Orbax does. ``metrics``
    (scalars, must include ``best_metric`` when given) rank the checkpoint for ``keep_best``;
    without them it competes for the latest slots only (Orbax's warning about that is dropped).
    """
    step = int(step)
    _check_json(meta)
    recorded_metrics = self._metrics_to_record(metrics)
    self._discard_unreadable_steps()
    if step in self._manager.all_steps():
      _log.info(
        "Checkpoint for step %d already exists in %s; not saving again.", step, self.directory
      )
      return False
    with _unranked_save_quiet():
      return self._manager.save(
        step,
        args=ocp.args.Composite(
          **{STATE_ITEM: ocp.args.StandardSave(state), META_ITEM: ocp.args.JsonSave(meta)}
        ),
        metrics=recorded_metrics,
        force=force,
      )

  def _metrics_to_record(self, metrics: dict | None) -> dict | None:
    """Plain floats (JSON-friendly, also from JAX scalars); the ranking metric must be present,
    since Orbax would otherwise fail later, while pruning, far from the caller's mistake."""
    if metrics is None:
      return None
    if self.best_metric not in metrics:
      raise ValueError(
        f"metrics {sorted(metrics)} lack best_metric {self.best_metric!r} used to rank checkpoints"
      )
    return {name: float(value) for name, value in metrics.items()}

  def _discard_unreadable_steps(self) -> None:
    """Deletes the steps ``restore`` found unreadable, before the resumed run saves again.

    They would otherwise block it: Orbax refuses to save a step that exists or precedes the latest
    one, and they would occupy ``keep_last`` slots. Done here rather than in ``restore`` so that
    reading a workdir (e.g. for evaluation) never deletes anything.
    """
    for step in sorted(self._unreadable_steps & set(self._manager.all_steps())):
      _log.warning("Deleting unreadable checkpoint at step %d in %s.", step, self.directory)
      self._manager.delete(step)
    self._unreadable_steps.clear()

  # -- listing -------------------------------------------------------------------------------------

  def latest_step(self) -> int | None:
    """The newest saved step (readable or not), or None if there is none."""
    return self._manager.latest_step()

  def all_steps(self) -> list[int]:
    """The saved steps, in increasing order."""
    return sorted(self._manager.all_steps())

  def best_step(self) -> int | None:
    """The saved step with the best ``best_metric``, or None if no kept step has metrics."""
    return self._manager.best_step()

  # -- restoring -----------------------------------------------------------------------------------

  def restore(self, target_state, step: int | None = None) -> tuple[Any, dict, int]:
    """Returns ``(state, meta, step)`` restored into the structure, dtypes and shardings of
    ``target_state`` (e.g. a freshly initialised train state, or its ``jax.ShapeDtypeStruct``s).

    ``step=None`` takes the newest *readable* step, warning about each unreadable one it skips;
    raises FileNotFoundError if none is readable. An explicit ``step`` raises its error as is.
    """
    abstract_state = _abstract_tree(target_state)
    if step is not None:
      return (*self._restore_step(abstract_state, int(step)), int(step))
    return self._restore_latest_readable(abstract_state)

  def restore_for_reading(self, target_state, which: str = "best") -> tuple[Any, dict, int]:
    """For readers (eval, summary, export): the ``best`` step (by ``best_metric``; the newest if
    none is ranked) or the ``latest``; when it is unreadable, warn naming it and read the newest
    readable step instead. Raises FileNotFoundError naming the directory when none is readable.
    """
    if which not in ("best", "latest"):
      raise ValueError(f"--checkpoint: expected 'best' or 'latest', got {which!r}")
    if self.latest_step() is None:
      raise FileNotFoundError(f"{self.directory}: holds no checkpoint")
    best = self.best_step() if which == "best" else None
    if best is not None:
      try:
        return self.restore(target_state, best)
      except Exception as error:  # whatever the cause, a later or earlier step may be readable
        self._report_unreadable(best, error)
    return self.restore(target_state)

  def _restore_latest_readable(self, abstract_state) -> tuple[Any, dict, int]:
    last_error: Exception | None = None
    for step in sorted(set(self._manager.all_steps()) - self._unreadable_steps, reverse=True):
      try:
        state, meta = self._restore_step(abstract_state, step)
      except Exception as error:  # whatever the cause, this step cannot be resumed
        self._report_unreadable(step, error)
        last_error = error
        continue
      return state, meta, step
    raise FileNotFoundError(f"no readable checkpoint in {self.directory}") from last_error

  def _report_unreadable(self, step: int, error: Exception) -> None:
    self._unreadable_steps.add(step)
    message = " ".join(str(error).split())[:_MAX_ERROR_CHARS]
    _log.warning(
      "Checkpoint at step %d in %s is unreadable, falling back to an earlier one: %s: %s",
      step,
      self.directory,
      type(error).__name__,
      message,
    )

  def _restore_step(self, abstract_state, step: int) -> tuple[Any, dict]:
    restored = self._manager.restore(
      step,
      args=ocp.args.Composite(
        **{STATE_ITEM: ocp.args.StandardRestore(abstract_state), META_ITEM: ocp.args.JsonRestore()}
      ),
    )
    state, meta = restored[STATE_ITEM], restored[META_ITEM]
    _check_same_layout(abstract_state, state)
    if not isinstance(meta, dict):
      raise ValueError(f"meta of step {step} is a {type(meta).__name__}, not a JSON object")
    return state, meta

  # -- lifetime ------------------------------------------------------------------------------------

  def wait(self) -> None:
    """Blocks until pending saves and deletions are done (saves are synchronous: cheap)."""
    self._manager.wait_until_finished()

  def close(self) -> None:
    """Waits for pending work and releases Orbax's threads and handles."""
    self._manager.close()

  def __enter__(self) -> Checkpointer:
    return self

  def __exit__(self, *exc_info) -> None:
    self.close()


class _TolerantCheckpointManager(ocp.CheckpointManager):
  """Orbax's manager, except that an unreadable metrics file costs its step its rank, not the run.

  Orbax reads every step's metrics when it starts and only tolerates missing files: one garbled
  metrics JSON would make the whole directory unopenable, hence unresumable.
  """

  def metrics(self, step: int):
    try:
      return super().metrics(step)
    except ValueError as error:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
      _log.warning(
        "Metrics of checkpoint step %d in %s are unreadable (%s); ranking it as if it had none.",
        step,
        self.directory,
        error,
      )
      return None


def _check_retention(keep_last: int, keep_best: int, best_mode: str) -> None:
  if keep_last < 1:
    raise ValueError(f"keep_last must be >= 1 (the step just saved), got {keep_last}")
  if keep_best < 0:
    raise ValueError(f"keep_best must be >= 0, got {keep_best}")
  if best_mode not in ("max", "min"):
    raise ValueError(f"best_mode must be 'max' or 'min', got {best_mode!r}")


def _absolute(directory: str | os.PathLike) -> str:
  """TensorStore needs absolute local paths; URLs (``gs://...``) pass through."""
  path = os.fspath(directory)
  return path if "://" in path else os.path.abspath(path)


def _not_unranked_save_warning(record: logging.LogRecord) -> bool:
  """Orbax warns on every save without metrics once ``best_fn`` is set; ours are deliberate
  (a SIGTERM save, a DNAL stage whose checkpoints do not rank), documented in ``save``."""
  return "did not provide metrics" not in record.getMessage()


@contextlib.contextmanager
def _unranked_save_quiet():
  """That one Orbax warning dropped for the duration of a save, nothing else."""
  absl_logger = logging.getLogger("absl")
  absl_logger.addFilter(_not_unranked_save_warning)
  try:
    yield
  finally:
    absl_logger.removeFilter(_not_unranked_save_warning)


def _manager_options(
  keep_last: int, keep_best: int, best_metric: str, best_mode: str
) -> ocp.CheckpointManagerOptions:
  """Orbax options: save whenever asked (the trainer owns the cadence), synchronously; keep the
  last N plus the best; drop temporaries of crashed saves on start-up.

  ``best_fn`` is set besides ``preservation_policy`` because Orbax only writes a step's metrics to
  disk, and only answers ``best_step()``, when ``best_fn`` is set; retention itself is decided by
  ``preservation_policy`` alone.
  """
  metric_of = operator.itemgetter(best_metric)
  return ocp.CheckpointManagerOptions(
    save_decision_policy=save_decision_lib.FixedIntervalPolicy(1),
    preservation_policy=_preservation_policy(keep_last, keep_best, metric_of, best_mode),
    best_fn=metric_of,
    best_mode=best_mode,
    enable_async_checkpointing=False,
    cleanup_tmp_directories=True,
  )


def _preservation_policy(keep_last, keep_best, metric_of, best_mode):
  """Latest ``keep_last`` or best ``keep_best``. Steps saved without metrics (e.g. on SIGTERM)
  compete only for the latest slots, else they would be kept forever."""
  policies = [preservation_lib.LatestN(n=keep_last)]
  if keep_best > 0:
    policies.append(
      preservation_lib.BestN(
        get_metric_fn=metric_of,
        reverse=best_mode == "min",
        n=keep_best,
        keep_checkpoints_without_metrics=False,
      )
    )
  return preservation_lib.AnyPreservationPolicy(policies)


def _abstract_tree(target_state):
  """Shapes, dtypes and shardings of ``target_state``: Orbax restores arrays straight into them."""
  return jax.tree.map(ocp.tree.to_shape_dtype_struct, target_state)


def _check_same_layout(abstract_state, state) -> None:
  """Orbax matches the target's structure; check it did, and that nothing came back reshaped."""
  expected, actual = jax.tree.structure(abstract_state), jax.tree.structure(state)
  if expected != actual:
    raise ValueError(f"restored tree {actual} differs from the target {expected}")
  for path, want, got in _leaves_with_paths(abstract_state, state):
    if (want.shape, want.dtype) != (got.shape, got.dtype):
      raise ValueError(
        f"restored {path} is {got.dtype}{list(got.shape)}, target {want.dtype}{list(want.shape)}"
      )


def _leaves_with_paths(abstract_state, state):
  paths_and_wanted = jax.tree_util.tree_flatten_with_path(abstract_state)[0]
  for (path, want), got in zip(paths_and_wanted, jax.tree.leaves(state), strict=True):
    if hasattr(want, "shape"):
      yield jax.tree_util.keystr(path), want, got


def _check_json(meta: dict) -> None:
  """Fails before Orbax starts writing, with the reason, if ``meta`` is not plain JSON."""
  if not isinstance(meta, dict):
    raise TypeError(f"meta must be a dict, got {type(meta).__name__}")
  try:
    json.dumps(meta, allow_nan=True)
  except (TypeError, ValueError) as error:
    raise TypeError(f"meta is not JSON-serialisable: {error}") from error
