"""Shared pieces of Study A's configs (Liu et al., 2026): models, data, SFT and GKD recipes.

Condition args (parsed by kd_jax.sweep.parse_arg) use these keys:
  student=llama1b|llama3b|llama8b|qwen7b Llama-3.2-1B, Llama-3.2-3B, Llama-3.1-8B (base);
                                        qwen7b = Qwen2.5-7B, the cross-architecture check
  teacher=sft70b|instruct70b|qwen72b    Llama-3.1-70B SFT on Tulu 3 (the public
                                        Llama-3.1-Tulu-3-70B-SFT checkpoint is exactly
                                        that), or the stronger Llama-3.3-70B-Instruct;
                                        qwen72b = Qwen2.5-72B-Instruct (see below)
  method=sft|gkd                        GKD = on-policy KD (kd_jax.onpolicy)
  size=10k|50k|150k|300k|939k           nested subsets of the Tulu 3 SFT mixture
  seed=N, models=/path, data=/path      defaults 0, $KD_JAX_MODELS, $KD_JAX_DATA
  runlocal                              built-in tiny models and data (CPU, minutes)

Real paths: $KD_JAX_MODELS/<HF name> for every model, $KD_JAX_DATA/tulu-3-sft-mixture
(the Hub dataset's Parquet folder), and the general evaluations (IFEval, BBH, GPQA
diamond: kd_jax/evaluation/study_a_tasks.py) under $KD_JAX_DATA/study_a_eval:
input_data.jsonl, bbh/<task>.json, cot-prompts/<task>.txt, gpqa_diamond.csv.

Cross-architecture: on-policy GKD compares the two models token by token, so teacher
and student must share a tokenizer; a Llama-3.1-70B teacher cannot teach Qwen2.5-7B
that way. The closest runnable condition is the Qwen2.5-7B student with a Qwen2.5
teacher of the paper's size class, Qwen2.5-72B-Instruct (152,064 rows each; a pair with
151,936 rows, e.g. a 0.5B-3B student, is aligned to the tokenizer automatically by
kd_jax.models.vocab_alignment). `student=qwen7b` needs `teacher=qwen72b`.

One chat template per comparison: every condition (SFT and GKD, either teacher)
tokenizes with the student's tokenizer and its chat template, so the methods differ
only in the training signal. The teacher scores that same text (shared tokenizer).

On CPU the teachers are tiny models trained first
(`teacher_arg`, a dependency); the data is the built-in chat arithmetic set, whose train
split plays the 939k-example mixture and whose sizes scale down (LOCAL_SIZES).
"""

from __future__ import annotations

import math
import os

import kd_jax
from configs import base

# key: (HF folder, shape preset, CPU stand-in)
STUDENTS = {
    "llama1b": ("Llama-3.2-1B", "llama-3.2-1b", "tiny-student-xs"),
    "llama3b": ("Llama-3.2-3B", "llama-3.2-3b", "tiny-student"),
    "llama8b": ("Llama-3.1-8B", "llama-3.1-8b", "tiny-student-l"),
    "qwen7b": ("Qwen2.5-7B", "qwen2.5-7b", "tiny-student-l"),
}
TEACHERS = {
    "sft70b": ("Llama-3.1-Tulu-3-70B-SFT", "llama-3.1-70b"),
    "instruct70b": ("Llama-3.3-70B-Instruct", "llama-3.3-70b"),
    "qwen72b": ("Qwen2.5-72B-Instruct", "qwen2.5-72b"),
}
FAMILY = {
    "llama1b": "llama",
    "llama3b": "llama",
    "llama8b": "llama",
    "qwen7b": "qwen",
    "sft70b": "llama",
    "instruct70b": "llama",
    "qwen72b": "qwen",
}
# Study A's general evaluations (kd_jax/evaluation/study_a_tasks.py).
EVAL_TASKS = ("ifeval", "bbh", "gpqa_diamond")
# Built-in tiny files in the same layouts, for `runlocal`.
LOCAL_EVAL_ROOT = os.path.join(
    os.path.dirname(kd_jax.__file__), "evaluation", "fixtures", "study_a"
)
SIZES = {"10k": 10_000, "50k": 50_000, "150k": 150_000, "300k": 300_000, "939k": 0}
TULU_RECORDS = 939_344  # examples in allenai/tulu-3-sft-mixture
VALIDATION = 1000  # held out of the mixture for the validation loss (inferred)
# CPU: the built-in arith train split (20k records) stands in for the mixture, scaled
# about 1:47 (0 = every record but the held-out ones).
LOCAL_SIZES = {"10k": 200, "50k": 1000, "150k": 3000, "300k": 6000, "939k": 0}
LOCAL_RECORDS = 20_000
LOCAL_VALIDATION = 200
# CPU teachers: the weaker one trains on the students' data, the stronger one longer.
LOCAL_TEACHER_STEPS = {"sft70b": 600, "instruct70b": 1500, "qwen72b": 1500}


