"""The KD loss from full logits: config, per-token weights of both reductions, loss sums.

`dense_kd_loss` is the reference that `chunked_kd_loss` (chunked.py) must equal; the helpers
here are shared by both.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp

from kd_jax.losses.divergences import (
    check_divergence_args,
    cross_entropy,
    is_finite_number,
    token_divergence,
)
from kd_jax.losses.teacher import (
    TeacherSample,
    add_teacher_noise,
    align_vocab,
    sampled_token_divergence,
    teacher_topk,
    topk_token_divergence,
)

REDUCTIONS = ("token", "sequence")


@dataclasses.dataclass(frozen=True)
class KDLossConfig:
    """Everything that defines the loss; hashable, so it can be a static jit argument."""

    kind: str = "fkl"
    alpha: float = 1.0  # weight of the divergence; CE on labels gets 1 - alpha (0 = SFT)
    temperature: float = 1.0
    scale_by_tau_sq: bool = True
    beta: float = 0.5  # gjsd
    skew: float = 0.1  # skew_fkl / skew_rkl
    reduction: str = "token"
    teacher_top_k: int = 0  # 0 = full vocabulary
    teacher_noise_std: float = 0.0
    vocab_size: int | None = None  # truncate both vocabularies to the tokenizer's size

    def __post_init__(self):
        check_divergence_args(self.kind, self.temperature, self.beta, self.skew)
        if not (is_finite_number(self.alpha) and 0 <= self.alpha <= 1):
            raise ValueError(f"alpha must be in [0, 1] (0 = SFT); got {self.alpha!r}.")
        if self.reduction not in REDUCTIONS:
            raise ValueError(
                f"Unknown reduction {self.reduction!r}; choose one of {', '.join(REDUCTIONS)}."
            )
        k = self.teacher_top_k
        if not (isinstance(k, int) and not isinstance(k, bool) and k >= 0):
            raise ValueError(f"teacher_top_k must be an integer >= 0 (0 = off); got {k!r}.")
        if not (is_finite_number(self.teacher_noise_std) and self.teacher_noise_std >= 0):
            raise ValueError(
                f"teacher_noise_std must be a finite number >= 0; got {self.teacher_noise_std!r}."
            )
        if self.vocab_size is not None and not (
            isinstance(self.vocab_size, int) and self.vocab_size > 0
        ):
            raise ValueError(f"vocab_size must be a positive integer; got {self.vocab_size!r}.")


def token_weights(mask_BxT: jax.Array, reduction: str) -> jax.Array:  # [B, T] float32
    mask = mask_BxT.astype(jnp.float32)
    if reduction == "token":
        return mask
    per_row = jnp.sum(mask, axis=-1, keepdims=True)
    return mask / jnp.maximum(per_row, 1.0)


def loss_denominator(mask_BxT: jax.Array, reduction: str) -> jax.Array:
    """What loss_sum is divided by: real tokens ("token") or rows with one ("sequence")."""
    if reduction not in REDUCTIONS:
        raise ValueError(f"Unknown reduction {reduction!r}; choose one of {', '.join(REDUCTIONS)}.")
    mask = mask_BxT.astype(jnp.float32)
    if reduction == "token":
        return jnp.sum(mask)
    return jnp.sum((jnp.sum(mask, axis=-1) > 0).astype(jnp.float32))


def reduce_terms(terms: dict) -> dict:
    """Sums -> means: {loss, divergence, ce, num_tokens}. Add micro-batch terms first."""
    den = jnp.maximum(terms["denominator"], 1.0)
    return {
        "loss": terms["loss_sum"] / den,
        "divergence": terms["div_sum"] / den,
        "ce": terms["ce_sum"] / den,
        "num_tokens": terms["num_tokens"],
    }


def teacher_divergence(cfg, student_logits, teacher, token_ids, rng):
    """teacher: None, full logits [..., V], a (values, indices) top-k pair or a TeacherSample."""
    div_args = (cfg.kind, cfg.temperature, cfg.beta, cfg.skew)
    if teacher is None:
        return jnp.zeros(student_logits.shape[:-1], jnp.float32)
    if isinstance(teacher, TeacherSample):  # a NamedTuple: tested before the top-k pair
        ids, counts = jax.lax.stop_gradient(tuple(teacher))
        return sampled_token_divergence(student_logits, ids, counts, cfg.temperature)
    if isinstance(teacher, tuple):
        values, indices = jax.lax.stop_gradient(teacher)
        return topk_token_divergence(student_logits, values, indices, *div_args)
    teacher = jax.lax.stop_gradient(teacher)
    if cfg.teacher_noise_std > 0:
        teacher = add_teacher_noise(teacher, rng, cfg.teacher_noise_std, token_ids)
    if cfg.teacher_top_k:
        values, indices = teacher_topk(teacher, cfg.teacher_top_k)
        return topk_token_divergence(student_logits, values, indices, *div_args)
    return token_divergence(student_logits, teacher, *div_args)


def weighted_sums(cfg, student_logits, teacher, targets, weights, token_ids, rng):
    """(loss_sum, (div_sum, ce_sum)) over a group of tokens with reduction weights [...]."""
    real = weights > 0
    # where, not multiply: a padded token's inf or nan must not reach the sum or its gradient.
    div = jnp.where(real, teacher_divergence(cfg, student_logits, teacher, token_ids, rng), 0.0)
    ce = jnp.where(real, cross_entropy(student_logits, targets), 0.0)
    per_token = jnp.zeros_like(div)
    if cfg.alpha > 0:
        per_token += cfg.alpha * (cfg.temperature**2 if cfg.scale_by_tau_sq else 1.0) * div
    if cfg.alpha < 1:
        per_token += (1 - cfg.alpha) * ce
    return jnp.sum(weights * per_token), (jnp.sum(weights * div), jnp.sum(weights * ce))


def check_call(
    cfg,
    student_lead,
    student_vocab,
    teacher_vocab,
    targets,
    mask,
    teacher_topk,
    rng,
    teacher_sample=None,
):
    if not isinstance(cfg, KDLossConfig):
        raise TypeError(f"cfg must be a KDLossConfig; got {type(cfg).__name__}.")
    if targets.shape != student_lead or mask.shape != student_lead:
        raise ValueError(
            f"targets {targets.shape} and mask {mask.shape} must both be [B, T] = {student_lead}."
        )
    if teacher_topk is not None:
        values, indices = teacher_topk
        if values.shape != indices.shape or values.shape[:-1] != student_lead:
            raise ValueError(
                f"Teacher top-k values {values.shape} and indices {indices.shape} must both be "
                f"[B, T, K] with [B, T] = {student_lead}."
            )
    if teacher_sample is not None:
        check_sample_call(cfg, student_lead, teacher_vocab, teacher_topk, teacher_sample)
        teacher_topk = ()  # counts as the teacher below
    if teacher_vocab is None and teacher_topk is None and cfg.alpha > 0:
        raise ValueError(f"alpha = {cfg.alpha} needs a teacher; pass one or set alpha = 0 (SFT).")
    if teacher_topk and (cfg.teacher_noise_std > 0 or cfg.teacher_top_k):
        raise ValueError(
            "teacher_noise_std and teacher_top_k act on full teacher logits, not on a cached "
            "top-k; set them to 0 when passing teacher_topk."
        )
    if teacher_vocab is not None and teacher_vocab != student_vocab:
        raise ValueError(
            f"Student vocab {student_vocab} and teacher vocab {teacher_vocab} differ; set "
            "vocab_size to the tokenizer's size to truncate both."
        )
    if cfg.teacher_noise_std > 0 and rng is None:
        raise ValueError("teacher_noise_std > 0 needs an rng key; pass rng=jax.random.key(...).")


def check_sample_call(cfg, student_lead, teacher_vocab, teacher_topk, teacher_sample):
    ids, counts = teacher_sample
    if ids.shape != counts.shape or ids.shape[:-1] != student_lead:
        raise ValueError(
            f"Teacher sample ids {ids.shape} and counts {counts.shape} must both be [B, T, S] "
            f"with [B, T] = {student_lead}."
        )
    if teacher_vocab is not None or teacher_topk is not None:
        raise ValueError("Pass one teacher signal: full logits, teacher_topk or teacher_sample.")
    if cfg.kind != "fkl" or cfg.teacher_noise_std > 0 or cfg.teacher_top_k:
        raise ValueError(
            "A sampled teacher cache estimates the forward-KL gradient only: set kind='fkl', "
            f"teacher_noise_std=0 and teacher_top_k=0 (got kind={cfg.kind!r}), or use a "
            "top-k cache."
        )


def align_config_vocab(cfg, *arrays):
    present = [a for a in arrays if a is not None]
    if cfg.vocab_size is None:
        return arrays
    it = iter(align_vocab(*present, vocab_size=cfg.vocab_size))
    return tuple(None if a is None else next(it) for a in arrays)


def terms_dict(loss_sum, div_sum, ce_sum, mask_BxT, reduction):
    mask = mask_BxT.astype(jnp.float32)
    return {
        "loss_sum": loss_sum,
        "div_sum": jax.lax.stop_gradient(div_sum),
        "ce_sum": jax.lax.stop_gradient(ce_sum),
        "num_tokens": jnp.sum(mask),
        "num_sequences": loss_denominator(mask, "sequence"),
        "denominator": loss_denominator(mask, reduction),
    }


def kd_loss_terms(
    student_logits: jax.Array,  # [B, T, V]
    teacher_logits: jax.Array | None,  # [B, T, V'] or None (SFT or teacher_topk)
    targets: jax.Array,  # [B, T] int
    mask: jax.Array,  # [B, T], 1 = real token
    *,
    cfg: KDLossConfig,
    rng: jax.Array | None = None,  # needed for teacher noise
    teacher_topk: tuple[jax.Array, jax.Array] | None = None,  # cached ([B,T,K], [B,T,K])
    teacher_sample: tuple[jax.Array, jax.Array] | None = None,  # sampled (ids, counts) [B,T,S]
) -> dict:
    """Loss sums from full logits (see the module docstring for the dict)."""
    student_logits, teacher_logits = align_config_vocab(cfg, student_logits, teacher_logits)
    t_vocab = None if teacher_logits is None else teacher_logits.shape[-1]
    check_call(
        cfg,
        mask.shape,
        student_logits.shape[-1],
        t_vocab,
        targets,
        mask,
        teacher_topk,
        rng,
        teacher_sample,
    )
    teacher = teacher_logits if teacher_topk is None else tuple(teacher_topk)
    if teacher_sample is not None:
        teacher = TeacherSample(*teacher_sample)
    token_ids = jnp.arange(math.prod(mask.shape), dtype=jnp.int32).reshape(mask.shape)
    weights = token_weights(mask, cfg.reduction)
    loss_sum, (div_sum, ce_sum) = weighted_sums(
        cfg, student_logits, teacher, targets, weights, token_ids, rng
    )
    return terms_dict(loss_sum, div_sum, ce_sum, mask, cfg.reduction)


def logits_of(h: jax.Array, w: jax.Array) -> jax.Array:
    return jnp.einsum("...d,dv->...v", h, w, preferred_element_type=jnp.float32)


def check_hidden(h_s, w_s, h_t, w_t):
    if h_s.ndim != 3 or w_s.ndim != 2 or h_s.shape[-1] != w_s.shape[0]:
        raise ValueError(f"Expected h_s [B, T, D] and w_s [D, V]; got {h_s.shape}, {w_s.shape}.")
    if (h_t is None) != (w_t is None):
        raise ValueError("Pass both h_t and w_t, or neither.")
    if h_t is not None and (
        h_t.shape[:2] != h_s.shape[:2] or w_t.ndim != 2 or h_t.shape[-1] != w_t.shape[0]
    ):
        raise ValueError(
            f"Expected h_t [B, T, Dt] and w_t [Dt, V] with h_s's [B, T] = {h_s.shape[:2]}; "
            f"got {h_t.shape}, {w_t.shape}."
        )


def dense_kd_loss(
    h_s, w_s, h_t, w_t, targets, mask, *, cfg, rng=None, teacher_topk=None, teacher_sample=None
):
    """The reference: full [B, T, V] logits of both models at once, then kd_loss_terms.

    h_s [B, T, Ds] and h_t [B, T, Dt] are final hidden states (after the final norm), w_s
    [Ds, V] and w_t [Dt, V] the unembeddings; the teacher is under stop_gradient."""
    check_hidden(h_s, w_s, h_t, w_t)
    w_s, w_t = align_config_vocab(cfg, w_s, w_t)
    s_logits = logits_of(h_s, w_s)
    t_logits = None
    if h_t is not None:
        t_logits = logits_of(jax.lax.stop_gradient(h_t), jax.lax.stop_gradient(w_t))
    return kd_loss_terms(
        s_logits,
        t_logits,
        targets,
        mask,
        cfg=cfg,
        rng=rng,
        teacher_topk=teacher_topk,
        teacher_sample=teacher_sample,
    )
