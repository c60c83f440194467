"""The sampled teacher cache: unbiasedness of its forward-KL gradient (and top-k's bias), the
compact format, the loss against a NumPy reference, chunked == dense, and the cache job."""

import json
import math
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from kd_jax import losses, sampled_cache, train
from kd_jax import step as step_lib
from kd_jax import teacher_cache as tc
from kd_jax import teacher_cache_job as tc_job
from kd_jax.data.packing import SAMPLE_KEYS
from kd_jax.losses import KDLossConfig

# ----------------------------------------------------------------------------- statistics

N_TEACHERS, M_CACHES, K, V, TAU = 400, 48, 8, 32, 2.0


def _estimator_gradients():
    """Per random (teacher, student) pair: the full fkl gradient w.r.t. the student logits
    [N, V], M sampled-cache gradients [N, M, V] and the top-K gradient [N, V]."""
    rng = np.random.default_rng(0)
    t_logits = jnp.asarray(rng.normal(scale=4.0, size=(N_TEACHERS, V)), jnp.float32)
    s_logits = jnp.asarray(rng.normal(scale=1.0, size=(N_TEACHERS, V)), jnp.float32)
    # M caches per teacher: the cache job's own sampler, T = M positions of one teacher.
    keys = jax.random.split(jax.random.key(1), N_TEACHERS)
    draws = sampled_cache.draw(jnp.repeat(t_logits[:, None], M_CACHES, 1), keys, K, TAU)
    _, ids_flat, counts_flat = sampled_cache.compact(np.asarray(draws).reshape(-1, K))
    nu = sampled_cache.compact(np.asarray(draws).reshape(-1, K))[0]
    ids, counts = sampled_cache.expand(nu, ids_flat, counts_flat, K)
    ids, counts = ids.reshape(N_TEACHERS, M_CACHES, K), counts.reshape(N_TEACHERS, M_CACHES, K)

    def full(s):
        return jnp.sum(losses.token_divergence(s, t_logits, "fkl", TAU))

    def sampled(s_NxMxV):
        return jnp.sum(losses.sampled_token_divergence(s_NxMxV, ids, counts, TAU))

    def topk(s):
        values, idx = losses.teacher_topk(t_logits, K)
        return jnp.sum(losses.topk_token_divergence(s, values, idx, "fkl", TAU))

    g_full = jax.grad(full)(s_logits)
    g_sampled = jax.grad(sampled)(jnp.repeat(s_logits[:, None], M_CACHES, 1))
    g_topk = jax.grad(topk)(s_logits)
    order = np.argsort(-np.asarray(t_logits), axis=1)  # teacher's ranks, most likely first
    return np.asarray(g_full), np.asarray(g_sampled), np.asarray(g_topk), order


def z_score(d):
    """One-sample z-statistic that the mean of the draws d is 0."""
    d = np.asarray(d, np.float64)
    return d.mean() / (d.std(ddof=1) / math.sqrt(d.size))


def test_sampled_cache_gradient_is_unbiased_and_top_k_is_not():
    g_full, g_sampled, g_topk, order = _estimator_gradients()
    tail = np.ones_like(g_full, bool)
    np.put_along_axis(tail, order[:, :K], False, axis=1)  # outside the teacher's top-K

    # 1. The push on the teacher's tail tokens, summed: one scalar per estimate.
    true_tail = np.sum(np.where(tail, g_full, 0), axis=1)  # [N]
    d_sampled = np.sum(np.where(tail[:, None], g_sampled, 0), axis=2) - true_tail[:, None]
    d_topk = np.sum(np.where(tail, g_topk, 0), axis=1) - true_tail
    z_s, z_t = z_score(d_sampled), z_score(d_topk)
    print(f"tail-gradient z: sampled {z_s:.2f}, top-k {z_t:.1f}")
    assert abs(z_s) < 4
    assert abs(z_t) > 20  # top-k never pushes the student off the tail: biased

    # 2. Every coordinate, aligned across teachers by the teacher's rank, Bonferroni over V.
    by_rank = np.take_along_axis(g_sampled - g_full[:, None], order[:, None], axis=2)
    z_rank_s = [z_score(by_rank[..., r]) for r in range(V)]
    topk_by_rank = np.take_along_axis(g_topk - g_full, order, axis=1)
    z_rank_t = [z_score(topk_by_rank[:, r]) for r in range(V)]
    print(
        f"max |z| over ranks: sampled {np.max(np.abs(z_rank_s)):.2f}, "
        f"top-k {np.max(np.abs(z_rank_t)):.1f}"
    )
    assert np.max(np.abs(z_rank_s)) < 4.5  # two-sided p ~ 7e-6 per rank, 2e-4 over 32
    assert np.max(np.abs(z_rank_t)) > 20


