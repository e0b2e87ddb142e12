"""Export: the discovered network, as a plain Flax model, computes what the trained one computes."""

import json
import re
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dnarch_jax.config import WIDTH_MASKS, ModelConfig, load_config, validate
from dnarch_jax.data import pipeline_from_config
from dnarch_jax.interfaces import export
from dnarch_jax.interfaces import exported as exported_lib
from dnarch_jax.interfaces.cli import main
from dnarch_jax.interfaces.summary import summarize
from dnarch_jax.method import cost
from dnarch_jax.method.arch import arch_at_input_size, compute_arch, initial_arch
from dnarch_jax.method.sizes import arch_sizes
from dnarch_jax.network.model import DNArchCCNN, count_params
from dnarch_jax.run import restore
from dnarch_jax.run.train import Trainer

# The smoke network learning all four dimensions, started narrower (stream and hidden width 8 of
# 16), shallower (1 of 2 blocks) and at a lower resolution (18x18 of 28x28), so the export has
# every dimension to cut; a few steps move all its parameters and BatchNorm statistics.
RUN_2D = [
  "total_steps=3", "log_every=1", "eval_every=1000", "checkpoint_every=1000",
  "arch_refresh_every=1000", "progress=False",
  "model.num_blocks=2", "model.width=16", "model.hidden_width=16", "model.kernel_net_hidden=8",
  "model.width_bucket=4", "model.width_init_cutoff=0.4", "model.depth_init_cutoff=0.5",
  "model.resolution_init_cutoff=0.6",
  "data.batch_size=16", "data.eval_batch_size=32", "data.val_size=32",
]  # fmt: skip


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
  """A tiny trained MNIST run, its best checkpoint restored, a test batch and the trained
  network's eval-mode logits on it."""
  workdir = tmp_path_factory.mktemp("run")
  config = load_config("experiments/mnist.py:smoke", RUN_2D)
  assert Trainer(config, workdir).run()["status"] == "completed"
  run = restore.restore_run(workdir)
  x = np.asarray(next(pipeline_from_config(run.config.data, "test"))["input"])
  apply = jax.jit(lambda v, x: DNArchCCNN(run.cfg).apply(v, x, run.arch, train=False))
  return workdir, run, x, np.asarray(apply(run.variables, jnp.asarray(x)))


@pytest.fixture(scope="module")
def exported(trained, tmp_path_factory):
  workdir, _, _, _ = trained
  out = tmp_path_factory.mktemp("exported")
  return out, export.export_run(workdir, out)


def leaf_names(tree):
  return {
    str(getattr(k, "key", k)) for path, _ in jax.tree_util.tree_flatten_with_path(tree)[0]
    for k in path
  }  # fmt: skip


def test_exported_network_equals_the_trained_networks_eval_pass(trained, exported):
  _, run, x, want = trained
  out, _ = exported
  cfg, arch = run.cfg, run.arch
  # The run's architecture crops every dimension, so the export has widths, blocks, kernels and
  # resolution to cut.
  assert arch.stream_width < cfg.width and arch.depth < cfg.num_blocks
  kept = [b for b in arch.blocks if b.active]
  assert all(b.hidden_width < cfg.hidden_width and b.resample for b in kept)
  assert all(np.prod(b.resolution) < np.prod(cfg.input_size) for b in kept)
  assert np.prod(arch.stem.taps) < cfg.grid_size(0) * cfg.grid_size(1)

  model, variables = exported_lib.load_exported(out)
  assert set(variables) == {"params", "batch_stats", "constants"}
  names = leaf_names(variables)
  assert "kernel_net" not in names and not any(n.startswith("arch_") for n in names)
  assert variables["params"]["stem_conv"]["kernel"].shape == (*arch.stem.taps, cfg.in_channels)
  assert [b.name for b in model.spec.blocks] == [f"block_{l}" for l in range(arch.depth)]

  got = np.asarray(jax.jit(model.apply)(variables, jnp.asarray(x)))
  assert got.shape == want.shape == (x.shape[0], cfg.num_classes)
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
  np.testing.assert_array_equal(got.argmax(-1), want.argmax(-1))


def test_parameters_and_flops_are_the_cost_models_for_the_final_arch(trained, exported):
  _, run, _, _ = trained
  out, result = exported
  sizes = arch_sizes(run.arch, run.cfg, run.batch_size)
  _, variables = exported_lib.load_exported(out)
  assert count_params(variables["params"]) == result["params"] == int(cost.params(sizes))
  summary = summarize(run.cfg, run.variables, run.arch, run.batch_size, with_xla=False)
  assert result["flops_model"] == summary["flops_model"]
  assert result["params"] == summary["params"]
  # The export samples no kernels; XLA's count of its compiled forward pass agrees with the rest.
  assert 0 < result["flops_model"] - result["flops_exported"] < 0.05 * result["flops_model"]
  assert abs(result["flops_xla"] / result["flops_exported"] - 1) < 0.05
  assert result["depth"] == run.arch.depth and result["step"] == run.step == 3
  document = json.loads((out / exported_lib.SPEC_FILE).read_text())
  assert document["arch"] == json.loads(run.arch.to_json())
  assert document["flops_model"] == result["flops_model"]


