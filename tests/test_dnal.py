"""DNAL: the delta schedule, pruning at the threshold, cropped = gated network, the cost model
against the paper's sizes and XLA, staged training resumed across stops, the CLI end to end."""

import functools
import json
import math
import struct

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import tensorflow_datasets as tfds

from dnarch_jax.config import load_config
from dnarch_jax.dnal import gates
from dnarch_jax.dnal import train as dnal_train
from dnarch_jax.dnal.arch import (
  GATE_PARAM,
  DnalArch,
  arch_gates,
  dnal_cost,
  full_arch,
  gated_layers,
  network_cost,
  prune,
  soft_gate_cost,
)
from dnarch_jax.dnal.config import net_config, run_net_config
from dnarch_jax.dnal.models import build_model, init_dnal_variables, resnet_plan
from dnarch_jax.dnal.summary import xla_forward_flops
from dnarch_jax.dnal.train import DnalTrainer
from dnarch_jax.interfaces import events, report
from dnarch_jax.interfaces.cli import main
from dnarch_jax.interfaces.exported import load_exported
from dnarch_jax.method import masks
from dnarch_jax.run.restore import restore_run

MNIST_SMOKE = "experiments/dnal_mnist.py:smoke"
VGG16 = "experiments/dnal_vgg16_cifar10.py"
RESNET56 = "experiments/dnal_resnet56_cifar10.py"

SMALL = {
  "vgg": dict(kind="vgg", layers=(8, 8, "M", 16, "M", 16), classifier=(12,)),
  "resnet": dict(kind="resnet", depth=14, widths=(4, 8, 12)),
}


@functools.cache
def small(kind: str):
  """A small network of each family (16x16x3 input, 5 classes) and its variables."""
  cfg = net_config(dict(SMALL[kind], threshold=0.5), (16, 16, 3), 5)
  return cfg, init_dnal_variables(cfg, jax.random.key(0))


def randomized(variables, seed: int):
  """Gate logits around 0 (about half the channels pruned at threshold 0.5), and running
  statistics away from their initial values, so that eval-mode BatchNorm matters."""
  rng = np.random.default_rng(seed)

  def value(path, leaf):
    name = path[-1].key
    if name == GATE_PARAM:
      return jnp.asarray(rng.normal(size=leaf.shape) * 1e-3, leaf.dtype)
    if name == "mean":
      return jnp.asarray(rng.normal(size=leaf.shape) * 0.1, leaf.dtype)
    if name == "var":
      return jnp.asarray(rng.uniform(0.5, 2.0, leaf.shape), leaf.dtype)
    return leaf

  return jax.tree_util.tree_map_with_path(value, variables)


def leaves_equal(a, b):
  la, lb = jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)
  return len(la) == len(lb) and all(
    np.array_equal(np.asarray(x), np.asarray(y)) for x, y in zip(la, lb, strict=True)
  )


def rows(workdir, kind):
  return [r for r in report.read_jsonl(workdir / "metrics.jsonl") if r["kind"] == kind]


# --- gates ------------------------------------------------------------------------------------


def test_delta_is_annealed_geometrically_from_1_to_1e4_over_the_architecture_stage():
  steps = 11
  deltas = np.array([gates.delta_at(t, steps) for t in range(steps)])
  np.testing.assert_allclose(deltas[[0, -1]], [1.0, 1e4])
  np.testing.assert_allclose(deltas[1:] / deltas[:-1], 10 ** (4 / 10))  # one constant ratio
  assert gates.delta_at(-3, steps) == 1.0 and gates.delta_at(99, steps) == 1e4
  # The gate sharpens with delta: the same logits, soft at delta 1 and nearly 0/1 at 1e4.
  s = np.array([-1e-3, 1e-3])
  np.testing.assert_allclose(masks.scaled_sigmoid_gate(s, 1.0), 0.5, atol=1e-3)
  assert masks.scaled_sigmoid_gate(s, 1e4).round().tolist() == [0.0, 1.0]


