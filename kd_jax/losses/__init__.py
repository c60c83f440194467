"""KD and SFT losses: token divergences, cross-entropy, teacher-signal options, reductions.

Owns every number the train step minimises. Pure jax.numpy; everything is computed in float32
whatever the input dtype. Files: divergences.py (token_divergence, cross_entropy),
teacher.py (noise, top-k, vocab alignment), kd.py (KDLossConfig, reductions, the dense
reference), chunked.py (the memory-bounded loss the step calls), cross_tokenizer.py (KD between
models with different tokenizers: "aligned" and "uld", dense; see its docstring).

Divergences (`token_divergence`, per token, unreduced), with p_T = softmax(teacher / tau) and
p_S = softmax(student / tau):

  fkl         KL(p_T || p_S)
  rkl         KL(p_S || p_T)
  gjsd        beta KL(p_T || M) + (1 - beta) KL(p_S || M),  M = beta p_T + (1 - beta) p_S
              (GKD/TRL convention). The formula tends to 0 at both ends (it is
              beta * fkl + O(beta^2) near 0), so, as in TRL, beta = 0 IS fkl and beta = 1 IS rkl.
  skew_fkl    KL(p_T || a p_T + (1 - a) p_S)      (DistiLLM, a = skew in [0, 1))
  skew_rkl    KL(p_S || a p_S + (1 - a) p_T)
  tvd         0.5 sum |p_T - p_S|
  fkl_studyb  Study B's SeqKD as coded: p = p_T + 1e-9;  sum p (log p - log p_S)
  rkl_studyb  Study B's RevKD as coded: sum (p_S + 1e-9) (log p_S - log p_T)

For the clean kinds 0 log 0 = 0: logits of -inf (or so negative that a probability underflows)
give finite values and gradients; only a truly infinite KL (mass where the other side has none)
is inf. The Study B kinds copy their formula, quirks included.

The KD loss per real token is  alpha * (tau^2 if scale_by_tau_sq) * divergence
+ (1 - alpha) * CE(labels), CE at temperature 1; alpha = 0 with no teacher is SFT. Losses come
back as sums, so gradient accumulation divides once by the count of the whole global batch.
What the step calls (h = final hidden states after the final norm, w = unembedding [D, V] in
the compute dtype, e.g. model.hidden(...) and model.unembedding()):

  cfg = KDLossConfig(kind="fkl", alpha=1.0, temperature=1.0, ...)   # validated here
  den = loss_denominator(global_mask_BxT, cfg.reduction)            # before any forward
  terms = chunked_kd_loss(h_s, w_s, h_t, w_t, targets, mask, chunk_size=256, cfg=cfg)
  loss = terms["loss_sum"] / den                                    # differentiate this
  terms = {loss_sum, div_sum, ce_sum, num_tokens, num_sequences, denominator}  # scalars
  metrics = reduce_terms(sum of the micro-batches' terms)           # loss, divergence, ce

`cfg.reduction` picks the unit: "token" (default) weights each real (mask = 1) token by 1 and
the denominator is the number of real tokens; "sequence" (Study B's code) weights each token
by 1 / (real tokens of its row), so loss_sum is a sum of per-row means and the denominator is
the number of rows with at least one real token. Either way the micro-batches' sums add up to
the batch's. Only loss_sum carries gradients; div_sum (the raw divergence, without alpha or
tau^2) and ce_sum are metrics.

Teacher signal: optional Gaussian noise sigma * N(0, 1) on the teacher logits (before
temperature and top-k), keyed by (rng, flat token index b * T + t) so that every chunking
draws the same noise; fold the step and micro-batch into rng. Optional teacher top-k. Vocab
alignment truncates both unembeddings (or logits) to `vocab_size`, the tokenizer's size.

Teacher top-k, the formula (the offline top-k cache must reproduce it exactly): with the
teacher's top-k indices I and values v (raw logits, or full-vocab log-probs at temperature 1,
which differ by a per-token constant and give the same result),
  p~_T = softmax(v / tau) over I,   p~_S = softmax(student[I] / tau) over I,
and the divergence of `kind` is taken between these two distributions on the k tokens. The
student is renormalised over I as well, so every kind stays a true divergence; mass the
student puts outside I is not penalised by this term. A cache passes (v, I) as
`teacher_topk=` with h_t = w_t = None.

Sampled teacher (the `--mode sample` cache): K tokens drawn from p_T at the cache temperature
tau, kept as distinct ids with counts, p^_T = counts / K; the divergence is KL(p^_T || p_S)
against the student's FULL softmax at tau (fkl only). Its gradient (p_S - p^_T) / tau is an
unbiased estimate of forward KL's, where the renormalised top-k's is biased (it drops the
teacher's tail and never pushes the student's mass off it). Passed as `teacher_sample=(ids,
counts)` [B, T, S] with h_t = w_t = None.

Chunking: `chunked_kd_loss` splits the B*T tokens into chunks of at most `chunk_size` (padded
with weight 0) and scans over them. It is a custom VJP that computes each chunk's gradient
w.r.t. the student logits in the forward scan and at once folds it into d h_s and d w_s, so
the backward pass has nothing to recompute: the same four vocab-sized matmuls as dense
autodiff (student and teacher logits, d h_s, d w_s), with only [chunk, V] float32 per model
alive at a time. Chunks are strided (chunk i holds flat tokens c * n + i) so that a batch axis
sharded over devices stays sharded inside every chunk. The vocabulary is not chunked: the token
chunk already bounds memory, and every kind but fkl would need a second pass over the vocab.
"""

from kd_jax.losses.chunked import chunked_kd_loss
from kd_jax.losses.divergences import (
    KINDS,
    STUDY_B_EPS,
    check_divergence_args,
    cross_entropy,
    token_divergence,
)
from kd_jax.losses.kd import (
    REDUCTIONS,
    KDLossConfig,
    dense_kd_loss,
    kd_loss_terms,
    loss_denominator,
    reduce_terms,
)
from kd_jax.losses.teacher import (
    TeacherSample,
    add_teacher_noise,
    align_vocab,
    sampled_token_divergence,
    teacher_noise,
    teacher_topk,
    topk_token_divergence,
)

__all__ = [
    "KINDS",
    "REDUCTIONS",
    "STUDY_B_EPS",
    "KDLossConfig",
    "TeacherSample",
    "add_teacher_noise",
    "align_vocab",
    "check_divergence_args",
    "chunked_kd_loss",
    "cross_entropy",
    "dense_kd_loss",
    "kd_loss_terms",
    "loss_denominator",
    "reduce_terms",
    "sampled_token_divergence",
    "teacher_noise",
    "teacher_topk",
    "token_divergence",
    "topk_token_divergence",
]
