"""Forward pass and full training step of CCNN-4,140, cropped and uncropped.

A training step is forward, cross-entropy plus CCNN's L2-norm regulariser, backward and the AdamW
update, jitted as ``dnarch train`` runs it. Shapes: sMNIST (batch 100, length 784, causal) and
CIFAR10 (batch 64, 32x32x3). "crop" is the initial architecture (kernels cropped at sigma 0.075:
65 taps on sMNIST, 5x5 on CIFAR10), "full" the uncropped kernels (784 taps; 33x33).

Each case runs in its own process, so ``peak_mib`` (the process's peak resident memory, compile
included) belongs to that case alone. Prints one JSON object per line:
``{"case", "mode", "dtype", "median_ms", "runs", "peak_mib", "xla_temp_mib", "flops_per_example",
"routes", "device"}`` (``xla_temp_mib``: XLA's temporary buffers for one call, from the compiled
program's memory analysis). On an accelerator the line adds ``peak_device_mib`` (the device
allocator's peak), ``model_flops_per_step`` (the cost model's FLOPs for the whole batch: 1x the
forward pass for ``fwd``, 3x for ``train``: backward is twice the forward) and, with
``--peak_tflops``, ``mfu`` = model FLOPs per second over that peak.

    python benchmarks/step.py [--runs 5] [--case smnist_4_140_crop ...] [--mode fwd train]
                              [--dtype float32 bfloat16] [--no-remat] [--peak_tflops T]

``--dtype`` sets ``ModelConfig.compute_dtype`` (each dtype its own process). ``--no-remat`` runs
the model with ``remat=False``: every activation kept for the backward pass instead of the
default's recomputation of the elementwise ones (``ModelConfig.remat``).
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time

CASES = ("smnist_4_140_crop", "smnist_4_140_full", "cifar10_4_140_crop", "cifar10_4_140_full")


def model_and_batch(case: str, remat: bool = True, dtype: str = "float32"):
  from dnarch_jax.config import learn, model_block, model_config

  if case.startswith("smnist"):
    block = model_block("4_140", omega_0=2976.49, dropout=0.1, causal=True, kernel_grid=0)
    shape, batch = (784, 1), 100
  elif case.startswith("mnist"):  # experiments/mnist.py's shapes (benchmarks/input_pipeline.py)
    block = model_block("4_140", omega_0=4231.57, dropout=0.1, causal=False, kernel_grid=29)
    shape, batch = (28, 28, 1), 64
  else:
    block = model_block("4_140", omega_0=4231.57, dropout=0.1, causal=False, kernel_grid=33)
    shape, batch = (32, 32, 3), 64
  learn(block, "kernel")  # CCNN-4,140 as CCNN runs it: FlexConv's learned kernel size
  block.remat = remat
  block.compute_dtype = dtype
  return model_config(block.to_dict(), shape, 10), batch


def build(case: str, mode: str, remat: bool = True, dtype: str = "float32"):
  """``(call, lower, arch, cfg, batch_size)`` for one case: ``call()`` runs one forward pass
  (``fwd``) or one training step (``train``, updating its own state) and waits for it;
  ``lower()`` lowers the same computation (not held in memory while the case runs)."""
  import jax
  import jax.numpy as jnp

  from dnarch_jax.method.arch import initial_arch
  from dnarch_jax.network.model import DNArchCCNN, init_variables
  from dnarch_jax.run.optim import make_optimizer
  from dnarch_jax.run.steps import LossConfig, create_train_state, make_train_step

  cfg, batch_size = model_and_batch(case, remat, dtype)
  arch = initial_arch(cfg, batch_size, crop=case.endswith("crop"))
  variables = init_variables(cfg, jax.random.key(0))
  x = jax.random.normal(jax.random.key(1), (batch_size, *cfg.input_size, cfg.in_channels))
  y = jnp.arange(batch_size) % cfg.num_classes
  if mode == "fwd":
    model = DNArchCCNN(cfg)
    fn = jax.jit(lambda v, x: model.apply(v, x, arch, train=False))
    call = lambda: fn(variables, x).block_until_ready()
    return call, lambda: fn.lower(variables, x), arch, cfg, batch_size
  optim = dict(lr=0.01, weight_decay=1e-6, warmup_epochs=1.0, arch_lr_factor=1.0)
  optim["l2_regulariser"] = True
  tx = make_optimizer(optim, variables["params"], total_steps=1000, steps_per_epoch=100)
  step = make_train_step(cfg, tx, LossConfig(l2_weight=1e-6, cost_batch_size=batch_size))
  holder = {"state": create_train_state(variables, tx, jax.random.key(2))}
  batch = {"input": x, "label": y}

  def call():
    holder["state"], metrics = step(holder["state"], batch, arch)
    jax.block_until_ready(metrics)

  return call, lambda: step.lower(holder["state"], batch, arch), arch, cfg, batch_size


def run_case(
  case: str, mode: str, runs: int, remat: bool = True, dtype: str = "float32", peak_tflops=None
) -> dict:
  import jax

  from dnarch_jax.run import hostmem
  from dnarch_jax.run.steps import flops_and_params

  call, lower, arch, cfg, batch_size = build(case, mode, remat, dtype)
  compiled = lower().compile()  # as `dnarch train` compiles: ahead of the first call, then trim
  hostmem.trim()
  call()  # first call (finds the compiled step in jit's cache)
  call()  # warm
  times = []
  for _ in range(runs):
    t0 = time.perf_counter()
    call()
    times.append((time.perf_counter() - t0) * 1e3)
  peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
  # XLA's own buffers for one call (temporaries: activations kept for the backward pass etc.),
  # beside the process's resident peak, which adds the runtime, the compiler and the allocator.
  memory = compiled.memory_analysis()
  routes = [arch.stem.route] + [b.conv.route for b in arch.blocks]
  flops_per_example = flops_and_params(arch, cfg, batch_size)["flops"]
  median_ms = statistics.median(times)
  line = dict(
    case=case,
    mode=mode,
    dtype=dtype,
    remat=remat,
    median_ms=round(median_ms, 1),
    runs=runs,
    min_ms=round(min(times), 1),
    peak_mib=round(peak_mib, 1),
    xla_temp_mib=round(memory.temp_size_in_bytes / 2**20, 1),
    flops_per_example=flops_per_example,
    taps=list(arch.blocks[0].conv.taps),
    routes=routes,
    device=str(jax.devices()[0].device_kind),
  )
  device_stats = jax.devices()[0].memory_stats()  # None on the CPU
  if device_stats and "peak_bytes_in_use" in device_stats:
    line["peak_device_mib"] = round(device_stats["peak_bytes_in_use"] / 2**20, 1)
  model_flops = flops_per_example * batch_size * (3 if mode == "train" else 1)
  line["model_flops_per_step"] = model_flops
  if peak_tflops:
    line["peak_tflops"] = peak_tflops
    line["mfu"] = round(model_flops / (median_ms / 1e3) / (peak_tflops * 1e12), 4)
  return line


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--case", nargs="*", default=list(CASES), choices=CASES)
  parser.add_argument("--mode", nargs="*", default=["fwd", "train"], choices=["fwd", "train"])
  parser.add_argument("--runs", type=int, default=5)
  parser.add_argument("--dtype", nargs="*", default=["float32"], choices=["float32", "bfloat16"])
  parser.add_argument(
    "--peak_tflops",
    type=float,
    help="the chip's stated peak (dense TFLOP/s in the dtype measured) for the mfu field",
  )
  parser.add_argument(
    "--no-remat", dest="remat", action="store_false", help="keep every activation for backward"
  )
  parser.add_argument("--child", nargs=3, metavar=("CASE", "MODE", "DTYPE"), help=argparse.SUPPRESS)
  args = parser.parse_args()
  from dnarch_jax.run import hostmem

  hostmem.reexec_with_huge_pages([__file__, *sys.argv[1:]])  # as `dnarch` runs on the CPU
  if args.child:
    case, mode, dtype = args.child
    line = run_case(case, mode, args.runs, args.remat, dtype, args.peak_tflops)
    print(json.dumps(line), flush=True)
    return
  for case in args.case:
    for mode in args.mode:
      for dtype in args.dtype:
        cmd = [sys.executable, __file__, "--child", case, mode, dtype, "--runs", str(args.runs)]
        cmd += [] if args.remat else ["--no-remat"]
        cmd += ["--peak_tflops", str(args.peak_tflops)] if args.peak_tflops else []
        out = subprocess.run(cmd, capture_output=True, text=True)
        if out.returncode:
          error = out.stderr.strip()[-2000:]
          print(json.dumps(dict(case=case, mode=mode, dtype=dtype, error=error)), flush=True)
        else:
          print(out.stdout.strip().splitlines()[-1], flush=True)


if __name__ == "__main__":
  main()