def test_sparsity_loss_sums_sigmoid_of_the_logits_without_delta():
  s = [jnp.array([0.0, 2.0]), jnp.array([-1.0])]
  expected = 1e-4 * (0.5 + 1 / (1 + math.exp(-2)) + 1 / (1 + math.exp(1)))
  np.testing.assert_allclose(gates.sparsity_loss(s, 1e-4), expected, rtol=1e-6)


def test_pruning_keeps_exactly_the_channels_at_or_above_the_threshold():
  rng = np.random.default_rng(0)
  for delta, threshold in [(1.0, 0.5), (37.0, 0.1), (1e4, 0.9)]:
    s = rng.normal(size=200) * 3 / delta
    g = 1 / (1 + np.exp(-delta * s))  # brute force, float64
    assert gates.kept_channels(s, delta, threshold) == tuple(np.flatnonzero(g >= threshold))
    # At the boundary itself (gate = threshold up to rounding): kept at it, dropped below it.
    boundary = math.log(threshold / (1 - threshold)) / delta
    edge = np.array([np.nextafter(boundary, -1), boundary, np.nextafter(boundary, 1)])
    assert gates.kept_channels(edge, delta, threshold) == (1, 2)
  # A layer keeps its strongest channel when no gate reaches the threshold.
  assert gates.kept_channels(np.array([-3.0, -1.0, -2.0]), 1.0, 0.9) == (1,)
  # On a network: every gated layer, in order, from its own logits.
  cfg, variables = small("resnet")
  params = randomized(variables, 1)["params"]
  arch = prune(params, cfg, 1e4)
  assert len(arch.kept) == len(gated_layers(cfg)) == 13
  for (path, _), kept in zip(gated_layers(cfg), arch.kept, strict=True):
    node = params
    for key in path:
      node = node[key]
    s = np.asarray(node[GATE_PARAM], np.float64)
    assert kept == gates.kept_channels(s, 1e4, cfg.threshold)


def test_stages_and_modes_follow_the_step_counter():
  lengths = (3, 2, 4)
  stages = [gates.stage_at(t, lengths) for t in range(9)]
  assert [s for s, _ in stages] == ["weights"] * 3 + ["arch"] * 2 + ["finetune"] * 4
  assert [t for _, t in stages] == [0, 1, 2, 0, 1, 0, 1, 2, 3]
  modes = [gates.mode_after(c, lengths)[0] for c in range(10)]
  assert modes == ["off"] * 4 + ["soft"] + ["hard"] * 5
  assert gates.mode_after(4, lengths) == ("soft", 0)
  assert gates.stage_at(3, (3, 0, 0)) == ("weights", 3)  # the baseline: weights only
  with pytest.raises(ValueError, match="finetune_epochs: .* needs an architecture stage"):
    gates.check_lengths((3, 0, 2))


# --- the network --------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["vgg", "resnet"])
@pytest.mark.parametrize("train", [False, True])
def test_pruned_network_equals_the_gated_network_with_pruned_channels_zeroed(kind, train):
  cfg, variables = small(kind)
  variables = randomized(variables, 2)
  arch = prune(variables["params"], cfg, 1e4)
  maximal = [c for _, c in gated_layers(cfg)]
  assert arch.crop and all(w < c for w, c in zip(arch.widths, maximal, strict=True))
  if kind == "resnet":  # channels no layer writes are dropped from the residual stream too
    assert len(resnet_plan(cfg, arch)[1][-1].out_live) < cfg.widths[-1]
  model = build_model(cfg)
  x = jax.random.normal(jax.random.key(1), (4, *cfg.input_size, cfg.in_channels))
  kwargs = dict(mutable=["batch_stats"]) if train else {}
  apply = jax.jit(
    lambda v, x, a: model.apply(v, x, a, "hard", jnp.float32(1e4), train=train, **kwargs),
    static_argnums=2,
  )
  cropped, full = apply(variables, x, arch), apply(variables, x, arch.uncropped())
  if train:  # the running statistics of the kept channels move identically
    (cropped, stats_c), (full, stats_f) = cropped, full
    stats_c, stats_f = stats_c["batch_stats"], stats_f["batch_stats"]
    for (path, _), kept in zip(gated_layers(cfg), arch.kept, strict=True):
      a, b = stats_c, stats_f
      for key in (*path, "norm"):
        a, b = a[key], b[key]
      for name in ("mean", "var"):
        np.testing.assert_allclose(a[name][kept,], b[name][kept,], rtol=1e-5, atol=1e-6)
  assert cropped.shape == full.shape == (4, cfg.num_classes)
  assert float(jnp.linalg.norm(cropped - full) / jnp.linalg.norm(full)) < 1e-5