def test_summary_of_a_workdir_is_the_discovered_architecture_against_the_budget(
  trained, exported, capsys
):
  workdir, run, _, _ = trained
  _, result = exported
  assert main(["summary", "--workdir", str(workdir), "--json", "--no-xla"]) == 0
  summary = json.loads(capsys.readouterr().out)
  assert summary["arch"] == json.loads(run.arch.to_json()) and summary["step"] == run.step
  assert summary["flops_model"] == result["flops_model"] and summary["params"] == result["params"]
  assert summary["budget_metric"] == "flops" and summary["budget"] > summary["flops_model"]
  assert main(["summary", "--workdir", str(workdir), "--no-xla"]) == 0
  table = capsys.readouterr().out
  assert "block_0" in table and "budget:" in table and f"step {run.step}" in table
  assert main(["summary", "--workdir", str(workdir), "--config.seed=1"]) == 2
  assert "no --config overrides" in capsys.readouterr().err


def test_load_exported_round_trips(trained, exported, tmp_path):
  _, run, _, _ = trained
  out, _ = exported
  model, variables = exported_lib.load_exported(
    out / exported_lib.SPEC_FILE
  )  # the file works as the folder
  assert model.spec == export.export_spec(run.cfg, run.arch)
  assert (
    exported_lib.ExportSpec.from_dict(json.loads(json.dumps(model.spec.to_dict()))) == model.spec
  )
  exported_lib.save_exported(tmp_path, model.spec, variables)
  again, again_variables = exported_lib.load_exported(tmp_path)
  assert again.spec == model.spec
  same = jax.tree_util.tree_map(np.array_equal, variables, again_variables)
  assert all(jax.tree_util.tree_leaves(same))


def test_cli_export_and_predict(trained, tmp_path, capsys):
  workdir, _, x, want = trained
  out = tmp_path / "model"
  args = ["export", "--workdir", str(workdir), "--out", str(out), "--checkpoint", "latest"]
  assert main([*args, "--no-xla"]) == 0
  printed = json.loads(capsys.readouterr().out)
  assert printed["out"] == str(out.resolve()) and printed["checkpoint"] == "latest"
  assert {"flops_model", "flops_exported", "params", "layers", "depth"} <= set(printed)
  assert printed["flops_xla"] is None and printed["layers"][0]["name"] == "stem"

  np.save(tmp_path / "x.npy", x)
  preds = tmp_path / "preds.npy"
  # 32 examples in batches of 12: the last batch is padded.
  argv = ["predict", "--model", str(out), "--input", str(tmp_path / "x.npy")]
  assert main([*argv, "--output", str(preds), "--batch-size", "12"]) == 0
  written = json.loads(capsys.readouterr().out)
  assert written["examples"] == len(x)
  logits = np.load(tmp_path / "preds.logits.npy")
  np.testing.assert_allclose(logits, want, rtol=1e-5, atol=1e-5)
  np.testing.assert_array_equal(np.load(preds), want.argmax(-1))
  assert main([*argv, "--batch-size", "12"]) == 0
  assert json.loads(capsys.readouterr().out)["predictions"] == want.argmax(-1).tolist()


# Runs the portable program in a fresh interpreter where dnarch_jax cannot be imported at all.
PORTABLE_CALLER = """
import sys

class NoDnarch:
  def find_spec(self, name, path=None, target=None):
    if name.split(".")[0] == "dnarch_jax":
      raise ImportError("dnarch_jax is not installed here")

sys.meta_path.insert(0, NoDnarch())
import jax
import numpy as np

program = jax.export.deserialize(open(sys.argv[1], "rb").read())
x = np.load(sys.argv[2])
np.save(sys.argv[3], np.asarray(program.call(x)))
np.save(sys.argv[4], np.asarray(program.call(x[:5])))  # another batch size, the same program
"""


