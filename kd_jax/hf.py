"""Hugging Face checkpoints: `kd_jax.hf.load(path, ...)` and `kd_jax.hf.save(model, path)`."""

from kd_jax.models.hf import CheckpointError, load, read_config, save

__all__ = ["CheckpointError", "load", "read_config", "save"]
