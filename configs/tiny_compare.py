"""A tiny teacher, then a tiny student by SFT and by KD, on built-in data, from scratch.

    kd-jax train --config configs/tiny_compare.py:teacher --workdir runs/tiny/teacher
    kd-jax train --config configs/tiny_compare.py:sft --workdir runs/tiny/sft
    kd-jax train --config configs/tiny_compare.py:kd \
        --config.teacher.workdir=runs/tiny/teacher --workdir runs/tiny/kd

The first quickstart's setting (configs/quickstart.py replaced it: its models start from
pretrained bases), kept as the small fixed task the cross-tokenizer runs build on.

The teacher (4 layers, d=128) trains on all 4k built-in number-comparison questions
("Which is bigger, 27 or 28?", a one-line rationale, the answer); the students (2 layers,
d=64) see a 250-question subset, as in a data-scarce post-training run, by SFT or by
distilling the teacher's full distribution (forward KL, as Study B's SeqKD). Measured on
2 CPU cores: teacher 63.5% exact match on 200 held-out questions, SFT student 17.0%, KD
student 22.5% (held-out CE 0.947 vs 0.779), about 4 minutes in all. Runs on one device.
"""

from configs import base


def get_config(arg: str = "kd"):
    c = base.tiny_on_cpu(base.get_config())
    c.data.validation = "builtin:chat/compare/test"
    c.train.log_every = 25
    c.train.eval_every = 150
    c.train.checkpoint_every = 150
    if arg == "teacher":
        c.method = "sft"
        c.student.preset = "tiny-teacher"
        c.data.train = "builtin:chat/compare/train"
        c.train.num_steps = 600
    elif arg in ("sft", "kd"):
        c.method = arg
        c.student.preset = "tiny-student"
        c.data.train = "builtin:chat/compare/train"
        c.data.num_examples = 250
        c.data.packing = False  # one example per row: 32 examples a step
        c.train.num_steps = 300
        if arg == "kd":
            c.teacher.workdir = ""  # the teacher run, set on the command line
            c.kd.divergence = "fkl"
            c.kd.temperature = 1.0
            c.kd.alpha = 1.0  # the teacher's distribution alone, as Study B's SeqKD
    else:
        raise ValueError(f"configs/tiny_compare.py takes teacher, sft or kd, not {arg!r}.")
    return c
