"""Teacher-student agreement per token, chunked: KL(teacher || student) at T = 1 and top-1
agreement, summed over real tokens, from hidden states and unembeddings.

    sums = fidelity_sums(h_t, w_t, h_s, w_s, mask_BxT, chunk_size=256)
    # {"kl": sum of KL, "top1": tokens whose argmax agrees, "tokens": real tokens}

The evaluation's held-out fidelity uses this, so at most [chunk, V] float32 logits of each
model exist at a time (never both models' [B, T, V]). The divergence is the loss zoo's own
forward KL (`token_divergence(..., "fkl")`). Models whose vocabularies differ (padding rows)
are compared on the smaller vocabulary, the rule `align_vocab` applies to the loss.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from kd_jax.losses.divergences import token_divergence
from kd_jax.losses.kd import logits_of


def dense_fidelity_sums(teacher_logits, student_logits, mask_BxT) -> dict:
    """The same sums from logits ([..., V] each, cut to the smaller vocabulary)."""
    v = min(teacher_logits.shape[-1], student_logits.shape[-1])
    t, s = teacher_logits[..., :v], student_logits[..., :v]
    kl = token_divergence(s, t, "fkl")
    top1 = (jnp.argmax(t, axis=-1) == jnp.argmax(s, axis=-1)).astype(jnp.float32)
    mask = jnp.asarray(mask_BxT, jnp.float32)
    return {"kl": jnp.sum(kl * mask), "top1": jnp.sum(top1 * mask), "tokens": jnp.sum(mask)}


@functools.partial(jax.jit, static_argnames="chunk_size")
def fidelity_sums(h_t, w_t, h_s, w_s, mask_BxT, *, chunk_size: int) -> dict:
    """Sums over real tokens of KL(teacher || student) and of top-1 agreement, and the count.
    h_* [B, T, D_*] final hidden states, w_* [D_*, V_*] unembeddings."""
    v = min(w_t.shape[-1], w_s.shape[-1])
    w_t, w_s = w_t[:, :v], w_s[:, :v]
    n = mask_BxT.size
    chunk = max(1, min(chunk_size, n))
    pad = -n % chunk

    def chunks(x):  # [B, T, ...] -> [n_chunks, chunk, ...], padded with zeros
        flat = x.reshape(n, *x.shape[2:])
        flat = jnp.pad(flat, [(0, pad)] + [(0, 0)] * (flat.ndim - 1))
        return flat.reshape(-1, chunk, *flat.shape[1:])

    def one(xs):
        ht_C, hs_C, m_C = xs
        sums = dense_fidelity_sums(logits_of(ht_C, w_t), logits_of(hs_C, w_s), m_C)
        return sums["kl"], sums["top1"], sums["tokens"]

    mask = jnp.asarray(mask_BxT, jnp.float32)
    kl, top1, tokens = jax.lax.map(one, (chunks(h_t), chunks(h_s), chunks(mask)))
    return {"kl": kl.sum(), "top1": top1.sum(), "tokens": tokens.sum()}
