"""TensorBoard event files: what is written reads back, a resume hides what it will replay."""

import struct

import numpy as np

from dnarch_jax.interfaces import events
from dnarch_jax.interfaces.report import MetricsWriter


def _arch_record(step, hidden):
  block = dict(conv=dict(taps=[3, 5]), hidden_width=hidden, resolution=[18, 16], active=True)
  arch = dict(input_size=[28, 28], stem=dict(taps=[5, 5]), stream_width=32, blocks=[block])
  return dict(step=step, flops=1e6 + step, params=100.0, cost_soft=1e6, budget=2e6, arch=arch)


def test_records_read_back_and_a_resume_hides_the_steps_it_replays(tmp_path):
  metrics = MetricsWriter(tmp_path / "metrics.jsonl")
  archs = MetricsWriter(tmp_path / "arch.jsonl")
  log = events.EventLog(tmp_path)
  metrics.mirror, archs.mirror = log.metrics_record, log.arch_record
  archs.write(_arch_record(0, 60))
  for step in (10, 20, 30):  # the run is cut off after a checkpoint at step 20
    metrics.write(dict(kind="train", step=step, loss=1.0 / step, flops=1e6, budget=2e6))
  metrics.write(dict(kind="val", step=20, accuracy=0.5, loss=0.7))
  metrics.write(dict(kind="arch_params", step=20, values={"block_0/arch_hidden_cutoff": 0.25}))
  log.close()

  resumed = events.EventLog(tmp_path, purge_step=21)
  resumed.metrics_record(dict(kind="train", step=30, loss=0.01, flops=1e6, budget=2e6))
  resumed.arch_record(_arch_record(30, 56))
  resumed.close()

  scalars = events.read_scalars(tmp_path)
  # float32 in the event files
  np.testing.assert_allclose(list(scalars["train/loss"].values()), [0.1, 0.05, 0.01], rtol=1e-6)
  assert list(scalars["train/loss"]) == [10, 20, 30]
  assert scalars["val/accuracy"] == {20: 0.5}
  assert scalars["cost/over_budget"] == {10: 0.5, 20: 0.5, 30: 0.5}
  assert scalars["arch_params/block_0/arch_hidden_cutoff"] == {20: 0.25}
  assert scalars["arch/block_0/hidden"] == {0: 60.0, 30: 56.0}
  assert scalars["arch/stem/kernel_0"] == {0: 5.0, 30: 5.0}
  assert scalars["arch/block_0/kernel_1"] == {0: 5.0, 30: 5.0}
  assert scalars["arch/block_0/resolution_1"] == {0: 16.0, 30: 16.0}
  assert scalars["arch/budget"] == {0: 2e6, 30: 2e6}
  assert len(list(tmp_path.glob("events.out.tfevents.*"))) == 2  # the resume kept the first file


def test_report_images_are_stored_as_the_pngs_themselves(tmp_path):
  png = tmp_path / "cost.png"
  # The smallest valid PNG header events.images reads (signature, IHDR length/type, 3x2 pixels).
  png.write_bytes(b"\x89PNG\r\n\x1a\n" + struct.pack(">I4sII", 13, b"IHDR", 3, 2) + b"\0" * 9)
  log = events.EventLog(tmp_path / "tb")
  log.images([png], step=7)
  log.close()
  (image,) = [v for e in events.read_events(tmp_path / "tb") for v in e.summary.value]
  assert image.tag == "report/cost" and (image.image.width, image.image.height) == (3, 2)
  assert image.image.encoded_image_string == png.read_bytes()
