"""On-policy (GKD) batches: prompt boundaries, provenance of the sampled tokens, lambda."""

import jax
import jax.numpy as jnp
import numpy as np

from kd_jax import onpolicy, train
from kd_jax.metrics_log import read_metrics
from kd_jax.sampling import SamplingConfig, generate


def test_prompt_lengths_use_the_last_supervised_span():
    mask = jnp.asarray(
        [
            [0, 0, 1, 1, 0, 0],  # prompt = inputs[:2]
            [0, 1, 0, 0, 1, 1],  # two turns: the prompt runs to the last one, inputs[:4]
            [0, 0, 0, 0, 0, 0],  # padding row
        ],
        jnp.float32,
    )
    p, has = onpolicy.prompt_lengths(mask)
    assert p.tolist()[:2] == [3, 5] and has.tolist() == [True, True, False]


def test_build_batch_layout():
    inputs = jnp.asarray([[7, 8, 9, 4, 4, 4]])
    out = onpolicy.build_batch(
        inputs, jnp.asarray([3]), jnp.asarray([[21, 22, 2, 0]]), jnp.asarray([3])
    )
    assert out["inputs"].tolist() == [[7, 8, 9, 21, 22, 2]]
    assert out["targets"].tolist() == [[8, 9, 21, 22, 2, 0]]
    assert out["loss_mask"].tolist() == [[0, 0, 1, 1, 1, 0]]
    assert out["segment_ids"].tolist() == [[1] * 6]
    cut = onpolicy.build_batch(
        inputs, jnp.asarray([5]), jnp.asarray([[21, 22, 2, 0]]), jnp.asarray([3])
    )
    assert cut["inputs"].tolist() == [[7, 8, 9, 4, 4, 21]]  # cut to the row length
    assert cut["loss_mask"].tolist() == [[0, 0, 0, 0, 1, 0]]


def _gkd_config(tiny_config, lambda_):
    c = tiny_config("kd")
    c.data.packing = False
    c.gkd.lambda_ = lambda_
    c.gkd.temperature = 0.0
    c.gkd.max_new_tokens = 8
    c.train.num_steps = 3
    c.train.eval_every = 0
    return c


def test_onpolicy_batch_holds_the_students_own_continuations(tiny_config):
    config = _gkd_config(tiny_config, 1.0)
    r = train.setup(config)
    batch = next(r.pipeline.train_iterator())
    tok = r.pipeline.tokenizer
    cfg = SamplingConfig(max_new_tokens=8, stop_tokens=(tok.eos_token_id,), pad_id=0)
    out = onpolicy.onpolicy_batch(
        r.student.trainable, r.student.frozen, batch, jax.random.key(0), student=r.student, cfg=cfg
    )
    p_len, _ = onpolicy.prompt_lengths(batch["loss_mask"])
    model = r.student.merge(r.student.trainable)
    for i in range(2):
        p = int(p_len[i])
        prompt = np.asarray(batch["inputs"][i, :p])
        new, n = generate(
            model, jnp.asarray(prompt[None]), jnp.ones((1, p), jnp.int32), jax.random.key(0), cfg
        )
        n = int(n[0])
        row_len = int(out["segment_ids"][i].sum())
        assert np.array_equal(np.asarray(out["inputs"][i, :p]), prompt)
        assert np.array_equal(
            np.asarray(out["inputs"][i, p:row_len]), np.asarray(new[0, : row_len - p])
        )
        supervised = np.asarray(out["targets"][i])[np.asarray(out["loss_mask"][i]) > 0]
        assert np.array_equal(
            supervised, np.asarray(new[0, : min(n, row_len - p + 1)])[: len(supervised)]
        )
        assert len(supervised) == min(n, config.data.max_length - p)


def test_lambda_zero_is_the_off_policy_run_and_lambda_one_is_all_on_policy(tiny_config, tmp_path):
    plain = _gkd_config(tiny_config, 0.0)
    train.run(plain, tmp_path / "zero")
    rows0 = read_metrics(tmp_path / "zero")
    assert [r["onpolicy"] for r in rows0] == [0, 0, 0]

    off = _gkd_config(tiny_config, 0.0)
    off.gkd.max_new_tokens = 99  # irrelevant when lambda_ = 0
    train.run(off, tmp_path / "off")
    assert read_metrics(tmp_path / "off", timing=False) == read_metrics(
        tmp_path / "zero", timing=False
    )
    assert "sample_time_share" not in rows0[0], "only GKD runs (gkd.lambda_ > 0) sample"

    train.run(_gkd_config(tiny_config, 1.0), tmp_path / "one")
    rows1 = read_metrics(tmp_path / "one")
    assert [r["onpolicy"] for r in rows1] == [1, 1, 1]
    assert all(np.isfinite(r["loss"]) for r in rows1)
    assert all(0 < r["sample_time_share"] < 1 for r in rows1)
    assert rows1[0]["num_tokens"] != rows0[0]["num_tokens"]
    # alpha = 0.5, T = 2: dataset batches mix CE in; the student's own samples are not
    # labels, so on-policy batches are scored by the divergence alone.
    for r in rows0:
        want = 0.5 * 4.0 * r["divergence"] + 0.5 * r["ce"]
        np.testing.assert_allclose(r["loss"], want, rtol=1e-5)
    for r in rows1:
        np.testing.assert_allclose(r["loss"], 4.0 * r["divergence"], rtol=1e-5)


def test_use_onpolicy_is_a_function_of_seed_and_step():
    draws = [onpolicy.use_onpolicy(0.5, 3, s) for s in range(400)]
    assert draws == [onpolicy.use_onpolicy(0.5, 3, s) for s in range(400)]
    assert 0.4 < np.mean(draws) < 0.6
    assert not any(onpolicy.use_onpolicy(0.0, 3, s) for s in range(50))
