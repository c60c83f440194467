"""Decoding with a KV cache: the decoder's weights repacked for one-token steps.

Training and scoring scan over the stacked layer weights (decoder.py). A decode step does
little math per weight, and there the stack costs more than the math on some backends:
XLA:CPU copies every layer's weights out of it at every scan iteration. So the sampler
repacks the weights once per program instead (`pack`): one entry per layer, each kernel
a 2-D matrix in the compute dtype with any LoRA adapter merged, read in place by every
step, with the layers unrolled. The price is one extra copy of the weights while sampling
and a compile time that grows with depth.

The cache holds keys and values per layer as [B, K, S, H], so a step writes one slot,
and the attention dots batch over (B, K) with nothing transposed in between.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from kd_jax.models import attention
from kd_jax.models.attention import masked_softmax
from kd_jax.models.decoder import Decoder
from kd_jax.models.layers import apply_rope, rms_norm, rope_inv_freq
from kd_jax.sharding import constrain


def _matrix(dense) -> jax.Array:
    """[L, in, out] kernel of a stacked Dense, LoRA merged, in the compute dtype."""
    kernel = dense.merged_kernel()
    fan_in = math.prod(kernel.shape[1 : 1 + dense.num_in])
    return kernel.reshape(kernel.shape[0], fan_in, -1).astype(dense.dtype)


def pack(model: Decoder) -> dict:
    """The weights a decode step reads: per-layer 2-D kernels, norms, the unembedding."""
    blocks = model.blocks
    kernels = {
        name: _matrix(getattr(blocks, name)) for name in ("q", "k", "v", "o", "gate", "up", "down")
    }
    biases = {}
    if blocks.q.bias is not None:
        biases = {
            f"{name}_bias": getattr(blocks, name).bias[...].astype(blocks.q.dtype)
            for name in ("q", "k", "v")
        }
    norms = {"attn_norm": blocks.attn_norm.scale[...], "mlp_norm": blocks.mlp_norm.scale[...]}
    stacked = {**kernels, **biases, **norms}
    layers = [{name: w[i] for name, w in stacked.items()} for i in range(model.cfg.num_layers)]
    return {"layers": layers, "unembedding": model.unembedding().astype(model.cfg.jnp_dtype)}


def init_cache(model: Decoder, batch: int, max_len: int, dtype=None) -> dict:
    """An empty cache: per-layer k, v [B, K, S, H], segment ids [B, S] (0 = empty), index."""
    cfg = model.cfg
    shape = (batch, cfg.num_kv_heads, max_len, cfg.head_dim)
    dtype = dtype or cfg.jnp_dtype
    # Under a rules table (shd.activation_sharding) the cache is split like the
    # activations: rows over the batch axes, KV heads over the tensor axis.
    kv_axes = ("act_batch", "act_heads", "act_len", None)

    def zeros():
        return constrain(jnp.zeros(shape, dtype), kv_axes)

    return dict(
        k=tuple(zeros() for _ in range(cfg.num_layers)),
        v=tuple(zeros() for _ in range(cfg.num_layers)),
        segment_ids=constrain(jnp.zeros((batch, max_len), jnp.int32), ("act_batch", "act_len")),
        index=jnp.zeros((), jnp.int32),
    )


def cached_attention_mask(segment_ids_BxT, cache_segment_ids_BxS, index) -> jax.Array:
    """[B, T, S] boolean for T new tokens written at cache slots index..index+T-1."""
    t, s = segment_ids_BxT.shape[1], cache_segment_ids_BxS.shape[1]
    query_slot = index + jnp.arange(t)
    causal = jnp.arange(s)[None, :] <= query_slot[:, None]  # [T, S]
    same = segment_ids_BxT[:, :, None] == cache_segment_ids_BxS[:, None, :]
    return causal[None] & same & (cache_segment_ids_BxS[:, None, :] != 0)


def attend(q_BxTxNxH, k_BxKxSxH, v_BxKxSxH, mask_BxTxS) -> jax.Array:
    """Grouped-query attention over the cache, [B, T, N, H]. Queries are laid out
    [B, K, G, T, H] so that both dots batch over (B, K) with nothing transposed in
    between (at the benchmark's shapes, decoding a third faster than the training layout)."""
    b, t, n, hd = q_BxTxNxH.shape
    kv = k_BxKxSxH.shape[1]
    q_BxKxGxTxH = jnp.transpose(q_BxTxNxH.reshape(b, t, kv, n // kv, hd), (0, 2, 3, 1, 4))
    scores = jnp.einsum(
        "bkgth,bksh->bkgts", q_BxKxGxTxH, k_BxKxSxH, preferred_element_type=jnp.float32
    ) / jnp.sqrt(jnp.float32(hd))
    probs = masked_softmax(scores, mask_BxTxS, v_BxKxSxH.dtype)
    out_BxKxGxTxH = jnp.einsum("bkgts,bksh->bkgth", probs, v_BxKxSxH)
    return jnp.transpose(out_BxKxGxTxH, (0, 3, 1, 2, 4)).reshape(b, t, n, hd)


def hidden(
    model: Decoder,
    packed: dict,
    tokens_BxT,
    positions_BxT,
    segment_ids_BxT,
    cache,
    *,
    prefill: bool = False,
):
    """(final-norm hidden states [B, T, D], cache) after writing T tokens at the cache's
    index: the prompt in one call (prefill), then one token per call.

    With `prefill` (the cache is empty, index 0) the prompt attends to itself through
    the model's attention kernel (`model.attention`, attention.py); one-token steps
    attend over the cache on the XLA path."""
    cfg = model.cfg
    b, t = tokens_BxT.shape
    dtype = cfg.jnp_dtype
    cache = dict(cache)
    index = cache["index"]
    cache["segment_ids"] = jax.lax.dynamic_update_slice_in_dim(
        cache["segment_ids"], segment_ids_BxT, index, axis=1
    )
    kernel = prefill and attention.resolve(cfg.attention) != "xla"
    if kernel:
        prepared = attention.prepare(cfg.attention, segment_ids_BxT, (b, t))
    else:
        mask_BxTxS = cached_attention_mask(segment_ids_BxT, cache["segment_ids"], index)
    head_dim, theta, scaling = model.blocks.rope
    inv_freq = rope_inv_freq(head_dim, theta, dict(scaling) if scaling else None)

    def project(x, w, name, heads):  # [B, T, in] -> [B, T, heads, H]
        y = jnp.einsum("bti,io->bto", x, w[name])
        if f"{name}_bias" in w:
            y = y + w[f"{name}_bias"].reshape(-1)
        return y.reshape(b, t, heads, head_dim)

    def write(slots_BxKxSxH, new_BxTxKxH):
        new = jnp.swapaxes(new_BxTxKxH, 1, 2).astype(slots_BxKxSxH.dtype)
        return jax.lax.dynamic_update_slice_in_dim(slots_BxKxSxH, new, index, axis=2)

    x = constrain(model.embed(tokens_BxT), ("act_batch", "act_len", "act_embed"))
    ks, vs = list(cache["k"]), list(cache["v"])
    for i, w in enumerate(packed["layers"]):
        h = rms_norm(x, w["attn_norm"], cfg.rms_norm_eps, dtype)
        q = apply_rope(project(h, w, "q", cfg.num_heads), positions_BxT, inv_freq)
        k = apply_rope(project(h, w, "k", cfg.num_kv_heads), positions_BxT, inv_freq)
        v = project(h, w, "v", cfg.num_kv_heads)
        ks[i], vs[i] = write(ks[i], k), write(vs[i], v)
        if kernel:
            out = attention.attend(cfg.attention, q, k, v, prepared)
        else:
            out = attend(q, ks[i], vs[i], mask_BxTxS)
        x = x + jnp.einsum("bti,io->bto", out.reshape(b, t, -1), w["o"])
        h = rms_norm(x, w["mlp_norm"], cfg.rms_norm_eps, dtype)
        gated = jax.nn.silu(h @ w["gate"]) * (h @ w["up"])
        x = x + gated @ w["down"]
    cache.update(k=tuple(ks), v=tuple(vs), index=index + t)
    return model.final_norm(x), cache


def logits(packed: dict, hidden_BxTxD: jax.Array) -> jax.Array:
    """[B, T, V] float32 logits from the packed unembedding."""
    w_DxV = packed["unembedding"]
    return jnp.einsum(
        "btd,dv->btv", hidden_BxTxD.astype(w_DxV.dtype), w_DxV, preferred_element_type=jnp.float32
    )
