"""Test set-up: 8 fake CPU devices, set before JAX starts, so sharding tests run anywhere."""

import os

os.environ["XLA_FLAGS"] = (
  os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
).strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402

# Tests compare numbers to tight tolerances; keep matmuls in full fp32 on every backend.
jax.config.update("jax_default_matmul_precision", "highest")

# One compilation cache per test session and worker: trainers built anew in different tests
# (resume, SIGTERM, the CLI) compile the same programs, which takes seconds each on a CPU. Each
# xdist worker (and the subprocesses its tests start) has its own folder, so no two processes
# of the session write one cache entry at once (JAX writes entries without a lock).
_session = os.environ.setdefault("DNARCH_TEST_SESSION", str(os.getpid()))
_worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
_cache = os.environ["DNARCH_COMPILATION_CACHE"] = f"/tmp/dnarch_test_xla_cache_{_session}_{_worker}"
jax.config.update("jax_compilation_cache_dir", _cache)
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)


# Most of a test's time is XLA compiling on one core, so the suite runs one xdist worker per core
# (``-n auto`` in pyproject.toml): 20 min against 33 on the 2-core CI host. At most 4, so a large
# host does not start a JAX process (8 fake devices, its own cache) per core; measured only at 2.
MAX_WORKERS = 4


def pytest_xdist_auto_num_workers(config):
  return max(1, min(MAX_WORKERS, len(os.sched_getaffinity(0))))
