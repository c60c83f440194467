"""The quickstart: a teacher, and a student by SFT and by on-policy KD, from tiny bases.

    kd-jax quickstart --workdir runs/quickstart     # teacher, students, table: about 5 min

runs, in WORKDIR (W):
    kd-jax train --config configs/quickstart.py:teacher --workdir W/teacher
    kd-jax train --config configs/quickstart.py:sft --workdir W/sft
    kd-jax train --config configs/quickstart.py:kd --config.teacher.workdir=W/teacher \
        --workdir W/kd

The task is the built-in number comparison ("Which is bigger , 27 or 28 ?", a one-line
rationale, "The answer is X ."). Both models start from the shipped bases
(kd_jax/models/builtin_bases.py: configs/pretrain.py's runs at seed 0), as both studies
distill into pretrained models; `kd-jax quickstart --pretrain` trains them first instead.
The teacher (tiny-teacher, 4 layers, d=128) fine-tunes on all 4k labelled training
questions. The student (tiny-student-l, 3 layers, d=96) has the setting KD is for: a few
labelled questions (500) and many unlabelled ones (the 4k, their answers unused). SFT
learns from the 500 labels; KD is on-policy (GKD with lambda = 1): the student answers the
4k questions itself and learns the teacher's next-token distribution on its own answers,
so no reference answer is ever read. SFT gets the step count it does best with (300; at
600 it overfits the 500 questions), KD 600. Measured on 2 cores, seeds 0 / 1: teacher
98.5 / 98.5% greedy accuracy on 200 held-out questions, SFT 75.5 / 73.5%, KD 91.5 /
93.5%; 303 s from an empty workdir (README.md).
"""

from configs import base
from kd_jax.models import builtin_bases

TEACHER, STUDENT = "tiny-teacher", "tiny-student-l"
TRAIN = "builtin:chat/compare/train"
LABELLED = 500  # questions with answers the SFT student learns from


def get_config(arg: str = "kd"):
    c = base.tiny_on_cpu(base.get_config())
    c.data.train = TRAIN
    c.data.validation = "builtin:chat/compare/test"
    c.data.packing = False  # one example per row: 32 questions a step; GKD needs it
    c.data.max_length = 48  # the longest example is 37 tokens; GKD's prompt + 32 new fit
    c.train.log_every = 50
    c.train.eval_every = c.train.checkpoint_every = 150
    if arg == "teacher":
        c.method = "sft"
        c.student.preset = TEACHER
        c.student.hf_path = builtin_bases.path(TEACHER)  # or .workdir: a configs/pretrain.py run
        c.train.num_steps = 1500  # from the seed-1 base: 600 steps reach 67.5%, 1500 92%
    elif arg in ("sft", "kd"):
        c.method = arg
        c.student.preset = STUDENT
        c.student.hf_path = builtin_bases.path(STUDENT)
        if arg == "sft":
            c.data.num_examples = LABELLED
            c.train.num_steps = 300  # its best: 600 steps overfit the 500 (76% -> 69%)
        else:
            c.teacher.workdir = ""  # the teacher run: `kd-jax quickstart` or the command line
            c.kd.divergence = "fkl"
            c.kd.temperature = 1.0
            c.kd.alpha = 1.0  # the teacher's distribution alone: no labels
            c.gkd.lambda_ = 1.0  # every batch is the student's own answers
            c.gkd.max_new_tokens = 32  # the longest reply is 23 tokens
            c.train.num_steps = 600
    else:
        raise ValueError(f"configs/quickstart.py takes teacher, sft or kd, not {arg!r}.")
    return c
