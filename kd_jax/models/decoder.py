"""The decoder-only transformer of the Llama 3.x and Qwen2/2.5 families (Flax NNX).

Pre-norm blocks of grouped-query attention with RoPE and a SwiGLU MLP. The blocks' weights
are stacked on a leading `layers` axis and run with `jax.lax.scan`, so compile time does
not grow with depth; `remat_policy` decides what the backward pass recomputes.

Attention honours `segment_ids` (packed examples never see each other; 0 marks padding)
and explicit `positions` (RoPE restarts per packed example, or skips left padding).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from kd_jax.models.layers import Dense, Embed, RMSNorm, apply_rope, rope_inv_freq
from kd_jax.models.model_config import ModelConfig
from kd_jax.sharding import constrain

_REMAT = {
    "full": None,  # save nothing: recompute the whole block
    "dots": jax.checkpoint_policies.checkpoint_dots,
    "dots_with_no_batch_dims": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
}
_BLOCK_LORA_TARGETS = ("q", "k", "v", "o", "gate", "up", "down")


def attention_mask(segment_ids_BxT: jax.Array) -> jax.Array:
    """[B, T, S] boolean: causal, within one segment, never to padding (segment 0)."""
    t = segment_ids_BxT.shape[1]
    causal = jnp.tril(jnp.ones((t, t), dtype=bool))
    same = segment_ids_BxT[:, :, None] == segment_ids_BxT[:, None, :]
    return causal[None] & same & (segment_ids_BxT[:, None, :] != 0)


def attention(q_BxTxNxH, k_BxSxKxH, v_BxSxKxH, mask_BxTxS) -> jax.Array:
    """Grouped-query attention [B, T, N, H] (decoding has its own layout, decode.py)."""
    b, t, n, hd = q_BxTxNxH.shape
    kv_heads = k_BxSxKxH.shape[2]
    q_BxTxKxGxH = q_BxTxNxH.reshape(b, t, kv_heads, n // kv_heads, hd)
    scores = jnp.einsum(
        "btkgh,bskh->bkgts", q_BxTxKxGxH, k_BxSxKxH, preferred_element_type=jnp.float32
    ) / jnp.sqrt(jnp.float32(hd))
    probs = masked_softmax(scores, mask_BxTxS, v_BxSxKxH.dtype)
    return jnp.einsum("bkgts,bskh->btkgh", probs, v_BxSxKxH).reshape(b, t, n, hd)


def masked_softmax(scores_BxKxGxTxS, mask_BxTxS, dtype) -> jax.Array:
    """Attention probabilities over S, masked positions excluded."""
    # A finite fill keeps fully-masked (padding) rows finite; their outputs are unused.
    fill = jnp.finfo(jnp.float32).min
    scores = jnp.where(mask_BxTxS[:, None, None], scores_BxKxGxTxS, fill)
    return jax.nn.softmax(scores, axis=-1).astype(dtype)


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
            d, cfg.rms_norm_eps, num_layers=num_layers, param_dtype=cfg.jnp_param_dtype,
            dtype=cfg.jnp_dtype,
        )  # fmt: skip
        self.q = Dense((d,), (h, hd), ("embed",), ("heads", "head_dim"),
                       use_bias=cfg.qkv_bias, lora=lora("q"), **common)  # fmt: skip
        self.k = Dense((d,), (kv, hd), ("embed",), ("kv_heads", "head_dim"),
                       use_bias=cfg.qkv_bias, lora=lora("k"), **common)  # fmt: skip
        self.v = Dense((d,), (kv, hd), ("embed",), ("kv_heads", "head_dim"),
                       use_bias=cfg.qkv_bias, lora=lora("v"), **common)  # fmt: skip
        self.o = Dense((h, hd), (d,), ("heads", "head_dim"), ("embed",), lora=lora("o"), **common)
        self.mlp_norm = RMSNorm(
            d, cfg.rms_norm_eps, num_layers=num_layers, param_dtype=cfg.jnp_param_dtype,
            dtype=cfg.jnp_dtype,
        )  # fmt: skip
        self.gate = Dense((d,), (f,), ("embed",), ("mlp",), lora=lora("gate"), **common)
        self.up = Dense((d,), (f,), ("embed",), ("mlp",), lora=lora("up"), **common)
        self.down = Dense((f,), (d,), ("mlp",), ("embed",), lora=lora("down"), **common)
        self.rope = (hd, cfg.rope_theta, cfg.rope_scaling)

    def __call__(self, x_BxTxD, positions_BxT, mask_BxTxS, dropout_rng=None):
        """One block (training and scoring; decoding with a KV cache is in decode.py)."""
        rngs = [None] * 7 if dropout_rng is None else list(jax.random.split(dropout_rng, 7))
        rng = dict(zip(_BLOCK_LORA_TARGETS, rngs, strict=True))

        head_dim, theta, scaling = self.rope
        inv_freq = rope_inv_freq(head_dim, theta, dict(scaling) if scaling else None)
        h = self.attn_norm(x_BxTxD)
        q_BxTxNxH = apply_rope(self.q(h, rng["q"]), positions_BxT, inv_freq)
        k_BxSxKxH = apply_rope(self.k(h, rng["k"]), positions_BxT, inv_freq)
        v_BxSxKxH = self.v(h, rng["v"])
        q_BxTxNxH = constrain(q_BxTxNxH, ("act_batch", "act_len", "act_heads", None))
        out = attention(q_BxTxNxH, k_BxSxKxH, v_BxSxKxH, mask_BxTxS)
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
        if segment_ids is None:
            segment_ids = jnp.ones((b, t), jnp.int32)
        mask_BxTxS = attention_mask(segment_ids)
        x = constrain(self.embed(tokens_BxT), ("act_batch", "act_len", "act_embed"))

        graphdef, stacked = nnx.split(self.blocks)
        layer_rngs = None
        if dropout_rng is not None:
            layer_rngs = jax.random.split(dropout_rng, self.cfg.num_layers)

        def body(x, layer):
            layer_state, rng = layer
            return nnx.merge(graphdef, layer_state)(x, positions, mask_BxTxS, rng), None

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
