"""Study B teacher-noise ablation: Gaussian noise sigma in {1, 2, 5} added to the
teacher's logits, SeqKD and RevKD at tau = 1 on the five Qwen 3B/7B pairs.

    C=configs/study_b_noise.py
    kd-jax train --config $C:pair=qwen7b-qwen0.5b,method=seqkd,task=math,noise=2 \
        --config.teacher.workdir=runs/study_b/model-qwen7b_method-sft_task-math \
        --workdir runs/study_b/pair-qwen7b-qwen0.5b_method-seqkd_task-math_noise-2
    kd-jax sweep --config configs/study_b_noise.py --workdir runs/study_b [--runlocal]

Which methods the paper ran with noise is not stated; SeqKD and RevKD are (inferred).
The report names these runs "SeqKD+noise2" etc., so they do not pool with noiseless ones.
"""

from configs import study_b_common as sb
from kd_jax.config_files import parse_arg

SIGMAS = (1, 2, 5)


def get_config(arg: str = "pair=qwen7b-qwen0.5b,method=seqkd,task=math,noise=2"):
    return sb.condition_config(parse_arg(arg))


def sweep() -> list[str]:
    students = sorted({s for _, s in sb.ABLATION_PAIRS}, key=lambda m: sb.MODELS[m][2])
    kd = [
        f"pair={t}-{s},method={m},task={task},noise={sigma}"
        for task in sb.TASKS
        for t, s in sb.ABLATION_PAIRS
        for m in ("seqkd", "revkd")
        for sigma in SIGMAS
    ]
    return sb.sft_args(students) + kd


def dependencies(arg: str) -> dict:
    return sb.dependencies(parse_arg(arg))


def evaluation(arg: str) -> dict:
    return sb.evaluation(parse_arg(arg))
