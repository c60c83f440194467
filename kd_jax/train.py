"""The training loop: config in, checkpoints and metrics out, resumable at any point.

    final = kd_jax.train.run(config, workdir)

Restore order: WORKDIR's latest checkpoint (resume) if any, else the student's
`hf_path` / `workdir` / `preset` (init_from). Every run writes the resolved config to
WORKDIR/config.json, metrics to WORKDIR/metrics.jsonl and TensorBoard, and checkpoints
(kd_jax.checkpoint). SIGTERM (preemption) on any host: every process finishes the same
step, saves it and returns (kd_jax.preemption).

The host waits for the device only on logging, eval and checkpoint steps (where the
rows carry step time, throughput and MFU: kd_jax.step_clock); on other steps it reads
the bad-step counter of the step before, so the divergence stop still ends the run
after the same step without a sync per step.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from pathlib import Path

import jax
import jax.numpy as jnp
from ml_collections import ConfigDict
from tqdm.auto import tqdm

from kd_jax import sharding as shd
from kd_jax import step as step_lib
from kd_jax.checkpoint import Checkpointer
from kd_jax.config_checks import ConfigError, validate
from kd_jax.data import DataConfig, builtin_paths, make_pipeline
from kd_jax.data.packing import TOPK_KEYS
from kd_jax.metrics_log import MetricsWriter, check_tracker, to_python
from kd_jax.onpolicy import make_onpolicy_fn, use_onpolicy
from kd_jax.optim import learning_rate_schedule, make_optimizer
from kd_jax.preemption import PreemptionWatch
from kd_jax.sampling import SamplingConfig
from kd_jax.state import ModelParts, build_model
from kd_jax.step_clock import StepClock, step_model_flops

log = logging.getLogger("kd_jax.train")


@dataclasses.dataclass
class Run:
    """Everything `run` builds before the loop; also used by eval, export and plan."""

    config: ConfigDict
    mesh: jax.sharding.Mesh
    pipeline: object
    student: ModelParts
    teacher: ModelParts | None
    loss_kw: dict
    context: dict

    @property
    def context_shardings(self):
        return jax.tree.map(lambda x: x.sharding, self.context)


def setup(config: ConfigDict) -> Run:
    """Mesh, data, student and teacher for a validated config."""
    shd.initialize_distributed()
    rules = _rules(config)
    mesh = shd.make_mesh(dict(config.mesh))
    batch_sharding = shd.batch_sharding(mesh, rules)
    data = config.data.to_dict()
    for key in ("train", "validation", "tokenizer"):
        data[key] = builtin_paths.resolve(data[key])
    pipeline = make_pipeline(DataConfig.from_mapping(data), sharding=batch_sharding)
    vocab = len(pipeline.tokenizer)
    common = dict(vocab_size=vocab, mesh=mesh, rules=rules, seed=config.seed)
    student = build_model(config.student, role="student", **common)
    teacher = None
    if config.kd.teacher_cache:
        _attach_teacher_cache(config, pipeline, student)
    elif config.method == "kd":
        teacher = build_model(config.teacher, role="teacher", **common)
    _check_vocab(config, vocab, student, teacher)
    loss_kw = dict(
        student=student,
        teacher=teacher,
        loss_cfg=loss_config(config),
        chunk_size=config.kd.chunk_size,
    )
    context = {
        "frozen": student.frozen,
        "teacher": None if teacher is None else (teacher.trainable, teacher.frozen),
    }
    return Run(config, mesh, pipeline, student, teacher, loss_kw, context)


def loss_config(config: ConfigDict):
    from kd_jax.losses import KDLossConfig

    kd = config.kd
    if config.method == "sft":
        return KDLossConfig(kind="fkl", alpha=0.0, reduction=kd.reduction)
    return KDLossConfig(
        kind=kd.divergence,
        alpha=kd.alpha,
        temperature=kd.temperature,
        scale_by_tau_sq=kd.scale_by_tau_sq,
        beta=kd.beta,
        skew=kd.skew,
        reduction=kd.reduction,
        teacher_top_k=kd.teacher_top_k,
        teacher_noise_std=kd.teacher_noise_std,
        vocab_size=kd.vocab_size or None,
    )


def _attach_teacher_cache(config: ConfigDict, pipeline, student: ModelParts) -> None:
    """Training reads the teacher's top-k from `kd.teacher_cache` instead of running it."""
    from kd_jax.teacher_cache import TeacherCache, cache_key

    cache = TeacherCache(
        builtin_paths.resolve(config.kd.teacher_cache), cache_key(config, pipeline)
    )
    cache_vocab = cache.meta["vocab_size"]
    if cache_vocab != student.cfg.vocab_size and not config.kd.vocab_size:
        raise ConfigError(
            f"The teacher cache's vocabulary ({cache_vocab}) differs from the student's "
            f"({student.cfg.vocab_size}); set --config.kd.vocab_size to the tokenizer's size."
        )
    pipeline.teacher_cache = cache