# ----------------------------------------------------------------------------- format, loss


def test_compact_and_expand_round_trip_with_counts_summing_to_k():
    draws = np.sort(np.random.default_rng(0).integers(0, 5, (40, 16)), axis=1)
    draws[0] = 3  # one id drawn K times
    nu, ids, counts = sampled_cache.compact(draws)
    assert nu[0] == 1 and counts[0] == 16
    out_ids, out_counts = sampled_cache.expand(nu, ids, counts, 16)
    assert (out_counts.sum(1) == 16).all()
    for row, i, c in zip(draws, out_ids, out_counts, strict=True):
        np.testing.assert_array_equal(np.repeat(i[c > 0], c[c > 0]), row)


def test_bytes_per_token_at_k64_beside_top_k():
    bits = tc.index_bits(152_064)
    topk_f16 = 64 * 2 + math.ceil(64 * bits / 8)
    bound = sampled_cache.bytes_per_token_bound(64, bits)
    print(
        f"K = 64, 152k vocab ({bits}-bit ids): sampled <= {bound:.0f} B/token, "
        f"top-k float16 {topk_f16} B/token"
    )
    assert (bits, topk_f16, bound) == (18, 272, 209)


def test_sampled_divergence_matches_numpy_and_chunked_equals_dense():
    rng = np.random.default_rng(3)
    b, t, d, v, s = 2, 5, 6, 11, 4
    h_s = jnp.asarray(rng.normal(size=(b, t, d)), jnp.float32)
    w_s = jnp.asarray(rng.normal(size=(d, v)), jnp.float32)
    ids = np.argsort(rng.random((b, t, v)), axis=-1)[..., :s]  # distinct ids per token
    counts = rng.integers(0, 3, (b, t, s))  # 0 = an empty slot
    counts[..., 0] += 1  # at least one draw per token
    targets = jnp.asarray(rng.integers(0, v, (b, t)), jnp.int32)
    mask = jnp.asarray(rng.random((b, t)) < 0.8, jnp.int32)
    cfg = KDLossConfig(kind="fkl", alpha=0.7, temperature=1.5)
    sample = (jnp.asarray(ids), jnp.asarray(counts))

    logits = np.einsum("btd,dv->btv", np.float64(h_s), np.float64(w_s)) / 1.5
    logq = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    p = counts / counts.sum(-1, keepdims=True)
    ref_div = np.where(
        p > 0, p * (np.log(np.where(p > 0, p, 1)) - np.take_along_axis(logq, ids, -1)), 0
    ).sum(-1)
    got = losses.sampled_token_divergence(jnp.einsum("btd,dv->btv", h_s, w_s), *sample, 1.5)
    np.testing.assert_allclose(got, ref_div, rtol=1e-5, atol=1e-6)

    def loss(fn, **kw):
        def f(h, w):
            return fn(h, w, None, None, targets, mask, cfg=cfg, teacher_sample=sample, **kw)[
                "loss_sum"
            ]

        return jax.value_and_grad(f, argnums=(0, 1))(h_s, w_s)

    v_dense, g_dense = loss(losses.dense_kd_loss)
    v_chunk, g_chunk = loss(losses.chunked_kd_loss, chunk_size=3)
    np.testing.assert_allclose(v_chunk, v_dense, rtol=1e-5)
    for a, c in zip(g_dense, g_chunk, strict=True):
        np.testing.assert_allclose(c, a, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="forward-KL gradient only"):
        losses.dense_kd_loss(
            h_s, w_s, None, None, targets, mask, teacher_sample=sample, cfg=KDLossConfig(kind="rkl")
        )


