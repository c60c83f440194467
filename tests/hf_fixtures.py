"""Tiny random HF models (Llama with GQA and llama3 rope scaling; Qwen2 with q/k/v bias and
tied embeddings) written with `save_pretrained`, for parity tests against transformers."""

from __future__ import annotations

import torch
import transformers


def llama_config(**kw):
    base = dict(
        vocab_size=97,
        hidden_size=64,
        intermediate_size=96,
        num_hidden_layers=3,
        num_attention_heads=8,
        num_key_value_heads=2,
        head_dim=8,
        rms_norm_eps=1e-5,
        max_position_embeddings=512,
        tie_word_embeddings=False,
        rope_theta=500_000.0,
        rope_scaling=dict(
            rope_type="llama3",
            factor=8.0,
            low_freq_factor=1.0,
            high_freq_factor=4.0,
            original_max_position_embeddings=64,
        ),
    )
    base.update(kw)
    return transformers.LlamaConfig(**base)


def qwen2_config(**kw):
    base = dict(
        vocab_size=101,
        hidden_size=48,
        intermediate_size=80,
        num_hidden_layers=2,
        num_attention_heads=6,
        num_key_value_heads=2,
        rms_norm_eps=1e-6,
        max_position_embeddings=512,
        tie_word_embeddings=True,
        rope_theta=1_000_000.0,
        use_sliding_window=False,
    )
    base.update(kw)
    return transformers.Qwen2Config(**base)


def make_hf_model(cfg, path, seed=0, **save_kw):
    """A random HF causal LM (biases and norms randomized too), saved as safetensors."""
    torch.manual_seed(seed)
    model = transformers.AutoModelForCausalLM.from_config(cfg, dtype=torch.float32)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.copy_(1.0 + 0.1 * torch.randn_like(p))
            elif name.endswith("bias"):
                p.copy_(0.1 * torch.randn_like(p))
    model.eval()
    model.save_pretrained(path, **save_kw)
    return model


def hf_logits(model, tokens, attention_mask=None, position_ids=None):
    with torch.no_grad():
        out = model(
            input_ids=torch.as_tensor(tokens, dtype=torch.long),
            attention_mask=None if attention_mask is None else torch.as_tensor(attention_mask),
            position_ids=None if position_ids is None else torch.as_tensor(position_ids),
        )
    return out.logits.float().numpy()
