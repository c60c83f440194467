"""The KD loss in chunks of tokens, from final hidden states and unembeddings.

A custom VJP: each chunk's gradient w.r.t. the student logits is computed in the forward
scan (in closed form for forward KL, fused.py) and folded straight into d h_s and d w_s, so
the backward pass recomputes nothing and only [chunk_size, V] float32 logits (of each
model) exist at a time.

On a mesh (inside `sharding.activation_sharding`) the loss runs per device under
`shard_map`: each device scans its own tokens in chunks of `chunk_size`, so the chunk
counts tokens per device. The unembeddings enter the map whole (gathered once, before the
loop), the student's weight gradient accumulates locally in float32 across chunks, and
its cross-device sum is the map's transpose: one all-reduce per (micro-)batch. Nothing
but the loop's own tokens moves inside the loop. The LM-head matmuls run in the hidden
states' (compute) dtype with float32 accumulation; softmax and divergences in float32.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp

from kd_jax import sharding as shd
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

LOOP_SCOPE = "loss_chunk"


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
            loss, (div, ce), d_logits = fused.fkl_ce_sums_and_grad(
                cfg, s_logits, teacher, tgt_c, wt_c
            )
        else:
            loss, vjp, (div, ce) = jax.vjp(sums, s_logits, has_aux=True)
            (d_logits,) = vjp(jnp.ones_like(loss))  # ones_like: varying under shard_map
        d_logits = d_logits.astype(h_c.dtype)  # the matmuls run in the model's dtype
        dh_c = jnp.einsum("cv,dv->cd", d_logits, w_s, preferred_element_type=jnp.float32)
        dw_acc += jnp.einsum("cd,cv->dv", h_c, d_logits, preferred_element_type=jnp.float32)
        return dw_acc, ((loss, div, ce), dh_c.astype(h_c.dtype))

    w_master = w_s
    # The matmuls read the weights in the compute dtype (a no-op in float32 runs).
    w_s = w_s.astype(hs.dtype)
    if w_t is not None and "h" in teacher_xs:
        w_t = w_t.astype(teacher_xs["h"].dtype)
    dw0 = jnp.zeros(w_s.shape, jnp.float32) if with_grad else None
    varying = tuple(sorted(jax.typeof(hs).manual_axis_type.varying))  # under shard_map
    if dw0 is not None and varying:
        # A per-device partial sum: reduced once, by shard_map's transpose, after the loop.
        dw0 = jax.lax.pcast(dw0, varying, to="varying")
    with jax.named_scope(LOOP_SCOPE):  # how plans find this loop in compiled programs
        dw, (chunk_sums, dhs) = jax.lax.scan(body, dw0, (hs, teacher_xs, targets, weights, ids))
    sums = tuple(jnp.sum(s) for s in chunk_sums)
    return sums, (dhs, None if dw is None else dw.astype(w_master.dtype))


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
    """dense_kd_loss in chunks of at most `chunk_size` tokens per device: equal value and
    gradient (w.r.t. h_s and w_s; zero w.r.t. the teacher), with only [chunk_size, V]
    logits of each model alive at a time. Not forward-mode differentiable (custom VJP)."""
    if not (isinstance(chunk_size, int) and chunk_size > 0):
        raise ValueError(f"chunk_size must be a positive integer; got {chunk_size!r}.")
    check_hidden(h_s, w_s, h_t, w_t)
    w_s, w_t = align_config_vocab(cfg, w_s, w_t)
    t_vocab = None if w_t is None else w_t.shape[-1]
    check_call(
        cfg, mask.shape, w_s.shape[-1], t_vocab, targets, mask, teacher_topk, rng, teacher_sample
    )

    per_token = {"h_s": h_s, "targets": targets}
    per_token["weights"] = token_weights(mask, cfg.reduction)  # padding gets weight 0
    per_token["ids"] = jnp.arange(math.prod(mask.shape), dtype=jnp.int32).reshape(mask.shape)
    if teacher_sample is not None:
        per_token["sample_ids"], per_token["sample_counts"] = teacher_sample
    elif teacher_topk is not None:
        per_token["values"], per_token["indices"] = teacher_topk
    elif h_t is not None:
        per_token["h"] = jax.lax.stop_gradient(h_t)
        w_t = jax.lax.stop_gradient(w_t)
    rng = jax.random.key(0) if rng is None else rng

    def local(per_token, w_s, w_t, rng):
        return _local_sums(cfg, chunk_size, per_token, w_s, w_t, rng, token_axes)

    token_axes, spec = _token_sharding(mask.shape)
    if token_axes:
        mesh = shd.active_activation_sharding()[0]
        tok_specs = jax.tree.map(lambda x: jax.sharding.PartitionSpec(*spec), per_token)
        repl = jax.sharding.PartitionSpec()
        local = jax.shard_map(
            local, mesh=mesh, in_specs=(tok_specs, repl, repl, repl), out_specs=(repl, repl, repl)
        )
    loss_sum, div_sum, ce_sum = local(per_token, w_s, w_t, rng)
    return terms_dict(loss_sum, div_sum, ce_sum, mask, cfg.reduction)


def _token_sharding(shape_BxT) -> tuple[tuple[str, ...], tuple]:
    """(mesh axes the tokens are split over, [B, T] spec) on the active mesh: the batch
    over the rules' act_batch axes, the length over any other axis that divides it (so
    tensor-parallel devices share the loss's tokens rather than repeat them)."""
    active = shd.active_activation_sharding()
    if active is None or active[0].size == 1:
        return (), ()
    mesh, rules = active
    batch = shd.logical_to_spec(("act_batch", None), shape_BxT, mesh, rules)[0]
    batch_axes = () if batch is None else (batch,) if isinstance(batch, str) else tuple(batch)
    rest = [a for a in mesh.axis_names if a not in batch_axes and mesh.shape[a] > 1]
    length_axes = []
    for a in rest:
        if shape_BxT[1] % (math.prod(mesh.shape[x] for x in length_axes) * mesh.shape[a]) == 0:
            length_axes.append(a)

    def entry(axes):
        return None if not axes else axes[0] if len(axes) == 1 else tuple(axes)

    return tuple(batch_axes) + tuple(length_axes), (entry(batch_axes), entry(length_axes))


