"""Time every depthwise-conv route, forward and forward+backward, and print one JSON per line.

    python benchmarks/conv_routes.py [--quick] [--routes fft,shift] [--cases smnist,cifar]
                                     [--dtype float32|bfloat16]

Shapes: sMNIST-like (B=100, L=784, C=140, causal; taps 65/129/257/784) and CIFAR-like (B=64,
32x32, C=140, centred; taps 5/9/17/33), each also at half resolution (L=392; 16x16). A line:
{"route", "shape", "taps", "mode": "fwd"|"fwd_bwd", "dtype", "device", "auto", "median_ms",
"min_ms", "runs", "others_cores"} where fwd_bwd is the gradient of sum(y * g) w.r.t. x and the
kernel, the median is over >= 5 runs after compilation, ``auto`` is the route the "auto" rule
picks for that shape on this backend, and others_cores is the average CPU load of other
processes meanwhile (the machine is shared: rerun a line that was measured under load). The
"auto" rule in dnarch_jax/network/conv.py is derived from these numbers.

The same script runs on a GPU or TPU (one command, JSON to stdout): there the native routes
(XLA:CPU custom calls) are skipped and the direct route (the backend's grouped convolution) has
no size limit. ``--dtype bfloat16`` times the routes on bfloat16 activations (float32 kernels,
as ``ModelConfig.compute_dtype="bfloat16"`` runs them).
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import time

import jax
import jax.numpy as jnp
import numpy as np

from dnarch_jax.method import grids
from dnarch_jax.network import conv, conv_routes
from dnarch_jax.network.conv_routes import resolve_route as resolve

CASES = {
  "smnist": ((100, (784,), 140, True), (65, 129, 257, 784)),
  "smnist_half": ((100, (392,), 140, True), (65, 129, 257, 784)),
  "cifar": ((64, (32, 32), 140, False), (5, 9, 17, 33)),
  "cifar_half": ((64, (16, 16), 140, False), (5, 9, 17, 33)),
}
QUICK = {"smnist": (65, 784), "smnist_half": (65,), "cifar": (5, 33), "cifar_half": (5,)}
# XLA:CPU's grouped conv is dense C-times over: beyond this many kernel positions one run of the
# direct route takes tens of seconds, so it is skipped (and says so).
DIRECT_MAX_POSITIONS = 100
SHIFT_MAX_POSITIONS = 300  # compile time of the unrolled shift-and-add grows with the taps


def _busy_ticks() -> int:
  with open("/proc/stat") as f:
    v = [int(a) for a in f.readline().split()[1:]]
  return v[0] + v[1] + v[2] + v[5] + v[6]


def _self_seconds() -> float:
  t = os.times()
  return t.user + t.system


def _conv(x, k, *, causal, route):
  return conv.depthwise_conv(x, k, causal=causal, route=route)


def _loss(conv_fn, x, k, g):
  return jnp.sum(conv_fn(x, k) * g)


def measure(fn, args, runs: int) -> dict:
  jax.block_until_ready(fn(*args))  # compile + warm up
  ticks0, self0, wall0 = _busy_ticks(), _self_seconds(), time.perf_counter()
  times = []
  for _ in range(runs):
    t = time.perf_counter()
    jax.block_until_ready(fn(*args))
    times.append(time.perf_counter() - t)
  wall = time.perf_counter() - wall0
  others = ((_busy_ticks() - ticks0) / os.sysconf("SC_CLK_TCK") - (_self_seconds() - self0)) / wall
  return {
    "median_ms": round(1e3 * float(np.median(times)), 2),
    "min_ms": round(1e3 * min(times), 2),
    "runs": runs,
    "others_cores": round(max(others, 0.0), 2),
  }


def skip_reason(route: str, positions: int) -> str | None:
  """Why a route is not timed at this size on this backend (``None``: it is timed)."""
  on_cpu = jax.default_backend() == "cpu"
  if route.startswith("native") and not on_cpu:
    return f"route {route} is an XLA:CPU custom call; this backend is {jax.default_backend()}"
  limits = {"shift": SHIFT_MAX_POSITIONS} | ({"direct": DIRECT_MAX_POSITIONS} if on_cpu else {})
  limit = limits.get(route)
  if limit is not None and positions > limit:
    return f"{positions} kernel positions > {limit} for route {route}"
  return None


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--quick", action="store_true", help="a few shapes, 5 runs")
  p.add_argument("--routes", default=",".join(conv_routes.ROUTES))
  p.add_argument("--cases", default=",".join(CASES))
  p.add_argument("--taps", default="", help="comma-separated subset of each case's taps")
  p.add_argument("--runs", type=int, default=7)
  p.add_argument("--modes", default="fwd,fwd_bwd")
  p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
  args = p.parse_args()
  device = str(jax.devices()[0].device_kind)
  runs = 5 if args.quick else max(args.runs, 5)
  rng = np.random.default_rng(0)
  for case in args.cases.split(","):
    (batch, spatial, channels, causal), taps_list = CASES[case]
    if args.quick:
      taps_list = QUICK[case]
    if args.taps:
      taps_list = [t for t in taps_list if str(t) in args.taps.split(",")]
    shape = "x".join(str(s) for s in (batch, *spatial, channels))
    x = jnp.asarray(rng.standard_normal((batch, *spatial, channels)), args.dtype)
    g = jnp.asarray(rng.standard_normal((batch, *spatial, channels)), args.dtype)
    for t in taps_list:
      taps = (t,) * len(spatial)
      k = jnp.asarray(rng.standard_normal((*taps, channels)) / t, jnp.float32)
      positions = int(np.prod(grids.cropped_taps(spatial, taps, causal)))
      auto = conv_routes.resolve_route(spatial, taps, channels, batch, causal)
      for route in args.routes.split(","):
        conv_fn = functools.partial(_conv, causal=causal, route=route)
        fns = {
          "fwd": (jax.jit(conv_fn), (x, k)),
          "fwd_bwd": (
            jax.jit(jax.grad(functools.partial(_loss, conv_fn), argnums=(0, 1))),
            (x, k, g),
          ),
        }
        for mode in args.modes.split(","):
          line = {"route": route, "shape": shape, "taps": t, "mode": mode, "dtype": args.dtype}
          line |= {"device": device, "auto": auto}
          if reason := skip_reason(route, positions):
            line["skipped"] = reason
          else:
            line["resolved"] = resolve(spatial, taps, channels, batch, causal, route)
            line.update(measure(*fns[mode], runs))
          print(json.dumps(line), flush=True)


if __name__ == "__main__":
  main()
