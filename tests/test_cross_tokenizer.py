"""Cross-tokenizer KD: span grouping, "aligned" == token KD for one tokenizer, a hand-checked
two-tokenizer example, ULD against NumPy, and the data path with the second built-in tokenizer."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from kd_jax import losses, train
from kd_jax.data import token_alignment as ta
from kd_jax.data.packing import ROW_KEYS
from kd_jax.data.vocab_pair import VocabPair, token_bytes
from kd_jax.losses import KDLossConfig
from kd_jax.losses.cross_tokenizer import VocabMap, cross_tokenizer_terms

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
    vocab = VocabMap(jnp.arange(v), jnp.arange(v), v)  # one tokenizer: a class per token

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
            vocab=vocab,
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


class _Vocab:
    """The tokenizer methods VocabPair reads, for a hand-made vocabulary."""

    def __init__(self, tokens, special=(0,), eos=None):
        self.tokens, self.all_special_ids, self.eos_token_id = tokens, list(special), eos

    def get_vocab(self):
        return {w: i for i, w in enumerate(self.tokens)}

    def __len__(self):
        return len(self.tokens)


def _same_partition(pair, s_names, t_names):
    """VocabPair's classes put two tokens together exactly when `names` do."""
    cs, ct = pair.class_s.tolist(), pair.class_t.tolist()
    both = list(zip(cs, s_names, strict=True)) + list(zip(ct, t_names, strict=True))
    for c1, n1 in both:
        for c2, n2 in both:
            assert (c1 == c2) == (n1 == n2), (n1, n2)


def _np_bernoulli_kl(p, q):
    return p * math.log(p / q) + (1 - p) * math.log((1 - p) / (1 - q))


def test_hand_checked_two_tokenizer_example():
    # Vocabularies: both write " w" and "a"; each has its own eos ("<e1>", "<e2>").
    s_vocab = ["<p>", "x", "yz", "▁w", "<e1>", "a"]
    t_vocab = ["<q>", "xy", "z", "▁w", "<e2>", "a", "b"]
    pair = VocabPair(_Vocab(s_vocab, (0, 4), eos=4), _Vocab(t_vocab, (0, 4), eos=4))
    np.testing.assert_array_equal(pair.shared[0], [3, 4, 5])
    np.testing.assert_array_equal(pair.shared[1], [3, 4, 5])
    # Classes: " w", the end of a reply and "a" each one; the rest by leading text ("x" for
    # "x" and "xy"); "<p>" and "<q>" are special tokens with different names.
    s_names = ["other", "lead x", "lead y", "w", "eos", "a"]
    t_names = ["other", "lead x", "lead z", "w", "eos", "a", "lead b"]
    _same_partition(pair, s_names, t_names)
    vocab = VocabMap(jnp.asarray(pair.class_s), jnp.asarray(pair.class_t), pair.num_classes)
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
    tau = CFG.temperature

    # By hand, in float64.
    lq, lp = _np_log_softmax(s_logits[0] / tau), _np_log_softmax(t_logits[0] / tau)

    def next_part(pos_s, pos_t):  # KL over the classes of next text
        q, p = np.exp(lq[pos_s]), np.exp(lp[pos_t])
        q_c = {n: sum(q[i] for i in range(len(q)) if s_names[i] == n) for n in set(s_names)}
        p_c = {n: sum(p[j] for j in range(len(p)) if t_names[j] == n) for n in set(t_names)}
        return sum(p_c[n] * math.log(p_c[n] / q_c.get(n, 1e-30)) for n in p_c)

    # Group 0 = "xyz", split 1+2 and 2+1: the classes at the group's start, and the span:
    # P_S = q(x | <p>) q(yz | <p> x), P_T = p(xy | <q>) p(z | <q> xy).
    span_s = math.exp(lq[0, 1] + lq[1, 2])
    span_t = math.exp(lp[0, 1] + lp[1, 2])
    bern = _np_bernoulli_kl(span_t, span_s)
    g0 = next_part(0, 0) + bern
    g1 = next_part(2, 2)  # " w": one token each side
    g2 = _np_uld(np.exp(lp[3]), np.exp(lq[3]))  # the end-of-turn markup: ULD only
    div = g0 + g1 + g2
    ls = _np_log_softmax(s_logits[0])
    ce = -sum(ls[k, targets[0, k]] for k in range(4))
    want = CFG.alpha * tau**2 * div + (1 - CFG.alpha) * ce

    def terms(mode, **kw):
        return cross_tokenizer_terms(
            jnp.asarray(s_logits, jnp.float32),
            jnp.asarray(t_logits, jnp.float32),
            jnp.asarray(targets),
            jnp.asarray(mask),
            jnp.asarray(t_targets),
            align,
            cfg=CFG,
            mode=mode,
            **kw,
        )

    got = terms("aligned", vocab=vocab)
    np.testing.assert_allclose(float(got["div_sum"]), div, rtol=1e-5)
    np.testing.assert_allclose(float(got["loss_sum"]), want, rtol=1e-5)

    uld = terms("uld")
    want_uld = sum(_np_uld(np.exp(lp[t]), np.exp(lq[s])) for s, t in [(0, 0), (2, 2), (3, 3)])
    np.testing.assert_allclose(float(uld["div_sum"]), want_uld, rtol=1e-5)

    # On the student's own samples (no labels) "uld" scores each text group by its span
    # term instead of the sorted vectors: "xyz" and " w"; the markup group drops out.
    uld_samples = terms("uld", student_samples=True)
    bern_w = _np_bernoulli_kl(math.exp(lp[2, 3]), math.exp(lq[2, 3]))
    np.testing.assert_allclose(float(uld_samples["div_sum"]), bern + bern_w, rtol=1e-5)

    with pytest.raises(ValueError, match="needs the VocabMap"):
        terms("aligned")


