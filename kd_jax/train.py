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

import json
import logging
import time
from pathlib import Path

import jax
import jax.numpy as jnp
from ml_collections import ConfigDict
from tqdm.auto import tqdm

from kd_jax import cross_kd
from kd_jax import step_builder as build
from kd_jax.checkpoint import Checkpointer
from kd_jax.config_checks import validate
from kd_jax.metrics_log import MetricsWriter, check_tracker, to_python
from kd_jax.onpolicy import use_onpolicy
from kd_jax.preemption import PreemptionWatch
from kd_jax.step_builder import setup
from kd_jax.step_clock import StepClock, step_model_flops

log = logging.getLogger("kd_jax.train")


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


# The sections that decide what each step does; a resumed run that changes them (rather than,
# say, train.num_steps or eval settings) is no longer one condition.
TRAJECTORY_SECTIONS = ("method", "seed", "student", "teacher", "kd", "gkd", "optim", "data")


def changed_settings(workdir: Path, config: ConfigDict) -> list[str]:
    """Each trajectory setting that differs from WORKDIR/config.json, as "key: saved -> now"."""
    saved_path = Path(workdir) / "config.json"
    if not saved_path.exists():
        return []
    saved, now = json.loads(saved_path.read_text()), json.loads(config.to_json_best_effort())

    def flat(d, prefix=""):
        if not isinstance(d, dict):
            return {prefix: d}
        return {k: v for key, sub in d.items() for k, v in flat(sub, f"{prefix}{key}.").items()}

    a = flat({k: saved.get(k) for k in TRAJECTORY_SECTIONS})
    b = flat({k: now.get(k) for k in TRAJECTORY_SECTIONS})
    return [
        f"{k.rstrip('.')}: {a.get(k)!r} -> {b.get(k)!r}"
        for k in sorted(set(a) | set(b))
        if a.get(k) != b.get(k)
    ]


def run(config: ConfigDict, workdir: str | Path) -> dict:
    """Trains (or resumes) the run of `config` in `workdir`; returns the final metrics."""
    validate(config, workdir)
    check_tracker(config.train.get("wandb"))
    workdir = Path(workdir)
    r = setup(config)
    tc = config.train
    num_steps = tc.num_steps
    batch_shardings = build.batch_shardings(config, r.mesh, r.rules, r.pipeline)
    program = build.build_program(
        config,
        mesh=r.mesh,
        rules=r.rules,
        student=r.student,
        teacher=r.teacher,
        batch_shardings=batch_shardings,
        cross=r.cross,
    )
    context = program.context

    workdir.mkdir(parents=True, exist_ok=True)
    ckpt = Checkpointer(
        workdir, keep_last=tc.keep_last, keep_best=tc.keep_best, async_save=tc.async_checkpointing
    )
    iterator = r.pipeline.train_iterator()
    resumed = ckpt.restore_readable(program.abstract_state)
    if resumed is not None:
        start, state, data_state, _ = resumed
        iterator.set_state(data_state)
        log.info("Resumed %s at step %d.", workdir, start)
        changed = changed_settings(workdir, config)
        if changed:
            log.warning(
                "Resuming %s with other settings than it started with (%s): its steps mix "
                "two conditions; start a new workdir to compare them.",
                workdir,
                "; ".join(changed),
            )
    else:
        start = 0
        state = program.init_state(r.student.trainable)
    resolved_config = ConfigDict(config.to_dict())
    resolved_config.resolved_vocab_size = r.student.cfg.vocab_size
    if jax.process_index() == 0:
        (workdir / "config.json").write_text(resolved_config.to_json_best_effort(indent=2) + "\n")
        (workdir / "data_info.json").write_text(json.dumps(r.pipeline.info, indent=2) + "\n")

    train_step, eval_step = program.train_step, program.eval_step
    onpolicy_fn = build.build_onpolicy(config, r, batch_shardings)
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
            "checkpoint.",
            tc.max_bad_steps,
            step,
        )
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
                sampled = onpolicy_fn(
                    state["params"], context["frozen"], batch, jax.random.fold_in(gkd_key, step)
                )
                if r.cross:  # the samples, tokenized again by both tokenizers on the host
                    rows = batch_shardings["inputs"]
                    sampled = cross_kd.onpolicy_batch(sampled, batch, r.pipeline, rows)
                batch = jax.block_until_ready(sampled)
                clock.sampled(time.perf_counter() - t0)
            step_fn = program.onpolicy_step if onpolicy else train_step
            state, metrics = step_fn(state, batch, rng, context)
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
                row.update(
                    to_python(
                        evaluate_loss(
                            eval_step, state["params"], val_batches, context, tc.eval_batches
                        )
                    )
                )
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