def test_every_stage_moves_only_its_own_parameters():
  from dnarch_jax.dnal.steps import StageOptim, create_state, make_train_step, make_tx

  cfg = net_config(dict(kind="vgg", layers=(4, "M", 4), classifier=(4,)), (8, 8, 3), 5)
  variables = init_dnal_variables(cfg, jax.random.key(0))
  optim = StageOptim(lr=0.1, momentum=0.9, weight_decay=1e-4, steps=4)
  state = create_state(variables, make_tx(optim), make_tx(optim))
  batch = {"input": jax.random.normal(jax.random.key(3), (4, 8, 8, 3)), "label": jnp.arange(4)}
  for stage, moves_arch in (("weights", False), ("arch", True)):
    before = jax.device_get(state.params)
    step = make_train_step(cfg, stage, optim, 1e-2)
    arch = full_arch(cfg)
    new, metrics = step(jax.tree.map(jnp.copy, state), batch, np.float32(3.0), arch)
    after = jax.device_get(new.params)
    for (path, a), b in zip(
      jax.tree_util.tree_flatten_with_path(before)[0], jax.tree.leaves(after), strict=True
    ):
      is_gate = path[-1].key == GATE_PARAM
      assert np.array_equal(a, b) != (is_gate == moves_arch), (stage, jax.tree_util.keystr(path))
    assert ("sparsity" in metrics) == moves_arch


# --- the cost model ---------------------------------------------------------------------------


def test_baselines_match_the_papers_sizes(capsys):
  """VGG16 313.47 M MACs / 14.99 M parameters, ResNet56 125.49 M / 0.85 M (DNAL's README)."""
  paper = {VGG16: (313.47e6, 14.99e6), RESNET56: (125.49e6, 0.85e6)}
  for path, (macs, params) in paper.items():
    cfg = run_net_config(load_config(f"{path}:baseline"))
    cost = dnal_cost(cfg, full_arch(cfg))
    assert abs(cost["macs"] / macs - 1) < 0.02 and abs(cost["params"] / params - 1) < 0.02
  assert main(["summary", "--config", f"{VGG16}:baseline", "--json", "--no-xla"]) == 0
  summary = json.loads(capsys.readouterr().out)
  assert abs(summary["macs"] / 313.47e6 - 1) < 0.02 and summary["flops"] == 2 * summary["macs"]
  assert abs(summary["params"] / 14.99e6 - 1) < 0.02


@pytest.mark.parametrize("kind", ["vgg", "resnet"])
def test_one_cost_formula_for_soft_gates_and_pruned_networks(kind):
  cfg, variables = small(kind)
  params = randomized(variables, 3)["params"]
  arch = prune(params, cfg, 1e4)
  # On 0/1 gates the formula gives the pruned network's integer sizes ...
  on_gates = network_cost(cfg, [jnp.asarray(g) for g in arch_gates(cfg, arch)])
  assert float(on_gates["macs"]) == dnal_cost(cfg, arch)["macs"]
  assert dnal_cost(cfg, arch)["macs"] < dnal_cost(cfg, full_arch(cfg))["macs"]
  # ... and on soft gates it is differentiable in every gate logit.
  grads = jax.grad(lambda p: soft_gate_cost(p, cfg, 1.0)["macs"])(params)
  flat = jax.tree_util.tree_flatten_with_path(grads)[0]
  gate_grads = [g for path, g in flat if path[-1].key == GATE_PARAM]
  assert len(gate_grads) == len(gated_layers(cfg))
  assert all(np.all(np.asarray(g) > 0) for g in gate_grads)
  # The pruned network's compiled forward pass does what the model counts: XLA's FLOPs are
  # 2 MACs over the taps inside the image plus BatchNorm, gates, ReLUs and pooling.
  inside = 2 * float(network_cost(cfg, arch_gates(cfg, arch))["macs_inside"])
  xla = xla_forward_flops(cfg, randomized(variables, 3), arch)
  assert 0.8 < inside / xla <= 1.0


