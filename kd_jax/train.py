"""The training loop: config in, checkpoints and metrics out, resumable at any point.

    final = kd_jax.train.run(config, workdir)

Restore order: WORKDIR's latest checkpoint (resume) if any, else the student's
`hf_path` / `workdir` / `preset` (init_from). Every run writes the resolved config to
WORKDIR/config.json, metrics to WORKDIR/metrics.jsonl and TensorBoard, and checkpoints
(kd_jax.checkpoint). SIGTERM (preemption) finishes the current step, saves, and returns.
"""

from __future__ import annotations

import json
import logging
import signal
from pathlib import Path

import jax
import jax.numpy as jnp
from ml_collections import ConfigDict
from tqdm.auto import tqdm

from kd_jax import step_builder as build
from kd_jax.checkpoint import Checkpointer
from kd_jax.config_checks import validate
from kd_jax.data import builtin_paths
from kd_jax.metrics_log import MetricsWriter, to_python
from kd_jax.onpolicy import use_onpolicy
from kd_jax.step_builder import RunParts, setup

log = logging.getLogger("kd_jax.train")


def _attach_teacher_cache(config: ConfigDict, parts: RunParts) -> None:
    """Training reads the teacher's top-k from `kd.teacher_cache` instead of running it."""
    from kd_jax.teacher_cache import TeacherCache, cache_key

    pipeline, student = parts.pipeline, parts.student
    path = builtin_paths.resolve(config.kd.teacher_cache)
    cache = TeacherCache(path, cache_key(config, pipeline))
    cache_vocab = cache.meta["vocab_size"]
    if cache_vocab != student.cfg.vocab_size and not config.kd.vocab_size:
        build.align_vocab(config, len(pipeline.tokenizer), student.cfg.vocab_size, cache_vocab, "")
    pipeline.teacher_cache = cache


def _install_sigterm():
    flag = {"stop": False}

    def handler(signum, frame):
        log.warning("SIGTERM: saving a checkpoint after this step and stopping.")
        flag["stop"] = True

    previous = signal.signal(signal.SIGTERM, handler)
    return flag, previous


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
    workdir = Path(workdir)
    r = setup(config)
    if config.kd.teacher_cache:
        _attach_teacher_cache(config, r)
    tc = config.train
    num_steps = tc.num_steps
    batch_shardings = build.batch_shardings(config, r.mesh, r.rules)
    program = build.build_program(
        config,
        mesh=r.mesh,
        rules=r.rules,
        student=r.student,
        teacher=r.teacher,
        batch_shardings=batch_shardings,
    )
    context = program.context

    workdir.mkdir(parents=True, exist_ok=True)
    ckpt = Checkpointer(
        workdir, keep_last=tc.keep_last, keep_best=tc.keep_best, async_save=tc.async_checkpointing
    )
    iterator = r.pipeline.train_iterator()
    start = ckpt.latest_step()
    if start is not None:
        state, data_state, _ = ckpt.restore(program.abstract_state)
        iterator.set_state(data_state)
        log.info("Resumed %s at step %d.", workdir, start)
    else:
        start = 0
        state = program.init_state(r.student.trainable)
    if jax.process_index() == 0:
        resolved = ConfigDict(config.to_dict())
        resolved.resolved_vocab_size = r.student.cfg.vocab_size
        (workdir / "config.json").write_text(resolved.to_json_best_effort(indent=2) + "\n")
        (workdir / "data_info.json").write_text(json.dumps(r.pipeline.info, indent=2) + "\n")

    train_step, eval_step = program.train_step, program.eval_step
    onpolicy_fn = build.build_onpolicy(config, r, batch_shardings)
    gkd_key = jax.random.key(config.seed + 1)
    val_batches = r.pipeline.validation_batches() if tc.eval_every else []
    writer = MetricsWriter(workdir, resume_step=start)
    rng = jax.random.key(config.seed)
    stop, previous_handler = _install_sigterm()
    last: dict = {}
    status = "completed"

    def save(step, metrics=None, force=False):
        ckpt.save(step, state, iterator.get_state(), {"step": step}, force=force)
        if metrics and "eval_ce" in metrics:
            ckpt.save_best(step, state, iterator.get_state(), {"step": step}, metrics["eval_ce"])

    bar = tqdm(total=num_steps, initial=start, disable=not tc.progress_bar, desc="train")
    try:
        for step in range(start + 1, num_steps + 1):
            batch = next(iterator)
            onpolicy = use_onpolicy(config.gkd.lambda_, config.seed, step)
            if onpolicy:
                batch = onpolicy_fn(state["params"], context["frozen"], batch,
                                    jax.random.fold_in(gkd_key, step))  # fmt: skip
            state, metrics = train_step(state, batch, rng, context)
            metrics = {**metrics, "onpolicy": int(onpolicy)}
            row = {}
            if step % tc.log_every == 0 or step == num_steps:
                row = to_python(metrics)
                bar.set_postfix(loss=f"{row['loss']:.4f}")
            if val_batches and (step % tc.eval_every == 0 or step == num_steps):
                row.update(to_python(evaluate_loss(
                    eval_step, state["params"], val_batches, context, tc.eval_batches
                )))  # fmt: skip
            if row:
                last = writer.write(step, row)
            bar.update(1)
            if int(metrics["bad_steps"]) >= tc.max_bad_steps:
                status = "diverged"
                log.error(
                    "%d consecutive non-finite steps; stopping with the last good checkpoint.",
                    tc.max_bad_steps,
                )
                break
            if step % tc.checkpoint_every == 0 or step == num_steps or stop["stop"]:
                save(step, row, force=stop["stop"])
            if stop["stop"]:
                status = "preempted"
                break
    finally:
        bar.close()
        ckpt.close()
        writer.close()
        signal.signal(signal.SIGTERM, previous_handler)
    last["status"] = status
    return last
