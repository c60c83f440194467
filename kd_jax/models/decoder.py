"""The decoder-only transformer of the Llama 3.x and Qwen2/2.5 families (Flax NNX).

Pre-norm blocks of grouped-query attention with RoPE and a SwiGLU MLP. The blocks' weights
are stacked on a leading `layers` axis and run with `jax.lax.scan`, so compile time does
not grow with depth; `remat_policy` decides what the backward pass recomputes.

Attention (attention.py: one entry point, a kernel per backend) honours `segment_ids`
(packed examples never see each other; 0 marks padding) and explicit `positions`
(RoPE restarts per packed example, or skips left padding).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from kd_jax.models import attention
from kd_jax.models.layers import Dense, Embed, RMSNorm, apply_rope, rope_inv_freq
from kd_jax.models.model_config import ModelConfig
from kd_jax.sharding import constrain

_REMAT = {
    "full": None,  # save nothing: recompute the whole block
    "dots": jax.checkpoint_policies.checkpoint_dots,
    "dots_with_no_batch_dims": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
    # The weight matmuls and the attention kernel's output and log-sum-exp: the backward
    # pass then never reruns the attention forward (fused kernels are not "dots").
    "dots_with_attention": jax.checkpoint_policies.save_from_both_policies(
        jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
        jax.checkpoint_policies.save_only_these_names(attention.RESIDUALS_NAME),
    ),
}
_BLOCK_LORA_TARGETS = ("q", "k", "v", "o", "gate", "up", "down")


class Block(nnx.Module):
    """One (or, with `num_layers`, a stack of) pre-norm attention + SwiGLU block(s)."""

    def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs, num_layers: int | None = None):
        d, h, kv, hd, f = (
            cfg.hidden_size,
            cfg.num_heads,
            cfg.num_kv_heads,
            cfg.head_dim,
            cfg.intermediate_size,
        )
        common = dict(
            rngs=rngs,
            num_layers=num_layers,
            param_dtype=cfg.jnp_param_dtype,
            dtype=cfg.jnp_dtype,
        )

        def lora(name):
            return cfg.lora if cfg.lora is not None and name in cfg.lora.targets else None

        self.attn_norm = RMSNorm(
            d,
            cfg.rms_norm_eps,
            num_layers=num_layers,
            param_dtype=cfg.jnp_param_dtype,
            dtype=cfg.jnp_dtype,
        )
        self.q = Dense(
            (d,),
            (h, hd),
            ("embed",),
            ("heads", "head_dim"),
            use_bias=cfg.qkv_bias,
            lora=lora("q"),
            **common,
        )
        self.k = Dense(
            (d,),
            (kv, hd),
            ("embed",),
            ("kv_heads", "head_dim"),
            use_bias=cfg.qkv_bias,
            lora=lora("k"),
            **common,
        )
        self.v = Dense(
            (d,),
            (kv, hd),
            ("embed",),
            ("kv_heads", "head_dim"),
            use_bias=cfg.qkv_bias,
            lora=lora("v"),
            **common,
        )
        self.o = Dense((h, hd), (d,), ("heads", "head_dim"), ("embed",), lora=lora("o"), **common)
        self.mlp_norm = RMSNorm(
            d,
            cfg.rms_norm_eps,
            num_layers=num_layers,
            param_dtype=cfg.jnp_param_dtype,
            dtype=cfg.jnp_dtype,
        )
        self.gate = Dense((d,), (f,), ("embed",), ("mlp",), lora=lora("gate"), **common)
        self.up = Dense((d,), (f,), ("embed",), ("mlp",), lora=lora("up"), **common)
        self.down = Dense((f,), (d,), ("mlp",), ("embed",), lora=lora("down"), **common)
        self.rope = (hd, cfg.rope_theta, cfg.rope_scaling)
        self.attention_kind = cfg.attention

    def __call__(self, x_BxTxD, positions_BxT, prepared, dropout_rng=None):
        """One block (training and scoring; decoding with a KV cache is in decode.py).
        `prepared`: the attention mask or segment ids, `attention.prepare`."""
        rngs = [None] * 7 if dropout_rng is None else list(jax.random.split(dropout_rng, 7))
        rng = dict(zip(_BLOCK_LORA_TARGETS, rngs, strict=True))

        head_dim, theta, scaling = self.rope
        inv_freq = rope_inv_freq(head_dim, theta, dict(scaling) if scaling else None)
        h = self.attn_norm(x_BxTxD)
        q_BxTxNxH = apply_rope(self.q(h, rng["q"]), positions_BxT, inv_freq)
        k_BxSxKxH = apply_rope(self.k(h, rng["k"]), positions_BxT, inv_freq)
        v_BxSxKxH = self.v(h, rng["v"])
        q_BxTxNxH = constrain(q_BxTxNxH, ("act_batch", "act_len", "act_heads", None))
        out = attention.attend(self.attention_kind, q_BxTxNxH, k_BxSxKxH, v_BxSxKxH, prepared)
        x_BxTxD = x_BxTxD + self.o(out, rng["o"])
        x_BxTxD = constrain(x_BxTxD, ("act_batch", "act_len", "act_embed"))

        h = self.mlp_norm(x_BxTxD)
        gated = jax.nn.silu(self.gate(h, rng["gate"])) * self.up(h, rng["up"])
        x_BxTxD = x_BxTxD + self.down(gated, rng["down"])
        x_BxTxD = constrain(x_BxTxD, ("act_batch", "act_len", "act_embed"))
        return x_BxTxD


class Decoder(nnx.Module):
    """tokens [B, T] -> logits [B, T, V]; `hidden` and `unembedding` serve chunked losses."""

    def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs):
        self.cfg = cfg
        self.embed = Embed(
            cfg.vocab_size,
            cfg.hidden_size,
            rngs=rngs,
            param_dtype=cfg.jnp_param_dtype,
            dtype=cfg.jnp_dtype,
        )
        self.blocks = Block(cfg, rngs=rngs, num_layers=cfg.num_layers)
        self.final_norm = RMSNorm(
            cfg.hidden_size,
            cfg.rms_norm_eps,
            param_dtype=cfg.jnp_param_dtype,
            dtype=cfg.jnp_dtype,
        )
        self.lm_head = (
            None
            if cfg.tie_word_embeddings
            else Dense(
                (cfg.hidden_size,),
                (cfg.vocab_size,),
                ("embed",),
                ("vocab",),
                rngs=rngs,
                param_dtype=cfg.jnp_param_dtype,
                dtype=cfg.jnp_dtype,
            )
        )

    def hidden(
        self,
        tokens_BxT: jax.Array,
        positions: jax.Array | None = None,
        segment_ids: jax.Array | None = None,
        *,
        dropout_rng: jax.Array | None = None,
    ) -> jax.Array:
        """Final-norm hidden states [B, T, D]."""
        b, t = tokens_BxT.shape
        if positions is None:
            positions = jnp.broadcast_to(jnp.arange(t, dtype=jnp.int32), (b, t))
        prepared = attention.prepare(self.cfg.attention, segment_ids, (b, t))
        x = constrain(self.embed(tokens_BxT), ("act_batch", "act_len", "act_embed"))

        graphdef, stacked = nnx.split(self.blocks)
        layer_rngs = None
        if dropout_rng is not None:
            layer_rngs = jax.random.split(dropout_rng, self.cfg.num_layers)

        def body(x, layer):
            layer_state, rng = layer
            return nnx.merge(graphdef, layer_state)(x, positions, prepared, rng), None

        if self.cfg.remat_policy != "none":
            body = jax.checkpoint(body, policy=_REMAT[self.cfg.remat_policy], prevent_cse=False)
        x, _ = jax.lax.scan(body, x, (stacked, layer_rngs))
        return self.final_norm(x)

    def unembedding(self) -> jax.Array:
        """The output projection [D, V] (the transposed embedding when tied)."""
        if self.lm_head is None:
            return self.embed.embedding[...].T
        return self.lm_head.kernel[...]

    def logits(self, hidden_BxTxD: jax.Array) -> jax.Array:
        w_DxV = self.unembedding().astype(self.cfg.jnp_dtype)
        logits = jnp.einsum("btd,dv->btv", hidden_BxTxD, w_DxV, preferred_element_type=jnp.float32)
        return constrain(logits, ("act_batch", "act_len", "act_vocab"))

    def __call__(
        self,
        tokens_BxT: jax.Array,
        positions: jax.Array | None = None,
        segment_ids: jax.Array | None = None,
        *,
        dropout_rng: jax.Array | None = None,
    ) -> jax.Array:
        h = self.hidden(tokens_BxT, positions, segment_ids, dropout_rng=dropout_rng)
        return self.logits(h)