# --- training ------------------------------------------------------------------------------------


def test_stages_resume_bit_identically_across_stops_and_stage_boundaries(tmp_path):
  config = lambda: load_config(MNIST_SMOKE)
  straight = DnalTrainer(config(), tmp_path / "straight")
  assert straight.lengths == (6, 6, 6)
  assert straight.run()["status"] == "completed"
  # Stops inside the weights stage, inside the arch stage (after crossing into it), exactly at
  # the arch/finetune boundary, inside fine-tuning.
  for stop in (4, 9, 12, 15):
    result = DnalTrainer(config(), tmp_path / "resumed").run(stop_at=stop)
    assert result["status"] == "stopped" and result["step"] == stop
  resumed = DnalTrainer(config(), tmp_path / "resumed")
  assert resumed.run()["status"] == "completed"
  assert int(resumed.state.step) == int(straight.state.step) == 18
  assert leaves_equal(resumed.state.params, straight.state.params)
  assert leaves_equal(resumed.state.opt_state, straight.state.opt_state)
  assert leaves_equal(resumed.state.batch_stats, straight.state.batch_stats)
  assert resumed.arch == straight.arch and resumed.arch.crop
  strip = lambda rs: [{k: v for k, v in r.items() if k != "steps_per_s"} for r in rs]
  assert strip(rows(tmp_path / "resumed", "train")) == strip(rows(tmp_path / "straight", "train"))
  # The arch stage annealed delta as specified, and the network was pruned once, at its end.
  arch_rows = [r for r in rows(tmp_path / "straight", "train") if r["stage"] == "arch"]
  for r in arch_rows:
    np.testing.assert_allclose(r["delta"], gates.delta_at(r["step"] - 7, 6), rtol=1e-6)
  pruned = [r for r in report.read_jsonl(tmp_path / "straight" / "arch.jsonl") if r["step"]]
  assert [r["step"] for r in pruned] == [12]
  assert DnalArch.from_dict(pruned[0]["dnal_arch"]) == straight.arch


@pytest.mark.parametrize("path", [VGG16, RESNET56])
def test_cifar_configs_train_every_stage_under_mock_data(path, tmp_path):
  config = load_config(f"{path}:smoke", [f"data.data_dir='{tmp_path / 'tfds'}'"])
  with tfds.testing.mock_data(num_examples=24, policy=tfds.testing.MockPolicy.USE_CODE):
    result = DnalTrainer(config, tmp_path / "run", jax.devices()[:1]).run()
  assert result["status"] == "completed" and result["stages"] == {
    "weights": 2,
    "arch": 2,
    "finetune": 2,
  }
  train = rows(tmp_path / "run", "train")
  assert [r["stage"] for r in train] == ["weights"] * 2 + ["arch"] * 2 + ["finetune"] * 2
  assert all(np.isfinite(r["loss"]) for r in train)
  assert result["macs"] <= train[0]["macs"]  # the pruned network is no larger


def test_variants_and_bad_configs():
  for path in (VGG16, RESNET56):
    assert load_config(f"{path}:dnal").dnal.lambda_a == 1e-4
    baseline = load_config(f"{path}:baseline")
    assert baseline.dnal.arch_epochs == baseline.dnal.finetune_epochs == 0
  lambdas = [load_config(f"experiments/dnal_mnist.py:{v}").dnal.lambda_a for v in
             ("lambda_1e-5", "lambda_1e-4", "lambda_5e-4")]  # fmt: skip
  assert lambdas == [1e-5, 1e-4, 5e-4]
  with pytest.raises(ValueError, match="unknown variant"):
    load_config(f"{VGG16}:nope")
  with pytest.raises(ValueError, match="config.model.depth: .* 6 n \\+ 2"):
    run_net_config(load_config(f"{RESNET56}:dnal", ["model.depth=21"]))
  with pytest.raises(ValueError, match="config.model.widths: .* must not shrink"):
    run_net_config(load_config(f"{RESNET56}:dnal", ["model.widths=(16, 8, 4)"]))


