"""The one jitted train step shared by SFT and every KD variant, and the eval step.

    state, metrics = train_step(state, batch, rng, context)

`state` is a dict pytree {params, opt_state, step, bad_steps, skipped}; `params` are the
student's trainable parameters only (all weights, or the LoRA adapters), so only they are
differentiated. `context` = {"frozen": the student's other weights (the base under LoRA),
"teacher": the teacher's weights or None}: arrays the step reads but never updates,
passed as arguments so that they are not baked into the program as constants. The
teacher runs inside the same jit under `stop_gradient`; with no teacher (SFT) the loss
is cross-entropy alone. A batch is split into `grad_accum`
micro-batches scanned in sequence; their loss sums are divided once by the count of the
whole batch, so accumulation changes memory, never the loss.

A step whose loss or gradient is not finite leaves params and optimizer state untouched
and counts itself in `bad_steps` (consecutive) and `skipped` (total); the loop stops the
run when `bad_steps` reaches `train.max_bad_steps`.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import optax

from kd_jax import cross_kd, losses
from kd_jax import sharding as shd
from kd_jax.models.parts import ModelParts


def init_state(params: dict, optimizer: optax.GradientTransformation) -> dict:
    return dict(
        params=params,
        opt_state=optimizer.init(params),
        step=jnp.zeros((), jnp.int32),
        bad_steps=jnp.zeros((), jnp.int32),
        skipped=jnp.zeros((), jnp.int32),
    )


def _forward_hidden(parts: ModelParts, trainable, frozen, batch, dropout_rng=None):
    model = parts.merge(trainable, frozen)
    h = model.hidden(
        batch["inputs"], batch["positions"], batch["segment_ids"], dropout_rng=dropout_rng
    )
    return h, model.unembedding()


def loss_terms(
    params: dict,
    frozen: dict,
    teacher_params: tuple[dict, dict] | None,  # (trainable, frozen) of the teacher
    batch: dict,
    rng: jax.Array,
    *,
    student: ModelParts,
    teacher: ModelParts | None,
    loss_cfg: losses.KDLossConfig,
    chunk_size: int,
    train: bool = True,
    cross_tokenizer: str = "off",  # "uld" | "aligned": teacher and student tokenize apart
    vocab=None,  # cross_tokenizer.VocabMap of the two vocabularies, for "aligned"
    student_samples: bool = False,  # cross-tokenizer: the batch is the student's own samples
) -> dict:
    """Loss sums of one (micro-)batch: {loss_sum, div_sum, ce_sum, num_tokens, ...}."""
    if cross_tokenizer != "off":
        return cross_kd.loss_terms(
            params,
            frozen,
            teacher_params,
            batch,
            rng,
            student=student,
            teacher=teacher,
            loss_cfg=loss_cfg,
            train=train,
            cross_tokenizer=cross_tokenizer,
            vocab=vocab,
            student_samples=student_samples,
        )
    dropout_rng, loss_rng = jax.random.split(rng)
    h_s, w_s = _forward_hidden(student, params, frozen, batch, dropout_rng if train else None)
    h_t = w_t = None
    teacher_topk = teacher_sample = None
    if teacher is not None:
        h_t, w_t = _forward_hidden(teacher, *teacher_params, batch)
        h_t, w_t = jax.lax.stop_gradient(h_t), jax.lax.stop_gradient(w_t)
    elif "teacher_topk_values" in batch:  # offline top-k cache
        teacher_topk = (batch["teacher_topk_values"], batch["teacher_topk_indices"])
    elif "teacher_sample_ids" in batch:  # offline sampled cache
        teacher_sample = (batch["teacher_sample_ids"], batch["teacher_sample_counts"])
    return losses.chunked_kd_loss(
        h_s,
        w_s,
        h_t,
        w_t,
        batch["targets"],
        batch["loss_mask"],
        chunk_size=chunk_size,
        cfg=loss_cfg,
        rng=loss_rng,
        teacher_topk=teacher_topk,
        teacher_sample=teacher_sample,
    )


def _split_micro(batch: dict, n: int) -> dict:
    def one(x):
        if x.shape[0] % n:
            raise ValueError(
                f"batch of {x.shape[0]} rows does not split into optim.grad_accum={n} "
                "micro-batches; make data.batch_size a multiple of grad_accum."
            )
        return x.reshape(n, x.shape[0] // n, *x.shape[1:])

    return jax.tree.map(one, batch)


def train_step(
    state: dict,
    batch: dict,
    rng: jax.Array,
    context: dict,
    *,
    optimizer: optax.GradientTransformation,
    schedule: optax.Schedule,
    grad_accum: int,
    **loss_kw,
) -> tuple[dict, dict]:
    """One optimizer step (see module docstring). Jit with `make_train_step`."""
    cfg = loss_kw["loss_cfg"]
    frozen, teacher_params = context["frozen"], context["teacher"]
    denominator = jnp.maximum(losses.loss_denominator(batch["loss_mask"], cfg.reduction), 1.0)
    micro = _split_micro(batch, grad_accum)
    rngs = jax.random.split(jax.random.fold_in(rng, state["step"]), grad_accum)

    def micro_grad(params, mb, mb_rng):
        def f(p):
            terms = loss_terms(p, frozen, teacher_params, mb, mb_rng, **loss_kw)
            return terms["loss_sum"] / denominator, terms

        return jax.grad(f, has_aux=True)(params)

    def accumulate(carry, xs):
        grads, sums = carry
        g, terms = micro_grad(state["params"], *xs)
        sums = {k: sums[k] + terms[k] for k in sums}
        return (jax.tree.map(jnp.add, grads, g), sums), None

    zeros = jax.tree.map(jnp.zeros_like, state["params"])
    sum_keys = ("loss_sum", "div_sum", "ce_sum", "num_tokens", "denominator")
    sums0 = {k: jnp.zeros((), jnp.float32) for k in sum_keys}
    (grads, sums), _ = jax.lax.scan(accumulate, (zeros, sums0), (micro, rngs))

    metrics = losses.reduce_terms(sums)
    grad_norm = optax.tree.norm(grads)
    ok = jnp.isfinite(metrics["loss"]) & jnp.isfinite(grad_norm)
    updates, new_opt = optimizer.update(grads, state["opt_state"], state["params"])
    new_params = optax.apply_updates(state["params"], updates)

    def keep_if_ok(new, old):
        return jax.tree.map(lambda a, b: jnp.where(ok, a, b), new, old)

    new_state = dict(
        params=keep_if_ok(new_params, state["params"]),
        opt_state=keep_if_ok(new_opt, state["opt_state"]),
        step=state["step"] + 1,
        bad_steps=jnp.where(ok, 0, state["bad_steps"] + 1),
        skipped=state["skipped"] + (~ok).astype(jnp.int32),
    )
    metrics.update(
        grad_norm=grad_norm,
        lr=schedule(state["step"]),
        skipped=new_state["skipped"],
        bad_steps=new_state["bad_steps"],
    )
    return new_state, metrics


def eval_terms(params: dict, batch: dict, context: dict, **loss_kw) -> dict:
    """Loss sums of a validation batch (no dropout); add over batches, then reduce."""
    terms = loss_terms(
        params,
        context["frozen"],
        context["teacher"],
        batch,
        jax.random.key(0),
        train=False,
        **loss_kw,
    )
    return {k: terms[k] for k in ("loss_sum", "div_sum", "ce_sum", "num_tokens", "denominator")}


def make_train_step(*, state_shardings, batch_shardings, context_shardings, rules, **kw):
    """`train_step` jitted with explicit shardings; the old state's buffers are donated.

    With `rules` (the config's logical-axis table) activations are pinned by it too
    (`shd.constrain` in model code); without, XLA propagates shardings by itself."""
    repl = _replicated(state_shardings)
    return jax.jit(
        shd.under_activation_sharding(functools.partial(train_step, **kw), repl.mesh, rules),
        in_shardings=(state_shardings, batch_shardings, repl, context_shardings),
        out_shardings=(state_shardings, repl),
        donate_argnums=(0,),
    )


def make_eval_step(*, param_shardings, batch_shardings, context_shardings, rules, **kw):
    repl = _replicated(param_shardings)
    return jax.jit(
        shd.under_activation_sharding(functools.partial(eval_terms, **kw), repl.mesh, rules),
        in_shardings=(param_shardings, batch_shardings, context_shardings),
        out_shardings=_replicated(param_shardings),
    )


def _replicated(shardings) -> jax.sharding.NamedSharding:
    mesh = jax.tree.leaves(shardings)[0].mesh
    return jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
