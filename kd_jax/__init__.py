"""kd_jax: knowledge distillation of large language models in JAX/Flax."""

__version__ = "0.1.0"
