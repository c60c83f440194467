"""Fidelity: agreement, rationale BLEU, token KL(teacher || student) and top-1 agreement."""

import json

import numpy as np
import pytest

from kd_jax.evaluation import (
    agreement,
    evaluate,
    fidelity_from_predictions,
    get_task,
    rationale_bleu,
    token_kl,
    top1_agreement,
    write_fidelity,
)
from kd_jax.losses.agreement import dense_fidelity_sums, fidelity_sums
from tests.test_eval_tasks import FIXTURES


def _np_kl(t, s, mask):
    """Slow reference: per token sum_v p (log p - log q), mean over masked tokens."""
    lp = t - np.log(np.exp(t).sum(-1, keepdims=True))
    lq = s - np.log(np.exp(s).sum(-1, keepdims=True))
    kl = (np.exp(lp) * (lp - lq)).sum(-1)
    return (kl * mask).sum() / mask.sum()


def test_token_kl_matches_numpy_and_is_zero_on_itself():
    rng = np.random.default_rng(0)
    t = rng.normal(size=(2, 5, 11)).astype(np.float32)
    s = rng.normal(size=(2, 5, 11)).astype(np.float32)
    mask = np.array([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], np.float32)
    assert float(token_kl(t, s, mask)) == pytest.approx(_np_kl(t, s, mask), rel=1e-5)
    assert float(token_kl(t, t, mask)) == pytest.approx(0.0, abs=1e-6)
    # Masked positions do not count: garbage there changes nothing.
    s2 = s.copy()
    s2[0, 3:] = 1e3
    assert float(token_kl(t, s2, mask)) == pytest.approx(float(token_kl(t, s, mask)), rel=1e-6)
    # A student with a larger vocabulary is cut to the teacher's (Study B's vocab rule).
    wide = np.concatenate([s, rng.normal(size=(2, 5, 3)).astype(np.float32)], axis=-1)
    assert float(token_kl(t, wide, mask)) == pytest.approx(_np_kl(t, s, mask), rel=1e-5)


def test_top1_agreement_by_hand():
    t = np.zeros((1, 3, 4), np.float32)
    s = np.zeros((1, 3, 4), np.float32)
    t[0, 0, 1] = t[0, 1, 2] = t[0, 2, 3] = 5.0
    s[0, 0, 1] = s[0, 1, 0] = s[0, 2, 3] = 5.0  # agrees at positions 0 and 2
    assert float(top1_agreement(t, s, np.ones((1, 3)))) == pytest.approx(2 / 3)
    assert float(top1_agreement(t, s, np.array([[0, 1, 0]]))) == 0.0
    sums = dense_fidelity_sums(t, s, np.ones((1, 3)))
    assert (float(sums["top1"]), float(sums["tokens"])) == (2.0, 3.0)


def test_agreement_uses_the_task_rule_and_no_answer_disagrees():
    math = get_task("gsm8k")
    teacher, student = [480.0, 8.0, None, 3.0], [480.0004, 9.0, None, 3.0]
    assert agreement(math, teacher, student) == 0.5  # 1e-3 tolerance; None never agrees
    assert agreement(get_task("boolq"), ["true", "false"], ["true", "true"]) == 0.5


def test_rationale_bleu_extremes():
    a = ["so 2 + 3 = 5 and the answer is 5", "the cat sat on the mat today"]
    assert rationale_bleu(a, a) == pytest.approx(100.0)
    assert rationale_bleu(a, ["zzz qqq", "www vvv"]) == pytest.approx(0.0)
    mid = rationale_bleu(a, ["so 2 + 3 = 5 and the answer is 6", "the cat sat on a mat today"])
    assert 0.0 < mid < 100.0


def test_fidelity_from_two_evaluations(tmp_path):
    teacher_says = {
        "Mark works": "The answer is 480.",
        "coffee mugs": "It is 8.",
        "laptop": "The answer is 800.",
        "Tyrannosaurus": "The answer is 1080.",
    }
    student_says = {
        "Mark works": "The answer is 480.",
        "coffee mugs": "It is 9.",
        "laptop": "no idea",
        "Tyrannosaurus": "The answer is 1080.",
    }

    def stub(table):
        return lambda prompts: [next(v for k, v in table.items() if k in p) for p in prompts]

    for name, table in (("teacher", teacher_says), ("student", student_says)):
        evaluate(
            ["gsm8k"], stub(table), None, str(tmp_path / name), data_root=FIXTURES, progress=False
        )
    per_task = fidelity_from_predictions(str(tmp_path / "student"), str(tmp_path / "teacher"))
    assert per_task["gsm8k"]["agreement"] == 0.5 and per_task["gsm8k"]["n"] == 4
    want = rationale_bleu(list(teacher_says.values()), list(student_says.values()))
    assert per_task["gsm8k"]["bleu"] == pytest.approx(want)
    doc = write_fidelity(str(tmp_path / "student"), per_task, kl=0.25, top1=0.75)
    assert json.loads((tmp_path / "student" / "fidelity.json").read_text()) == doc


def test_chunked_fidelity_equals_the_dense_logits():
    """From hidden states in chunks of tokens == from both models' full logits (1e-5)."""
    rng = np.random.default_rng(0)
    h_t, h_s = rng.normal(size=(3, 7, 5)), rng.normal(size=(3, 7, 4))
    w_t, w_s = rng.normal(size=(5, 11)), rng.normal(size=(4, 13))  # padding rows differ
    mask = (rng.random((3, 7)) > 0.3).astype(np.float32)
    dense = dense_fidelity_sums(h_t @ w_t, h_s @ w_s, mask)
    assert float(dense["kl"]) == pytest.approx(
        _np_kl(h_t @ w_t, (h_s @ w_s)[..., :11], mask) * mask.sum(), rel=1e-5
    )
    for chunk in (1, 4, 21, 64):
        sums = fidelity_sums(h_t, w_t, h_s, w_s, mask, chunk_size=chunk)
        for k in ("kl", "top1", "tokens"):
            assert float(sums[k]) == pytest.approx(float(dense[k]), rel=1e-5, abs=1e-6), (chunk, k)
