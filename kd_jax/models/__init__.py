"""Flax NNX decoders (Llama 3.x, Qwen2/2.5), LoRA, named presets and HF import/export."""

from kd_jax.models import presets
from kd_jax.models.decoder import Decoder
from kd_jax.models.init import abstract_model, create_model, param_count
from kd_jax.models.model_config import LoraConfig, ModelConfig, ModelConfigError

__all__ = [
    "Decoder",
    "LoraConfig",
    "ModelConfig",
    "ModelConfigError",
    "abstract_model",
    "create_model",
    "param_count",
    "presets",
]