def test_token_bytes_of_sentencepiece_and_byte_level_tokens():
    # SentencePiece style: "▁" is a space, <0xNN> is byte NN, else UTF-8.
    assert [token_bytes(t, False) for t in ["▁13", "3", "<0x0A>", "é", ""]] == [
        b" 13",
        b"3",
        b"\n",
        "é".encode(),
        None,
    ]
    # Byte-level BPE (Qwen2, Llama 3): "Ġ" is a space, "Ċ" a newline, "Ã©" is é's bytes.
    assert [token_bytes(t, True) for t in ["Ġ13", "Ċ", "Ã©", "3"]] == [
        b" 13",
        b"\n",
        "é".encode(),
        b"3",
    ]


def test_a_token_whose_use_means_more_on_one_side_is_not_compared_alone():
    # The teacher pairs digits: its "▁4" is the number 4, the student's "▁4" starts any
    # number. " 4 is" is "▁4" "▁is" on both sides, yet the teacher's "▁is" after "▁4" is
    # conditioned on "no digit follows": the two groups merge into one span.
    s_vocab, t_vocab = ["<p>", "▁4", "8", "▁is"], ["<p>", "▁4", "▁48", "▁is", "8"]
    pair = VocabPair(_Vocab(s_vocab), _Vocab(t_vocab))
    assert not pair.same_boundary(1, 1) and pair.same_boundary(3, 3)
    assert pair.same_boundary(2, 2)  # "8" ends a number on both sides ("48" vs "4"+"8")
    s_ids, t_ids = [0, 1, 3], [0, 1, 3]

    def same(a, b):
        return pair.same_boundary(s_ids[a], t_ids[b])

    four_is = [(1, 0, 2), (2, 0, 5)]  # (index, turn, end) of " 4" and " is"
    assert ta.group_tokens(four_is, four_is) == [([1], [1], True), ([2], [2], True)]
    assert ta.group_tokens(four_is, four_is, same_boundary=same) == [([1, 2], [1, 2], True)]
    # " 48 is": "▁4" "8" "▁is" against "▁48" "▁is"; the span "48" ends alike on both sides.
    s_ids, t_ids = [0, 1, 2, 3], [0, 2, 3]
    groups = ta.group_tokens(
        [(1, 0, 2), (2, 0, 3), (3, 0, 6)], [(1, 0, 3), (2, 0, 6)], same_boundary=same
    )
    assert groups == [([1, 2], [1], True), ([3], [2], True)]
    # Next-text classes: "▁4" is not one event on both sides; " 4" holds "▁4" and "▁48".
    s_names = ["other", "lead  4", "8", "is"]
    t_names = ["other", "lead  4", "lead  4", "is", "8"]
    _same_partition(pair, s_names, t_names)


def test_vocab_pair_of_the_builtin_tokenizers():
    from kd_jax.data import builtin_paths, load_tokenizer

    a = load_tokenizer(builtin_paths.resolve("builtin:tokenizer"))
    b = load_tokenizer(builtin_paths.resolve("builtin:tokenizer-b"))
    pair = VocabPair(a, b)
    ca, cb = pair.class_s, pair.class_t

    def one(tok, text):
        (i,) = tok(text, add_special_tokens=False)["input_ids"]
        return i

    assert ca[a.eos_token_id] == cb[b.eos_token_id] and pair.same_token(
        a.eos_token_id, b.eos_token_id
    )
    assert ca[a.bos_token_id] == cb[b.bos_token_id]  # "<s>" on both sides
    assert ca[one(a, " is")] == cb[one(b, " is")] and sum(ca == ca[one(a, " is")]) == 1
    # " 6" starts a number on one side and is the number 6 on the other: one class of
    # leading text " 6" holds the student's "▁6" and the teacher's "▁6", "▁63", ...
    assert ca[one(a, " 6")] == cb[one(b, " 6")] == cb[one(b, " 63")]
    assert not pair.same_boundary(one(a, " 6"), one(b, " 6"))
    assert pair.num_classes == len(set(ca.tolist()) | set(cb.tolist()))


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
    s_ids, t_ids = r.pipeline.example_fn.vocab.shared
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
