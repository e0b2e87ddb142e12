"""Test set-up: 8 fake CPU devices, set before JAX starts, so sharding tests run anywhere."""

import os

os.environ["XLA_FLAGS"] = (
  os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
).strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402

# Tests compare numbers to tight tolerances; keep matmuls in full fp32 on every backend.
jax.config.update("jax_default_matmul_precision", "highest")

# One compilation cache per test session: trainers built anew in different tests (resume,
# SIGTERM, the CLI) compile the same programs, which takes seconds each on a CPU.
_cache = os.environ.setdefault(
  "DNARCH_COMPILATION_CACHE", f"/tmp/dnarch_test_xla_cache_{os.getpid()}"
)
jax.config.update("jax_compilation_cache_dir", _cache)
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
