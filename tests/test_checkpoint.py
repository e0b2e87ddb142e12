"""Checkpointer: bit-identical round trips, retention, fallback past corrupt steps, shardings."""

import gc
import json
import logging
import os
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import struct
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from dnarch_jax.run.checkpoint import META_ITEM, STATE_ITEM, Checkpointer


@struct.dataclass
class TrainState:
  step: jax.Array
  params: dict
  batch_stats: dict
  opt_state: optax.OptState
  rng: jax.Array


def make_state(seed: int = 0) -> TrainState:
  """A small train state shaped like the real one: random (incompressible) weights, an
  architecture parameter in bfloat16, partitioned AdamW/Adam state after one update."""
  keys = jax.random.split(jax.random.key(seed), 4)
  params = {
    "conv": {
      "kernel": jax.random.normal(keys[0], (64, 128)),
      "bias": jax.random.normal(keys[1], (128,)),
    },
    "arch_mu": jax.random.uniform(keys[2], (3,)).astype(jnp.bfloat16),
  }
  labels = {"conv": {"kernel": "weights", "bias": "weights"}, "arch_mu": "arch"}
  tx = optax.partition({"weights": optax.adamw(1e-3), "arch": optax.adam(1e-2)}, labels)
  grads = jax.tree.map(lambda p: jnp.full_like(p, 0.5), params)
  _, opt_state = tx.update(grads, tx.init(params), params)
  return TrainState(
    step=jnp.int32(seed),
    params=params,
    batch_stats={"bn": {"mean": jax.random.normal(keys[3], (128,))}},
    opt_state=opt_state,
    rng=jax.random.key_data(jax.random.key(seed + 100)),
  )


def zeros_like(state):
  """A restore target with the right layout but none of the values."""
  return jax.tree.map(jnp.zeros_like, state)


def as_bytes(x) -> np.ndarray:
  return np.asarray(x).reshape(-1).view(np.uint8)


def assert_bit_identical(actual, expected):
  assert jax.tree.structure(actual) == jax.tree.structure(expected)
  for a, e in zip(jax.tree.leaves(actual), jax.tree.leaves(expected), strict=True):
    assert a.dtype == e.dtype and a.shape == e.shape
    np.testing.assert_array_equal(as_bytes(a), as_bytes(e))


META = {"arch": {"widths": [16, 32], "kernel": 0.25}, "data": {"next_index": 1234}, "name": "mnist"}


def test_round_trip_is_bit_identical_across_instances(tmp_path):
  state = make_state(7)
  with Checkpointer(tmp_path) as ckpt:
    assert ckpt.save(7, state, META)
  with Checkpointer(tmp_path) as ckpt:  # a restarted process
    restored, meta, step = ckpt.restore(zeros_like(state))
  assert step == 7 and meta == META
  assert_bit_identical(restored, state)
  assert isinstance(restored, TrainState)
  assert type(restored.opt_state).__name__ == "PartitionState"


def test_restore_explicit_step_and_into_abstract_target(tmp_path):
  with Checkpointer(tmp_path) as ckpt:
    for step in (1, 2):
      ckpt.save(step, make_state(step), {"step": step})
    abstract = jax.tree.map(
      lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), make_state()
    )
    restored, meta, step = ckpt.restore(abstract, step=1)
  assert (step, meta) == (1, {"step": 1})
  assert_bit_identical(restored, make_state(1))


@pytest.mark.parametrize(
  "best_metric,best_mode,value", [("val_accuracy", "max", 0.99), ("val_loss", "min", 0.01)]
)
def test_keeps_last_n_plus_best(tmp_path, best_metric, best_mode, value):
  state = make_state()
  with Checkpointer(
    tmp_path, keep_last=3, keep_best=1, best_metric=best_metric, best_mode=best_mode
  ) as ckpt:
    for step in range(1, 7):
      metrics = {best_metric: value if step == 2 else 0.5, "other": float(step)}
      assert ckpt.save(step, state, META, metrics=metrics)
    assert ckpt.all_steps() == [2, 4, 5, 6]
    assert (ckpt.best_step(), ckpt.latest_step()) == (2, 6)
  with Checkpointer(tmp_path, best_metric=best_metric, best_mode=best_mode) as ckpt:
    assert (ckpt.all_steps(), ckpt.best_step()) == ([2, 4, 5, 6], 2)  # metrics persisted


