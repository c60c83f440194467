"""Study A main grid: data size {10k, 50k, 150k, 300k, 939k} x {SFT, GKD} x student
{1B, 3B, 8B}, GKD from the Llama-3.1-70B SFT teacher or the stronger Llama-3.3-70B-Instruct;
the cross-architecture check: Qwen2.5-7B with Qwen2.5-72B-Instruct (study_a_common.py says
why not a Llama teacher).

    C=configs/study_a_data_size.py
    kd-jax train --config $C:student=llama1b,method=sft,size=10k \
        --workdir runs/study_a/student-llama1b_method-sft_size-10k
    kd-jax train --config $C:student=llama1b,method=gkd,size=10k,teacher=sft70b \
        --workdir runs/study_a/student-llama1b_method-gkd_size-10k_teacher-sft70b
    kd-jax sweep --config configs/study_a_data_size.py --workdir runs/study_a
    kd-jax sweep --config configs/study_a_data_size.py --workdir runs/study_a_local --runlocal

Study A's findings: GKD beats SFT by up to about +5 points at 10k examples, SFT can win
by 150k, the stronger teacher keeps about +4 at full data, and gains shrink with student
size (1B > 3B > 8B). The recipe and the paths are in configs/study_a_common.py; on CPU
(`runlocal`) each GKD condition first trains its tiny teacher (`role=teacher,...`).
"""

from configs import study_a_common as sa
from kd_jax.config_files import parse_arg

METHODS = ("sft", "gkd")


def get_config(arg: str = "student=llama1b,method=gkd,size=10k,teacher=sft70b"):
    fields = parse_arg(arg)
    if fields.get("role") == "teacher":
        return sa.teacher_config(fields)
    c = sa.base_config(fields)
    sa.set_student(c, fields)
    method = fields.get("method", "sft")
    if method == "gkd":
        sa.set_teacher(c, fields)
        sa.set_gkd(c, fields)
    elif method != "sft":
        raise ValueError(f"method={method!r}; choose sft or gkd")
    sa.set_data(c, fields, fields.get("size", "939k"))
    return c


def sweep() -> list[str]:
    out = []
    for student in sa.STUDENTS:
        # Each student with the teachers that share its tokenizer (Qwen2.5-7B: Qwen2.5-72B).
        teachers = [t for t in sa.TEACHERS if sa.FAMILY[t] == sa.FAMILY[student]]
        for size in sa.SIZES:
            out.append(f"student={student},method=sft,size={size}")
            out += [f"student={student},method=gkd,size={size},teacher={t}" for t in teachers]
    return out


def dependencies(arg: str) -> dict:
    return sa.kd_dependencies(parse_arg(arg))


def evaluation(arg: str) -> dict:
    return sa.evaluation(parse_arg(arg))