def test_portable_program_runs_with_jax_alone(exported, trained, tmp_path):
  _, _, x, _ = trained
  out, printed = exported
  assert printed["program"] == str(out.resolve() / exported_lib.PROGRAM_FILE)
  model, variables = exported_lib.load_exported(out)
  want = np.asarray(jax.jit(model.apply)(variables, jnp.asarray(x)))
  np.save(tmp_path / "x.npy", x)
  files = [str(out / exported_lib.PROGRAM_FILE)] + [
    str(tmp_path / f) for f in ("x.npy", "all.npy", "five.npy")
  ]
  subprocess.run([sys.executable, "-c", PORTABLE_CALLER, *files], cwd=tmp_path, check=True)
  np.testing.assert_allclose(np.load(tmp_path / "all.npy"), want, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(np.load(tmp_path / "five.npy"), want[:5], rtol=1e-5, atol=1e-5)
  document = json.loads((out / exported_lib.SPEC_FILE).read_text())
  assert document["program"]["input"] == ["batch", *model.spec.input_shape]


def test_eval_export_and_predict_at_another_input_size(trained, tmp_path, capsys):
  workdir, run, x, _ = trained
  assert main(["eval", "--workdir", str(workdir), "--input_size", "42,42"]) == 0
  printed = json.loads(capsys.readouterr().out)
  assert printed["input_size"] == [42, 42] and 0 <= printed["accuracy"] <= 1
  assert printed["flops"] > 2 * export.exported_costs(run.cfg, run.arch, 1)["flops_model"]

  out = tmp_path / "model42"
  argv = ["export", "--workdir", str(workdir), "--out", str(out), "--input_size", "42,42"]
  assert main([*argv, "--no-xla"]) == 0
  capsys.readouterr()
  model, variables = exported_lib.load_exported(out)
  assert model.spec.input_size == (42, 42)
  x42 = np.asarray(jax.image.resize(x, (x.shape[0], 42, 42, x.shape[-1]), "linear"))
  arch42 = arch_at_input_size(run.variables["params"], run.cfg, (42, 42), x.shape[0])
  apply = jax.jit(lambda v, x: DNArchCCNN(run.cfg).apply(v, x, arch42, train=False))
  want = np.asarray(apply(run.variables, jnp.asarray(x42)))
  np.save(tmp_path / "x42.npy", x42)
  assert main(["predict", "--model", str(out), "--input", str(tmp_path / "x42.npy")]) == 0
  assert json.loads(capsys.readouterr().out)["predictions"] == want.argmax(-1).tolist()
  got = np.asarray(jax.jit(model.apply)(variables, jnp.asarray(x42)))
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
  assert main(["eval", "--workdir", str(workdir), "--input_size", "42"]) == 2  # wrong rank


def test_bad_input_is_named_before_anything_compiles(exported, tmp_path, capsys, monkeypatch):
  out, _ = exported

  def no_compiling(*args, **kwargs):
    raise AssertionError("compiled before the input was checked")

  monkeypatch.setattr(jax, "jit", no_compiling)
  cases = {
    "missing.npy": (None, "no such input file"),
    "wide.npy": (np.zeros((2, 28, 27, 1), np.float32), "[2, 28, 27, 1] does not match"),
    "flat.npy": (np.zeros((2, 784), np.float32), "[2, 784] does not match"),
    "ints.npy": (np.zeros((2, 28, 28, 1), np.uint8), "dtype uint8"),
    "text.npy": (b"0.1 0.2", "not a .npy array"),
  }
  for name, (array, message) in cases.items():
    if isinstance(array, bytes):
      (tmp_path / name).write_bytes(array)
    elif array is not None:
      np.save(tmp_path / name, array)
    path = str(tmp_path / name)
    assert main(["predict", "--model", str(out), "--input", path]) == 2
    err = capsys.readouterr().err
    assert path in err and message in err, err
  nowhere = str(tmp_path / "nowhere")
  assert main(["predict", "--model", nowhere, "--input", str(tmp_path / "wide.npy")]) == 2
  assert f"{nowhere}: no such exported model folder" in capsys.readouterr().err
  assert main(["export", "--workdir", nowhere, "--out", str(tmp_path / "o")]) == 2
  assert f"{nowhere}: no such workdir" in capsys.readouterr().err
  (tmp_path / "empty").mkdir()
  assert main(["predict", "--model", str(tmp_path / "empty"), "--input", path]) == 2
  assert "model.json: missing" in capsys.readouterr().err


def random_variables(cfg: ModelConfig, rng):
  """Random values in the model's shapes, without compiling its initialisation: the export must
  carry any values over, and non-trivial biases and BatchNorm statistics expose slips there."""
  x = jnp.zeros((1, *cfg.input_size, cfg.in_channels), jnp.float32)
  init = lambda key: DNArchCCNN(cfg).init(key, x, initial_arch(cfg, crop=False), train=False)

  def value(path, shape):
    if str(path[-1].key) == "var":
      return jnp.asarray(rng.uniform(0.5, 2.0, shape.shape), shape.dtype)
    return jnp.asarray(rng.normal(0.0, 0.3, shape.shape), shape.dtype)

  return jax.tree_util.tree_map_with_path(value, jax.eval_shape(init, jax.random.key(0)))


def set_masks(params, rng):
  """Crop every dimension: blocks 0 and 1 of 4 kept, the first below the input's resolution and
  the second above the first's; narrower stream and hidden widths; random kernel sizes."""
  resolution = {0: 0.45, 1: 0.8, 2: 0.3, 3: 1.0}

  def value(path, leaf):
    name = path[-1].key
    block = next((int(k.key.split("_")[1]) for k in path if str(k.key).startswith("block_")), None)
    if name == "arch_sigma":
      return jnp.asarray(rng.uniform(0.05, 0.3, leaf.shape), leaf.dtype)
    if name in ("arch_stream_cutoff", "arch_hidden_cutoff"):
      return jnp.asarray(rng.uniform(0.2, 0.7), leaf.dtype)
    if name in ("arch_stream_gate", "arch_hidden_gate"):  # about a fifth below the threshold
      return jnp.asarray(rng.normal(0.0, 2.5, leaf.shape), leaf.dtype)
    if name == "arch_depth_cutoff":
      return jnp.asarray(0.5, leaf.dtype)
    if name == "arch_resolution_cutoff":
      return jnp.full(leaf.shape, resolution[block], leaf.dtype)
    return leaf

  return jax.tree_util.tree_map_with_path(value, params)


def dense_1d_network(**overrides):
  """A 1D causal dense-head network learning all four dimensions, random variables with every
  dimension cropped, its ``Arch`` and an input batch."""
  cfg = validate(
    ModelConfig(
      input_size=(64,), in_channels=2, num_classes=5, head="dense", causal=True, kernel_grid=0,
      kernel_bucket=4, num_blocks=4, width=24, hidden_width=32, kernel_net_hidden=8,
      omega_0=30.0, width_bucket=4, learn_kernel=True, learn_width=True, learn_resolution=True,
      learn_depth=True, **overrides,
    )
  )  # fmt: skip
  rng = np.random.default_rng(0)
  variables = random_variables(cfg, rng)
  variables["params"] = set_masks(variables["params"], rng)
  x = jax.random.normal(jax.random.key(1), (4, *cfg.input_size, cfg.in_channels))
  return cfg, variables, compute_arch(variables["params"], cfg, x.shape[0]), x


@pytest.mark.parametrize("width_mask", WIDTH_MASKS)
def test_1d_causal_dense_network_exports_exactly(width_mask, tmp_path):
  cfg, variables, arch, x = dense_1d_network(width_mask=width_mask)
  kept = [b for b in arch.blocks if b.active]
  assert len(kept) == 2 and kept[0].resolution < cfg.input_size
  assert kept[1].resolution > kept[0].resolution and arch.stream_width < cfg.width

  spec, exported_variables = export.export_variables(cfg, variables, arch)
  exported_lib.save_exported(tmp_path, spec, exported_variables)
  model, loaded = exported_lib.load_exported(tmp_path)
  want = jax.jit(lambda v, x: DNArchCCNN(cfg).apply(v, x, arch, train=False))(variables, x)
  got = jax.jit(model.apply)(loaded, x)
  assert got.shape == want.shape == (4, *cfg.input_size, cfg.num_classes)
  np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-5, atol=1e-5)
  sizes = arch_sizes(arch, cfg, x.shape[0])
  assert count_params(loaded["params"]) == int(cost.params(sizes))


