"""The method registry the command line looks a run's method up in."""

import dataclasses

import ml_collections
import pytest

from dnarch_jax import config
from dnarch_jax.run import methods


def test_every_method_names_functions_that_exist():
  roles = [f.name for f in dataclasses.fields(methods.Method) if f.name != "name"]
  for method in methods.METHODS.values():
    for role in roles:
      assert callable(method.load(role)), (method.name, role)


def test_a_config_names_its_method_and_an_unknown_one_is_refused(tmp_path):
  assert methods.method_of(ml_collections.ConfigDict()).name == "dnarch"  # the default
  dnal = config.load_config("experiments/dnal_mnist.py:smoke")
  assert methods.method_of(dnal).name == "dnal"
  dnal.method = "nas"
  with pytest.raises(ValueError, match="config.method: 'nas' is not one of"):
    methods.method_of(dnal)
  with pytest.raises(FileNotFoundError, match="no such workdir"):
    methods.method_of_run(tmp_path / "nowhere")
  with pytest.raises(FileNotFoundError, match="holds no run"):
    methods.method_of_run(tmp_path)
