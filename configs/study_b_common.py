"""Shared pieces of Study B's configs (Ramesh et al., 2025): models, pairs, data, recipe.

Every Study B file builds its condition with `condition_config(fields)`, where `fields`
is the parsed condition arg (kd_jax.sweep.parse_arg):
  model=M,method=sft,task=T             the LoRA fine-tune of one model (a teacher or
                                        the SFT baseline of a student)
  pair=TEACHER-STUDENT,method=seqkd|revkd|gkd,task=math|commonsense[,tau=X]
                                        [,noise=SIGMA][,teacher=base]
  runlocal                              built-in tiny models and data (CPU, minutes)
  models=/path, data=/path              roots (default $KD_JAX_MODELS, $KD_JAX_DATA)

Real models are HF folders under the models root, named as on the Hub without the
organisation (Qwen2.5-7B, Llama-3.2-1B, ...); data is the LLM-Adapters checkout under the
data root: ft-training_set/math_10k.json, ft-training_set/commonsense_15k.json and
dataset/<task>/test.json for evaluation.
"""

from __future__ import annotations

import math
import os

from configs import base

# key: (HF folder, shape preset, billions of parameters)
MODELS = {
    "qwen0.5b": ("Qwen2.5-0.5B", "qwen2.5-0.5b", 0.5),
    "qwen1.5b": ("Qwen2.5-1.5B", "qwen2.5-1.5b", 1.5),
    "qwen3b": ("Qwen2.5-3B", "qwen2.5-3b", 3.0),
    "qwen7b": ("Qwen2.5-7B", "qwen2.5-7b", 7.0),
    "qwen14b": ("Qwen2.5-14B", "qwen2.5-14b", 14.0),
    "llama1b": ("Llama-3.2-1B", "llama-3.2-1b", 1.0),
    "llama3b": ("Llama-3.2-3B", "llama-3.2-3b", 3.0),
    "llama8b": ("Llama-3.1-8B", "llama-3.1-8b", 8.0),
}
# The 11 teacher -> student pairs.
PAIRS = [
    ("qwen3b", "qwen0.5b"),
    ("qwen3b", "qwen1.5b"),
    ("qwen7b", "qwen0.5b"),
    ("qwen7b", "qwen1.5b"),
    ("qwen7b", "qwen3b"),
    ("qwen14b", "qwen0.5b"),
    ("qwen14b", "qwen1.5b"),
    ("qwen14b", "qwen3b"),
    ("qwen14b", "qwen7b"),
    ("llama8b", "llama1b"),
    ("llama8b", "llama3b"),
]
# The five Qwen 3B/7B pairs of the temperature, base-teacher and noise ablations.
ABLATION_PAIRS = [p for p in PAIRS if p[0] in ("qwen3b", "qwen7b")]
METHODS = ("seqkd", "revkd", "gkd")
TASKS = ("math", "commonsense")
# Qwen2.5 7B/14B pad their embedding to 152064 rows, the smaller ones to 151936; the
# tokenizer is the same, so both are cut to the smaller size (Study B does the same).
QWEN_SMALL_VOCAB = 151_936

# task: (training file, epochs, evaluation group, records in the file (inferred: the
# LLM-Adapters files hold about 10k and 15k; set train.num_steps if yours differ)).
DATA = {
    "math": ("ft-training_set/math_10k.json", 4, "math", 10_000),
    "commonsense": ("ft-training_set/commonsense_15k.json", 3, "commonsense", 15_000),
}
VALIDATION = 500  # held out of the training file
BATCH = 16

# CPU stand-ins: built-in Alpaca records with the same shape (instruction/output/answer).
LOCAL_DATA = {
    "math": ("builtin:alpaca/arith/train", "arith_alpaca", 1000),
    "commonsense": (
        "builtin:alpaca/compare/train,builtin:alpaca/count/train,builtin:alpaca/sort/train",
        "compare_alpaca,count_alpaca,sort_alpaca",
        1500,
    ),
}
LOCAL_VALIDATION = 64


def local_preset(key: str) -> str:
    """The built-in tiny model standing in for a real one, ordered by real size."""
    size = MODELS[key][2]
    if size <= 1.0:
        return "tiny-student-xs"
    if size <= 1.5:
        return "tiny-student"
    if size <= 3.0:
        return "tiny-student-l"
    return "tiny-teacher"


