"""Cross-tokenizer KD: span grouping, "aligned" == token KD for one tokenizer, a hand-checked
two-tokenizer example, ULD against NumPy, and the data path with the second built-in tokenizer."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from kd_jax import losses, train
from kd_jax.data import token_alignment as ta
from kd_jax.data.cross_tokenize import shared_vocab
from kd_jax.data.packing import ROW_KEYS
from kd_jax.losses import KDLossConfig
from kd_jax.losses.cross_tokenizer import cross_tokenizer_terms

CFG = KDLossConfig(kind="fkl", alpha=0.5, temperature=2.0)


def test_identical_tokenizers_aligned_equals_token_kd_values_and_gradients():
    rng = np.random.default_rng(0)
    b, t, v = 2, 9, 13
    s_logits = jnp.asarray(rng.normal(scale=3, size=(b, t, v)), jnp.float32)
    t_logits = jnp.asarray(rng.normal(scale=3, size=(b, t, v)), jnp.float32)
    targets = jnp.asarray(rng.integers(0, v, (b, t)), jnp.int32)
    mask = (rng.random((b, t)) < 0.7).astype(np.float32)
    mask[:, -1] = 0
    rows = []
    for r in range(b):
        # Same tokenizer on both sides: every supervised token ends at the same character.
        toks = [(k + 1, 0, 3 * k + 2) for k in range(t) if mask[r, k]]
        rows.append(ta.alignment_arrays(ta.group_tokens(toks, toks), t, t, t))
    align = ta.loss_align({k: jnp.asarray(np.stack([a[k] for a in rows])) for k in rows[0]})
    shared = (jnp.arange(v), jnp.arange(v))

    def aligned(s):
        terms = cross_tokenizer_terms(
            s,
            t_logits,
            targets,
            jnp.asarray(mask),
            targets,
            align,
            cfg=CFG,
            mode="aligned",
            shared=shared,
        )
        return terms["loss_sum"]

    def plain(s):
        return losses.kd_loss_terms(s, t_logits, targets, jnp.asarray(mask), cfg=CFG)["loss_sum"]

    v1, g1 = jax.value_and_grad(aligned)(s_logits)
    v2, g2 = jax.value_and_grad(plain)(s_logits)
    assert float(v2) > 0
    np.testing.assert_allclose(v1, v2, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(g1, g2, rtol=1e-5, atol=1e-5)


def test_span_grouping_of_a_word_split_one_plus_two_and_two_plus_one():
    # Content "xyz w": student "x" | "yz" | " w", teacher "xy" | "z" | " w", then each side's
    # own end-of-turn token (markup, end -1). Token 0 is the prompt on both sides.
    s_tokens = [(1, 0, 1), (2, 0, 3), (3, 0, 5), (4, 0, -1)]
    t_tokens = [(1, 0, 2), (2, 0, 3), (3, 0, 5), (4, 0, -1)]
    groups = ta.group_tokens(s_tokens, t_tokens)
    assert groups == [([1, 2], [1, 2], True), ([3], [3], True), ([4], [4], False)]
    assert ta.span_groups([1, 3, 5], [2, 3, 5]) == [
        (range(0, 2), range(0, 2)),
        (range(2, 3), range(2, 3)),
    ]
    assert ta.span_groups([2, 4], [1, 3, 5]) == []  # no common end before one side stops


def _np_log_softmax(x):
    x = np.asarray(x, np.float64)
    m = x.max(-1, keepdims=True)
    return x - m - np.log(np.exp(x - m).sum(-1, keepdims=True))


def _np_uld(p, q):
    n = max(len(p), len(q))
    ps, qs = np.zeros(n), np.zeros(n)
    ps[: len(p)], qs[: len(q)] = np.sort(p)[::-1], np.sort(q)[::-1]
    return np.abs(ps - qs).sum()


def test_hand_checked_two_tokenizer_example():
    # Vocabularies: shared strings are " w" (3 <-> 3) and "a" (5 <-> 5).
    s_vocab = ["<p>", "x", "yz", " w", "<e1>", "a"]
    t_vocab = ["<q>", "xy", "z", " w", "<e2>", "a", "b"]
    shared_pairs = [(i, t_vocab.index(w)) for i, w in enumerate(s_vocab) if w in t_vocab]
    assert shared_pairs == [(3, 3), (5, 5)]
    s_ids = [0, 1, 2, 3, 4]  # <p> x yz " w" <e1>
    t_ids = [0, 1, 2, 3, 4]  # <q> xy z " w" <e2>
    L = 5
    rng = np.random.default_rng(1)
    s_logits = rng.normal(scale=2, size=(1, L, len(s_vocab)))
    t_logits = rng.normal(scale=2, size=(1, L, len(t_vocab)))
    targets = np.asarray([s_ids[1:] + [0]])
    t_targets = np.asarray([t_ids[1:] + [0]])
    mask = np.asarray([[1, 1, 1, 1, 0]], np.float32)
    groups = ta.group_tokens(
        [(1, 0, 1), (2, 0, 3), (3, 0, 5), (4, 0, -1)], [(1, 0, 2), (2, 0, 3), (3, 0, 5), (4, 0, -1)]
    )
    arr = ta.alignment_arrays(groups, L, L, L)
    np.testing.assert_array_equal(arr["xt_s_group"], [0, 0, 1, 2, -1])
    np.testing.assert_array_equal(arr["xt_s_first"][:3], [0, 2, 3])
    align = ta.loss_align({k: jnp.asarray(v[None]) for k, v in arr.items()})
    shared = (jnp.asarray([3, 5]), jnp.asarray([3, 5]))
    tau = CFG.temperature

    # By hand, in float64.
    lq, lp = _np_log_softmax(s_logits[0] / tau), _np_log_softmax(t_logits[0] / tau)

    def shared_part(pos_s, pos_t):
        q, p = np.exp(lq[pos_s]), np.exp(lp[pos_t])
        kl = sum(p[j] * math.log(p[j] / q[i]) for i, j in [(3, 3), (5, 5)])
        p_rest, q_rest = 1 - p[[3, 5]].sum(), 1 - q[[3, 5]].sum()
        kl += p_rest * math.log(p_rest / q_rest)
        return kl + _np_uld(np.delete(p, [3, 5]), np.delete(q, [3, 5]))

    # Group 0 = "xyz": P_S = q(x | <p>) q(yz | <p> x), P_T = p(xy | <q>) p(z | <q> xy).
    span_s = math.exp(lq[0, 1] + lq[1, 2])
    span_t = math.exp(lp[0, 1] + lp[1, 2])
    bern = span_t * math.log(span_t / span_s) + (1 - span_t) * math.log((1 - span_t) / (1 - span_s))
    g0 = shared_part(0, 0) + bern
    g1 = shared_part(2, 2)  # " w": one token each side
    g2 = _np_uld(np.exp(lp[3]), np.exp(lq[3]))  # the end-of-turn markup: ULD only
    div = g0 + g1 + g2
    ls = _np_log_softmax(s_logits[0])
    ce = -sum(ls[k, targets[0, k]] for k in range(4))
    want = CFG.alpha * tau**2 * div + (1 - CFG.alpha) * ce

    got = cross_tokenizer_terms(
        jnp.asarray(s_logits, jnp.float32),
        jnp.asarray(t_logits, jnp.float32),
        jnp.asarray(targets),
        jnp.asarray(mask),
        jnp.asarray(t_targets),
        align,
        cfg=CFG,
        mode="aligned",
        shared=shared,
    )
    np.testing.assert_allclose(float(got["div_sum"]), div, rtol=1e-5)
    np.testing.assert_allclose(float(got["loss_sum"]), want, rtol=1e-5)

    uld = cross_tokenizer_terms(
        jnp.asarray(s_logits, jnp.float32),
        jnp.asarray(t_logits, jnp.float32),
        jnp.asarray(targets),
        jnp.asarray(mask),
        jnp.asarray(t_targets),
        align,
        cfg=CFG,
        mode="uld",
    )
    want_uld = sum(_np_uld(np.exp(lp[t]), np.exp(lq[s])) for s, t in [(0, 0), (2, 2), (3, 3)])
    np.testing.assert_allclose(float(uld["div_sum"]), want_uld, rtol=1e-5)

    with pytest.raises(ValueError, match="needs the shared vocabulary"):
        cross_tokenizer_terms(
            jnp.asarray(s_logits),
            jnp.asarray(t_logits),
            jnp.asarray(targets),
            jnp.asarray(mask),
            jnp.asarray(t_targets),
            align,
            cfg=CFG,
            mode="aligned",
        )


# ----------------------------------------------------------------------------- data and step


def _kd_config(tiny_config, mode, teacher_tokenizer):
    c = tiny_config("kd")
    c.data.packing = False
    c.kd.cross_tokenizer = mode
    c.kd.teacher_tokenizer = teacher_tokenizer
    c.train.num_steps = 2
    c.train.eval_every = 2
    return c


def test_second_builtin_tokenizer_splits_digits_in_pairs_and_groups_match_text(tiny_config):
    from kd_jax.data import builtin_paths, load_tokenizer

    a = load_tokenizer(builtin_paths.resolve("builtin:tokenizer"))
    b = load_tokenizer(builtin_paths.resolve("builtin:tokenizer-b"))
    assert (len(a), len(b)) == (587, 512)
    assert a.tokenize(" 13") == ["▁1", "3"] and b.tokenize(" 13") == ["▁13"]

    config = _kd_config(tiny_config, "aligned", "builtin:tokenizer-b")
    config.data.max_length = 96  # room for both templates: neither side is cut
    r = train.setup(config)
    pair = r.pipeline.example_fn
    # The end of a reply is one event under two names: the eos tokens pair up.
    s_ids, t_ids = shared_vocab(a, b)
    assert (a.eos_token, b.eos_token) == ("<|end|>", "<|im_end|>")
    assert (a.eos_token_id, b.eos_token_id) in set(zip(s_ids.tolist(), t_ids.tolist(), strict=True))
    covered = supervised = ends = 0
    for i in range(20):
        ex = pair(r.pipeline.source[i])
        s_tok = a.convert_ids_to_tokens(ex["inputs"].tolist())
        t_tok = b.convert_ids_to_tokens(ex["teacher_inputs"].tolist())
        s_tok = ["<end>" if t == a.eos_token else t for t in s_tok]
        t_tok = ["<end>" if t == b.eos_token else t for t in t_tok]
        for g in range(int(ex["xt_group_mask"].sum())):
            s_pos = np.nonzero(ex["xt_s_group"] == g)[0] + 1  # tokens predicted there
            t_pos = np.nonzero(ex["xt_t_group"] == g)[0] + 1
            if ex["xt_group_text"][g]:  # the same text on both sides
                # "▁" is a space, or only a word-start mark after the template's markup.
                def text(toks, pos):
                    return "".join(toks[k] for k in pos).replace("▁", " ").lstrip()

                assert text(s_tok, s_pos) == text(t_tok, t_pos)
                ends += text(s_tok, s_pos) == "<end>"
            covered += len(s_pos)
        supervised += int(ex["loss_mask"].sum())
    assert covered == supervised  # every supervised student token is in a group
    assert ends >= 20  # every reply's end is a matched group


def test_step_with_one_tokenizer_on_both_sides_equals_plain_kd(tiny_config):
    from kd_jax import step as step_lib

    r_x = train.setup(_kd_config(tiny_config, "aligned", "builtin:tokenizer"))
    r_plain = train.setup(_kd_config(tiny_config, "off", ""))
    batch = {k: jnp.asarray(v) for k, v in next(r_x.pipeline.train_iterator()).items()}
    plain = {k: batch[k] for k in ROW_KEYS}

    def loss(r, b):
        def f(p):
            terms = step_lib.loss_terms(
                p,
                r.student.frozen,
                r.context["teacher"],
                b,
                jax.random.key(0),
                train=False,
                **r.loss_kw,
            )
            return terms["loss_sum"]

        return jax.value_and_grad(f)(r.student.trainable)

    v1, g1 = loss(r_x, batch)
    v2, g2 = loss(r_plain, plain)
    assert float(v2) > 0
    np.testing.assert_allclose(float(v1), float(v2), rtol=1e-5)
    for x, y in zip(jax.tree.leaves(g1), jax.tree.leaves(g2), strict=True):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-4, atol=1e-6)


def test_cross_tokenizer_config_errors_are_one_line(tiny_config):
    from kd_jax import cross_kd

    bad = _kd_config(tiny_config, "aligned", "builtin:tokenizer-b")
    bad.data.packing = True
    with pytest.raises(ValueError, match="data.packing=False"):
        cross_kd.check_config(bad)
    bad = _kd_config(tiny_config, "gold", "builtin:tokenizer-b")
    with pytest.raises(ValueError, match="is unknown"):
        cross_kd.check_config(bad)


def test_onpolicy_rows_are_re_rendered_for_both_tokenizers(tiny_config):
    from kd_jax import cross_kd

    config = _kd_config(tiny_config, "aligned", "builtin:tokenizer-b")
    config.data.max_length = 96
    r = train.setup(config)
    batch = next(r.pipeline.train_iterator())
    # "Samples" equal to the dataset's own responses: decoding them and tokenizing the record
    # again with both tokenizers must give back the off-policy batch exactly.
    again = cross_kd.onpolicy_batch(batch, batch, r.pipeline)
    assert set(again) == set(batch)
    for k in batch:
        np.testing.assert_array_equal(np.asarray(again[k]), np.asarray(batch[k]), err_msg=k)


def test_onpolicy_sample_cut_short_supervises_no_end_of_turn(tiny_config):
    """A sample that never produced the end-of-sequence token (cut at max_new_tokens) is not
    taught to end: neither tokenizer's end-of-turn markup is supervised after it."""
    from kd_jax import cross_kd

    config = _kd_config(tiny_config, "aligned", "builtin:tokenizer-b")
    config.data.max_length = 96
    r = train.setup(config)
    batch = {k: np.asarray(v) for k, v in next(r.pipeline.train_iterator()).items()}
    s_eos = r.pipeline.tokenizer.eos_token_id
    t_eos = r.pipeline.example_fn.teacher.tokenizer.eos_token_id
    ended = cross_kd.onpolicy_batch(batch, batch, r.pipeline)
    cut = dict(batch, loss_mask=batch["loss_mask"] * (batch["targets"] != s_eos))
    open_ = cross_kd.onpolicy_batch(cut, batch, r.pipeline)

    def supervised_eos(b):
        student = np.sum((b["targets"] == s_eos) & (b["loss_mask"] > 0))
        teacher = np.sum((b["teacher_targets"] == t_eos) & (b["xt_t_group"] >= 0))
        return int(student), int(teacher)

    rows = len(batch["targets"])
    assert supervised_eos(ended) == (rows, rows)  # one end of turn per row, both sides
    assert supervised_eos(open_) == (0, 0)
    # Everything before the end is supervised as before.
    keep = ended["targets"] != s_eos
    np.testing.assert_array_equal(open_["loss_mask"], ended["loss_mask"] * keep)


@pytest.mark.parametrize("mode", ["aligned", "uld"])
def test_cross_tokenizer_run_trains_off_and_on_policy(tiny_config, tmp_path, mode):
    import json

    config = _kd_config(tiny_config, mode, "builtin:tokenizer-b")
    config.gkd.lambda_, config.gkd.max_new_tokens = 0.5, 8  # seed 0: steps off, on, on
    config.train.num_steps = config.train.eval_every = 3
    config.data.validation_size = 12  # not a multiple of the batch: filler rows
    r = train.setup(config)
    assert r.teacher.cfg.vocab_size == 512 and r.student.cfg.vocab_size != 512
    final = train.run(config, tmp_path / mode)
    assert final["status"] == "completed" and final["eval_ce"] > 0
    rows = [json.loads(x) for x in (tmp_path / mode / "metrics.jsonl").read_text().splitlines()]
    assert [row["onpolicy"] for row in rows] == [0, 1, 1]
    assert all(np.isfinite(row["loss"]) and row["divergence"] > 0 for row in rows)
