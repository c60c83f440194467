"""Study B temperature ablation: tau in {1, 2, 5} for SeqKD and RevKD on the five Qwen
3B/7B pairs, math and commonsense (Study B: tau = 5 collapses small students, e.g.
7B->0.5B math SeqKD 56.9 / 61.1 / 25.2 at tau 1 / 2 / 5).

    C=configs/study_b_temperature.py
    kd-jax train --config $C:pair=qwen7b-qwen0.5b,method=seqkd,task=math,tau=5 \
        --config.teacher.workdir=runs/study_b/model-qwen7b_method-sft_task-math \
        --workdir runs/study_b/pair-qwen7b-qwen0.5b_method-seqkd_task-math_tau-5
    kd-jax sweep --config configs/study_b_temperature.py --workdir runs/study_b [--runlocal]

Use the same --workdir as configs/study_b_main.py to share its teacher, SFT and tau = 1
runs (the tau = 1 conditions are the main grid's, with the same folder names).
"""

from configs import study_b_common as sb
from kd_jax.config_files import parse_arg

TAUS = (1, 2, 5)


def get_config(arg: str = "pair=qwen7b-qwen0.5b,method=seqkd,task=math,tau=2"):
    return sb.condition_config(parse_arg(arg))


def sweep() -> list[str]:
    students = sorted({s for _, s in sb.ABLATION_PAIRS}, key=lambda m: sb.MODELS[m][2])
    sft = sb.sft_args(students)
    kd = [
        # tau = 1 is the main grid's condition: same arg, same folder, trained once.
        f"pair={t}-{s},method={m},task={task}" + (f",tau={tau}" if tau != 1 else "")
        for task in sb.TASKS
        for t, s in sb.ABLATION_PAIRS
        for m in ("seqkd", "revkd")
        for tau in TAUS
    ]
    return sft + kd


def dependencies(arg: str) -> dict:
    return sb.dependencies(parse_arg(arg))


def evaluation(arg: str) -> dict:
    return sb.evaluation(parse_arg(arg))