# ----------------------------------------------------------------------------- the cache job


def _config(tiny_config):
    c = tiny_config("kd")
    c.data.packing = False
    c.data.train = "builtin:chat/cipher/human"  # 300 records
    c.train.num_steps = 2
    c.train.eval_every = 0
    return c


def test_sampled_cache_holds_the_teachers_draws_resumes_and_trains(tiny_config, tmp_path):
    config = _config(tiny_config)
    out = tc_job.build(
        config, tmp_path / "cache", k=K, mode="sample", shard_size=128, batch_size=8, progress=False
    )
    info = tc.summary(out)
    print(json.dumps(info))
    cache = tc.TeacherCache(out)
    assert cache.mode == "sample" and cache.keys == SAMPLE_KEYS
    assert 1 + 1 + cache.bits / 8 <= info["bytes_per_token"] <= info["bytes_per_token_bound"]

    # Record 5's draws are the teacher's, drawn with the record's own key.
    r = train.setup(config)
    row = r.pipeline.example_fn(r.pipeline.source[5])
    from kd_jax.data.packing import pad_row, stack_rows

    batch = {
        k: jnp.asarray(v) for k, v in stack_rows([pad_row(row, 48)]).items() if k != "num_truncated"
    }
    fn = sampled_cache.draw_fn(r.teacher, K, config.kd.temperature, config.seed)
    draws = np.asarray(fn(*r.context["teacher"], batch, jnp.asarray([5])))[0]
    m = row["loss_mask"] > 0
    ids, counts = sampled_cache.expand(*sampled_cache.compact(draws[: len(m)][m]), K)
    got_ids, got_counts = cache.lookup(5)
    np.testing.assert_array_equal(got_ids, ids)
    np.testing.assert_array_equal(got_counts, counts)

    # Resume: a lost shard is redrawn identically.
    last = out / "shard-00002"
    before = {f.name: np.load(f) for f in last.glob("*.npy")}
    shutil.rmtree(last)
    meta = json.loads((out / tc.META).read_text())
    meta["complete"] = False
    (out / tc.META).write_text(json.dumps(meta))
    tc_job.build(config, out, k=K, mode="sample", shard_size=128, batch_size=8, progress=False)
    for name, arr in before.items():
        np.testing.assert_array_equal(np.load(last / name), arr)
    with pytest.raises(tc.CacheError, match="other settings"):
        tc_job.build(config, out, k=K, mode="topk", shard_size=128, progress=False)

    # Training reads it through the same step.
    cached = config.copy_and_resolve_references()
    cached.kd.teacher_cache = str(out)
    rc = train.setup(cached)
    b = next(rc.pipeline.train_iterator())
    assert set(SAMPLE_KEYS) <= set(b)
    sup = np.asarray(b["loss_mask"]) > 0
    assert (np.asarray(b["teacher_sample_counts"]).sum(-1)[sup] == K).all()
    terms = step_lib.loss_terms(
        rc.student.trainable, rc.student.frozen, None, b, jax.random.key(0), **rc.loss_kw
    )
    assert float(terms["div_sum"]) > 0
    final = train.run(cached, tmp_path / "run")
    assert final["status"] == "completed" and np.isfinite(final["loss"])

    other_t = cached.copy_and_resolve_references()
    other_t.kd.temperature = 1.0
    with pytest.raises(tc.CacheError, match="drawn at temperature 2.0"):
        train.setup(other_t)
    other_kind = cached.copy_and_resolve_references()
    other_kind.kd.divergence = "rkl"
    with pytest.raises(tc.CacheError, match="forward-KL gradient only"):
        train.setup(other_kind)
