"""The native (C++, XLA FFI) conv routes, direct and FFT: built, exact, composable, sharded,
chosen, counted."""

import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding, PartitionSpec
from test_conv import inputs, reference, rel_err

from dnarch_jax.config import load_config
from dnarch_jax.interfaces.summary import xla_forward_flops
from dnarch_jax.method.arch import compute_arch
from dnarch_jax.method.arch_params import initial_arch_params
from dnarch_jax.network import conv, conv_flops, conv_routes, native
from dnarch_jax.network.model import init_variables
from dnarch_jax.run.experiment import run_model_config


def test_the_kernels_are_built_and_load():
  # pip install compiles them (setup.py); a missing compiler would silently cost the speed.
  assert native.available()


def _conv(route, causal):
  return lambda x, k: conv.depthwise_conv(x, k, causal=causal, route=route)


NATIVE = ("native", "native_fft")


@pytest.mark.parametrize("route", NATIVE)
@pytest.mark.parametrize(
  "spatial, taps, causal, channels, batch",
  [
    ((37,), (9,), True, 13, 1),  # one example: the tasks split the channels instead
    ((37,), (9,), False, 17, 3),
    ((300,), (300,), True, 33, 2),  # FFT size 1024: radix-4 stages only
    ((200,), (151,), False, 16, 2),  # 512: one radix-2 stage first
    ((1,), (1,), True, 3, 2),  # FFT size 2
    ((9, 11), (5, 3), False, 19, 2),  # 2D: "native_fft" runs as "fft"
    ((5, 6), (9, 11), False, 8, 4),  # a kernel larger than the image
  ],
)
def test_matches_direct_with_gradients(route, spatial, taps, causal, channels, batch):
  rng = np.random.default_rng(3)
  x = rng.standard_normal((batch, *spatial, channels)).astype(np.float32)
  k = rng.standard_normal((*taps, channels)).astype(np.float32)
  g = rng.standard_normal(x.shape).astype(np.float32)

  def value_and_grads(route):
    y, vjp = jax.vjp(jax.jit(_conv(route, causal)), x, k)
    return (y, *vjp(g))

  for a, b in zip(value_and_grads(route), value_and_grads("direct"), strict=True):
    assert rel_err(a, b) < 1e-5


@pytest.mark.parametrize("route", NATIVE)
def test_under_vmap_and_vmap_of_grad(route):
  spatial, taps, causal = (40,), (9,), True
  x, k, _ = inputs(spatial, taps, seed=4)
  f = _conv(route, causal)
  xs, ks = np.stack([x, 2 * x]), np.stack([k, -k])
  ys = jax.jit(jax.vmap(f))(xs, ks)
  assert rel_err(ys, np.stack([reference(x, k, causal), -2 * reference(x, k, causal)])) < 1e-5
  loss = lambda route: jax.grad(lambda x, k: jnp.sum(_conv(route, causal)(x, k) ** 2), (0, 1))
  per = jax.jit(jax.vmap(loss(route)))(xs, ks)
  ref = jax.vmap(loss("direct"))(xs, ks)
  for a, b in zip(per, ref, strict=True):
    assert rel_err(a, b) < 1e-5


@pytest.mark.parametrize(
  "route, spatial, taps",
  [("native", (30,), (7,)), ("native_fft", (30,), (30,)), ("native", (6, 5), (3, 3))],
)
def test_batch_sharded_over_eight_devices_runs_per_shard_and_matches_one(route, spatial, taps):
  assert jax.device_count() == 8
  causal = len(spatial) == 1
  x, k, g = inputs(spatial, taps, seed=5, batch=16)
  loss = lambda x, k, g: jnp.sum(_conv(route, causal)(x, k) * g)
  mesh = jax.make_mesh((8,), ("data",))
  shard = lambda a: jax.device_put(a, NamedSharding(mesh, PartitionSpec("data")))
  grad = jax.jit(jax.value_and_grad(loss, (0, 1)))
  (value, grads), (value_1, grads_1) = grad(shard(x), k, shard(g)), grad(x, k, g)
  assert rel_err(value, value_1) < 1e-5  # the loss: the same sum in another order
  for a, b in zip(grads, grads_1, strict=True):
    assert rel_err(a, b) < 1e-6
  # Each device ran its own 2 examples (no gather of the batch in front of the calls), and the
  # kernel gradient was summed over the devices.
  hlo = grad.lower(shard(x), k, shard(g)).compile().as_text()
  calls = [line for line in hlo.splitlines() if 'custom_call_target="dnarch_dwconv' in line]
  assert len(calls) == 3  # forward, dx, dk
  assert all(
    "custom-call(" in line and f"f32[2,{','.join(map(str, spatial))}," in line for line in calls
  )
  assert "all-gather" not in hlo and "all-reduce" in hlo


