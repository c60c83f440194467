"""KD between models with different tokenizers: "aligned" (span + shared vocabulary) and "uld".

Teacher and student tokenize the same text differently. kd_jax/data/token_alignment.py groups
the two tokenizations into minimal spans that end at the same character on both sides; a group
g starts where both models have read the same text, so their next-token distributions there
(student position s_first[g], teacher position t_first[g]) are over the same continuation.

  "aligned", per group g with first-position distributions q (student), p (teacher) at tau:
    shared   KL over the tokens that exist in both vocabularies as the same string (and the
             two eos tokens, which end a reply), plus one bucket for each side's remaining
             mass:  sum_m p[t_m] log(p[t_m] / q[s_m]) + P_rest log(P_rest / Q_rest);
    rest     ULD (below) between the two sides' non-shared probabilities;
    span     for groups of more than one token on either side, the chain-rule probability of
             the group's text on each side, P_T = prod of the teacher's target probabilities in
             the group, P_S the student's, compared as Bernoulli KL(P_T || P_S).
    Groups whose text does not match (the template's end-of-turn markup) get ULD alone.
    With two identical tokenizers every group is one token, every token is shared, and the
    loss IS token-level forward KL (tests/test_cross_tokenizer.py).
  "uld" (Boizard et al.'s universal logit distillation): per group, sum_i |p_(i) - q_(i)|
    between the probability vectors sorted in decreasing order, the shorter zero-padded: the
    Wasserstein-1 distance under ULD's uniform-cost assumption; needs no vocabulary mapping.

Both add (1 - alpha) CE on the student's own targets, and scale the divergence by alpha (and
tau^2 when scale_by_tau_sq), like KDLossConfig's loss. Sums come back as kd.terms_dict's, per
student token (reduction "token"). This loss is dense: it holds both models' [B, T, V] logits
(sorting [B, G, V] for ULD), so it suits the sizes where tokenizers differ in practice only
with short rows; chunking it like chunked.py is future work.

Alignment arrays (per row; G groups, padding groups have group_mask 0):
  s_first, t_first int [B, G]; group_mask, group_text float [B, G] (1 = text matches);
  s_group int [B, Ts], t_group int [B, Tt]: the group of each position's target (-1: none).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from kd_jax.losses.divergences import cross_entropy
from kd_jax.losses.kd import KDLossConfig, terms_dict

MODES = ("aligned", "uld")


def _target_logp(logp_BxTxV, targets_BxT):
    idx = jnp.clip(targets_BxT, 0, logp_BxTxV.shape[-1] - 1)[..., None]
    return jnp.take_along_axis(logp_BxTxV, idx, axis=-1)[..., 0]


def _group_sum(x_BxT, group_BxT, num_groups):
    """Sum of x over the positions of each group -> [B, G] (group -1 drops out)."""
    onehot = jax.nn.one_hot(group_BxT, num_groups, dtype=x_BxT.dtype)  # -1 -> all zeros
    return jnp.einsum("bt,btg->bg", x_BxT, onehot)


def _at(x_BxTxV, pos_BxG):
    return jnp.take_along_axis(x_BxTxV, pos_BxG[..., None], axis=1)


def uld_distance(p_BxGxV, q_BxGxW):
    """sum_i |p_(i) - q_(i)| of the decreasingly sorted vectors, the shorter zero-padded."""
    n = max(p_BxGxV.shape[-1], q_BxGxW.shape[-1])

    def sorted_padded(x):
        x = -jnp.sort(-x, axis=-1)
        return jnp.pad(x, [(0, 0)] * (x.ndim - 1) + [(0, n - x.shape[-1])])

    return jnp.sum(jnp.abs(sorted_padded(p_BxGxV) - sorted_padded(q_BxGxW)), axis=-1)


def _xlogy_ratio(p, logp, logq):
    return jnp.where(p > 0, p * (logp - logq), 0.0)


def _log1mexp(x):
    """log(1 - exp(x)) for x < 0, stable at both ends."""
    x = jnp.minimum(x, -1e-7)
    return jnp.where(x > -0.693, jnp.log(-jnp.expm1(x)), jnp.log1p(-jnp.exp(x)))


def _rest_logmass(logp_BxGxV, shared_ids):
    """log of the probability outside `shared_ids` (-inf when every token is shared)."""
    keep = jnp.ones(logp_BxGxV.shape[-1], bool).at[shared_ids].set(False)
    # Finite stand-ins where masked: logsumexp of all -inf has a nan gradient.
    lse = jax.nn.logsumexp(jnp.where(keep, logp_BxGxV, -1e30), axis=-1)
    return jnp.where(jnp.any(keep), lse, -jnp.inf)


def shared_divergence(logq_BxGxV, logp_BxGxW, shared_s, shared_t):
    """KL over the shared tokens and one rest bucket, plus ULD between the non-shared parts.

    A student with no mass outside the shared tokens facing a teacher with some would make
    the KL infinite; its rest log-mass is floored at log(1e-30) instead."""
    lq, lp = logq_BxGxV[..., shared_s], logp_BxGxW[..., shared_t]  # [B, G, M]
    kl = jnp.sum(_xlogy_ratio(jnp.exp(lp), lp, lq), axis=-1)
    lq_rest = jnp.maximum(_rest_logmass(logq_BxGxV, shared_s), -69.0)
    lp_rest = _rest_logmass(logp_BxGxW, shared_t)
    p_rest = jnp.exp(lp_rest)
    kl += jnp.where(p_rest > 0, p_rest * (jnp.where(p_rest > 0, lp_rest, 0.0) - lq_rest), 0.0)
    q_other = jnp.exp(logq_BxGxV).at[..., shared_s].set(0.0)
    p_other = jnp.exp(logp_BxGxW).at[..., shared_t].set(0.0)
    return kl + uld_distance(p_other, q_other)


def span_divergence(span_logp_t, span_logq_s):
    """Bernoulli KL(P_T || P_S) of "the model writes exactly this span" from log-probs."""
    p = jnp.exp(span_logp_t)
    return p * (span_logp_t - span_logq_s) + (1 - p) * (
        _log1mexp(span_logp_t) - _log1mexp(span_logq_s)
    )


def cross_tokenizer_terms(
    student_logits: jax.Array,  # [B, Ts, Vs]
    teacher_logits: jax.Array,  # [B, Tt, Vt]
    targets: jax.Array,  # [B, Ts] student targets
    mask: jax.Array,  # [B, Ts] student loss mask
    teacher_targets: jax.Array,  # [B, Tt]
    align: dict,  # the alignment arrays above
    *,
    cfg: KDLossConfig,
    mode: str,
    shared: tuple[jax.Array, jax.Array] | None = None,  # ([M] student ids, [M] teacher ids)
) -> dict:
    """Loss sums {loss_sum, div_sum, ce_sum, ...} of cross-tokenizer KD (module docstring)."""
    if mode not in MODES:
        raise ValueError(f"Unknown cross-tokenizer mode {mode!r}; choose one of {MODES}.")
    if mode == "aligned" and shared is None:
        raise ValueError("mode 'aligned' needs the shared vocabulary (student ids, teacher ids).")
    if cfg.reduction != "token" or cfg.kind != "fkl" or cfg.teacher_top_k or cfg.teacher_noise_std:
        raise ValueError(
            "Cross-tokenizer KD supports kind='fkl', reduction='token', no teacher top-k and "
            "no teacher noise."
        )
    tau = cfg.temperature
    teacher_logits = jax.lax.stop_gradient(teacher_logits)
    logq = jax.nn.log_softmax(student_logits.astype(jnp.float32) / tau, axis=-1)
    logp = jax.nn.log_softmax(teacher_logits.astype(jnp.float32) / tau, axis=-1)
    g_mask = align["group_mask"].astype(jnp.float32)
    num_groups = g_mask.shape[1]
    lq_first, lp_first = _at(logq, align["s_first"]), _at(logp, align["t_first"])  # [B, G, V]

    if mode == "uld":
        div = uld_distance(jnp.exp(lp_first), jnp.exp(lq_first))
    else:
        text = align["group_text"] > 0
        shared_s, shared_t = shared
        div = jnp.where(
            text,
            shared_divergence(lq_first, lp_first, shared_s, shared_t),
            uld_distance(jnp.exp(lp_first), jnp.exp(lq_first)),
        )
        s_group, t_group = align["s_group"], align["t_group"]
        span_s = _group_sum(_target_logp(logq, targets), s_group, num_groups)
        span_t = _group_sum(_target_logp(logp, teacher_targets), t_group, num_groups)
        sizes_s = _group_sum(jnp.ones(s_group.shape), s_group, num_groups)
        sizes_t = _group_sum(jnp.ones(t_group.shape), t_group, num_groups)
        multi = text & ((sizes_s > 1) | (sizes_t > 1))
        div += jnp.where(multi, span_divergence(span_t, span_s), 0.0)
    div = jnp.where(g_mask > 0, div, 0.0)
    m = mask.astype(jnp.float32)
    ce = jnp.where(m > 0, cross_entropy(student_logits, targets), 0.0)
    div_sum, ce_sum = jnp.sum(g_mask * div), jnp.sum(m * ce)
    loss = 0.0
    if cfg.alpha > 0:
        loss += cfg.alpha * (tau**2 if cfg.scale_by_tau_sq else 1.0) * div_sum
    if cfg.alpha < 1:
        loss += (1 - cfg.alpha) * ce_sum
    return terms_dict(loss, div_sum, ce_sum, mask, "token")
