"""Log-likelihood scoring: the reference `loglikelihood` for a kd_jax model, and multiple choice.

`loglikelihood(pairs) -> [sum log p(continuation | context)]` is the model interface the
evaluator needs for ARC/HellaSwag-style scoring. `make_loglikelihood` builds it from an
HF tokenizer and any `logits_fn(tokens_BxT, positions_BxT, segment_ids_BxT) -> logits_BxTxV`
(`model_logits_fn` makes one from an NNX decoder).

Tokenization follows lm-evaluation-harness: whitespace at the end of the context moves
to the front of the continuation, the pair is encoded as one string and the
continuation's tokens are those after the context's own encoding, so tokenizers that
merge across the boundary still score the tokens the model would have produced.
Rows are right-padded (segment id 0 marks padding) into fixed [batch_size, T] shapes,
T rounded up to `pad_multiple`, so an evaluation compiles only a few programs.

Multiple choice picks the choice with the highest log-likelihood, or, normalised, the
highest log-likelihood per character of the continuation (lm-eval's `acc_norm`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from kd_jax.evaluation.extract import gold_value
from kd_jax.evaluation.tasks import EvalError, Task

LogLikelihood = Callable[[Sequence[tuple[str, str]]], list[float]]
MC_STYLES = ("label", "text")
# LLM-Adapters commonsense outputs read "the correct answer is answer3": the label style
# scores each label word after this lead.
ANSWER_LEAD = "the correct answer is "


def model_logits_fn(model) -> Callable:
    """A jitted logits_fn for an NNX decoder; its weights are an argument, not a constant."""
    from flax import nnx

    graphdef, state = nnx.split(model)

    @jax.jit
    def forward(state, tokens_BxT, positions_BxT, segment_ids_BxT):
        return nnx.merge(graphdef, state)(tokens_BxT, positions_BxT, segment_ids_BxT)

    return lambda tokens, positions, segment_ids: forward(state, tokens, positions, segment_ids)


@jax.jit
def continuation_logprob(logits_BxTxV, targets_BxT, mask_BxT):
    """Sum over t of mask[b, t] * log softmax(logits[b, t])[targets[b, t]]  -> [B]."""
    logp_BxTxV = jax.nn.log_softmax(logits_BxTxV.astype(jnp.float32), axis=-1)
    picked_BxT = jnp.take_along_axis(logp_BxTxV, targets_BxT[..., None], axis=-1)[..., 0]
    return jnp.sum(picked_BxT * mask_BxT, axis=1)


def encode_pair(tokenizer, context: str, continuation: str, add_special_tokens: bool = True):
    """(context ids, continuation ids) the lm-eval way (see the module docstring)."""
    stripped = context.rstrip()
    continuation = context[len(stripped) :] + continuation
    whole = tokenizer.encode(stripped + continuation, add_special_tokens=add_special_tokens)
    ctx = tokenizer.encode(stripped, add_special_tokens=add_special_tokens)
    if whole[: len(ctx)] != ctx:  # the boundary merged: fall back to separate encodings
        whole = ctx + tokenizer.encode(continuation, add_special_tokens=False)
    cont = whole[len(ctx) :]
    if not cont:
        raise EvalError(f"continuation {continuation!r} encodes to no tokens")
    if not ctx:
        bos = getattr(tokenizer, "bos_token_id", None)
        if bos is None:
            raise EvalError("empty context and the tokenizer has no BOS token to condition on")
        ctx = [bos]
    return list(ctx), list(cont)


def make_loglikelihood(
    tokenizer,
    logits_fn: Callable,
    *,
    batch_size: int = 8,
    max_length: int = 2048,
    add_special_tokens: bool = True,
    pad_multiple: int = 16,
) -> LogLikelihood:
    """The batched `loglikelihood(pairs)` of a model given by `logits_fn`."""
    pad_id = getattr(tokenizer, "pad_token_id", None) or 0

    def loglikelihood(pairs: Sequence[tuple[str, str]]) -> list[float]:
        rows = []  # (inputs, targets, number of scored tokens at the end)
        for context, continuation in pairs:
            ctx, cont = encode_pair(tokenizer, context, continuation, add_special_tokens)
            seq = (ctx + cont)[-(max_length + 1) :]  # keep the end: the continuation matters
            if len(cont) > max_length:
                raise EvalError(f"continuation of {len(cont)} tokens exceeds max_length")
            rows.append((seq[:-1], seq[1:], len(cont)))
        order = sorted(range(len(rows)), key=lambda i: -len(rows[i][0]))
        out = np.zeros(len(rows), np.float64)
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            t = math.ceil(max(len(rows[i][0]) for i in idx) / pad_multiple) * pad_multiple
            tokens = np.full((batch_size, t), pad_id, np.int32)
            targets = np.zeros((batch_size, t), np.int32)
            segments = np.zeros((batch_size, t), np.int32)
            positions = np.zeros((batch_size, t), np.int32)
            mask = np.zeros((batch_size, t), np.float32)
            for b, i in enumerate(idx):
                inputs, tgt, n_cont = rows[i]
                n = len(inputs)
                tokens[b, :n], targets[b, :n] = inputs, tgt
                segments[b, :n], positions[b, :n] = 1, np.arange(n)
                mask[b, n - n_cont : n] = 1.0
            logits = logits_fn(jnp.asarray(tokens), jnp.asarray(positions), jnp.asarray(segments))
            scores = np.asarray(
                continuation_logprob(logits, jnp.asarray(targets), jnp.asarray(mask))
            )
            out[idx] = scores[: len(idx)]
        return out.tolist()

    return loglikelihood


# ---- multiple choice ---------------------------------------------------------------------


def mc_pairs(task: Task, record: dict, prompt: str, style: str = "label"):
    """(pairs, continuations, gold index) to score one record's choices.

    style "label": context = prompt + "the correct answer is ", continuations = the labels
    (`answer1`, ...), matching what LLM-Adapters models are trained to write; style "text":
    context = prompt, continuations = the choices' own texts (ARC/HellaSwag style).
    """
    if task.choices is None:
        raise EvalError(f"task {task.name} has no choices for log-likelihood scoring")
    if style not in MC_STYLES:
        raise EvalError(f"unknown multiple-choice style {style!r}; use one of {MC_STYLES}")
    labels, texts = task.choices(record)
    gold = str(gold_value(task.gold(record)))
    if gold not in labels:
        raise EvalError(f"task {task.name}: gold {gold!r} is not one of the choices {labels}")
    context, conts = (prompt + ANSWER_LEAD, labels) if style == "label" else (prompt, texts)
    return [(context, c) for c in conts], conts, labels.index(gold)


def mc_choice(logliks: Sequence[float], continuations: Sequence[str], normalize: bool) -> int:
    """Index of the best choice; normalised = log-likelihood per character."""
    scores = [
        ll / max(len(c), 1) if normalize else ll
        for ll, c in zip(logliks, continuations, strict=True)
    ]
    return int(np.argmax(scores))
