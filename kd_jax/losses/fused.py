"""Forward KL + cross-entropy of one chunk with their gradient in closed form.

For the most used KD loss (`fkl` on full teacher logits, no noise, no teacher top-k)
the chunked loss skips autodiff: with a = s / tau and b = t / tau,

    KL(p_T || q_S) = sum p (log p - log q),   d/ds = (q - p) / tau
    CE(s, y)       = logsumexp(s) - s_y,      d/ds = softmax(s) - onehot(y)

Each softmax is one pass of exp over [C, V], so the chunk takes two (teacher, student at
tau; the CE's softmax(s) is exp(a - max a) to the power tau for integer tau) where autodiff
of the log_softmax formulation takes about twice as many. Value and gradient equal the
generic path (tests/test_losses.py, chunked == dense).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def applies(cfg, teacher) -> bool:
    """Whether the closed form covers this loss: fkl against full teacher logits."""
    return (
        cfg.kind == "fkl"
        and isinstance(teacher, jax.Array)
        and cfg.teacher_noise_std == 0
        and not cfg.teacher_top_k
    )


def _normalise(e):
    """(probabilities, log z) from e = exp(x - max x)."""
    z = jnp.sum(e, axis=-1, keepdims=True)
    return e * (1.0 / z), jnp.log(z)


def fkl_ce_sums_and_grad(cfg, student_logits, teacher_logits, targets, weights):
    """(loss_sum, (div_sum, ce_sum), d loss_sum / d student_logits) of a [C, V] chunk."""
    tau = cfg.temperature
    s = student_logits.astype(jnp.float32)
    t = jax.lax.stop_gradient(teacher_logits).astype(jnp.float32) / tau
    a = s / tau
    m_a, m_t = jnp.max(a, axis=-1, keepdims=True), jnp.max(t, axis=-1, keepdims=True)
    e_a = jnp.exp(a - m_a)
    q, log_z_a = _normalise(e_a)
    p, log_z_t = _normalise(jnp.exp(t - m_t))
    log_q, log_p = a - m_a - log_z_a, t - m_t - log_z_t
    div = jnp.sum(jnp.where(p > 0, p * (log_p - log_q), 0.0), axis=-1)
    # softmax(s) for the CE: exp(s - max s) = e_a ** tau, a multiply for integer tau.
    m_s = tau * m_a
    if tau == 1.0:
        softmax, log_z_s = q, log_z_a
    elif float(tau).is_integer() and tau <= 8:
        softmax, log_z_s = _normalise(jax.lax.integer_pow(e_a, int(tau)))
    else:
        softmax, log_z_s = _normalise(jnp.exp(s - m_s))
    lse = (m_s + log_z_s)[..., 0]
    idx = jnp.clip(targets, 0, s.shape[-1] - 1)
    ce = lse - jnp.take_along_axis(s, idx[..., None], axis=-1)[..., 0]

    real = weights > 0
    div, ce = jnp.where(real, div, 0.0), jnp.where(real, ce, 0.0)
    c_div = cfg.alpha * (tau**2 if cfg.scale_by_tau_sq else 1.0)
    c_ce = 1.0 - cfg.alpha
    loss = jnp.sum(weights * (c_div * div + c_ce * ce))
    w = jnp.where(real, weights, 0.0)[..., None]
    onehot = jax.nn.one_hot(idx, s.shape[-1], dtype=jnp.float32)
    d_logits = w * (c_div / tau * (q - p) + c_ce * (softmax - onehot))
    return loss, (jnp.sum(weights * div), jnp.sum(weights * ce)), d_logits