def test_a_bfloat16_network_exports_in_bfloat16(tmp_path):
  """The export records ``compute_dtype`` and computes under the trained network's rule: its
  products take bfloat16 operands, its logits are float32 and equal the trained network's up to
  the order of float32 sums (measured 0 difference; bfloat16 rounding itself is ~1e-2)."""
  cfg, variables, arch, x = dense_1d_network(compute_dtype="bfloat16")
  spec, exported_variables = export.export_variables(cfg, variables, arch)
  assert spec.compute_dtype == "bfloat16"
  exported_lib.save_exported(tmp_path, spec, exported_variables)
  written = json.loads((tmp_path / exported_lib.SPEC_FILE).read_text())
  assert written["spec"]["compute_dtype"] == "bfloat16"
  model, loaded = exported_lib.load_exported(tmp_path)
  assert model.spec.compute_dtype == "bfloat16"
  text = jax.jit(model.apply).lower(loaded, x).as_text()
  products = 2 * len(spec.blocks) + (cfg.in_channels > 1)  # mixers, linears, the stem's mixer
  assert len(re.findall(r"stablehlo\.dot_general .*: \(tensor<[^>]*xbf16>", text)) == products
  want = jax.jit(lambda v, x: DNArchCCNN(cfg).apply(v, x, arch, train=False))(variables, x)
  got = jax.jit(model.apply)(loaded, x)
  assert got.dtype == want.dtype == jnp.float32
  np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-4, atol=1e-4)
