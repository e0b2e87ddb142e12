"""Depthwise conv routes: float64 reference, gradients, XLA flop counts, transforms, errors."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dnarch_jax.network import conv, conv_flops, conv_routes

ROUTES = conv_routes.ROUTES
# Routes whose work XLA's cost analysis sees ("native" is an FFI call it counts as 0).
XLA_ROUTES = ("direct", "fft", "shift")

# (spatial, taps, causal): 1D causal incl. a 1-tap and larger-than-input kernels, 1D centred,
# 2D centred incl. unequal taps and a kernel larger than the image on both axes.
CASES = [
  ((50,), (1,), True),
  ((50,), (7,), True),
  ((50,), (50,), True),
  ((50,), (64,), True),
  ((50,), (1,), False),
  ((50,), (5,), False),
  ((50,), (61,), False),
  ((16, 12), (5, 5), False),
  ((16, 12), (3, 9), False),
  ((16, 12), (33, 33), False),
]
BATCH, CHANNELS = 2, 6


def reference(x, kernel, causal):
  """y[i] = sum_j k[j] x[i + j - lo] in float64: pad once, add up shifted slices."""
  x, kernel = np.asarray(x, np.float64), np.asarray(kernel, np.float64)
  spatial, taps = x.shape[1:-1], kernel.shape[:-1]
  lo = [t - 1 if causal else (t - 1) // 2 for t in taps]
  x_pad = np.pad(x, [(0, 0)] + [(a, t - 1 - a) for a, t in zip(lo, taps, strict=True)] + [(0, 0)])
  window = lambda j: (
    (slice(None),) + tuple(slice(o, o + s) for o, s in zip(j, spatial, strict=True))
  )
  return sum(kernel[j] * x_pad[window(j)] for j in np.ndindex(*taps))


def rel_err(a, b):
  return float(jnp.linalg.norm(jnp.asarray(a) - b) / jnp.linalg.norm(b))


def inputs(spatial, taps, seed=0, batch=BATCH):
  rng = np.random.default_rng(seed)
  x = rng.standard_normal((batch, *spatial, CHANNELS)).astype(np.float32)
  k = rng.standard_normal((*taps, CHANNELS)).astype(np.float32)
  g = rng.standard_normal((batch, *spatial, CHANNELS)).astype(np.float32)
  return x, k, g


def case_id(case):
  spatial, taps, causal = case
  return (
    f"{'x'.join(map(str, spatial))}-{'x'.join(map(str, taps))}-{'causal' if causal else 'centred'}"
  )


@pytest.mark.parametrize("route", ROUTES)
@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_route_matches_float64_reference(case, route):
  spatial, taps, causal = case
  x, k, _ = inputs(spatial, taps)
  y = jax.jit(lambda x, k: conv.depthwise_conv(x, k, causal=causal, route=route))(x, k)
  chex.assert_shape(y, x.shape)
  assert rel_err(y, reference(x, k, causal)) < 1e-4


@pytest.mark.parametrize("route", ("fft", "shift", "native", "native_fft"))
@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_gradients_match_direct(case, route):
  spatial, taps, causal = case
  x, k, g = inputs(spatial, taps, seed=1)

  def grads(r):
    loss = lambda x, k: jnp.sum(conv.depthwise_conv(x, k, causal=causal, route=r) * g)
    return jax.jit(jax.grad(loss, argnums=(0, 1)))(x, k)

  (dx, dk), (dx_ref, dk_ref) = grads(route), grads("direct")
  assert rel_err(dx, dx_ref) < 1e-4
  assert rel_err(dk, dk_ref) < 1e-4


@pytest.mark.parametrize("route", ("fft", "shift"))
@pytest.mark.parametrize("case", [CASES[1], CASES[7]], ids=case_id)
def test_batches_in_several_chunks_match_direct(case, route, monkeypatch):
  """Batches larger than a chunk (forward: chunks of 2, 2 and 1 of 5 examples) run chunk by chunk:
  same output, gradients and XLA flop count as one pass."""
  spatial, taps, causal = case
  batch = 5
  x, k, g = inputs(spatial, taps, seed=2, batch=batch)
  monkeypatch.setattr(conv, "_CHUNK_BYTES", 2 * int(np.prod(spatial)) * CHANNELS * 4)

  def value_and_grads(r):
    loss = lambda x, k: jnp.sum(conv.depthwise_conv(x, k, causal=causal, route=r) * g)
    return jax.jit(jax.value_and_grad(loss, argnums=(0, 1)))(x, k)

  (y, (dx, dk)), (y_ref, (dx_ref, dk_ref)) = value_and_grads(route), value_and_grads("direct")
  assert abs(float(y) / float(y_ref) - 1) < 1e-4
  assert rel_err(dx, dx_ref) < 1e-4 and rel_err(dk, dk_ref) < 1e-4
  f = jax.jit(lambda x, k: conv.depthwise_conv(x, k, causal=causal, route=route))
  xla = f.lower(x, k).compile().cost_analysis()["flops"]
  ours = conv_flops.route_flops(spatial, taps, CHANNELS, batch, causal, route)
  assert abs(ours / xla - 1) < 0.02, (ours, xla)


FLOP_SIZES = [
  ((3, (50,), 13, (7,), True), (100, (784,), 140, (65,), True)),
  ((3, (16, 12), 13, (5, 5), False), (4, (32, 32), 24, (9, 9), False)),
]


@pytest.mark.parametrize("route", XLA_ROUTES)
@pytest.mark.parametrize("sizes", FLOP_SIZES, ids=("1d", "2d"))
def test_route_flops_match_xla_cost_analysis(sizes, route):
  for batch, spatial, channels, taps, causal in sizes:
    x = jax.ShapeDtypeStruct((batch, *spatial, channels), jnp.float32)
    k = jax.ShapeDtypeStruct((*taps, channels), jnp.float32)
    f = jax.jit(lambda x, k, c=causal: conv.depthwise_conv(x, k, causal=c, route=route))
    xla = f.lower(x, k).compile().cost_analysis()["flops"]
    ours = conv_flops.route_flops(spatial, taps, channels, batch, causal, route)
    assert abs(ours / xla - 1) < 0.02, (spatial, taps, ours, xla)


def test_auto_under_jit_grad_vmap():
  spatial, taps, causal = (40,), (9,), True
  x, k, g = inputs(spatial, taps, seed=2)
  auto = lambda x, k: conv.depthwise_conv(x, k, causal=causal)
  direct = lambda x, k: conv.depthwise_conv(x, k, causal=causal, route="direct")
  assert rel_err(jax.jit(auto)(x, k), reference(x, k, causal)) < 1e-4
  # grad
  grad = lambda f: jax.jit(jax.grad(lambda x, k: jnp.sum(f(x, k) * g), argnums=(0, 1)))(x, k)
  for a, b in zip(grad(auto), grad(direct), strict=True):
    assert rel_err(a, b) < 1e-4
  # vmap over a leading axis of x alone, and of x and kernel together
  xs, ks = np.stack([x, 2 * x]), np.stack([k, -k])
  ys = jax.jit(jax.vmap(auto, in_axes=(0, None)))(xs, k)
  assert rel_err(ys, np.stack([reference(x, k, causal), 2 * reference(x, k, causal)])) < 1e-4
  ys = jax.jit(jax.vmap(auto))(xs, ks)
  assert rel_err(ys, np.stack([reference(x, k, causal), -2 * reference(x, k, causal)])) < 1e-4
  # vmap of grad
  per = jax.jit(jax.vmap(jax.grad(lambda x, k: jnp.sum(auto(x, k) ** 2), argnums=(0, 1))))(xs, ks)
  ref = jax.vmap(jax.grad(lambda x, k: jnp.sum(direct(x, k) ** 2), argnums=(0, 1)))(xs, ks)
  for a, b in zip(per, ref, strict=True):
    assert rel_err(a, b) < 1e-4


def test_resolve_route_is_host_side_and_concrete():
  for spatial, taps, causal in [
    ((784,), (65,), True),
    ((784,), (784,), True),
    ((32, 32), (33, 33), False),
  ]:
    r = conv_routes.resolve_route(spatial, taps, 140, 100, causal)
    assert r in ROUTES
    assert conv_routes.resolve_route(spatial, taps, 140, 100, causal, r) == r
    assert conv_flops.route_flops(
      spatial, taps, 140, 100, causal, "auto"
    ) == conv_flops.route_flops(spatial, taps, 140, 100, causal, r)


@pytest.mark.parametrize(
  "x_shape, k_shape, causal, match",
  [
    ((2, 10, 3), (4, 3), False, "odd taps"),
    ((2, 8, 8, 3), (3, 3, 3), True, "causal"),
    ((2, 10, 3), (3, 3, 3), False, "rank"),
    ((2, 10, 3), (3, 4), False, "channels"),
    ((2, 3), (3, 3), False, "spatial dims"),
  ],
)
def test_bad_inputs_raise_clear_errors(x_shape, k_shape, causal, match):
  with pytest.raises(ValueError, match=match):
    conv.depthwise_conv(jnp.zeros(x_shape), jnp.zeros(k_shape), causal=causal)


def test_unknown_route_raises():
  with pytest.raises(ValueError, match="unknown route"):
    conv.depthwise_conv(jnp.zeros((1, 5, 2)), jnp.zeros((3, 2)), causal=True, route="winograd")
