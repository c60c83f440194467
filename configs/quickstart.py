"""The quickstart: a tiny teacher, then a tiny student by SFT and by KD, on built-in data.

    kd-jax quickstart --workdir runs/quickstart          # all three, then a table
    kd-jax train --config configs/quickstart.py:teacher --workdir runs/quickstart/teacher
    kd-jax train --config configs/quickstart.py:sft --workdir runs/quickstart/sft
    kd-jax train --config configs/quickstart.py:kd \
        --config.teacher.workdir=runs/quickstart/teacher --workdir runs/quickstart/kd

The teacher (4 layers, d=128) trains on 20k built-in arithmetic word problems with
varied rationales; the students (2 layers, d=64) see only 1k "human" problems (terser,
a few wrong answers), as in a data-scarce post-training run. Runs on one CPU device.
"""

from configs import base


def get_config(arg: str = "kd"):
    c = base.get_config()
    c.data.tokenizer = "builtin:tokenizer"
    c.data.max_length = 96
    c.data.batch_size = 32
    c.data.validation = "builtin:chat/arith/test"
    c.mesh.data = -1
    c.optim.lr = 2e-3
    c.optim.schedule = "cosine"
    c.optim.warmup_steps = 30
    c.optim.weight_decay = 0.01
    c.train.log_every = 25
    c.train.eval_every = 150
    c.train.eval_batches = 4
    c.train.checkpoint_every = 150
    c.eval.num_examples = 200
    if arg == "teacher":
        c.method = "sft"
        c.student.preset = "tiny-teacher"
        c.data.train = "builtin:chat/arith/train"
        c.train.num_steps = 600
    elif arg in ("sft", "kd"):
        c.method = arg
        c.student.preset = "tiny-student"
        c.data.train = "builtin:chat/arith/human"
        c.train.num_steps = 300
        if arg == "kd":
            c.teacher.workdir = ""  # set by `kd-jax quickstart`, or on the command line
            c.kd.divergence = "fkl"
            c.kd.temperature = 2.0
            c.kd.alpha = 0.5
    else:
        raise ValueError(f"configs/quickstart.py takes teacher, sft or kd, not {arg!r}.")
    return c
