"""The offline top-k teacher cache: exactness, keys, resumption, size."""

import json
import os
import shutil

import jax
import numpy as np
import pytest

from kd_jax import step as step_lib
from kd_jax import teacher_cache as tc
from kd_jax import teacher_cache_job as tc_job
from kd_jax import train
from kd_jax.data import builtin_paths
from kd_jax.data.packing import TOPK_KEYS

K = 8


@pytest.mark.parametrize("bits", [10, 18])
def test_index_packing_round_trips(bits):
    idx = np.random.default_rng(0).integers(0, 2**bits, (50, 64))
    packed = tc.pack_indices(idx, bits)
    assert packed.shape == (50, 64 * bits // 8)
    np.testing.assert_array_equal(tc.unpack_indices(packed, 64, bits), idx)


def _config(tiny_config):
    c = tiny_config("kd")
    c.data.packing = False
    c.data.train = "builtin:chat/cipher/human"  # 300 records: a few seconds to cache
    c.train.num_steps = 2
    c.train.eval_every = 0
    return c


def test_cache_matches_online_top_k_kd_and_trains(tiny_config, tmp_path):
    config = _config(tiny_config)
    out = tc_job.build(
        config, tmp_path / "cache", k=K, value_dtype="float32", shard_size=128, progress=False
    )
    cache = tc.TeacherCache(out)
    bits = cache.bits
    assert cache.bytes_per_token() == pytest.approx(K * 4 + K * bits / 8, rel=0.01)

    cached_cfg = config.copy_and_resolve_references()
    cached_cfg.kd.teacher_cache = str(out)
    r_cached = train.setup(cached_cfg)
    batch = next(r_cached.pipeline.train_iterator())
    assert set(TOPK_KEYS) <= set(batch)
    online_cfg = config.copy_and_resolve_references()
    online_cfg.kd.teacher_top_k = K
    r_online = train.setup(online_cfg)
    plain = {k: v for k, v in batch.items() if k not in TOPK_KEYS}

    def loss(r, params, b):
        terms = step_lib.loss_terms(
            params, r.student.frozen, r.context["teacher"], b, jax.random.key(0), **r.loss_kw
        )
        return terms["loss_sum"]

    params = r_online.student.trainable
    v1, g1 = jax.value_and_grad(functools_partial(loss, r_cached))(params, batch)
    v2, g2 = jax.value_and_grad(functools_partial(loss, r_online))(params, plain)
    assert float(v1) > 0
    np.testing.assert_allclose(float(v1), float(v2), rtol=1e-5)
    for a, b in zip(jax.tree.leaves(g1), jax.tree.leaves(g2), strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-6)

    # Validation batches carry no cached top-k: the run reports validation CE alone.
    cached_cfg.train.eval_every = 2
    final = train.run(cached_cfg, tmp_path / "run")
    assert final["status"] == "completed" and np.isfinite(final["loss"])
    assert final["eval_ce"] > 0 and final["eval_divergence"] == 0


def functools_partial(f, r):
    return lambda params, b: f(r, params, b)


def test_cache_for_another_teacher_or_tokenizer_is_refused(tiny_config, tmp_path):
    config = _config(tiny_config)
    out = tc_job.build(config, tmp_path / "cache", k=K, shard_size=512, progress=False)
    other_teacher = config.copy_and_resolve_references()
    other_teacher.teacher.preset = "tiny-student-l"
    other_teacher.kd.teacher_cache = str(out)
    with pytest.raises(tc.CacheError, match="another teacher"):
        train.setup(other_teacher)

    tok = tmp_path / "tok"
    shutil.copytree(builtin_paths.resolve("builtin:tokenizer"), tok)
    cfg_file = tok / "tokenizer_config.json"
    meta = json.loads(cfg_file.read_text())
    meta["model_max_length"] = 1234
    cfg_file.write_text(json.dumps(meta))
    other_tok = config.copy_and_resolve_references()
    other_tok.data.tokenizer = str(tok)
    other_tok.kd.teacher_cache = str(out)
    with pytest.raises(tc.CacheError, match="another tokenizer"):
        train.setup(other_tok)


def test_interrupted_job_resumes_without_redoing_shards(tiny_config, tmp_path):
    config = _config(tiny_config)
    out = tc_job.build(config, tmp_path / "cache", k=K, shard_size=128, progress=False)
    shards = sorted(p for p in os.listdir(out) if p.startswith("shard-"))
    assert len(shards) == 3
    shutil.rmtree(out / shards[-1])  # as if killed while writing the last shard
    meta = json.loads((out / tc.META).read_text())
    meta["complete"] = False
    (out / tc.META).write_text(json.dumps(meta))
    with pytest.raises(tc.CacheError, match="incomplete"):
        tc.TeacherCache(out)
    before = {s: os.stat(out / s / "values.npy").st_mtime_ns for s in shards[:-1]}
    tc_job.build(config, out, k=K, shard_size=128, progress=False)
    after = {s: os.stat(out / s / "values.npy").st_mtime_ns for s in shards[:-1]}
    assert before == after and (out / shards[-1]).exists()
    assert tc.TeacherCache(out).meta["num_tokens"] == meta["num_tokens"]
