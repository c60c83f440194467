"""Per-token divergences between teacher and student distributions, and cross-entropy.

Everything here works on logits [..., V] of any leading shape and computes in float32 with
log_softmax; the formulas are listed in the package docstring (kd_jax/losses/__init__.py).
"""

from __future__ import annotations

import math
import numbers

import jax
import jax.numpy as jnp

KINDS = ("fkl", "rkl", "gjsd", "skew_fkl", "skew_rkl", "tvd", "fkl_studyb", "rkl_studyb")
STUDY_B_EPS = 1e-9  # the constant in Study B's kd_trainer.py


def is_finite_number(x) -> bool:
    """A real, finite Python or NumPy scalar (bools are rejected: True is no temperature)."""
    return isinstance(x, numbers.Real) and not isinstance(x, bool) and math.isfinite(x)


def check_divergence_args(kind: str, temperature: float, beta: float, skew: float) -> None:
    """Raise ValueError with one sentence naming the bad value and its allowed range."""
    if kind not in KINDS:
        raise ValueError(f"Unknown divergence kind {kind!r}; choose one of {', '.join(KINDS)}.")
    if not (is_finite_number(temperature) and temperature > 0):
        raise ValueError(f"temperature must be a finite number > 0; got {temperature!r}.")
    if not (is_finite_number(beta) and 0 <= beta <= 1):
        raise ValueError(f"beta must be in [0, 1] (0 = fkl, 1 = rkl); got {beta!r}.")
    if not (is_finite_number(skew) and 0 <= skew < 1):
        raise ValueError(f"skew must be in [0, 1) (DistiLLM uses 0.1); got {skew!r}.")


def _kl(logp: jax.Array, logq: jax.Array) -> jax.Array:
    """KL(p || q) over the last axis from log-probabilities, with 0 log 0 = 0."""
    p = jnp.exp(logp)
    # The where keeps -inf - (-inf) = nan out of both the value and the gradient.
    return jnp.sum(p * jnp.where(p > 0, logp - logq, 0.0), axis=-1)


def _log_mix(w: float, logp: jax.Array, logq: jax.Array) -> jax.Array:
    """log(w p + (1 - w) q) for 0 < w < 1, stable for -inf inputs."""
    # logaddexp(-inf, -inf) has a nan gradient even under a zero cotangent, so the tokens
    # where both probabilities are exactly 0 get finite stand-ins and a -inf result.
    both_zero = (logp == -jnp.inf) & (logq == -jnp.inf)
    logp, logq = jnp.where(both_zero, 0.0, logp), jnp.where(both_zero, 0.0, logq)
    return jnp.where(both_zero, -jnp.inf, jnp.logaddexp(math.log(w) + logp, math.log1p(-w) + logq))


def _divergence(logq_s, logp_t, kind: str, beta: float, skew: float) -> jax.Array:
    if kind == "fkl" or (kind == "gjsd" and beta == 0) or (kind == "skew_fkl" and skew == 0):
        return _kl(logp_t, logq_s)
    if kind == "rkl" or (kind == "gjsd" and beta == 1) or (kind == "skew_rkl" and skew == 0):
        return _kl(logq_s, logp_t)
    if kind == "gjsd":
        logm = _log_mix(beta, logp_t, logq_s)
        return beta * _kl(logp_t, logm) + (1 - beta) * _kl(logq_s, logm)
    if kind == "skew_fkl":
        return _kl(logp_t, _log_mix(skew, logp_t, logq_s))
    if kind == "skew_rkl":
        return _kl(logq_s, _log_mix(skew, logq_s, logp_t))
    if kind == "tvd":
        return 0.5 * jnp.sum(jnp.abs(jnp.exp(logp_t) - jnp.exp(logq_s)), axis=-1)
    if kind == "fkl_studyb":
        p = jnp.exp(logp_t) + STUDY_B_EPS
        return jnp.sum(p * (jnp.log(p) - logq_s), axis=-1)
    if kind == "rkl_studyb":
        return jnp.sum((jnp.exp(logq_s) + STUDY_B_EPS) * (logq_s - logp_t), axis=-1)
    raise AssertionError(kind)


def token_divergence(
    student_logits: jax.Array,  # [..., V]
    teacher_logits: jax.Array,  # [..., V]
    kind: str,
    temperature: float = 1.0,
    beta: float = 0.5,
    skew: float = 0.1,
) -> jax.Array:  # [...]
    """Per-token divergence of `kind` between the temperature-scaled distributions."""
    check_divergence_args(kind, temperature, beta, skew)
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(
            f"Student logits {student_logits.shape} and teacher logits {teacher_logits.shape} "
            "must have the same shape; align the vocabularies with align_vocab first."
        )
    logq_s = jax.nn.log_softmax(student_logits.astype(jnp.float32) / temperature, axis=-1)
    logp_t = jax.nn.log_softmax(teacher_logits.astype(jnp.float32) / temperature, axis=-1)
    return _divergence(logq_s, logp_t, kind, beta, skew)


def cross_entropy(logits: jax.Array, targets: jax.Array) -> jax.Array:
    """Per-token CE, logits [..., V], targets [...] -> [...]. Out-of-range targets (e.g. -100)
    are clipped to a valid id, so the caller's mask must exclude them."""
    logits = logits.astype(jnp.float32)
    idx = jnp.clip(targets, 0, logits.shape[-1] - 1)[..., None]
    target_logit = jnp.take_along_axis(logits, idx, axis=-1)[..., 0]
    return jax.nn.logsumexp(logits, axis=-1) - target_logit
