"""Study B base-teacher ablation: SeqKD (tau = 1) from the base model, not fine-tuned on
the task, on the five Qwen 3B/7B pairs (Study B: 7B->0.5B math 35.8 vs 56.9 with the
fine-tuned teacher, below the 52.8 of SFT).

    C=configs/study_b_base_teacher.py
    kd-jax train --config $C:pair=qwen7b-qwen0.5b,method=seqkd,task=math,teacher=base \
        --workdir runs/study_b/pair-qwen7b-qwen0.5b_method-seqkd_task-math_teacher-base
    kd-jax sweep --config configs/study_b_base_teacher.py --workdir runs/study_b [--runlocal]

The teacher is the HF base model itself (no dependency). On CPU (`runlocal`) a random
tiny model would be no teacher at all, so the stand-in is the teacher fine-tuned on the
*other* task: trained, but unaware of this one.
"""

from configs import study_b_common as sb
from kd_jax.config_files import parse_arg


def get_config(arg: str = "pair=qwen7b-qwen0.5b,method=seqkd,task=math,teacher=base"):
    fields = parse_arg(arg)
    fields.setdefault("teacher", "base")
    return sb.condition_config(fields)


def sweep() -> list[str]:
    students = sorted({s for _, s in sb.ABLATION_PAIRS}, key=lambda m: sb.MODELS[m][2])
    kd = [
        f"pair={t}-{s},method=seqkd,task={task},teacher=base"
        for task in sb.TASKS
        for t, s in sb.ABLATION_PAIRS
    ]
    return sb.sft_args(students) + kd


def dependencies(arg: str) -> dict:
    fields = parse_arg(arg)
    if fields.get("method") != "sft":
        fields.setdefault("teacher", "base")
    return sb.dependencies(fields)


def evaluation(arg: str) -> dict:
    fields = parse_arg(arg)
    if fields.get("method") != "sft":
        fields.setdefault("teacher", "base")
    return sb.evaluation(fields)
