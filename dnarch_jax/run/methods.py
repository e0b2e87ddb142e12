"""The training methods a run can use, looked up once from its config's ``method`` field.

A :class:`Method` names what the command line needs of it, each as ``module:function`` imported
on first use (``dnarch --help`` and ``dnarch predict`` stay free of the training stack):

* ``train(config, workdir, allow_config_change) -> summary``: the method's trainer on the shared
  run loop (``dnarch_jax.run.loop``);
* ``restore_run(workdir, which) -> run``: a checkpoint for reading, without data
  (``dnarch_jax.run.restore.restore_run`` dispatches to it);
* ``evaluate_run(workdir, split, which, input_size) -> metrics``;
* ``describe_config(config, with_xla) -> (summary, text)``: the initial network's table;
* ``describe_run(workdir, which, with_xla) -> (summary, text)``: a checkpoint's network;
* ``export_network(run, with_xla, input_size) -> export.NetworkExport``: the restored run's
  network as a plain Linen network (``dnarch_jax.interfaces.export.export_run`` writes it and its
  portable ``jax.export`` program).
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Callable

import ml_collections


@dataclasses.dataclass(frozen=True)
class Method:
  name: str
  train: str
  restore_run: str
  evaluate_run: str
  describe_config: str
  describe_run: str
  export_network: str

  def load(self, role: str) -> Callable:
    module, function = getattr(self, role).split(":")
    return getattr(importlib.import_module(module), function)


METHODS = {
  "dnarch": Method(
    name="dnarch",
    train="dnarch_jax.run.train:train",
    restore_run="dnarch_jax.run.restore:restore_dnarch_run",
    evaluate_run="dnarch_jax.run.evaluate:evaluate_run",
    describe_config="dnarch_jax.interfaces.summary:describe_config",
    describe_run="dnarch_jax.interfaces.summary:describe_run",
    export_network="dnarch_jax.interfaces.export:export_network",
  ),
  "dnal": Method(
    name="dnal",
    train="dnarch_jax.dnal.train:train",
    restore_run="dnarch_jax.dnal.train:restore_dnal_run",
    evaluate_run="dnarch_jax.dnal.train:evaluate_dnal_run",
    describe_config="dnarch_jax.dnal.summary:describe_config",
    describe_run="dnarch_jax.dnal.summary:describe_run",
    export_network="dnarch_jax.dnal.export:export_dnal_network",
  ),
}


def method_of(config: ml_collections.ConfigDict) -> Method:
  """The method of a run config (``config.method``, default ``"dnarch"``)."""
  name = config.get("method", "dnarch")
  if name not in METHODS:
    raise ValueError(f"config.method: {name!r} is not one of {sorted(METHODS)}")
  return METHODS[name]


def method_of_run(workdir) -> Method:
  """The method of the run in ``workdir`` (its ``config.json``)."""
  import pathlib

  from dnarch_jax.run.loop import load_run_config

  if not pathlib.Path(workdir).is_dir():
    raise FileNotFoundError(f"{workdir}: no such workdir")
  return method_of(load_run_config(workdir))
