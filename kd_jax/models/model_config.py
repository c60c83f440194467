"""Model configuration: one frozen dataclass for the Llama 3.x / Qwen2 decoder family.

`ModelConfig.from_hf` reads a Hugging Face `config.json` dict and `to_hf` writes one back,
so that an exported student loads with `transformers.AutoModelForCausalLM`.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax.numpy as jnp

from kd_jax.errors import UserError

SUPPORTED_ARCHITECTURES = {
    "LlamaForCausalLM": "llama",
    "Qwen2ForCausalLM": "qwen2",
}
REMAT_POLICIES = ("none", "full", "dots", "dots_with_no_batch_dims", "dots_with_attention")
ATTENTION_KINDS = ("auto", "xla", "splash", "cudnn")  # kd_jax/models/attention.py
LORA_TARGETS = ("q", "k", "v", "o", "gate", "up", "down")


class ModelConfigError(UserError):
    """A model configuration that kd_jax cannot build, with the reason and the fix."""


@dataclasses.dataclass(frozen=True)
class LoraConfig:
    """Low-rank adapters on the projections named in `targets` (Study B: q, k, v, up, down)."""

    rank: int = 8
    alpha: float = 16.0
    dropout: float = 0.05
    targets: tuple[str, ...] = ("q", "k", "v", "up", "down")
    param_dtype: str = "float32"  # the adapters' storage (master) dtype, whatever the base's

    def __post_init__(self):
        if self.param_dtype not in ("float32", "bfloat16", "float16"):
            raise ModelConfigError(
                f"lora.param_dtype must be float32, bfloat16 or float16, got {self.param_dtype!r}."
            )
        if self.rank < 1:
            raise ModelConfigError(f"LoRA rank must be >= 1, got {self.rank}.")
        if not 0.0 <= self.dropout < 1.0:
            raise ModelConfigError(f"LoRA dropout must be in [0, 1), got {self.dropout}.")
        unknown = sorted(set(self.targets) - set(LORA_TARGETS))
        if unknown:
            raise ModelConfigError(
                f"Unknown LoRA target(s) {unknown}; choose from {list(LORA_TARGETS)}."
            )

    @property
    def scale(self) -> float:
        return self.alpha / self.rank


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Shapes and numerics of one decoder. Field names follow kd_jax, not HF."""

    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    family: str = "llama"  # "llama" | "qwen2": only used to write config.json back
    rope_theta: float = 10_000.0
    # Llama 3 frequency scaling: dict(factor, low_freq_factor, high_freq_factor,
    # original_max_position_embeddings), or None for plain RoPE.
    rope_scaling: tuple[tuple[str, float], ...] | None = None
    rms_norm_eps: float = 1e-5
    tie_word_embeddings: bool = False
    qkv_bias: bool = False
    max_position_embeddings: int = 8192
    bos_token_id: int | None = None
    eos_token_id: int | list[int] | None = None
    param_dtype: str = "float32"
    dtype: str = "float32"  # compute dtype of activations and matmuls
    remat_policy: str = "none"
    attention: str = "auto"  # "auto" | "xla" | "splash" | "cudnn" (models/attention.py)
    lora: LoraConfig | None = None

    def __post_init__(self):
        if self.num_heads % self.num_kv_heads:
            raise ModelConfigError(
                f"num_heads ({self.num_heads}) must be a multiple of num_kv_heads "
                f"({self.num_kv_heads}) for grouped-query attention."
            )
        if self.head_dim % 2:
            raise ModelConfigError(f"head_dim must be even for RoPE, got {self.head_dim}.")
        if self.remat_policy not in REMAT_POLICIES:
            raise ModelConfigError(
                f"Unknown remat_policy {self.remat_policy!r}; choose from {list(REMAT_POLICIES)}."
            )
        if self.attention not in ATTENTION_KINDS:
            raise ModelConfigError(
                f"Unknown attention {self.attention!r}; choose from {list(ATTENTION_KINDS)}."
            )
        for name in ("param_dtype", "dtype"):
            if getattr(self, name) not in ("float32", "bfloat16", "float16"):
                raise ModelConfigError(
                    f"{name} must be float32, bfloat16 or float16, got {getattr(self, name)!r}."
                )

    @property
    def jnp_dtype(self):
        return jnp.dtype(self.dtype)

    @property
    def jnp_param_dtype(self):
        return jnp.dtype(self.param_dtype)

    @property
    def rope_scaling_dict(self) -> dict[str, float] | None:
        return dict(self.rope_scaling) if self.rope_scaling else None

    def replace(self, **changes) -> ModelConfig:
        return dataclasses.replace(self, **changes)

    # --- Hugging Face config.json ------------------------------------------------------

    @classmethod
    def from_hf(cls, hf: dict[str, Any], **overrides) -> ModelConfig:
        """Builds a config from a parsed HF `config.json`; raises on what is unsupported."""
        archs = hf.get("architectures") or []
        family = None
        for arch in archs:
            family = SUPPORTED_ARCHITECTURES.get(arch)
            if family:
                break
        if family is None:
            family = {"llama": "llama", "qwen2": "qwen2"}.get(hf.get("model_type", ""))
        if family is None:
            raise ModelConfigError(
                f"Unsupported architecture {archs or hf.get('model_type')!r}; kd_jax loads "
                f"{sorted(SUPPORTED_ARCHITECTURES)} checkpoints."
            )
        if hf.get("use_sliding_window"):
            raise ModelConfigError(
                "Sliding-window attention is not supported; set use_sliding_window=false."
            )
        if family == "llama" and hf.get("attention_bias"):
            raise ModelConfigError(
                "Llama attention biases are not supported (attention_bias=true)."
            )
        if hf.get("mlp_bias"):
            raise ModelConfigError("MLP biases are not supported (mlp_bias=true).")
        act = hf.get("hidden_act", "silu")
        if act != "silu":
            raise ModelConfigError(f"Unsupported hidden_act {act!r}; only 'silu' (SwiGLU).")
        scaling = hf.get("rope_scaling") or hf.get("rope_parameters")
        rope_scaling = None
        rope_theta = hf.get("rope_theta")
        if scaling:
            kind = scaling.get("rope_type", scaling.get("type", "default"))
            rope_theta = rope_theta or scaling.get("rope_theta")
            if kind == "llama3":
                keys = (
                    "factor",
                    "low_freq_factor",
                    "high_freq_factor",
                    "original_max_position_embeddings",
                )
                rope_scaling = tuple((k, float(scaling[k])) for k in keys)
            elif kind != "default":
                raise ModelConfigError(
                    f"Unsupported rope scaling {kind!r}; kd_jax implements 'default' and 'llama3'."
                )
        num_heads = hf["num_attention_heads"]
        fields = dict(
            vocab_size=hf["vocab_size"],
            hidden_size=hf["hidden_size"],
            intermediate_size=hf["intermediate_size"],
            num_layers=hf["num_hidden_layers"],
            num_heads=num_heads,
            num_kv_heads=hf.get("num_key_value_heads") or num_heads,
            head_dim=hf.get("head_dim") or hf["hidden_size"] // num_heads,
            family=family,
            rope_theta=float(rope_theta or 10_000.0),
            rope_scaling=rope_scaling,
            rms_norm_eps=float(hf.get("rms_norm_eps", 1e-6)),
            tie_word_embeddings=bool(hf.get("tie_word_embeddings", False)),
            qkv_bias=family == "qwen2",
            max_position_embeddings=int(hf.get("max_position_embeddings", 8192)),
            bos_token_id=hf.get("bos_token_id"),
            eos_token_id=hf.get("eos_token_id"),
        )
        fields.update(overrides)
        return cls(**fields)

    def to_hf(self) -> dict[str, Any]:
        """The `config.json` dict transformers needs to rebuild this model."""
        out: dict[str, Any] = dict(
            vocab_size=self.vocab_size,
            hidden_size=self.hidden_size,
            intermediate_size=self.intermediate_size,
            num_hidden_layers=self.num_layers,
            num_attention_heads=self.num_heads,
            num_key_value_heads=self.num_kv_heads,
            head_dim=self.head_dim,
            hidden_act="silu",
            rope_theta=self.rope_theta,
            rms_norm_eps=self.rms_norm_eps,
            tie_word_embeddings=self.tie_word_embeddings,
            max_position_embeddings=self.max_position_embeddings,
            torch_dtype=self.param_dtype,
            bos_token_id=self.bos_token_id,
            eos_token_id=self.eos_token_id,
        )
        if self.rope_scaling:
            out["rope_scaling"] = dict(rope_type="llama3", **self.rope_scaling_dict)
        if self.family == "qwen2":
            if not self.qkv_bias:
                raise ModelConfigError("Qwen2 checkpoints always carry q/k/v biases.")
            out.update(architectures=["Qwen2ForCausalLM"], model_type="qwen2")
            out.update(use_sliding_window=False)
        else:
            out.update(architectures=["LlamaForCausalLM"], model_type="llama")
            if self.qkv_bias:
                raise ModelConfigError(
                    "Llama checkpoints carry no q/k/v biases; set qkv_bias=False."
                )
            out.update(attention_bias=False, mlp_bias=False)
        return out
