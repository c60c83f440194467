"""The quickstart: pretrained tiny bases, a teacher, and a student by SFT and by on-policy KD.

    kd-jax quickstart --workdir runs/quickstart     # bases (once), teacher, students, table

runs, in WORKDIR:
    kd-jax train --config configs/pretrain.py:tiny-teacher --workdir W/base-tiny-teacher
    kd-jax train --config configs/pretrain.py:tiny-student-l --workdir W/base-tiny-student-l
    kd-jax train --config configs/quickstart.py:teacher \
        --config.student.workdir=W/base-tiny-teacher --workdir W/teacher
    kd-jax train --config configs/quickstart.py:sft \
        --config.student.workdir=W/base-tiny-student-l --workdir W/sft
    kd-jax train --config configs/quickstart.py:kd \
        --config.student.workdir=W/base-tiny-student-l --config.teacher.workdir=W/teacher \
        --workdir W/kd

The task is the built-in number comparison ("Which is bigger , 27 or 28 ?", a one-line
rationale, "The answer is X ."). Both models start from bases pretrained on every built-in
family (configs/pretrain.py), as both studies distill into pretrained models. The teacher
(tiny-teacher, 4 layers, d=128) fine-tunes on all 4k labelled training questions. The
student (tiny-student-l, 3 layers, d=96) has the setting KD is for: a few labelled
questions (500) and many unlabelled ones (the 4k, their answers unused). SFT learns from
the 500 labels; KD is on-policy (GKD with lambda = 1): the student answers the 4k
questions itself and learns the teacher's next-token distribution on its own answers, so
no reference answer is ever read. SFT gets the step count it does best with (300; at 600 it
overfits the 500 questions), KD 600. Measured numbers: README.md.
"""

from configs import base

TEACHER, STUDENT = "tiny-teacher", "tiny-student-l"
TRAIN = "builtin:chat/compare/train"
LABELLED = 500  # questions with answers the SFT student learns from


def get_config(arg: str = "kd"):
    c = base.tiny_on_cpu(base.get_config())
    c.data.train = TRAIN
    c.data.validation = "builtin:chat/compare/test"
    c.data.packing = False  # one example per row: 32 questions a step; GKD needs it
    c.train.log_every = 50
    c.train.eval_every = c.train.checkpoint_every = 150
    # Set by `kd-jax quickstart`, or on the command line: the run's base (configs/pretrain.py).
    c.student.workdir = ""
    if arg == "teacher":
        c.method = "sft"
        c.student.preset = TEACHER
        c.train.num_steps = 600  # 300 reach 88%, 600 93.5% (seed 0)
    elif arg in ("sft", "kd"):
        c.method = arg
        c.student.preset = STUDENT
        if arg == "sft":
            c.data.num_examples = LABELLED
            c.train.num_steps = 300  # its best: 600 steps overfit the 500 (76% -> 69%)
        else:
            c.teacher.workdir = ""  # the teacher run; set like student.workdir
            c.kd.divergence = "fkl"
            c.kd.temperature = 1.0
            c.kd.alpha = 1.0  # the teacher's distribution alone: no labels
            c.gkd.lambda_ = 1.0  # every batch is the student's own answers
            c.gkd.max_new_tokens = 32  # the longest reply is 23 tokens
            c.train.num_steps = 600
    else:
        raise ValueError(f"configs/quickstart.py takes teacher, sft or kd, not {arg!r}.")
    return c