def roots(fields: dict) -> tuple[str, str]:
    models = fields.get("models") or os.environ.get("KD_JAX_MODELS", "/models")
    data = fields.get("data") or os.environ.get("KD_JAX_DATA", "/data")
    return str(models), str(data)


def local(fields: dict) -> bool:
    return bool(fields.get("runlocal"))


def _pick(table: dict, key: str, what: str):
    if key not in table:
        raise ValueError(f"unknown {what} {key!r}; choose from {', '.join(table)}")
    return table[key]


def base_config(fields: dict):
    """The Tulu 3 SFT recipe (inferred: the paper trains students as Tulu 3 does)."""
    c = base.get_config()
    c.seed = int(fields.get("seed", 0))
    c.data.subset_seed = 0  # the nested subsets are the same for every seed
    c.data.seed = c.seed
    c.data.format = "chat"
    # One example per row on CPU (both methods see the same batches per step). At 4,096
    # tokens SFT packs (segment ids through the attention kernel, so packed examples
    # never see each other): unpacked rows of ~1k-token chats would be mostly padding.
    # On-policy GKD needs one example per row (set_gkd).
    c.data.packing = not local(fields)
    c.data.train_on_inputs = False
    c.optim.name = "adamw"
    c.optim.lr = 5e-6  # Tulu 3 SFT lr for 8B-class models (2e-6 for 70B) (inferred)
    c.optim.schedule = "linear"
    c.optim.warmup_ratio = 0.03  # (inferred)
    c.optim.weight_decay = 0.0  # (inferred)
    c.train.log_every = 10
    c.train.keep_best = False  # Study A evaluates the final model
    if local(fields):
        c.data.tokenizer = "builtin:tokenizer"
        c.data.max_length = 96
        c.data.batch_size = 32
        c.data.validation_size = LOCAL_VALIDATION
        c.optim.lr = 2e-3  # tiny models need a much larger step (tiny_compare.py's)
        c.optim.schedule = "cosine"
        c.optim.warmup_ratio = 0.05
        c.optim.weight_decay = 0.01
        c.train.eval_every = c.train.checkpoint_every = 100
        c.train.eval_batches = 4
        c.eval.tasks = ("arith", *EVAL_TASKS)  # the general evals on built-in tiny fixtures
        c.eval.data_root = LOCAL_EVAL_ROOT
        c.eval.num_examples = 200
        c.eval.max_new_tokens = 64
    else:
        c.data.max_length = 4096  # (inferred)
        c.data.batch_size = 128  # effective batch (inferred)
        c.data.validation_size = VALIDATION
        c.train.eval_every = c.train.checkpoint_every = 500
        c.train.eval_batches = 8
        c.eval.tasks = EVAL_TASKS
        c.eval.data_root = os.path.join(roots(fields)[1], "study_a_eval")
        c.eval.num_examples = 0
        c.eval.max_new_tokens = 1024
    c.eval.temperature = 0.0
    return c


def set_student(c, fields: dict) -> None:
    folder, preset, tiny = _pick(STUDENTS, fields.get("student", "llama1b"), "student")
    if local(fields):
        c.student.preset = tiny
        return
    c.student.hf_path = os.path.join(roots(fields)[0], folder)
    c.student.preset = preset  # the shape, for `kd-jax plan`; weights come from hf_path
    c.student.dtype, c.student.param_dtype = "bfloat16", "float32"  # bf16 compute
    c.student.remat_policy = "full"  # 4096-token rows (inferred)