def _check_vocab(config, tokenizer_vocab, student, teacher) -> None:
    sv = student.cfg.vocab_size
    if tokenizer_vocab > sv:
        raise ConfigError(
            f"The tokenizer has {tokenizer_vocab} tokens but the student's vocabulary is {sv}; "
            "use the student's own tokenizer (data.tokenizer)."
        )
    if teacher is None or teacher.cfg.vocab_size == sv or config.kd.vocab_size:
        return
    raise ConfigError(
        f"Teacher vocabulary ({teacher.cfg.vocab_size}) differs from the student's ({sv}); if "
        f"they share a tokenizer and differ only by padding rows, set "
        f"--config.kd.vocab_size={tokenizer_vocab} (the tokenizer's size)."
    )


def _state_shardings(abstract_state, params, mesh):
    """Optimizer-state leaves inherit the sharding of the parameter whose path they end
    with (Adam's mu and nu mirror the params); everything else is replicated."""
    by_path = {
        tuple(str(k) for k in path): p for path, p in jax.tree_util.tree_leaves_with_path(params)
    }
    repl = shd.replicated(mesh)

    def pick(path, leaf):
        keys = tuple(str(k) for k in path)
        for i in range(len(keys)):
            param = by_path.get(keys[i:])
            if param is not None and param.shape == leaf.shape:
                return param.sharding
        return repl

    return jax.tree_util.tree_map_with_path(pick, abstract_state)


def make_onpolicy(config: ConfigDict, r: Run, batch_shardings):
    """The jitted on-policy batch builder when `gkd.lambda_ > 0`, else None."""
    if config.gkd.lambda_ <= 0:
        return None
    g = config.gkd
    tok = r.pipeline.tokenizer
    cfg = SamplingConfig(
        max_new_tokens=g.max_new_tokens,
        temperature=g.temperature,
        top_k=g.top_k,
        top_p=g.top_p,
        stop_tokens=(tok.eos_token_id,) if tok.eos_token_id is not None else (),
        pad_id=tok.pad_token_id if tok.pad_token_id is not None else 0,
    )
    return make_onpolicy_fn(r.student, cfg, batch_shardings, rules=_rules(config))


def _rules(config: ConfigDict) -> tuple:
    return tuple(tuple(r) for r in config.sharding_rules)


def _eval_step(config: ConfigDict, r: Run, param_shardings, batch_sharding, rules):
    """The validation-loss step. Validation batches carry no cached teacher top-k, so a
    run that reads `kd.teacher_cache` reports validation CE only (eval_div = 0)."""
    loss_kw = r.loss_kw
    if config.kd.teacher_cache:
        from kd_jax.losses import KDLossConfig

        sft = KDLossConfig(kind="fkl", alpha=0.0, reduction=config.kd.reduction)
        loss_kw = {**loss_kw, "teacher": None, "loss_cfg": sft}
    return step_lib.make_eval_step(
        param_shardings=param_shardings,
        batch_shardings={k: batch_sharding for k in step_lib.BATCH_KEYS},
        context_shardings=r.context_shardings,
        rules=rules,
        **loss_kw,
    )


def evaluate_loss(eval_step, params, batches, context, limit: int = 0) -> dict:
    """Mean validation CE / divergence / loss over (at most `limit`) validation batches."""
    from kd_jax.losses import reduce_terms

    sums = None
    for i, batch in enumerate(batches):
        if limit and i >= limit:
            break
        terms = eval_step(params, batch, context)
        sums = terms if sums is None else jax.tree.map(jnp.add, sums, terms)
    if sums is None:
        return {}
    return {f"eval_{k}": v for k, v in reduce_terms(sums).items() if k != "num_tokens"}