def roots(fields: dict) -> tuple[str, str]:
    models = fields.get("models") or os.environ.get("KD_JAX_MODELS", "/models")
    data = fields.get("data") or os.environ.get("KD_JAX_DATA", "/data")
    return str(models), str(data)


def set_model(mc, key: str, fields: dict, lora: bool) -> None:
    """Points a model section to the real HF folder (or its tiny stand-in)."""
    if key not in MODELS:
        raise ValueError(f"unknown model {key!r}; choose from {', '.join(MODELS)}")
    if fields.get("runlocal"):
        mc.preset = local_preset(key)
        return
    folder, preset, _ = MODELS[key]
    mc.hf_path = os.path.join(roots(fields)[0], folder)
    mc.preset = preset  # the shape, for `kd-jax plan`; weights come from hf_path
    mc.dtype = "bfloat16"  # Study B trained in fp16; bf16 is the TPU equivalent (inferred)
    # 256-token rows: saving the weight matmuls' outputs is cheap and spares their
    # recomputation; the teacher runs forward only, so it saves nothing (set below).
    mc.remat_policy = "dots_with_no_batch_dims"
    mc.param_dtype = "float32" if lora else "bfloat16"
    mc.lora.enabled = lora
    mc.lora.rank, mc.lora.alpha, mc.lora.dropout = 8, 16.0, 0.05
    mc.lora.targets = ("q", "k", "v", "up", "down")


def parse_pair(pair: str) -> tuple[str, str]:
    teacher, sep, student = pair.partition("-")
    if not sep or (teacher, student) not in PAIRS:
        names = ", ".join(f"{t}-{s}" for t, s in PAIRS)
        raise ValueError(f"unknown pair {pair!r}; Study B's pairs are {names}")
    return teacher, student


