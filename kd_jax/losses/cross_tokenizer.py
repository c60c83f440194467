"""KD between models with different tokenizers: "aligned" (spans + classes of text) and "uld".

Teacher and student tokenize the same text differently. kd_jax/data/token_alignment.py groups
the two tokenizations into minimal spans that end at the same character on both sides; a group
g starts where both models have read the same text, so their next-token distributions there
(student position s_first[g], teacher position t_first[g]) are over the same continuation.

  "aligned", per group g with first-position distributions q (student), p (teacher) at tau:
    next     KL between the two distributions over a partition of the next text that means
             the same on both sides (VocabMap, from kd_jax/data/vocab_pair.py): each token
             both vocabularies write alike, with the same implication for what follows, is
             a class; every other token falls in the class of its leading text. Where the
             teacher pairs digits and the student does not, class " 4" holds the student's
             "▁4" and the teacher's "▁4" and "▁48": the teacher writes "▁4" for the number
             4 only, the student before any digit. (For the same reason a group whose last
             tokens say different things about what follows is merged with the next one:
             token_alignment.group_tokens.)
    span     for groups of more than one token on either side, the chain-rule probability of
             the group's text on each side, P_T = prod of the teacher's target probabilities in
             the group, P_S the student's, compared as Bernoulli KL(P_T || P_S).
    Groups whose text does not match (the template's end-of-turn markup) get ULD alone.
    With two identical tokenizers every group is one token and every token its own class,
    and the loss IS token-level forward KL (tests/test_cross_tokenizer.py).
  "uld" (Boizard et al.'s universal logit distillation): per group, sum_i |p_(i) - q_(i)|
    between the probability vectors sorted in decreasing order, the shorter zero-padded: the
    Wasserstein-1 distance under ULD's uniform-cost assumption; needs no vocabulary mapping.
    It carries no token identity: the CE term on the dataset's labels does that. The
    student's own samples (`student_samples`, on-policy batches) have no labels, and there
    sorted vectors only make the student as sure of its own choices as the teacher is of its
    (measured: on-policy students collapse to repeating one word). On those batches each
    text group is scored by the span term above instead (one-token groups too): the
    teacher's probability of the sampled text against the student's, which needs no
    vocabulary mapping either.

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

from typing import NamedTuple

import jax
import jax.numpy as jnp

from kd_jax.losses.divergences import cross_entropy
from kd_jax.losses.kd import KDLossConfig, terms_dict

MODES = ("aligned", "uld")


class VocabMap(NamedTuple):
    """What "aligned" knows about the two vocabularies (kd_jax/data/vocab_pair.py)."""

    class_s: jax.Array  # [Vs] int: each student token's class of next text
    class_t: jax.Array  # [Vt] int: each teacher token's, in the same numbering
    num_classes: int  # how many classes they range over


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


def _log1mexp(x):
    """log(1 - exp(x)) for x < 0, stable at both ends."""
    x = jnp.minimum(x, -1e-7)
    return jnp.where(x > -0.693, jnp.log(-jnp.expm1(x)), jnp.log1p(-jnp.exp(x)))


def class_divergence(logq_BxGxV, logp_BxGxW, vocab: VocabMap):
    """KL(teacher || student) between the two sides' probabilities of each class of next text.

    Ids past a class array (a model vocabulary padded beyond its tokenizer) form one more
    class. A student with no mass on a class the teacher has would make the KL infinite;
    its mass is floored at 1e-30 instead."""

    def by_class(logp, classes):
        p = jnp.exp(logp)
        classes = jnp.pad(classes, (0, p.shape[-1] - classes.shape[0]), constant_values=n)
        return jnp.zeros(p.shape[:-1] + (n + 1,), p.dtype).at[..., classes].add(p)

    n = vocab.num_classes
    p, q = by_class(logp_BxGxW, vocab.class_t), by_class(logq_BxGxV, vocab.class_s)
    log_p = jnp.log(jnp.where(p > 0, p, 1.0))
    return jnp.sum(jnp.where(p > 0, p * (log_p - jnp.log(jnp.maximum(q, 1e-30))), 0.0), axis=-1)


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
    vocab: VocabMap | None = None,  # for "aligned"
    student_samples: bool = False,  # the student's own samples: "uld" scores spans instead
) -> dict:
    """Loss sums {loss_sum, div_sum, ce_sum, ...} of cross-tokenizer KD (module docstring)."""
    if mode not in MODES:
        raise ValueError(f"Unknown cross-tokenizer mode {mode!r}; choose one of {MODES}.")
    if mode == "aligned" and vocab is None:
        raise ValueError("mode 'aligned' needs the VocabMap of the two vocabularies.")
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

    text = align["group_text"] > 0
    s_group, t_group = align["s_group"], align["t_group"]
    span_s = _group_sum(_target_logp(logq, targets), s_group, num_groups)
    span_t = _group_sum(_target_logp(logp, teacher_targets), t_group, num_groups)
    if mode == "uld":
        div = uld_distance(jnp.exp(lp_first), jnp.exp(lq_first))
        if student_samples:
            div = jnp.where(text, span_divergence(span_t, span_s), 0.0)
    else:
        sizes_s = _group_sum(jnp.ones(s_group.shape), s_group, num_groups)
        sizes_t = _group_sum(jnp.ones(t_group.shape), t_group, num_groups)
        multi = (sizes_s > 1) | (sizes_t > 1)
        span = jnp.where(multi, span_divergence(span_t, span_s), 0.0)
        markup = uld_distance(jnp.exp(lp_first), jnp.exp(lq_first))
        div = jnp.where(text, class_divergence(lq_first, lp_first, vocab) + span, markup)
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