def _local_sums(cfg, chunk_size, per_token, w_s, w_t, rng, token_axes):
    """(loss, div, ce) sums of this device's tokens, summed over `token_axes`."""
    shape = per_token["targets"].shape
    num = math.prod(shape)
    n_chunks = -(-num // chunk_size)
    chunk_size = -(-num // n_chunks)  # same number of chunks, padding < n_chunks tokens

    def to_chunks(x_BxT):  # [B, T, ...] -> [n, C, ...]; chunk i holds flat tokens c * n + i
        x = x_BxT.reshape(num, *x_BxT.shape[2:])
        x = jnp.pad(x, [(0, n_chunks * chunk_size - num)] + [(0, 0)] * (x.ndim - 1))
        return jnp.swapaxes(x.reshape(chunk_size, n_chunks, *x.shape[1:]), 0, 1)

    c = {k: to_chunks(x) for k, x in per_token.items()}
    if token_axes:
        # The weight as each device's own copy: the transpose of this cast is the one
        # all-reduce of the weight gradient, after the loop.
        w_s = jax.lax.pcast(w_s, token_axes, to="varying")
    teacher_keys = ("h", "values", "indices", "sample_ids", "sample_counts")
    teacher_xs = {k: c[k] for k in teacher_keys if k in c}
    sums = _chunked_sums(
        cfg, c["h_s"], w_s, teacher_xs, w_t, c["targets"], c["weights"], c["ids"], rng
    )
    if token_axes:
        sums = tuple(jax.lax.psum(x, token_axes) for x in sums)
    return sums
