"""Cross-tokenizer KD on built-in data: a teacher on the second built-in tokenizer, students on
the first, by SFT, "aligned" or "uld" KD (configs/tiny_compare.py's task, sizes and schedule).

    kd-jax train --config configs/cross_tokenizer.py:teacher_b --workdir runs/xt/teacher_b
    kd-jax train --config configs/cross_tokenizer.py:aligned \
        --config.teacher.workdir=runs/xt/teacher_b --workdir runs/xt/aligned
    kd-jax train --config configs/cross_tokenizer.py:uld \
        --config.teacher.workdir=runs/xt/teacher_b --workdir runs/xt/uld
    kd-jax train --config configs/cross_tokenizer.py:sft --workdir runs/xt/sft

Append ",runlocal" to the argument (e.g. `aligned,runlocal`) for a run of a minute or two:
fewer steps, shorter rows. The teacher's tokenizer (builtin:tokenizer-b) pairs digits and has
512 tokens against the student's 587, so the two never share a token sequence for a number.
"""

from configs import base, tiny_compare

VARIANTS = ("teacher_b", "sft", "aligned", "uld")


def get_config(arg: str = "aligned"):
    name, runlocal = base.name_and_runlocal(arg, VARIANTS, "configs/cross_tokenizer.py")
    if name == "teacher_b":
        c = tiny_compare.get_config("teacher")
        c.data.tokenizer = "builtin:tokenizer-b"
    elif name == "sft":
        c = tiny_compare.get_config("sft")
    else:
        c = tiny_compare.get_config("kd")
        c.kd.cross_tokenizer = name
        c.kd.teacher_tokenizer = "builtin:tokenizer-b"
        # CE beside the divergence, as ULD is defined: sorted probabilities carry no token
        # identity (alone, ULD leaves held-out CE at 13 nats here), and "aligned" reaches
        # inside a multi-token span only through the span's probability.
        c.kd.alpha = 0.5
    if runlocal:
        c.train.num_steps = 300 if name == "teacher_b" else 150
        c.train.eval_every = c.train.checkpoint_every = c.train.num_steps
        c.data.max_length = 80
    return c