def run(config: ConfigDict, workdir: str | Path) -> dict:
    """Trains (or resumes) the run of `config` in `workdir`; returns the final metrics."""
    validate(config, workdir)
    check_tracker(config.train.get("wandb"))
    workdir = Path(workdir)
    r = setup(config)
    tc = config.train
    num_steps = tc.num_steps
    schedule = learning_rate_schedule(config.optim, num_steps)
    optimizer = make_optimizer(config.optim, num_steps)
    rules = _rules(config)
    batch_sh = shd.batch_sharding(r.mesh, rules)
    keys = step_lib.BATCH_KEYS + (TOPK_KEYS if config.kd.teacher_cache else ())
    batch_shardings = {k: batch_sh for k in keys}
    param_shardings = jax.tree.map(lambda x: x.sharding, r.student.trainable)
    abstract = jax.eval_shape(lambda p: step_lib.init_state(p, optimizer), r.student.trainable)
    state_sh = _state_shardings(abstract, r.student.trainable, r.mesh)

    workdir.mkdir(parents=True, exist_ok=True)
    ckpt = Checkpointer(
        workdir, keep_last=tc.keep_last, keep_best=tc.keep_best, async_save=tc.async_checkpointing
    )
    iterator = r.pipeline.train_iterator()
    target = jax.tree.map(
        lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), abstract, state_sh
    )
    resumed = ckpt.restore_readable(target)
    if resumed is not None:
        start, state, data_state, _ = resumed
        iterator.set_state(data_state)
        log.info("Resumed %s at step %d.", workdir, start)
    else:
        start = 0
        state = jax.jit(lambda p: step_lib.init_state(p, optimizer), out_shardings=state_sh)(
            r.student.trainable
        )
    resolved_config = ConfigDict(config.to_dict())
    resolved_config.resolved_vocab_size = r.student.cfg.vocab_size
    if jax.process_index() == 0:
        (workdir / "config.json").write_text(resolved_config.to_json_best_effort(indent=2) + "\n")
        (workdir / "data_info.json").write_text(json.dumps(r.pipeline.info, indent=2) + "\n")

    train_step = step_lib.make_train_step(
        state_shardings=state_sh,
        batch_shardings=batch_shardings,
        context_shardings=r.context_shardings,
        optimizer=optimizer,
        schedule=schedule,
        grad_accum=config.optim.grad_accum,
        rules=rules,
        **r.loss_kw,
    )
    eval_step = _eval_step(config, r, param_shardings, batch_sh, rules)
    onpolicy_fn = make_onpolicy(config, r, batch_shardings)
    gkd_key = jax.random.key(config.seed + 1)
    val_batches = r.pipeline.validation_batches() if tc.eval_every else []
    writer = MetricsWriter(
        workdir, resume_step=start, wandb_cfg=tc.get("wandb"), config=resolved_config.to_dict()
    )
    rng = jax.random.key(config.seed)
    preemption = PreemptionWatch()
    last: dict = {}
    status = "completed"

    def save(step, metrics=None, force=False):
        ckpt.save(step, state, iterator.get_state(), {"step": step}, force=force)
        if metrics and "eval_ce" in metrics:
            ckpt.save_best(step, state, iterator.get_state(), {"step": step}, metrics["eval_ce"])

    clock = StepClock(
        tokens_per_step=config.data.batch_size * config.data.max_length,
        flops_per_step=step_model_flops(config, r.student, r.teacher),
        sampling=config.gkd.lambda_ > 0,
    )
    unchecked = None  # the previous step's metrics when the host has not waited for them

    def diverged(metrics, step) -> bool:
        if int(metrics["bad_steps"]) < tc.max_bad_steps:
            return False
        log.error(
            "%d consecutive non-finite steps up to step %d; stopping with the last good "
            "checkpoint.", tc.max_bad_steps, step,
        )  # fmt: skip
        return True

    bar = tqdm(total=num_steps, initial=start, disable=not tc.progress_bar, desc="train")
    clock.restart(start)
    try:
        for step in range(start + 1, num_steps + 1):
            batch = next(iterator)
            onpolicy = use_onpolicy(config.gkd.lambda_, config.seed, step)
            if onpolicy:
                jax.block_until_ready(state["params"])
                t0 = time.perf_counter()
                batch = onpolicy_fn(state["params"], r.context["frozen"], batch,
                                    jax.random.fold_in(gkd_key, step))  # fmt: skip
                jax.block_until_ready(batch)
                clock.sampled(time.perf_counter() - t0)
            state, metrics = train_step(state, batch, rng, r.context)
            metrics = {**metrics, "onpolicy": int(onpolicy)}
            stop = preemption.should_stop(step)  # every process: the same answer
            # Read one step late: the previous step is done (or nearly) while this one runs.
            if unchecked is not None and diverged(unchecked, step - 1):
                status = "diverged"
                break
            logging_step = step % tc.log_every == 0 or step == num_steps
            eval_now = bool(val_batches) and (step % tc.eval_every == 0 or step == num_steps)
            save_now = step % tc.checkpoint_every == 0 or step == num_steps or stop
            row = {}
            if logging_step:
                row = to_python(metrics)  # waits for this step
                row.update(clock.measure(step))
                bar.set_postfix(loss=f"{row['loss']:.4f}")
            if eval_now:
                row.update(to_python(evaluate_loss(
                    eval_step, state["params"], val_batches, r.context, tc.eval_batches
                )))  # fmt: skip
            if row:
                last = writer.write(step, row)
            bar.update(1)
            unchecked = None if logging_step or eval_now or save_now else metrics
            if unchecked is None and diverged(metrics, step):
                status = "diverged"
                break
            if save_now:
                save(step, row, force=stop)
            if stop:
                status = "preempted"
                break
            if eval_now or save_now:
                clock.restart(step)
    finally:
        bar.close()
        ckpt.close()
        writer.close()
        preemption.close()
    last["status"] = status
    return last
