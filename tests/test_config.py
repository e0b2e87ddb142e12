"""Bad configs fail before anything compiles, with a message that names the field."""

import pytest

from dnarch_jax.config import ModelConfig, apply_override, load_config, validate

BASE = dict(input_size=(28, 28), in_channels=1, num_classes=10, kernel_grid=29)


@pytest.mark.parametrize(
  "field,value,match",
  [
    ("kernel_grid", 32, "config.model.kernel_grid: centred kernels need an odd grid"),
    ("width", 0, "config.model.width: must be a positive integer"),
    ("hidden_width", -3, "config.model.hidden_width"),
    ("threshold", 1.0, r"config.model.threshold: must lie in \(0, 1\)"),
    ("threshold", 0.0, "config.model.threshold"),
    ("kernel_net", "mlp", "config.model.kernel_net: unknown kernel net 'mlp'"),
    ("resolution_mask", "box", "config.model.resolution_mask: unknown mask 'box'"),
    ("width_mask", "gate", "config.model.width_mask: unknown mask 'gate'"),
    ("width_gate_delta", 0.0, "config.model.width_gate_delta: must be positive"),
    ("kernel_bucket", 3, "config.model.kernel_bucket"),
    ("dropout", 1.5, "config.model.dropout"),
  ],
)
def test_impossible_sizes_name_the_field(field, value, match):
  with pytest.raises(ValueError, match=match):
    validate(ModelConfig(**{**BASE, field: value}))


def test_causal_2d_is_rejected():
  with pytest.raises(ValueError, match="config.model.causal"):
    validate(ModelConfig(**BASE, causal=True))


@pytest.mark.parametrize("task", ["smnist", "mnist"])
@pytest.mark.parametrize("variant", ["ccnn_4_140", "dnarch", "smoke"])
def test_experiment_configs_load_and_validate(task, variant):
  from dnarch_jax.run.experiment import run_model_config

  config = load_config(f"experiments/{task}.py:{variant}")
  cfg = run_model_config(config)
  assert cfg.input_size == ((784,) if task == "smnist" else (28, 28))
  assert cfg.learn_width == (variant != "ccnn_4_140")


def test_overrides_are_typed_and_unknown_keys_rejected():
  config = load_config("experiments/mnist.py:smoke", ["model.width=32", "optim.lr=1"])
  assert config.model.width == 32 and config.optim.lr == 1.0
  with pytest.raises(ValueError, match="unknown config key"):
    apply_override(config, "model.widht=3")
  with pytest.raises(ValueError, match="expected an integer"):
    apply_override(config, "model.width=wide")
  with pytest.raises(ValueError, match="unknown variant"):
    load_config("experiments/mnist.py:nope")


def test_unknown_model_field_is_rejected():
  from dnarch_jax.config import model_config

  with pytest.raises(ValueError, match=r"unknown field\(s\) \['widht'\]"):
    model_config({"widht": 3}, (28, 28, 1), 10)