def condition_config(fields: dict):
    """The config of one Study B condition (see the module docstring)."""
    c = base.get_config()
    task = fields.get("task", "math")
    if task not in TASKS:
        raise ValueError(f"task={task!r}; choose math or commonsense")
    method = fields.get("method", "sft")
    local = bool(fields.get("runlocal"))
    c.seed = int(fields.get("seed", 6))

    # Data: Alpaca prompts with Study B's exact strings, loss on prompt tokens too,
    # 256-token cutoff, one example per row (per-sequence loss means need unpacked rows).
    models_root, data_root = roots(fields)
    path, epochs, group, records = DATA[task]
    c.data.alpaca_template = "kd_generalization"
    c.data.train_on_inputs = True
    c.data.packing = False
    c.data.max_length = 256
    c.data.batch_size = BATCH
    c.data.subset_seed = c.data.seed = c.seed
    if local:
        c.data.train, tasks, n = LOCAL_DATA[task]
        c.data.num_examples, c.data.validation_size = n, LOCAL_VALIDATION
        c.data.max_length = 128
        c.data.tokenizer = "builtin:tokenizer"
        c.eval.tasks = tuple(tasks.split(","))
    else:
        c.data.train = os.path.join(data_root, "LLM-Adapters", path)
        c.data.validation_size = VALIDATION
        n = records - VALIDATION
        c.eval.tasks = (group,)

    # Optimizer and schedule: HF Trainer AdamW, lr 3e-4, 100 warmup steps, linear decay.
    c.optim.lr = 3e-4
    c.optim.schedule = "linear"
    c.optim.warmup_steps = 100 if not local else 20
    c.optim.weight_decay = 0.0  # HF Trainer default (inferred)
    c.optim.clip_norm = 1.0  # HF Trainer default (inferred)
    c.train.num_steps = epochs * math.ceil(n / BATCH)
    # Eval/save every 200 steps, keep the best checkpoint by validation CE.
    c.train.eval_every = c.train.checkpoint_every = 200 if not local else 50
    c.train.eval_batches = math.ceil(VALIDATION / BATCH) if not local else 4
    c.train.log_every = 10
    c.train.keep_best = True
    # Zero-shot evaluation as Study B: sampling at T = 1, top_p 1, up to 256 new tokens.
    c.eval.temperature = 1.0
    c.eval.max_new_tokens = 256 if not local else 48
    c.eval.num_examples = 0 if not local else 100
    c.eval.batch_size = 32

    if method == "sft":
        set_model(c.student, fields.get("model", "qwen0.5b"), fields, lora=True)
        if not local:
            c.data.tokenizer = c.student.hf_path
        return c

    teacher_key, student_key = parse_pair(fields.get("pair", ""))
    set_model(c.student, student_key, fields, lora=True)
    if not local:
        c.data.tokenizer = c.student.hf_path
    c.method = "kd"
    if fields.get("teacher") == "base" and not local:
        set_model(c.teacher, teacher_key, fields, lora=False)  # task-unaware: no fine-tuning
    # Otherwise teacher.workdir is the teacher's SFT run, filled in from dependencies();
    # on CPU the "base" teacher is the same model fine-tuned on the other task.
    c.teacher.checkpoint = "best"
    if not local:
        c.teacher.dtype = c.teacher.param_dtype = "bfloat16"
        c.teacher.remat_policy = "none"  # forward only: nothing is saved for a backward
    if teacher_key.startswith("qwen") and MODELS[teacher_key][2] >= 7 > MODELS[student_key][2]:
        c.kd.vocab_size = QWEN_SMALL_VOCAB if not local else 0
    c.kd.alpha = 1.0  # KD weight 1.0, no CE term
    c.kd.teacher_noise_std = float(fields.get("noise", 0.0))
    if method in ("seqkd", "revkd"):
        # Logits / tau, per-sequence token mean then batch mean, times tau^2.
        c.kd.divergence = "fkl_studyb" if method == "seqkd" else "rkl_studyb"
        c.kd.reduction = "sequence"
        c.kd.temperature = float(fields.get("tau", 1.0))
        c.kd.scale_by_tau_sq = True
    elif method == "gkd":
        # With probability 0.5 a batch is the student's own samples (T = 1, top_k off,
        # 256 tokens in all); generalized JSD with beta 0.5, pooled token mean, no tau.
        c.kd.divergence = "gjsd"
        c.kd.beta = 0.5
        c.kd.reduction = "token"
        c.kd.temperature = 1.0
        c.kd.scale_by_tau_sq = False
        c.gkd.lambda_ = 0.5
        c.gkd.temperature = 1.0
        c.gkd.top_k, c.gkd.top_p = 0, 1.0
        c.gkd.max_new_tokens = c.data.max_length
        # On-policy rows need supervision on the response only; Study B's GKD also
        # supervised prompt tokens on off-policy batches (a deviation kd_jax requires).
        c.data.train_on_inputs = False
    else:
        raise ValueError(f"method={method!r}; choose sft, seqkd, revkd or gkd")
    return c


def teacher_sft_arg(fields: dict) -> str:
    """The condition arg of the SFT run that makes the pair's fine-tuned teacher."""
    teacher_key, _ = parse_pair(fields["pair"])
    keep = {k: fields[k] for k in ("models", "data", "seed") if k in fields}
    extra = "".join(f",{k}={v}" for k, v in keep.items())
    return f"model={teacher_key},method=sft,task={fields.get('task', 'math')}{extra}"


def dependencies(fields: dict) -> dict:
    if fields.get("method", "sft") == "sft":
        return {}
    if fields.get("teacher") == "base":
        if not fields.get("runlocal"):
            return {}
        other = TASKS[1 - TASKS.index(fields.get("task", "math"))]
        return {"teacher.workdir": teacher_sft_arg({**fields, "task": other})}
    return {"teacher.workdir": teacher_sft_arg(fields)}


def evaluation(fields: dict) -> dict:
    """How `kd-jax sweep` evaluates a condition: the test files under the data root, the
    best checkpoint (as Study B), fidelity against the run's own teacher."""
    out: dict = {"checkpoint": "best"}
    if not fields.get("runlocal"):
        out["data_root"] = os.path.join(roots(fields)[1], "LLM-Adapters")
    if fields.get("method", "sft") != "sft":
        out["teacher"] = "auto"
        if fields.get("teacher") == "base":
            out["meta"] = {"teacher": MODELS[parse_pair(fields["pair"])[0]][0] + " (base)"}
    return out


def sft_args(models, tasks=TASKS) -> list[str]:
    return [f"model={m},method=sft,task={t}" for t in tasks for m in models]