def test_bfloat16_runs_the_float32_kernel_on_converted_inputs():
  x, k, _ = inputs((30,), (7,), seed=6)
  x, k = jnp.asarray(x, jnp.bfloat16), jnp.asarray(k, jnp.bfloat16)
  y = jax.jit(_conv("native", True))(x, k)
  assert y.dtype == jnp.bfloat16
  f32 = jax.jit(_conv("native", True))(x.astype(jnp.float32), k.astype(jnp.float32))
  np.testing.assert_array_equal(y, f32.astype(jnp.bfloat16))


def test_native_fft_runs_2d_as_fft():
  x, k, _ = inputs((12, 10), (5, 5), seed=6)
  y = jax.jit(_conv("native_fft", False))(x, k)
  np.testing.assert_array_equal(y, jax.jit(_conv("fft", False))(x, k))


@pytest.mark.parametrize("causal", [True, False])
def test_fft_of_a_kernel_longer_than_twice_the_input_matches_direct(causal):
  # conv crops such kernels first. Called directly, the FFT's size (16 + 5 -> 32) is below the
  # 33 taps, so two lags share a slot; both must be out of reach and add nothing.
  rng = np.random.default_rng(7)
  x, g = rng.standard_normal((2, 2, 5, 16)).astype(np.float32)
  k = rng.standard_normal((33, 16)).astype(np.float32)
  pads = ((32, 0),) if causal else ((16, 16),)
  for fft in (False, True):
    got = (
      native.depthwise_forward(x, k, pads, fft),
      native.depthwise_kernel_grad(x, g, (33,), pads, fft),
    )
    if not fft:
      want = got
  for a, b in zip(got, want, strict=True):
    assert rel_err(a, b) < 1e-5


def test_fft_is_1d_only():
  with pytest.raises(ValueError, match="1D only"):
    native.depthwise_forward(jnp.zeros((1, 4, 4, 8)), jnp.zeros((3, 3, 8)), ((1, 1),) * 2, True)


def test_auto_picks_the_native_routes():
  pick = lambda spatial, taps: conv_routes.resolve_route(spatial, taps, 140, 100, len(spatial) == 1)
  assert pick((784,), (65,)) == "native"
  assert pick((784,), (257,)) == "native"  # FFT size 2048: about equal, the direct one
  assert pick((784,), (129,)) == "native_fft"  # FFT size 1024: about equal, the FFT
  assert pick((784,), (784,)) == "native_fft"
  assert pick((32, 32), (17, 17)) == "native"
  assert pick((32, 32), (33, 33)) == "fft"


def test_flops_count_native_routes_as_their_xla_twins():
  for spatial, taps, causal in [((784,), (65,), True), ((32, 32), (5, 5), False)]:
    args = (spatial, taps, 140, 64, causal)
    for route, twin in (("native", "shift"), ("native_fft", "fft")):
      assert conv_flops.route_flops(*args, route) == conv_flops.route_flops(*args, twin)
      assert conv_flops.route_cost(*args, route) == conv_flops.route_cost(*args, twin)
  # The summary's XLA count compiles native layers as shift: the same count either way.
  config = load_config("experiments/smnist.py:smoke")
  cfg = run_model_config(config)
  variables = init_variables(cfg, jax.random.key(0))
  arch = compute_arch(initial_arch_params(cfg), cfg, 4)
  on = lambda route: arch.with_conv_routes(lambda _: route)
  assert on("native") != on("shift")
  native_count = xla_forward_flops(cfg, variables, on("native"), 4)
  assert native_count == xla_forward_flops(cfg, variables, on("shift"), 4) > 0


_CACHE_SCRIPT = """
import sys
import jax, numpy as np
from jax.sharding import NamedSharding, PartitionSpec
from dnarch_jax.network import conv
from dnarch_jax.run import sharding
sharding.enable_compilation_cache(sys.argv[1])
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
hits = []
jax.monitoring.register_event_listener(
  lambda event, **_: hits.append(1) if event == "/jax/compilation_cache/cache_hits" else None
)
mesh = jax.make_mesh((8,), ("data",))
x = jax.device_put(np.ones((16, 30, 8), np.float32), NamedSharding(mesh, PartitionSpec("data")))
causal = sys.argv[2] == "causal"
f = jax.jit(lambda x, k: conv.depthwise_conv(x, k, causal=causal, route="native"))
y = np.asarray(f(x, np.arange(56, dtype=np.float32).reshape(7, 8)))
print(len(hits), float(y[0, 0, 0]))
"""


def test_sharded_native_calls_are_served_by_the_persistent_cache_across_processes(tmp_path):
  # JAX keys custom_partitioning ops by a per-process pointer; dnarch's cache leaves it out, and
  # the ops' static arguments (here causal vs centred pads, same shapes) keep programs apart.
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8")
  run = lambda pads: subprocess.run(
    [sys.executable, "-c", _CACHE_SCRIPT, str(tmp_path), pads],
    env=env,
    capture_output=True,
    text=True,
    check=True,
  ).stdout.split()
  first, again, other = run("causal"), run("causal"), run("centred")
  assert (first[0], again[0], other[0]) == ("0", "1", "0")
  assert first[1] == again[1] != other[1]  # the centred program computed its own output
