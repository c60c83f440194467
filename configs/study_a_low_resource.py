"""Study A's low-resource domains: two-stage KD (SFT on teacher-written synthetic data,
then on-policy KD on the human data) vs one stage (on-policy KD on human data only) vs
naive mixing (on-policy KD on human + synthetic), synthetic size swept, per domain.

    kd-jax train --config configs/study_a_low_resource.py:domain=arc,recipe=stage1,synthetic=5k \
        --workdir runs/study_a_lr/domain-arc_recipe-stage1_synthetic-5k
    kd-jax train --config configs/study_a_low_resource.py:domain=arc,recipe=two-stage,synthetic=5k \
        --config.student.workdir=runs/study_a_lr/domain-arc_recipe-stage1_synthetic-5k \
        --workdir runs/study_a_lr/domain-arc_recipe-two-stage_synthetic-5k
    kd-jax sweep --config configs/study_a_low_resource.py --workdir runs/study_a_lr [--runlocal]

Recipes: sft (SFT on human data, the baseline), one-stage, stage1 (SFT on synthetic
data alone; also evaluated), two-stage (continues from stage1's workdir), mixed. Study A
reports e.g. 1B on ARC 26.7 -> 70.3 with two stages.

Data, per domain (flores = Flores-200 translation, dialogsum = DialogSum, arc = ARC), as
chat JSONL under $KD_JAX_DATA/low_resource/<domain>/: human.jsonl (the human-annotated
training set), test.jsonl (evaluation: conversation + `answer`, see the `flores`,
`dialogsum`, `arc_lr` tasks) and synthetic/<size>.jsonl, written beforehand by the
teacher from a few human examples:
    kd-jax synthesize --model $KD_JAX_MODELS/Llama-3.1-Tulu-3-70B-SFT \
        --examples $KD_JAX_DATA/low_resource/arc/human.jsonl --out .../synthetic/5k.jsonl
Sizes, epochs, batch and length for these domains are not in our notes (inferred).
On CPU (`runlocal`) every domain is the built-in Zorbic translation task: 300 noisy
human pairs (chat/cipher/human) and 5000 teacher-style pairs (chat/cipher/train) as the
synthetic set; the teacher is a tiny model trained on the latter first.
"""

import math
import os

from configs import study_a_common as sa
from kd_jax.config_files import format_arg, parse_arg

DOMAINS = {"flores": "flores", "dialogsum": "dialogsum", "arc": "arc_lr"}  # -> eval task
RECIPES = ("sft", "one-stage", "stage1", "two-stage", "mixed")
KD_RECIPES = ("one-stage", "two-stage", "mixed")
SYNTHETIC = {"1k": 1000, "5k": 5000, "10k": 10_000, "20k": 20_000}  # (inferred)
HUMAN = 1000  # human training examples per domain (inferred)
EPOCHS = {"stage1": 2, "human": 3}  # (inferred)
# CPU: 300 human pairs; the synthetic sizes scale into the 5000 built-in ones (0 = all).
LOCAL_SYNTHETIC = {"1k": 1000, "5k": 2500, "10k": 5000, "20k": 0}
LOCAL_HUMAN, LOCAL_POOL = 300, 5000
LOCAL_STEPS = (150, 600)  # bounds on CPU steps: enough to learn, minutes at most


def _steps(fields: dict, examples: int, epochs: int, batch: int) -> int:
    steps = epochs * math.ceil(examples / batch)
    return min(max(steps, LOCAL_STEPS[0]), LOCAL_STEPS[1]) if sa.local(fields) else steps


def _data(fields: dict) -> tuple[str, str, int, int, int]:
    """(human path, synthetic path, human examples, synthetic examples, synthetic subset
    size for data.num_examples: 0 = the whole file)."""
    size = fields.get("synthetic", "5k")
    table = LOCAL_SYNTHETIC if sa.local(fields) else SYNTHETIC
    if size not in table:
        raise ValueError(f"synthetic={size!r}; choose from {', '.join(table)}")
    if sa.local(fields):
        human, synthetic = "builtin:chat/cipher/human", "builtin:chat/cipher/train"
        subset = LOCAL_SYNTHETIC[size]
        return human, synthetic, LOCAL_HUMAN, subset or LOCAL_POOL, subset
    root = os.path.join(sa.roots(fields)[1], "low_resource", fields.get("domain", "arc"))
    synthetic = os.path.join(root, "synthetic", f"{size}.jsonl")  # one file per size
    return os.path.join(root, "human.jsonl"), synthetic, HUMAN, SYNTHETIC[size], 0


