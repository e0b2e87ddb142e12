"""dnarch_jax: DNArch in JAX/Flax."""