def test_steps_without_metrics_are_not_kept_forever(tmp_path, caplog):
  state = make_state()
  with Checkpointer(tmp_path, keep_last=2, keep_best=1) as ckpt, caplog.at_level(logging.WARNING):
    for step in range(1, 6):
      ckpt.save(step, state, META, metrics={"val_accuracy": 0.9} if step == 3 else None)
    assert ckpt.all_steps() == [3, 4, 5]
    assert ckpt.best_step() == 3
  # Such saves are deliberate: Orbax's warning about each is dropped, and only for the save.
  assert not [r for r in caplog.records if "did not provide metrics" in r.getMessage()]
  assert not logging.getLogger("absl").filters


def test_save_twice_and_out_of_order(tmp_path):
  state = make_state()
  with Checkpointer(tmp_path) as ckpt:
    assert ckpt.save(5, state, META)
    assert not ckpt.save(5, state, META, force=True)  # SIGTERM right after a periodic save
    assert not ckpt.save(4, state, META)  # behind the latest step
    with pytest.raises(ValueError, match="val_accuracy"):
      ckpt.save(6, state, META, metrics={"loss": 1.0})
    with pytest.raises(TypeError, match="JSON"):
      ckpt.save(6, state, {"bad": np.int64(1)})
    assert ckpt.all_steps() == [5]


def largest_file(path: pathlib.Path) -> pathlib.Path:
  return max((p for p in path.rglob("*") if p.is_file()), key=lambda p: p.stat().st_size)


