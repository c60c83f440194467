"""On-policy batches for GKD: the student continues each prompt, the step scores that.

With probability `gkd.lambda_` a training batch is replaced, row by row, by the row's
prompt followed by a continuation sampled from the current student (KV-cache sampler,
`gkd.temperature`, up to `gkd.max_new_tokens`, stopping at the tokenizer's EOS). The
teacher and the student then score the sampled sequence inside the usual train step, so
GKD is the same jitted step with a different batch; with kd.alpha < 1 that step is compiled
once more with the divergence alone (TrainProgram.onpolicy_step): CE on the student's own
samples would train it to imitate itself.

The prompt of a row is everything before its last supervised span (the final assistant
turn); the new batch supervises exactly the sampled tokens, stop token included. This
needs one example per row (`data.packing=False`) and supervision on responses only
(`data.train_on_inputs=False`), which `config_checks` enforces.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from kd_jax import sharding as shd
from kd_jax.models.parts import ModelParts
from kd_jax.sampling import SamplingConfig, generate_tokens


def use_onpolicy(lambda_: float, seed: int, step: int) -> bool:
    """Whether `step` draws an on-policy batch: a pure function of (seed, step), so a
    resumed run makes the same choices as an uninterrupted one."""
    if lambda_ <= 0:
        return False
    return bool(np.random.default_rng([seed, step, 0x6B64]).random() < lambda_)


def prompt_lengths(loss_mask_BxT: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(P, has_response) per row: inputs[:P] is the prompt, the tokens before the last
    supervised span; rows without supervision (padding rows) get no continuation.

    loss_mask[t] marks targets[t] = inputs[t+1], so a span starting at t supervises
    tokens from t+1 on and the prompt is inputs[: t + 1]."""
    m = loss_mask_BxT > 0
    t = m.shape[1]
    prev = jnp.pad(m[:, :-1], ((0, 0), (1, 0)))
    last_start = jnp.max(jnp.where(m & ~prev, jnp.arange(t)[None, :], -1), axis=1)
    return jnp.maximum(last_start + 1, 1).astype(jnp.int32), last_start >= 0


def build_batch(inputs_BxT, prompt_len_B, new_BxN, new_len_B) -> dict:
    """Rows prompt ++ sampled tokens (cut to T), supervised on the sampled tokens only."""
    b, t = inputs_BxT.shape
    n = new_BxN.shape[1]
    pos = jnp.arange(t + 1)[None, :]  # one extra slot: targets look one token ahead
    p, total = prompt_len_B[:, None], (prompt_len_B + new_len_B)[:, None]
    from_prompt = jnp.take_along_axis(
        jnp.pad(inputs_BxT, ((0, 0), (0, 1))), jnp.minimum(pos, t), axis=1
    )
    from_new = jnp.take_along_axis(new_BxN, jnp.clip(pos - p, 0, n - 1), axis=1)
    seq = jnp.where(pos < p, from_prompt, jnp.where(pos < total, from_new, 0))
    length = jnp.minimum(total, t)  # [B, 1] tokens kept in the row
    idx = pos[:, :t]
    inside = idx < length
    return {
        "inputs": jnp.where(inside, seq[:, :t], 0).astype(jnp.int32),
        "targets": jnp.where(idx + 1 < length, seq[:, 1:], 0).astype(jnp.int32),
        "loss_mask": ((idx >= p - 1) & (idx + 1 < length)).astype(jnp.float32),
        "positions": jnp.where(inside, idx, 0).astype(jnp.int32),
        "segment_ids": inside.astype(jnp.int32),
    }


def _left_align(inputs_BxT, prompt_len_B):
    """Prompts right-aligned in a [B, T] buffer (the sampler's layout) and their mask."""
    t = inputs_BxT.shape[1]
    src = jnp.arange(t)[None, :] - (t - prompt_len_B[:, None])
    mask = src >= 0
    tokens = jnp.take_along_axis(inputs_BxT, jnp.maximum(src, 0), axis=1)
    return jnp.where(mask, tokens, 0), mask.astype(jnp.int32)


def onpolicy_batch(params, frozen, batch, rng, *, student: ModelParts, cfg: SamplingConfig):
    """The on-policy replacement of `batch` (same shapes), sampled from `params`."""
    model = student.merge(params, frozen)
    p_len, has_response = prompt_lengths(batch["loss_mask"])
    prompts, mask = _left_align(batch["inputs"], p_len)
    new, new_len = generate_tokens(model, prompts, mask, rng, cfg)
    new_len = jnp.where(has_response, new_len, 0)
    out = build_batch(batch["inputs"], p_len, new, new_len)
    # Padding rows stay padding rows.
    return jax.tree.map(lambda x: jnp.where(has_response[:, None], x, 0).astype(x.dtype), out)


def make_onpolicy_fn(student: ModelParts, cfg: SamplingConfig, shardings: dict, rules):
    """`onpolicy_batch` jitted once for the run (params, frozen, batch, rng) -> batch;
    with `rules`, activations are pinned by the logical-axis table as in the train step."""
    fn = functools.partial(onpolicy_batch, student=student, cfg=cfg)
    mesh = jax.tree.leaves(shardings)[0].mesh
    return jax.jit(
        shd.under_activation_sharding(fn, mesh, rules),
        out_shardings=shardings,
    )
