"""Pretraining the built-in tiny base models: next-token loss over every built-in family.

    kd-jax train --config configs/pretrain.py:tiny-student --workdir runs/bases/tiny-student
    kd-jax train --config configs/tiny_compare.py:sft --workdir runs/sft \
        --config.student.workdir=runs/bases/tiny-student

Both studies distill into pretrained base models. These configs give the built-in tiny
models (kd_jax/models/presets.py: tiny-teacher and the students tiny-student-xs,
tiny-student, tiny-student-l) a base stage: plain next-token loss on every token (prompts
included, `data.train_on_inputs`) over the training splits of all five built-in families,
each in the chat and the Alpaca rendering, packed. A post-training run then starts from
the base with `student.workdir` (its latest checkpoint), so it begins from a model that
already writes the formats. The test splits are never in the mixture. A killed run resumes
like any training run (tests/test_train.py). kd_jax ships these bases, trained at seed 0
(kd_jax/models/builtin_bases.py); configs/quickstart.py starts from them.
"""

from configs import base
from kd_jax.data.synthetic_tasks import FAMILIES

# Steps per model: the teacher trains twice as long (an 800-step teacher base fine-tuned
# as the quickstart's teacher reached 77% on the comparison test, a 1600-step one 94%).
STEPS = {"tiny-teacher": 1600, "tiny-student-xs": 800, "tiny-student": 800, "tiny-student-l": 800}
MODELS = tuple(STEPS)
MIXTURE = ",".join(f"builtin:{fmt}/{f}/train" for fmt in ("chat", "alpaca") for f in FAMILIES)


def get_config(arg: str = "tiny-student"):
    name, runlocal = base.name_and_runlocal(arg, MODELS, "configs/pretrain.py")
    c = base.tiny_on_cpu(base.get_config())
    c.method = "sft"
    c.student.preset = name
    c.data.train = MIXTURE
    c.data.validation = "builtin:chat/compare/test,builtin:alpaca/arith/test"
    c.data.train_on_inputs = True
    c.data.max_length = 128
    c.optim.lr = 3e-3
    c.optim.warmup_steps = 50
    c.train.num_steps = STEPS[name]
    c.train.log_every = 50
    c.train.eval_every = c.train.checkpoint_every = 200
    if runlocal:  # a minute or two: the plumbing, not a useful base
        c.train.num_steps = 60
        c.train.eval_every = c.train.checkpoint_every = 30
        c.data.max_length = 64
    return c