def truncate_largest_state_file(step_dir: pathlib.Path) -> None:
  target = largest_file(step_dir / STATE_ITEM)
  target.write_bytes(target.read_bytes()[: target.stat().st_size // 2])


def delete_largest_state_file(step_dir: pathlib.Path) -> None:
  os.remove(largest_file(step_dir / STATE_ITEM))


def garble_meta_json(step_dir: pathlib.Path) -> None:
  (step_dir / META_ITEM / "metadata").write_text('{"arch": {"widths": [16, 3')


def truncate_state_metadata(step_dir: pathlib.Path) -> None:
  """The report's case: a truncated ``_METADATA`` (``Expecting value: line 1 column ...``)."""
  metadata = step_dir / STATE_ITEM / "_METADATA"
  metadata.write_text(metadata.read_text()[: len(metadata.read_text()) // 2])


def delete_state_item(step_dir: pathlib.Path) -> None:
  for p in sorted((step_dir / STATE_ITEM).rglob("*"), reverse=True):
    p.unlink() if p.is_file() else p.rmdir()


@pytest.fixture
def orbax_read_failures():
  """A failed read leaves Orbax's other pending reads un-awaited; they only complain when garbage
  collected. Collect them inside the test that caused them, where they are expected."""
  yield
  gc.collect()


CORRUPTIONS = [
  truncate_largest_state_file,
  delete_largest_state_file,
  garble_meta_json,
  truncate_state_metadata,
  delete_state_item,
]


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
@pytest.mark.parametrize("corrupt", CORRUPTIONS, ids=lambda f: f.__name__)
def test_corrupt_latest_falls_back_to_previous(tmp_path, caplog, corrupt, orbax_read_failures):
  with Checkpointer(tmp_path) as ckpt:
    for step in (1, 2, 3):
      ckpt.save(step, make_state(step), {"step": step})
  corrupt(tmp_path / "3")
  with Checkpointer(tmp_path) as ckpt:
    with caplog.at_level(logging.WARNING, logger="dnarch_jax.run.checkpoint"):
      restored, meta, step = ckpt.restore(zeros_like(make_state()))
    assert (step, meta) == (2, {"step": 2})
    assert_bit_identical(restored, make_state(2))
    warnings = [r.getMessage() for r in caplog.records if r.name == "dnarch_jax.run.checkpoint"]
    assert len(warnings) == 1 and "step 3" in warnings[0] and "unreadable" in warnings[0]
    # The resumed run saves step 3 again in place of the corrupt one.
    assert ckpt.save(3, make_state(3), {"step": 3})
    restored, meta, step = ckpt.restore(zeros_like(make_state()))
  assert (step, meta) == (3, {"step": 3})
  assert_bit_identical(restored, make_state(3))


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_readers_fall_back_from_a_corrupt_chosen_step(tmp_path, caplog, orbax_read_failures):
  """eval / summary / export read the best or the latest step: a corrupt one warns, naming the
  step, and the newest readable step is read instead; nothing is deleted."""
  with Checkpointer(tmp_path) as ckpt:
    for step, accuracy in ((1, 0.9), (2, 0.5), (3, 0.7)):
      ckpt.save(step, make_state(step), {"step": step}, metrics={"val_accuracy": accuracy})
  truncate_state_metadata(tmp_path / "1")
  truncate_state_metadata(tmp_path / "3")
  for which, warned_steps in (("best", ["1", "3"]), ("latest", ["3"])):
    caplog.clear()
    with Checkpointer(tmp_path) as ckpt, caplog.at_level(logging.WARNING):
      assert ckpt.best_step() == 1
      restored, meta, step = ckpt.restore_for_reading(zeros_like(make_state()), which)
    assert (step, meta) == (2, {"step": 2})
    assert_bit_identical(restored, make_state(2))
    warned = [r.getMessage() for r in caplog.records if "unreadable" in r.getMessage()]
    assert [w.split("step ")[1].split()[0] for w in warned] == warned_steps
  assert sorted(int(p.name) for p in tmp_path.iterdir() if p.name.isdigit()) == [1, 2, 3]
  with pytest.raises(ValueError, match="'best' or 'latest'"):
    Checkpointer(tmp_path).restore_for_reading(make_state(), "newest")


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_no_readable_checkpoint_raises(tmp_path, caplog, orbax_read_failures):
  with Checkpointer(tmp_path) as ckpt:
    with pytest.raises(FileNotFoundError):
      ckpt.restore(make_state())
    ckpt.save(1, make_state(1), META)
    ckpt.save(2, make_state(2), META)
  truncate_largest_state_file(tmp_path / "1")
  garble_meta_json(tmp_path / "2")
  with Checkpointer(tmp_path) as ckpt, caplog.at_level(logging.WARNING):
    with pytest.raises(FileNotFoundError, match="no readable checkpoint"):
      ckpt.restore(make_state())
  assert sum("unreadable" in r.getMessage() for r in caplog.records) == 2


def test_garbled_metrics_cost_only_the_rank(tmp_path, caplog):
  with Checkpointer(tmp_path, keep_last=1) as ckpt:
    ckpt.save(1, make_state(1), META, metrics={"val_accuracy": 0.9})
    ckpt.save(2, make_state(2), META, metrics={"val_accuracy": 0.5})
  (tmp_path / "1" / "metrics" / "metrics").write_text("{garbled")
  with caplog.at_level(logging.WARNING), Checkpointer(tmp_path, keep_last=1) as ckpt:
    assert (ckpt.all_steps(), ckpt.best_step()) == ([1, 2], 2)
    assert ckpt.restore(make_state(), step=1)[2] == 1
  assert any("Metrics of checkpoint step 1" in r.getMessage() for r in caplog.records)


def test_crashed_save_leaves_no_step(tmp_path):
  """A save killed mid-write leaves only Orbax's temporary directory: ignored and cleaned up."""
  with Checkpointer(tmp_path) as ckpt:
    ckpt.save(1, make_state(1), META)
  partial = tmp_path / "2.orbax-checkpoint-tmp-1234567"
  (partial / STATE_ITEM).mkdir(parents=True)
  (partial / STATE_ITEM / "_METADATA").write_text("{")
  with Checkpointer(tmp_path) as ckpt:
    assert ckpt.all_steps() == [1]
    assert ckpt.restore(make_state())[2] == 1
  assert not partial.exists()


def test_replicated_state_on_8_device_mesh(tmp_path):
  assert jax.device_count() == 8
  mesh = Mesh(np.array(jax.devices()), ("data",))
  replicated = NamedSharding(mesh, P())
  state = jax.device_put(make_state(3), replicated)
  with Checkpointer(tmp_path) as ckpt:
    ckpt.save(3, state, META)
    restored, _, _ = ckpt.restore(jax.device_put(zeros_like(state), replicated))
    assert_bit_identical(restored, state)
    for leaf in jax.tree.leaves(restored):
      assert leaf.sharding.is_equivalent_to(replicated, leaf.ndim)
    # The target's sharding wins: the same checkpoint restores sharded along the mesh.
    row_sharded = NamedSharding(mesh, P("data"))
    target = zeros_like(state).replace(
      params={**state.params, "conv": jax.device_put(state.params["conv"], row_sharded)}
    )
    restored, _, _ = ckpt.restore(target)
  assert restored.params["conv"]["kernel"].sharding == row_sharded
  assert restored.batch_stats["bn"]["mean"].sharding.is_equivalent_to(replicated, 1)
  assert_bit_identical(restored, state)


def test_meta_json_is_plain(tmp_path):
  """Tuples come back as lists (JSON): callers store what they can read back."""
  with Checkpointer(tmp_path) as ckpt:
    ckpt.save(1, make_state(), {"t": (1, 2), "f": 0.1})
    _, meta, _ = ckpt.restore(make_state())
  assert meta == json.loads(json.dumps({"t": [1, 2], "f": 0.1}))
