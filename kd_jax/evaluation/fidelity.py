"""Teacher-student fidelity: answer agreement, rationale BLEU, token KL and top-1 agreement.

Definitions (Study B's repository has no code for them, so they are fixed here):
  agreement   over the test examples of a task, the fraction where student and teacher
              both produced a final answer (the task's extractor, same mode) and the
              answers match by the task's own rule (math: within 1e-3). No answer on
              either side counts as disagreement.
  BLEU        corpus BLEU (sacrebleu, "13a" tokenizer, 0-100) of the student's
              rationales against the teacher's as the single reference. A rationale is
              the whole response the extractor read (text after "### Response:",
              stripped; for chat prompts the reply), final answer sentence included.
  KL          KL(teacher || student) at T = 1 per token, sum over the vocabulary,
              averaged over the unmasked tokens of the whole batch (pooled, not per
              sequence); vocabularies of different size are cut to the smaller one, as
              Study B does for its KD losses.
  top-1       fraction of unmasked tokens where both models' argmax agree.
The token numbers come from kd_jax.losses.agreement (the loss zoo's forward KL, chunked
over tokens, as sums and counts so held-out sets larger than one batch reduce exactly).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence

import jax
import jax.numpy as jnp

from kd_jax.evaluation.metrics import corpus_bleu
from kd_jax.evaluation.tasks import TASKS, Task, get_task
from kd_jax.losses.agreement import dense_fidelity_sums


def agreement(task: Task, teacher_predictions: Sequence, student_predictions: Sequence) -> float:
    if len(teacher_predictions) != len(student_predictions) or not teacher_predictions:
        raise ValueError("agreement needs equally many (> 0) teacher and student predictions")
    same = [
        t is not None and s is not None and task.correct(s, t)
        for t, s in zip(teacher_predictions, student_predictions, strict=True)
    ]
    return sum(same) / len(same)


def rationale_bleu(teacher_responses: Sequence[str], student_responses: Sequence[str]) -> float:
    return corpus_bleu(student_responses, teacher_responses)


def token_kl(teacher_logits_BxTxV, student_logits_BxTxV, mask_BxT) -> jax.Array:
    """Mean over unmasked tokens of KL(teacher || student) at T = 1."""
    sums = dense_fidelity_sums(teacher_logits_BxTxV, student_logits_BxTxV, mask_BxT)
    return sums["kl"] / jnp.maximum(sums["tokens"], 1.0)


def top1_agreement(teacher_logits_BxTxV, student_logits_BxTxV, mask_BxT) -> jax.Array:
    sums = dense_fidelity_sums(teacher_logits_BxTxV, student_logits_BxTxV, mask_BxT)
    return sums["top1"] / jnp.maximum(sums["tokens"], 1.0)


# ---- from evaluation outputs -------------------------------------------------------------


def read_predictions(eval_dir: str, task: str) -> list[dict]:
    path = os.path.join(eval_dir, "predictions", f"{task}.jsonl")
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def fidelity_from_predictions(student_eval_dir: str, teacher_eval_dir: str, tasks=None) -> dict:
    """{task: {"agreement", "bleu", "n"}} from two `evaluate` output folders.

    Examples are matched by their index in the test file; tasks default to those both
    folders scored by generation.
    """
    if tasks is None:
        names = [
            sorted(f[: -len(".jsonl")] for f in os.listdir(os.path.join(d, "predictions")))
            for d in (student_eval_dir, teacher_eval_dir)
        ]
        # Only registered tasks: their extractor decides what counts as the same answer.
        tasks = [t for t in names[0] if t in names[1] and t in TASKS]
    out = {}
    for name in tasks:
        task = get_task(name) if isinstance(name, str) else name
        student = {r["index"]: r for r in read_predictions(student_eval_dir, task.name)}
        teacher = {r["index"]: r for r in read_predictions(teacher_eval_dir, task.name)}
        common = sorted(i for i in student if i in teacher and "response" in student[i])
        if not common:
            continue
        out[task.name] = {
            "agreement": agreement(
                task,
                [teacher[i]["prediction"] for i in common],
                [student[i]["prediction"] for i in common],
            ),
            "bleu": rationale_bleu(
                [teacher[i]["response"] for i in common], [student[i]["response"] for i in common]
            ),
            "n": len(common),
        }
    return out


def write_fidelity(eval_dir: str, per_task: dict, **held_out: float) -> dict:
    """Writes eval_dir/fidelity.json: {"tasks": per_task, "held_out": {"kl": .., "top1": ..}}."""
    doc = {"tasks": per_task, "held_out": {k: float(v) for k, v in held_out.items()}}
    with open(os.path.join(eval_dir, "fidelity.json"), "w", encoding="utf-8") as f:
        json.dump(doc, f, indent=1)
    return doc
