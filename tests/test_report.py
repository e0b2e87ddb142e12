"""Run records and report plots: JSONL round trips, crash tolerance, resume truncation, PNGs."""

import json
import math

import numpy as np
import pytest

from dnarch_jax.interfaces import report

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


# --- a synthetic run -----------------------------------------------------------------------------


def _arch(step: int, dims: int, blocks: int = 4) -> dict:
  """A made-up architecture at ``step``: kernels grow (faster along the last axis: rectangular 2D
  kernels), widths shrink, the later blocks halve their resolution, block 2 switches off."""
  n = 784 if dims == 1 else 28

  def taps(l, d):
    grow = step // (150 - 40 * d * (dims > 1) + 20 * l)
    return min(2 * (2 + grow) + 1, n - 1 + n % 2)

  def kernel(l):
    t = [taps(l, d) for d in range(dims)]
    return {"taps": t, "route": "fft" if max(t) > 9 else "direct"}

  def block(l):
    res = n // 2 if (l >= 2 and step >= 600) or (l == 3 and step >= 300) else n
    return {
      "conv": kernel(l + 1),
      "hidden_width": 140 - 8 * l * (step // 500),
      "resolution": [res] * dims,
      "resample": res != n,
      "active": not (l == 2 and step >= 1200),
    }

  return {
    "input_size": [n] * dims,
    "stream_width": 140 - 4 * (step // 400),
    "stem": kernel(0),
    "blocks": [block(l) for l in range(blocks)],
  }


def _flops(arch: dict) -> float:
  """A stand-in cost: enough to move with the architecture."""
  total = 0.0
  for b in arch["blocks"]:
    if b["active"]:
      positions = math.prod(b["resolution"])
      taps = math.prod(np.atleast_1d(b["conv"]["taps"]))
      total += positions * (
        arch["stream_width"] * taps + 2 * arch["stream_width"] * b["hidden_width"]
      )
  return total


def fake_run(workdir, dims: int, steps: int = 2000, optional: bool = True, budget: float = 2.2e8):
  """Write metrics.jsonl and arch.jsonl the way training does (arch only when it changes)."""
  rng = np.random.default_rng(0)
  with (
    report.MetricsWriter(workdir / report.METRICS_FILE) as metrics,
    report.MetricsWriter(workdir / report.ARCH_FILE) as archs,
  ):
    metrics.write({"kind": "compile", "step": 0, "seconds": 12.5, "compiles": 1})
    last = None
    for step in range(0, steps + 1, 10):
      arch = _arch(step, dims)
      flops = _flops(arch)
      if arch != last:
        record = {"step": step, "flops": flops, "params": 1e5 + flops / 1e3, "arch": arch}
        if optional:  # what training writes: where each mask's crop changes
          steps_at = {"at": [0.2, 0.45, 0.7], "sizes": [8, 16, 24, 32]}
          record["buckets"] = {"arch_stream_cutoff": [steps_at], "block_0/conv/arch_sigma": [
            {"at": [0.05, 0.1], "sizes": [3, 5, 7]}] * dims}  # fmt: skip
        archs.write(record)
        last = arch
      loss = 2.3 * np.exp(-step / 500) + 0.05 + 0.05 * rng.random()
      line = {
        "kind": "train",
        "step": step,
        "loss": np.float32(loss),
        "task_loss": np.float32(loss * 0.97),
        "accuracy": np.float32(1 - 0.9 * np.exp(-step / 400) - 0.03 * rng.random()),
        "steps_per_s": 25.0,
      }
      if optional:
        lr = 1e-3 * min(1.0, step / 200) * 0.5 * (1 + np.cos(np.pi * step / max(steps, 1)))
        line.update(cost_ratio=flops / budget * 0.98, flops=flops, budget=budget, lr=lr)
      metrics.write(line)
      if optional:
        sigma = [0.075 + 1e-5 * step] * dims
        values = {"arch_stream_cutoff": 1.1 - step / 4000, "block_0/conv/arch_sigma": sigma}
        metrics.write({"kind": "arch_params", "step": step, "values": values})
      if step % 200 == 0:
        acc = 1 - 0.9 * np.exp(-step / 450)
        metrics.write({"kind": "val", "step": step, "accuracy": acc, "loss": 1 - acc})
    metrics.write({"kind": "test", "step": steps, "accuracy": 0.981, "loss": 0.07})


def _assert_pngs(paths, workdir):
  names = ["learning_curves.png", "cost.png", "architecture.png", "arch_params.png"]
  assert [p.name for p in paths] == names
  for p in paths:
    assert p.parent == workdir / "report"
    data = p.read_bytes()
    assert len(data) > 5000 and data.startswith(PNG_MAGIC)


# --- JSONL -------------------------------------------------------------------------------------


def test_round_trip_converts_numpy_scalars_and_arrays(tmp_path):
  path = tmp_path / "sub" / "m.jsonl"
  record = {
    "step": np.int64(3),
    "loss": np.float32(0.5),
    "ok": np.bool_(True),
    "taps": np.array([5, 7]),
    "scalar": np.array(2.5),
    "size": (28, 28),
  }
  with report.MetricsWriter(path) as w:
    w.write(record)
    w.write({"step": 4, "loss": 0.25})
  rows = report.read_jsonl(path)
  assert rows == [
    {"step": 3, "loss": 0.5, "ok": True, "taps": [5, 7], "scalar": 2.5, "size": [28, 28]},
    {"step": 4, "loss": 0.25},
  ]
  assert type(rows[0]["step"]) is int and type(rows[0]["loss"]) is float


def test_writer_flushes_each_line_and_appends_on_reopen(tmp_path):
  path = tmp_path / "m.jsonl"
  w = report.MetricsWriter(path)
  w.write({"step": 1})
  assert report.read_jsonl(path) == [{"step": 1}]  # visible before close
  w.close()
  with report.MetricsWriter(path) as w:
    w.write({"step": 2})
  assert [r["step"] for r in report.read_jsonl(path)] == [1, 2]
  with pytest.raises(ValueError, match="closed"):
    w.write({"step": 3})


def test_truncated_last_line_is_tolerated_and_repaired_on_reopen(tmp_path):
  path = tmp_path / "m.jsonl"
  path.write_text('{"step": 1, "loss": 0.5}\n{"step": 2, "lo')  # crash mid-write
  assert report.read_jsonl(path) == [{"step": 1, "loss": 0.5}]
  with report.MetricsWriter(path) as w:  # the resumed run must not glue onto the broken tail
    w.write({"step": 2, "loss": 0.4})
  assert report.read_jsonl(path) == [{"step": 1, "loss": 0.5}, {"step": 2, "loss": 0.4}]
  path.write_text('{"step": 1}\n{"step": 2}')  # complete record, only the newline missing
  with report.MetricsWriter(path) as w:
    w.write({"step": 3})
  assert [r["step"] for r in report.read_jsonl(path)] == [1, 2, 3]
  assert report.read_jsonl(tmp_path / "missing.jsonl") == []


def test_broken_middle_line_warns_and_is_skipped(tmp_path):
  path = tmp_path / "m.jsonl"
  path.write_text('{"step": 1}\nnot json\n{"step": 2}\n')
  with pytest.warns(UserWarning, match="m.jsonl:2"):
    assert [r["step"] for r in report.read_jsonl(path)] == [1, 2]


def test_truncate_after_drops_future_steps_only(tmp_path):
  path = tmp_path / "m.jsonl"
  lines = [
    '{"kind": "compile", "step": 0, "seconds": 3.0}',
    '{"kind": "train", "step": 10, "loss": 1.0}',
    '{"note": "no step"}',
    '{"kind": "val", "step": 20, "accuracy": 0.5}',
    '{"kind": "train", "step": 30, "loss": 0.5}',
  ]
  path.write_text("\n".join(lines) + '\n{"step": 40, "lo')
  report.truncate_after(path, 20)
  assert path.read_text() == "\n".join(lines[:4]) + "\n"  # kept lines byte for byte
  report.truncate_after(path, 5)
  assert [r.get("step") for r in report.read_jsonl(path)] == [0, None]
  report.truncate_after(tmp_path / "missing.jsonl", 0)  # nothing to do


def test_resume_truncates_under_an_open_writer(tmp_path):
  """The trainer opens its writers, then truncates to the restored checkpoint's step."""
  path = tmp_path / "m.jsonl"
  with report.MetricsWriter(path) as w:
    for step in range(0, 50, 10):
      w.write({"kind": "train", "step": step})
  with report.MetricsWriter(path) as w:
    report.truncate_after(path, 20)
    w.write({"kind": "train", "step": 30, "resumed": True})
  assert [(r["step"], "resumed" in r) for r in report.read_jsonl(path)] == [
    (0, False),
    (10, False),
    (20, False),
    (30, True),
  ]


# --- architecture text -------------------------------------------------------------------------


def test_architecture_text_one_line_per_layer():
  conv = lambda taps, route="direct": {"taps": taps, "route": route}
  block = lambda taps, hidden, res, active=True: {
    "conv": conv(taps, "fft"),
    "hidden_width": hidden,
    "resolution": res,
    "resample": res != [28, 28],
    "active": active,
  }
  arch = {
    "input_size": [28, 28],
    "stream_width": 128,
    "stem": conv([5, 9]),
    "blocks": [block([9, 25], 140, [28, 28]), block([7, 7], 96, [14, 14], active=False)],
  }
  assert report.architecture_text(arch).splitlines() == [
    "input 28x28, stream width 128, depth 1 of 2 blocks",
    "stem     taps 5x9        route direct",
    "block 0  taps 9x25       hidden 140  res 28x28     route fft",
    "block 1  off  (taps 7x7, hidden 96, res 14x14)",
  ]
  one_d = report.architecture_text(_arch(0, dims=1))
  assert "taps 5 " in one_d and "res 784" in one_d


# --- the report --------------------------------------------------------------------------------


@pytest.mark.parametrize("dims", [1, 2])
def test_write_report_on_synthetic_runs(tmp_path, dims):
  fake_run(tmp_path, dims)
  _assert_pngs(report.write_report(tmp_path), tmp_path)


def test_write_report_without_optional_keys_and_a_single_arch_record(tmp_path):
  fake_run(tmp_path, dims=2, steps=0, optional=False)
  assert len(report.read_jsonl(tmp_path / report.ARCH_FILE)) == 1
  _assert_pngs(report.write_report(tmp_path, budget=2e7), tmp_path)


def test_write_report_from_arch_records_alone(tmp_path):
  arch = _arch(0, dims=1)
  (tmp_path / report.ARCH_FILE).write_text(json.dumps({"step": 0, "arch": arch}) + "\n")
  _assert_pngs(report.write_report(tmp_path, budget_metric="params"), tmp_path)


def test_write_report_errors_name_the_problem(tmp_path):
  with pytest.raises(FileNotFoundError, match="metrics.jsonl"):
    report.write_report(tmp_path)
  fake_run(tmp_path, dims=1, steps=20)
  with pytest.raises(ValueError, match="budget_metric"):
    report.write_report(tmp_path, budget_metric="latency")
