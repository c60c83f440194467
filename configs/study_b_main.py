"""Study B main grid: 11 teacher -> student pairs x {SFT, SeqKD, RevKD, GKD} x {math, commonsense}.

One condition (its teacher's SFT run must exist first; `kd-jax sweep` orders that):

    kd-jax train --config configs/study_b_main.py:model=qwen7b,method=sft,task=math \
        --workdir runs/study_b/model-qwen7b_method-sft_task-math
    kd-jax train --config configs/study_b_main.py:pair=qwen7b-qwen0.5b,method=seqkd,task=math \
        --config.teacher.workdir=runs/study_b/model-qwen7b_method-sft_task-math \
        --workdir runs/study_b/pair-qwen7b-qwen0.5b_method-seqkd_task-math

The whole grid (8 LoRA fine-tunes per task, then 33 KD runs per task), evaluated and
reported; add `,runlocal` to an arg (or `--runlocal` to the sweep) for the CPU variant:

    kd-jax sweep --config configs/study_b_main.py --workdir runs/study_b
    kd-jax sweep --config configs/study_b_main.py --workdir runs/study_b_local --runlocal

Models come from $KD_JAX_MODELS/<HF name> (Qwen2.5-0.5B ... Qwen2.5-14B, Llama-3.2-1B,
Llama-3.2-3B, Llama-3.1-8B), data from $KD_JAX_DATA/LLM-Adapters (or `models=`/`data=`
in the arg). The recipe and its sources are in configs/study_b_common.py. Expected
(Study B, math, average of 6 tasks): SFT 52.8 (0.5B) ... 79.4 (14B); 14B->0.5B RevKD 63.2.
"""

from configs import study_b_common as sb
from kd_jax.config_files import parse_arg


def get_config(arg: str = "pair=qwen7b-qwen0.5b,method=seqkd,task=math"):
    return sb.condition_config(parse_arg(arg))


def sweep() -> list[str]:
    models = sorted({m for pair in sb.PAIRS for m in pair}, key=lambda m: sb.MODELS[m][2])
    kd = [
        f"pair={t}-{s},method={m},task={task}"
        for task in sb.TASKS
        for t, s in sb.PAIRS
        for m in sb.METHODS
    ]
    return sb.sft_args(models) + kd


def dependencies(arg: str) -> dict:
    return sb.dependencies(parse_arg(arg))


def evaluation(arg: str) -> dict:
    return sb.evaluation(parse_arg(arg))
