"""Study A's KD-loss comparison (its Table 1) at full data: on-policy KD from the
Llama-3.1-70B SFT teacher with each divergence kd_jax implements, beside SFT.

    kd-jax train --config configs/study_a_kd_loss.py:student=llama1b,loss=rkl \
        --workdir runs/study_a/student-llama1b_loss-rkl
    kd-jax sweep --config configs/study_a_kd_loss.py --workdir runs/study_a [--runlocal]

Which losses and students the table holds is not in our notes: all six divergences
(forward KL, reverse KL, generalized JSD = GKD, skew KL and skew reverse KL at 0.1, TVD)
on the 1B student are (inferred). The `loss=sft` condition is the SFT baseline.
"""

from configs import study_a_common as sa
from kd_jax.config_files import parse_arg

LOSSES = ("fkl", "rkl", "gjsd", "skew_fkl", "skew_rkl", "tvd")


def get_config(arg: str = "student=llama1b,loss=gjsd"):
    fields = parse_arg(arg)
    if fields.get("role") == "teacher":
        return sa.teacher_config(fields)
    c = sa.base_config(fields)
    sa.set_student(c, fields)
    loss = fields.get("loss", "gjsd")
    if loss != "sft":
        if loss not in LOSSES:
            raise ValueError(f"loss={loss!r}; choose sft or one of {', '.join(LOSSES)}")
        sa.set_teacher(c, fields)
        sa.set_gkd(c, fields, divergence=loss)
    sa.set_data(c, fields, "939k")
    return c


def sweep() -> list[str]:
    return ["student=llama1b,loss=sft"] + [f"student=llama1b,loss={x}" for x in LOSSES]


def _kd_fields(arg: str) -> dict:
    fields = parse_arg(arg)
    if fields.get("loss", "gjsd") != "sft":
        fields["method"] = "gkd"
    return fields


def dependencies(arg: str) -> dict:
    return sa.kd_dependencies(_kd_fields(arg))


def evaluation(arg: str) -> dict:
    return sa.evaluation(_kd_fields(arg))