def test_cli_trains_evaluates_and_resumes_a_dnal_run(tmp_path, capsys, monkeypatch):
  workdir = str(tmp_path / "run")
  assert main(["train", "--config", MNIST_SMOKE, "--workdir", workdir]) == 0
  assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["status"] == "completed"
  assert main(["eval", "--workdir", workdir]) == 0
  metrics = json.loads(capsys.readouterr().out)
  assert metrics["network"] == "hard" and metrics["step"] == 18
  assert 0.0 <= metrics["accuracy"] <= 1.0 and metrics["macs"] > 0 and metrics["params"] > 0
  # The summary of the workdir is the pruned network eval measured.
  assert main(["summary", "--workdir", workdir, "--json", "--no-xla"]) == 0
  summary = json.loads(capsys.readouterr().out)
  assert summary["pruned"] and summary["step"] == 18 and summary["widths"] == metrics["widths"]
  assert (summary["macs"], summary["params"]) == (metrics["macs"], metrics["params"])
  # Training again on a finished workdir does nothing more; the report was drawn, with the
  # widths per stage (not the empty panel: that one is 3 inches high).
  assert main(["train", "--workdir", workdir]) == 0
  assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["step"] == 18
  assert (tmp_path / "run" / "report" / "learning_curves.png").stat().st_size > 0
  png = (tmp_path / "run" / "report" / "architecture.png").read_bytes()
  assert struct.unpack(">II", png[16:24])[1] > 3.2 * 100  # height in pixels at 100+ dpi
  # TensorBoard saw the same run: training scalars and the pruned widths per layer.
  scalars = events.read_scalars(tmp_path / "run")
  assert sorted(scalars["train/loss"]) == [r["step"] for r in rows(tmp_path / "run", "train")]
  widths = [scalars[f"arch/layer_{i}/width"] for i in range(len(metrics["widths"]))]
  assert [w[12] for w in widths] == metrics["widths"]  # pruned when the arch stage ended
  # The export is the pruned network eval measured: its Linen module, its portable program and
  # DNAL's own module on the restored checkpoint give the same logits.
  out = tmp_path / "export"
  assert main(["export", "--workdir", workdir, "--out", str(out), "--no-xla"]) == 0
  exported = json.loads(capsys.readouterr().out)
  assert exported["widths"] == metrics["widths"] and exported["macs"] == metrics["macs"]
  model, variables = load_exported(out)
  x = np.random.default_rng(0).normal(size=(3, 28, 28, 1)).astype(np.float32)
  # Reading a run opens no data: the stage lengths come from the checkpoint.
  monkeypatch.setattr(dnal_train, "split_from_config", lambda *a: pytest.fail("opened data"))
  run = restore_run(workdir)
  delta = run.config.dnal.delta_end  # the pruned network's frozen gates
  trained = build_model(run.cfg).apply(run.variables, x, run.arch, "hard", delta, train=False)
  np.testing.assert_allclose(model.apply(variables, x), trained, atol=1e-5)
  program = jax.export.deserialize((out / "model.jax_export").read_bytes())
  np.testing.assert_allclose(program.call(x), trained, atol=1e-5)
  np.save(tmp_path / "x.npy", x)
  assert main(["predict", "--model", str(out), "--input", str(tmp_path / "x.npy")]) == 0
  predicted = json.loads(capsys.readouterr().out)["predictions"]
  assert predicted == np.argmax(trained, axis=-1).tolist()


def test_baseline_trains_the_unpruned_network_alone(tmp_path):
  config = load_config(MNIST_SMOKE, ["dnal.arch_steps=0", "dnal.finetune_steps=0"])
  trainer = DnalTrainer(config, tmp_path)
  result = trainer.run()
  assert result["stages"] == {"weights": 6, "arch": 0, "finetune": 0} and result["step"] == 6
  assert trainer.arch == full_arch(trainer.cfg)
  assert trainer.checkpointer.best_step() == 6  # ranked: the weights stage is the last one
  assert [r["stage"] for r in rows(tmp_path, "val")] == ["weights"]
