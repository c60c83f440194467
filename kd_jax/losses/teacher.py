"""Teacher-signal options: logit noise, top-k and sampled caches' formulas, vocab alignment."""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp

from kd_jax.losses.divergences import is_finite_number, token_divergence


def teacher_noise(rng: jax.Array, token_ids: jax.Array, vocab_size: int) -> jax.Array:
    """N(0, 1) noise [*token_ids.shape, V]; each token's row depends only on (rng, its id), so
    dense and chunked evaluation draw identical noise."""

    def row(i):
        return jax.random.normal(jax.random.fold_in(rng, i), (vocab_size,), jnp.float32)

    flat = jax.vmap(row)(token_ids.reshape(-1))
    return flat.reshape(*token_ids.shape, vocab_size)


def add_teacher_noise(
    teacher_logits: jax.Array,  # [B, T, V] (any leading shape)
    rng: jax.Array,
    sigma: float,
    token_ids: jax.Array | None = None,  # [B, T]; default: flat index b * T + t
) -> jax.Array:
    """Study B's ablation: teacher logits + sigma * N(0, 1), in float32."""
    if not (is_finite_number(sigma) and sigma >= 0):
        raise ValueError(f"teacher noise sigma must be a finite number >= 0; got {sigma!r}.")
    if rng is None:
        raise ValueError("teacher noise needs an rng key; pass rng=jax.random.key(...).")
    logits = teacher_logits.astype(jnp.float32)
    if sigma == 0:
        return logits
    lead = logits.shape[:-1]
    if token_ids is None:
        token_ids = jnp.arange(math.prod(lead), dtype=jnp.int32).reshape(lead)
    return logits + sigma * teacher_noise(rng, token_ids, logits.shape[-1])


def teacher_topk(teacher_logits: jax.Array, k: int) -> tuple[jax.Array, jax.Array]:
    """The teacher's top-k (values [..., k] float32, indices [..., k] int32), as a cache holds."""
    vocab = teacher_logits.shape[-1]
    if not (isinstance(k, int) and 1 <= k <= vocab):
        raise ValueError(f"teacher top-k must be an integer in [1, {vocab}]; got {k!r}.")
    return jax.lax.top_k(teacher_logits.astype(jnp.float32), k)


def topk_token_divergence(
    student_logits: jax.Array,  # [..., V]
    topk_values: jax.Array,  # [..., K] teacher logits (or temperature-1 log-probs)
    topk_indices: jax.Array,  # [..., K]
    kind: str,
    temperature: float = 1.0,
    beta: float = 0.5,
    skew: float = 0.1,
) -> jax.Array:  # [...]
    """Divergence on the teacher's top-k support, both sides renormalised over the k tokens."""
    if (
        topk_values.shape != topk_indices.shape
        or topk_values.shape[:-1] != student_logits.shape[:-1]
    ):
        raise ValueError(
            f"Teacher top-k values {topk_values.shape} and indices {topk_indices.shape} must "
            f"both be [..., K] with the student's leading shape {student_logits.shape[:-1]}."
        )
    student_k = jnp.take_along_axis(student_logits, topk_indices, axis=-1)
    return token_divergence(student_k, topk_values, kind, temperature, beta, skew)


class TeacherSample(NamedTuple):
    """K tokens drawn from the teacher's distribution at the cache temperature, as distinct
    ids with their counts (count 0 marks an empty slot): p^_T = counts / K."""

    ids: jax.Array  # [..., S] int
    counts: jax.Array  # [..., S] int, summing to K over the slots


def sampled_token_divergence(
    student_logits: jax.Array,  # [..., V]
    ids: jax.Array,  # [..., S]
    counts: jax.Array,  # [..., S]
    temperature: float = 1.0,
) -> jax.Array:  # [...]
    """KL(p^_T || p_S) with p^_T = counts / K the teacher's empirical distribution and p_S the
    student's full-vocabulary softmax at `temperature` (not renormalised over the sample).

    Since E[p^_T] = p_T and the gradient (p_S - p^_T) / tau is linear in p^_T, the gradient is
    an unbiased estimate of forward KL's; the value is not (its entropy term is biased)."""
    if ids.shape != counts.shape or ids.shape[:-1] != student_logits.shape[:-1]:
        raise ValueError(
            f"Teacher sample ids {ids.shape} and counts {counts.shape} must both be [..., S] "
            f"with the student's leading shape {student_logits.shape[:-1]}."
        )
    logq = jax.nn.log_softmax(student_logits.astype(jnp.float32) / temperature, axis=-1)
    logq_at = jnp.take_along_axis(logq, ids.astype(jnp.int32), axis=-1)
    c = counts.astype(jnp.float32)
    p = c / jnp.maximum(jnp.sum(c, axis=-1, keepdims=True), 1.0)
    # Empty slots (count 0) contribute 0 log 0 = 0, to the value and to the gradient.
    safe_p = jnp.where(p > 0, p, 1.0)
    return jnp.sum(jnp.where(p > 0, p * (jnp.log(safe_p) - logq_at), 0.0), axis=-1)


def align_vocab(*arrays: jax.Array, vocab_size: int) -> tuple[jax.Array, ...]:
    """Truncate the last (vocab) axis of logits or unembeddings [D, V] to the tokenizer's size.

    For checkpoints whose vocabularies differ only by padding rows (Qwen2.5: 151,936 vs
    152,064); same-tokenizer-ness cannot be seen from shapes and is the caller's to check."""
    if not (isinstance(vocab_size, int) and vocab_size > 0):
        raise ValueError(f"vocab_size must be a positive integer; got {vocab_size!r}.")
    sizes = [a.shape[-1] for a in arrays]
    if min(sizes) < vocab_size:
        raise ValueError(
            f"Cannot align vocabularies of sizes {sizes} to the tokenizer's {vocab_size} tokens: "
            "every model needs at least that many rows; check the tokenizer and the checkpoints."
        )
    return tuple(a[..., :vocab_size] for a in arrays)
