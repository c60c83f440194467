"""Named model shapes: the real checkpoints of the two studies and tiny ones for CPU runs.

The real presets mirror each checkpoint's `config.json`, so `jax.eval_shape` of a preset
plans memory for a model that is not on disk. Loading a checkpoint always reads its own
`config.json`; presets never override it.
"""

from __future__ import annotations

from kd_jax.models.model_config import ModelConfig, ModelConfigError

_LLAMA3_VOCAB = 128_256
_LLAMA31_ROPE = (
    ("factor", 8.0),
    ("low_freq_factor", 1.0),
    ("high_freq_factor", 4.0),
    ("original_max_position_embeddings", 8192.0),
)
_LLAMA32_ROPE = (("factor", 32.0),) + _LLAMA31_ROPE[1:]


def _llama(d, f, layers, heads, tie, rope, head_dim=128):
    return dict(
        family="llama",
        vocab_size=_LLAMA3_VOCAB,
        hidden_size=d,
        intermediate_size=f,
        num_layers=layers,
        num_heads=heads,
        num_kv_heads=8,
        head_dim=head_dim,
        rope_theta=500_000.0,
        rope_scaling=rope,
        rms_norm_eps=1e-5,
        tie_word_embeddings=tie,
        max_position_embeddings=131_072,
        bos_token_id=128_000,
        eos_token_id=128_001,
        param_dtype="bfloat16",
        dtype="bfloat16",
    )


def _qwen(vocab, d, f, layers, heads, kv, tie, eps=1e-6):
    return dict(
        family="qwen2",
        vocab_size=vocab,
        hidden_size=d,
        intermediate_size=f,
        num_layers=layers,
        num_heads=heads,
        num_kv_heads=kv,
        head_dim=d // heads,
        rope_theta=1_000_000.0,
        rms_norm_eps=eps,
        tie_word_embeddings=tie,
        qkv_bias=True,
        max_position_embeddings=32_768,
        bos_token_id=151_643,
        eos_token_id=151_643,
        param_dtype="bfloat16",
        dtype="bfloat16",
    )


def _tiny(family, vocab=512, d=64, layers=2, heads=4, kv=2, f=128):
    return dict(
        family=family,
        vocab_size=vocab,
        hidden_size=d,
        intermediate_size=f,
        num_layers=layers,
        num_heads=heads,
        num_kv_heads=kv,
        head_dim=d // heads,
        rope_theta=10_000.0,
        rms_norm_eps=1e-6,
        tie_word_embeddings=family == "qwen2",
        qkv_bias=family == "qwen2",
        max_position_embeddings=2048,
    )


PRESETS: dict[str, dict] = {
    "llama-3.2-1b": _llama(2048, 8192, 16, 32, True, _LLAMA32_ROPE, head_dim=64),
    "llama-3.2-3b": _llama(3072, 8192, 28, 24, True, _LLAMA32_ROPE),
    "llama-3.1-8b": _llama(4096, 14_336, 32, 32, False, _LLAMA31_ROPE),
    "llama-3.1-70b": _llama(8192, 28_672, 80, 64, False, _LLAMA31_ROPE),
    "llama-3.3-70b": _llama(8192, 28_672, 80, 64, False, _LLAMA31_ROPE),
    "qwen2.5-0.5b": _qwen(151_936, 896, 4864, 24, 14, 2, True),
    "qwen2.5-1.5b": _qwen(151_936, 1536, 8960, 28, 12, 2, True),
    "qwen2.5-3b": _qwen(151_936, 2048, 11_008, 36, 16, 2, True),
    "qwen2.5-7b": _qwen(152_064, 3584, 18_944, 28, 28, 4, False),
    "qwen2.5-14b": _qwen(152_064, 5120, 13_824, 48, 40, 8, False, eps=1e-5),
    # Built-in tiny models for CPU runs and tests; vocab_size is usually overridden with
    # the built-in tokenizer's size.
    "tiny-llama": _tiny("llama"),
    "tiny-qwen2": _tiny("qwen2"),
    "tiny-teacher": _tiny("llama", d=128, layers=4, heads=4, kv=2, f=384),
    "tiny-student": _tiny("llama", d=64, layers=2, heads=4, kv=2, f=192),
    "tiny-student-xs": _tiny("llama", d=32, layers=1, heads=2, kv=1, f=96),
    "tiny-student-l": _tiny("llama", d=96, layers=3, heads=4, kv=2, f=288),
}


def names() -> list[str]:
    return sorted(PRESETS)


def get(name: str, **overrides) -> ModelConfig:
    """The preset `name` as a ModelConfig, with field overrides (e.g. vocab_size, dtype)."""
    key = name.lower()
    if key not in PRESETS:
        raise ModelConfigError(f"Unknown model preset {name!r}; choose from {names()}.")
    return ModelConfig(**{**PRESETS[key], **overrides})
