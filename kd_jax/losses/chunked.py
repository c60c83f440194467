"""The KD loss in chunks of tokens, from final hidden states and unembeddings.

A custom VJP: each chunk's gradient w.r.t. the student logits is computed in the forward
scan (in closed form for forward KL, fused.py) and folded straight into d h_s and d w_s, so
the backward pass recomputes nothing and only [chunk_size, V] float32 logits (of each
model) exist at a time.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp

from kd_jax.losses import fused
from kd_jax.losses.kd import (
    KDLossConfig,
    align_config_vocab,
    check_call,
    check_hidden,
    logits_of,
    terms_dict,
    token_weights,
    weighted_sums,
)
from kd_jax.losses.teacher import TeacherSample


def _scan_chunks(cfg, hs, w_s, teacher_xs, w_t, targets, weights, ids, rng, with_grad):
    """Scan over chunks ([n, C, ...] inputs). Returns ((loss, div, ce) sums, (d hs, d w_s))."""

    def body(dw_acc, xs):
        h_c, t_c, tgt_c, wt_c, id_c = xs
        if "h" in t_c:
            teacher = logits_of(t_c["h"], w_t)
        elif "values" in t_c:
            teacher = (t_c["values"], t_c["indices"])
        elif "sample_ids" in t_c:
            teacher = TeacherSample(t_c["sample_ids"], t_c["sample_counts"])
        else:
            teacher = None

        def sums(s_logits):
            return weighted_sums(cfg, s_logits, teacher, tgt_c, wt_c, id_c, rng)

        s_logits = logits_of(h_c, w_s)  # [C, V] float32
        if not with_grad:
            loss, (div, ce) = sums(s_logits)
            return dw_acc, ((loss, div, ce), None)
        if fused.applies(cfg, teacher):
            loss, (div, ce), d_logits = fused.fkl_ce_sums_and_grad(cfg, s_logits, teacher,
                                                                   tgt_c, wt_c)  # fmt: skip
        else:
            loss, vjp, (div, ce) = jax.vjp(sums, s_logits, has_aux=True)
            (d_logits,) = vjp(jnp.ones((), jnp.float32))
        d_logits = d_logits.astype(h_c.dtype)  # the matmuls run in the model's dtype
        dh_c = jnp.einsum("cv,dv->cd", d_logits, w_s, preferred_element_type=jnp.float32)
        dw_acc += jnp.einsum("cd,cv->dv", h_c, d_logits, preferred_element_type=jnp.float32)
        return dw_acc, ((loss, div, ce), dh_c.astype(h_c.dtype))

    dw0 = jnp.zeros(w_s.shape, jnp.float32) if with_grad else None
    dw, (chunk_sums, dhs) = jax.lax.scan(body, dw0, (hs, teacher_xs, targets, weights, ids))
    sums = tuple(jnp.sum(s) for s in chunk_sums)
    return sums, (dhs, None if dw is None else dw.astype(w_s.dtype))


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _chunked_sums(cfg, hs, w_s, teacher_xs, w_t, targets, weights, ids, rng):
    return _scan_chunks(cfg, hs, w_s, teacher_xs, w_t, targets, weights, ids, rng, False)[0]


def _chunked_sums_fwd(cfg, hs, w_s, teacher_xs, w_t, targets, weights, ids, rng):
    return _scan_chunks(cfg, hs, w_s, teacher_xs, w_t, targets, weights, ids, rng, True)


def _chunked_sums_bwd(cfg, grads, cotangents):
    dhs, dw = grads
    g = cotangents[0]  # div and ce sums are metrics: no gradient flows from them
    return ((g * dhs).astype(dhs.dtype), (g * dw).astype(dw.dtype)) + (None,) * 6


_chunked_sums.defvjp(_chunked_sums_fwd, _chunked_sums_bwd)


def chunked_kd_loss(
    h_s: jax.Array,  # [B, T, Ds] student final hidden states
    w_s: jax.Array,  # [Ds, V] student unembedding
    h_t: jax.Array | None,  # [B, T, Dt] teacher final hidden states (None: SFT or cache)
    w_t: jax.Array | None,  # [Dt, V'] teacher unembedding
    targets: jax.Array,  # [B, T] int
    mask: jax.Array,  # [B, T], 1 = real token
    *,
    chunk_size: int,
    cfg: KDLossConfig,
    rng: jax.Array | None = None,
    teacher_topk: tuple[jax.Array, jax.Array] | None = None,  # cached ([B,T,K], [B,T,K])
    teacher_sample: tuple[jax.Array, jax.Array] | None = None,  # sampled (ids, counts) [B,T,S]
) -> dict:
    """dense_kd_loss in chunks of at most `chunk_size` tokens: equal value and gradient
    (w.r.t. h_s and w_s; zero w.r.t. the teacher), with only [chunk_size, V] logits of each
    model alive at a time. Not forward-mode differentiable (custom VJP)."""
    if not (isinstance(chunk_size, int) and chunk_size > 0):
        raise ValueError(f"chunk_size must be a positive integer; got {chunk_size!r}.")
    check_hidden(h_s, w_s, h_t, w_t)
    w_s, w_t = align_config_vocab(cfg, w_s, w_t)
    t_vocab = None if w_t is None else w_t.shape[-1]
    check_call(cfg, mask.shape, w_s.shape[-1], t_vocab, targets, mask, teacher_topk, rng,
               teacher_sample)  # fmt: skip

    num = math.prod(mask.shape)
    n_chunks = -(-num // chunk_size)
    chunk_size = -(-num // n_chunks)  # same number of chunks, padding < n_chunks tokens

    def to_chunks(x_BxT):  # [B, T, ...] -> [n, C, ...]; chunk i holds flat tokens c * n + i
        x = x_BxT.reshape(num, *x_BxT.shape[2:])
        x = jnp.pad(x, [(0, n_chunks * chunk_size - num)] + [(0, 0)] * (x.ndim - 1))
        return jnp.swapaxes(x.reshape(chunk_size, n_chunks, *x.shape[1:]), 0, 1)

    if teacher_sample is not None:
        ids, counts = teacher_sample
        teacher_xs = {"sample_ids": to_chunks(ids), "sample_counts": to_chunks(counts)}
    elif teacher_topk is not None:
        teacher_xs = {"values": to_chunks(teacher_topk[0]), "indices": to_chunks(teacher_topk[1])}
    elif h_t is not None:
        teacher_xs = {"h": to_chunks(jax.lax.stop_gradient(h_t))}
        w_t = jax.lax.stop_gradient(w_t)
    else:
        teacher_xs = {}
    token_ids = jnp.arange(num, dtype=jnp.int32).reshape(mask.shape)
    loss_sum, div_sum, ce_sum = _chunked_sums(
        cfg,
        to_chunks(h_s),
        w_s,
        teacher_xs,
        w_t,
        to_chunks(targets),
        to_chunks(token_weights(mask, cfg.reduction)),  # padding gets weight 0
        to_chunks(token_ids),
        jax.random.key(0) if rng is None else rng,
    )
    return terms_dict(loss_sum, div_sum, ce_sum, mask, cfg.reduction)