def _teacher_config(fields: dict):
    """CPU only: the domain's tiny teacher, trained on the teacher-style pairs."""
    c = sa.teacher_config(fields)
    c.data.train = "builtin:chat/cipher/train"
    c.eval.tasks = ("cipher",)
    c.eval.data_root = ""  # built-in data
    c.eval.max_new_tokens = 48
    return c


def get_config(arg: str = "domain=arc,recipe=two-stage,synthetic=5k"):
    fields = parse_arg(arg)
    if fields.get("role") == "teacher":
        return _teacher_config(fields)
    local, domain = sa.local(fields), fields.get("domain", "arc")
    recipe = fields.get("recipe", "two-stage")
    if domain not in DOMAINS or recipe not in RECIPES:
        raise ValueError(
            f"domain={domain!r}, recipe={recipe!r}; domains: {', '.join(DOMAINS)}; "
            f"recipes: {', '.join(RECIPES)}"
        )
    c = sa.base_config(fields)
    sa.set_student(c, fields)
    if local:
        c.data.validation = "builtin:chat/cipher/test"
        c.eval.tasks = ("cipher",)
        c.eval.data_root = ""  # built-in data
        c.eval.max_new_tokens = 48
    else:
        lr_root = os.path.join(sa.roots(fields)[1], "low_resource", domain)
        c.data.validation = os.path.join(lr_root, "test.jsonl")
        c.data.tokenizer = c.student.hf_path  # one chat template: the student's, every recipe
        c.data.max_length = 1024  # (inferred)
        c.data.batch_size = 32  # (inferred)
        c.eval.tasks = (DOMAINS[domain],)
        c.eval.data_root = sa.roots(fields)[1]  # low_resource/<domain>/test.jsonl under it
        c.eval.max_new_tokens = 256
    c.data.validation_size = 0
    human, synthetic, n_human, n_syn, subset = _data(fields)
    batch = c.data.batch_size
    if recipe == "stage1":  # SFT on the synthetic set alone
        c.data.train, c.data.num_examples = synthetic, subset
        c.train.num_steps = _steps(fields, n_syn, EPOCHS["stage1"], batch)
        return c
    c.data.train = human
    examples = n_human
    if recipe == "mixed":
        c.data.train = f"{human},{synthetic}"
        examples += n_syn
        if subset:
            # The data layer subsets the union, not each source: on CPU a smaller
            # synthetic size is approximated by a nested subset of human + synthetic.
            c.data.num_examples = n_human + subset
    if recipe in KD_RECIPES:
        sa.set_teacher(c, fields)
        sa.set_gkd(c, fields)
    c.train.num_steps = _steps(fields, examples, EPOCHS["human"], batch)
    if recipe == "two-stage":
        c.student.hf_path, c.student.preset = "", ""  # stage 1's run: dependencies()
        c.optim.warmup_ratio = 0.0  # it continues a trained model
    return c


def sweep() -> list[str]:
    out = []
    for domain in DOMAINS:
        base = f"domain={domain},student=llama1b"
        out += [f"{base},recipe=sft", f"{base},recipe=one-stage"]
        for size in SYNTHETIC:
            out += [f"{base},recipe={r},synthetic={size}" for r in ("stage1", "two-stage", "mixed")]
    return out


def dependencies(arg: str) -> dict:
    fields = parse_arg(arg)
    recipe = fields.get("recipe", "two-stage")
    deps: dict = {}
    if fields.get("role") == "teacher":
        return deps
    if recipe == "two-stage":
        # Same keys in the same order as the sweep's own stage-1 arg: the same folder.
        deps["student.workdir"] = format_arg({**fields, "recipe": "stage1"})
    if sa.local(fields) and recipe in KD_RECIPES:
        deps["teacher.workdir"] = "role=teacher,domain=cipher,runlocal"
    return deps


def evaluation(arg: str) -> dict:
    """Run names for the report, which pools by (teacher, student, size, method): the
    recipe and synthetic size are the method; stage 1 is its own student."""
    fields = parse_arg(arg)
    out: dict = {} if sa.local(fields) else {"data_root": sa.roots(fields)[1]}
    recipe, size = fields.get("recipe", "two-stage"), fields.get("synthetic", "5k")
    if fields.get("role") == "teacher":
        out["meta"] = {"student": "teacher-cipher"}
    elif recipe == "stage1":
        out["meta"] = {"method": "SFT", "student": f"stage1-syn{size}"}
    else:
        # Every recipe refines on the same human set: compare them at its size.
        n_human = _data(fields)[2]
        name = {"sft": "SFT", "one-stage": "one-stage"}.get(recipe, f"{recipe} syn={size}")
        out["meta"] = {"method": name, "data_size": n_human}
    if recipe in KD_RECIPES and sa.local(fields) and fields.get("role") != "teacher":
        out["teacher"] = "auto"
        out["meta"]["teacher"] = "teacher-cipher"
    return out
