"""The model-facing callables: the reference loglikelihood against a direct, unpadded
per-example computation, and make_generate around the KV-cache sampler."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from kd_jax.data.builtin_tokenizer import build_tokenizer
from kd_jax.evaluation import evaluate, make_loglikelihood, model_logits_fn
from kd_jax.evaluation.generation import make_generate
from kd_jax.evaluation.loglik import encode_pair, mc_choice
from kd_jax.models import create_model, presets
from tests.test_eval_tasks import FIXTURES


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
    from transformers import AutoTokenizer

    path = build_tokenizer(str(tmp_path_factory.mktemp("tok")), per_family=50)
    return AutoTokenizer.from_pretrained(path)


@pytest.fixture(scope="module")
def model(tok):
    # The smallest preset (1 layer, 2 query heads sharing 1 KV head): GQA and the scan over
    # layers are exercised, and init and compiles stay cheap on a shared 2-core CPU.
    return create_model(presets.get("tiny-student-xs", vocab_size=len(tok)), seed=3)


@pytest.fixture(scope="module")
def logits_fn(model):
    return model_logits_fn(model)


_forward = nnx.jit(lambda model, tokens: model(tokens))


def _logp(model, seq):
    """[len(seq), V] log-probabilities of one unpadded sequence, no positions or segments."""
    return np.asarray(jax.nn.log_softmax(_forward(model, jnp.asarray([seq]))[0], axis=-1))


def _direct(model, tok, context, continuation):
    """Sum of log p(continuation token | everything before), one unpadded sequence."""
    ctx, cont = encode_pair(tok, context, continuation)
    seq = ctx + cont
    logp = _logp(model, seq[:-1])
    return float(sum(logp[t, seq[t + 1]] for t in range(len(ctx) - 1, len(seq) - 1)))


PAIRS = [
    ("Max has 13 books . He drops 6 .", " The answer is 7 ."),
    ("Which number is larger : 851 or 140 ?", " 851"),
    ("a", " b c d e f g h i j k l m n o p q r s t u v w x y z"),
]


def test_batched_padded_equals_direct(model, tok, logits_fn):
    direct = [_direct(model, tok, c, x) for c, x in PAIRS]
    # Batches of 2: two rows of different lengths share one right-padded batch, and the
    # last batch is half empty.
    got = make_loglikelihood(tok, logits_fn, batch_size=2)(PAIRS)
    np.testing.assert_allclose(got, direct, rtol=1e-5, atol=1e-4)
    assert all(v < 0 for v in got)


def test_trailing_context_space_moves_to_the_continuation(tok):
    assert encode_pair(tok, "The answer is ", "7") == encode_pair(tok, "The answer is", " 7")


def test_truncation_keeps_the_continuation(model, tok, logits_fn):
    ll = make_loglikelihood(tok, logits_fn, batch_size=2, max_length=8)
    ctx, cont = encode_pair(tok, *PAIRS[0])
    seq = (ctx + cont)[-9:]
    logp = _logp(model, seq[:-1])
    want = sum(float(logp[t, seq[t + 1]]) for t in range(8 - len(cont), 8))
    assert ll([PAIRS[0]])[0] == pytest.approx(want, abs=1e-4)


def test_mc_with_the_tiny_model_scores_the_argmax(model, tok, logits_fn, tmp_path):
    ll = make_loglikelihood(tok, logits_fn, batch_size=4)
    doc = evaluate(
        ["arc_e"],
        None,
        ll,
        str(tmp_path),
        data_root=FIXTURES,
        limit=2,
        template="alpaca",
        batch_size=1,
        progress=False,
    )
    rows = [json.loads(x) for x in open(tmp_path / "predictions" / "arc_e.jsonl")]
    first = rows[0]
    labels = ["answer1", "answer2", "answer3", "answer4"]
    direct = [_direct(model, tok, first["prompt"] + "the correct answer is ", c) for c in labels]
    np.testing.assert_allclose(first["mc_logliks"], direct, rtol=1e-5, atol=1e-4)
    assert first["mc_choice"] == int(np.argmax(direct))
    acc = np.mean([r["mc_choice"] == r["mc_gold"] for r in rows])
    assert doc["tasks"]["arc_e"]["mc_accuracy"] == pytest.approx(acc)
    assert mc_choice([-4.0, -3.0], ["ab", "a"], normalize=False) == 1
    assert mc_choice([-4.0, -3.0], ["abcd", "a"], normalize=True) == 0  # -1/char beats -3/char


class _Recording:
    """A tokenizer proxy that records the ids it encodes."""

    def __init__(self, tok):
        self._tok, self.encoded = tok, []

    def encode(self, text, **kw):
        ids = self._tok.encode(text, **kw)
        self.encoded.append(ids)
        return ids

    def __getattr__(self, name):
        return getattr(self._tok, name)


def test_make_generate_adds_bos_once_and_matches_the_sampler(model, tok):
    from kd_jax.sampling import SamplingConfig, generate_text

    rec = _Recording(tok)
    gen = make_generate(model, rec, max_new_tokens=3, temperature=0.0, batch_size=2)
    chat = "<s><|user|>Which is smaller , 663 or 655 ?<|end|><|assistant|>"
    alpaca = "### Instruction:\nCount the fig .\n\n### Response:\n"
    out = gen([chat, alpaca])
    bos = tok.bos_token_id
    assert [ids[0] for ids in rec.encoded] == [bos, bos]  # Alpaca prompts get BOS ...
    assert [ids.count(bos) for ids in rec.encoded] == [1, 1]  # ... and chat keeps just one
    # Greedy output equals the sampler fed the same ids.
    cfg = SamplingConfig(max_new_tokens=3, stop_tokens=(tok.eos_token_id,), pad_id=0)
    want = generate_text(model, tok, [chat, "<s>" + alpaca], cfg, batch_size=2, progress=False)
    assert out == want and len(out) == 2