def set_teacher(c, fields: dict) -> None:
    """The frozen teacher; on CPU its workdir comes from dependencies() (teacher_arg)."""
    student, teacher = fields.get("student", "llama1b"), fields.get("teacher", "sft70b")
    folder, preset = _pick(TEACHERS, teacher, "teacher")
    if FAMILY.get(student) != FAMILY[teacher]:
        raise ValueError(
            f"student={student} and teacher={teacher} do not share a tokenizer, which "
            "token-level GKD needs; use teacher=qwen72b for qwen7b, a Llama teacher otherwise"
        )
    if local(fields):
        return
    c.teacher.hf_path = os.path.join(roots(fields)[0], folder)
    c.teacher.preset = preset
    c.teacher.dtype = c.teacher.param_dtype = "bfloat16"
    c.teacher.remat_policy = "none"  # no backward pass through the teacher


def set_data(c, fields: dict, size: str) -> None:
    """The mixture (or its CPU stand-in) at one of the nested sizes; 2 epochs."""
    n = _pick(LOCAL_SIZES if local(fields) else SIZES, size, "size")
    c.data.num_examples = n
    if local(fields):
        c.data.train = "builtin:chat/arith/train"
        examples = n or LOCAL_RECORDS - LOCAL_VALIDATION
        # 2 epochs of a 200-example set is 13 steps: too few to learn anything on CPU.
        c.train.num_steps = min(max(2 * math.ceil(examples / c.data.batch_size), 150), 800)
        return
    c.data.train = os.path.join(roots(fields)[1], "tulu-3-sft-mixture")
    # The student's tokenizer and chat template for every condition (module docstring).
    c.data.tokenizer = c.student.hf_path
    examples = n or TULU_RECORDS - VALIDATION
    c.train.num_steps = 2 * math.ceil(examples / c.data.batch_size)  # 2 epochs (inferred)


def set_gkd(c, fields: dict, divergence: str = "gjsd") -> None:
    """On-policy KD with TRL's GKD defaults (inferred): lambda 0.5, beta 0.5, T 0.9 for
    both sampling and the loss, 128 new tokens; the loss is the divergence alone."""
    c.method = "kd"
    c.data.packing = False  # the sampler continues each row's one prompt
    c.kd.divergence = divergence
    c.kd.alpha = 1.0
    c.kd.beta = 0.5
    c.kd.temperature = 0.9
    c.kd.scale_by_tau_sq = False  # TRL's GKD does not rescale by T^2
    c.kd.reduction = "token"
    c.gkd.lambda_ = 0.5
    c.gkd.temperature = 0.9
    c.gkd.top_k, c.gkd.top_p = 0, 1.0
    c.gkd.max_new_tokens = 128 if not local(fields) else 48


def teacher_arg(fields: dict) -> str:
    """The CPU teacher's training condition (a dependency of every CPU KD condition)."""
    seed = f",seed={fields['seed']}" if "seed" in fields else ""
    return f"role=teacher,teacher={fields.get('teacher', 'sft70b')}{seed},runlocal"


def teacher_config(fields: dict):
    """CPU only: the tiny teacher trained by SFT on the whole stand-in mixture."""
    if not local(fields):
        raise ValueError(
            "role=teacher exists only with runlocal: the real teachers are HF checkpoints"
        )
    c = base_config(fields)
    teacher = fields.get("teacher", "sft70b")
    c.student.preset = "tiny-teacher"
    c.data.train = "builtin:chat/arith/train"
    c.train.num_steps = _pick(LOCAL_TEACHER_STEPS, teacher, "teacher")
    c.train.eval_every = c.train.checkpoint_every = 300
    c.optim.warmup_ratio = 0.05
    return c


def kd_dependencies(fields: dict) -> dict:
    if fields.get("method", "sft") == "sft" or fields.get("role") or not local(fields):
        return {}
    return {"teacher.workdir": teacher_arg(fields)}


def evaluation(fields: dict) -> dict:
    out: dict = {}
    if fields.get("method", "sft") != "sft" and local(fields) and not fields.get("role"):
        out["teacher"] = "auto"
    if fields.get("role") == "teacher":
        out["meta"] = {"student": f"teacher-{fields.get('teacher', 'sft70b')}"}
    elif fields.get("method", "sft") != "sft" and local(fields):
        # On CPU both teachers are the same preset: name them by role, as the teacher runs.
        out["meta"] = {"teacher": f"teacher-{fields.get('teacher', 'sft70b')}"}
    return out
