"""The miniature study's runs: what each one trains, on what, and what it is compared with.

Everything is built-in: tiny Llama-style models (presets tiny-student-xs, 50k parameters
with the built-in 587-token vocabulary; tiny-student, 174k; tiny-teacher, 0.9M) and the
built-in data.

Teachers (trained once per workdir, then reused):
  teacher          tiny-teacher, SFT on the number-comparison train split (4k questions
                   with varied one-line rationales) and the Zorbic translation pairs
                   (5k): one general teacher, as Study A's 70B teacher is
  strong-teacher   the teacher trained on for (`strong_factor` - 1) times as many steps
                   again: the "stronger teacher" of finding (b)
Their top-k (k = 64 of the 587-token vocabulary) on the comparison split is cached once
(kd_jax.teacher_cache), so the offline KD students never run a teacher.

Students, every one with `seeds` seeds (the seed sets initialisation and batch order; the
nested data subsets are fixed, so seeds measure training noise on a given dataset):
  (a) tiny-student, n in `sizes` comparison examples, SFT vs KD (forward KL, T = 1)
  (b) tiny-student, largest n, KD from the strong teacher
  (d) tiny-student-xs and tiny-student at the smallest n, SFT vs KD; KD at T = 5 for
      both and at T = 2 for tiny-student-xs
  (c) tiny-student on Zorbic translation, the built-in low-resource domain: 300 noisy
      human pairs and a synthetic set the domain's teacher (cipher-teacher, below)
      labels itself (kd-jax synthesize, label mode). SFT on human data; one stage
      (on-policy GKD on human data); stage 1 (SFT on synthetic); two stages (stage 1,
      then GKD on human data); mixed (GKD on human + synthetic). SFT, one stage and
      mixed get as many steps as both stages together.
KD is offline forward KL for (a), (b), (d), so that temperature means what it means in
Study B; Study A's on-policy GKD is used where Study A's recipe needs it, in (c).
"""

from __future__ import annotations

import dataclasses

from configs import base

# The students' task for (a), (b), (d). The arithmetic word problems were tried first:
# in the step budget a 2-2.5 s/100-step CPU allows, tiny students stayed at 1.5-3%
# exact match on them (SFT, 300-1500 steps, n = 250 and 4000), so no comparison could
# show anything. "Which is bigger, 27 or 28?" with a one-line rationale is learnable in
# that budget (tiny-student-xs, SFT, 800 steps: 22% at n = 250, 36% at n = 4000).
TASK = "compare"
TASK_TRAIN = f"builtin:chat/{TASK}/train"
TASK_TEST = f"builtin:chat/{TASK}/test"
TEACHER_DATA = f"{TASK_TRAIN},builtin:chat/cipher/train"
HUMAN_CIPHER = "builtin:chat/cipher/human"
# The teacher-scale Zorbic pairs whose reply is the terse human format ("The answer is
# X ."), about 2k of the 5k; the runner writes them out. See cipher_teacher_run.
TERSE_CIPHER = "terse-cipher"
HUMAN_CIPHER_SIZE = 300
CACHE_K = 64


@dataclasses.dataclass(frozen=True)
class Scale:
    """How big the suite is. `full` is the committed report; `smoke` checks the plumbing."""

    name: str
    seeds: tuple[int, ...]
    sizes: tuple[int, ...]  # comparison training examples per student
    teacher_steps: int
    strong_factor: float
    student_steps: int
    stage_steps: int  # each of the two stages of (c); one stage / mixed get twice this
    synthetic: int  # Zorbic inputs the teacher labels
    cipher_teacher_steps: int
    eval_examples: int  # test problems per task (greedy)
    batch_size: int = 32


SCALES = {
    "full": Scale(
        "full",
        seeds=(0, 1, 2),
        sizes=(250, 1000, 4000),
        teacher_steps=1000,
        strong_factor=2.0,
        student_steps=400,
        stage_steps=125,
        synthetic=1500,
        cipher_teacher_steps=600,
        eval_examples=300,
    ),
    "smoke": Scale(
        "smoke",
        seeds=(0,),
        sizes=(250, 4000),
        teacher_steps=100,
        strong_factor=1.5,
        student_steps=30,
        stage_steps=15,
        synthetic=100,
        cipher_teacher_steps=60,
        eval_examples=30,
    ),
    # The suite's end-to-end check (tests/test_miniature.py): every run, stage and report
    # section at a few steps. The cipher teacher still trains long enough to write answers
    # in the terse format, or it would label no synthetic record.
    "test": Scale(
        "test",
        seeds=(0,),
        sizes=(32, 64),
        teacher_steps=4,
        strong_factor=1.5,
        student_steps=2,
        stage_steps=2,
        synthetic=16,
        cipher_teacher_steps=40,
        eval_examples=8,
        batch_size=16,
    ),
}


@dataclasses.dataclass
class PlannedRun:
    """One training run and how it is named in the report (run.json)."""

    name: str  # folder under the workdir
    config: object  # ConfigDict; workdir-relative paths are filled in by the runner
    meta: dict  # run.json fields: method, student, teacher, data_size, temperature
    groups: tuple[str, ...]  # findings it feeds: "a", "b", "c", "d", "teacher"
    needs: tuple[str, ...] = ()  # runs (or "synthetic", "cache:<teacher>") that come first
    teacher: str | None = None  # the teacher run it is compared with for fidelity
    task: str = TASK


def _common(scale: Scale, seed: int, steps: int):
    c = base.get_config()
    c.seed = seed
    c.data.tokenizer = "builtin:tokenizer"
    c.data.max_length = 48  # compare examples are 20-35 tokens
    c.data.batch_size = scale.batch_size
    c.data.packing = False  # one example per row: the teacher cache and GKD need it
    # Held-out text for the validation loss and the teacher-student KL: the test split,
    # which no model trains on (checkpoints are never chosen by it).
    c.data.validation = TASK_TEST
    c.data.validation_size = 0
    c.data.subset_seed = 0
    c.data.seed = seed
    c.optim.lr = 2e-3
    c.optim.schedule = "cosine"
    c.optim.warmup_ratio = 0.05
    c.optim.weight_decay = 0.01
    c.train.num_steps = steps
    c.train.log_every = max(steps // 6, 1)
    c.train.eval_every = c.train.checkpoint_every = steps
    c.train.eval_batches = 4
    c.train.keep_last, c.train.keep_best = 1, False
    c.train.progress_bar = False
    c.kd.chunk_size = 512
    c.eval.tasks = (TASK,)
    c.eval.num_examples = scale.eval_examples
    c.eval.max_new_tokens = 32
    c.eval.temperature = 0.0
    c.eval.batch_size = 100
    return c


def teacher_runs(scale: Scale) -> list[PlannedRun]:
    out = []
    extra = int(scale.teacher_steps * (scale.strong_factor - 1))
    for name, steps in (("teacher", scale.teacher_steps), ("strong-teacher", extra)):
        c = _common(scale, 0, steps)
        c.student.preset = "tiny-teacher"
        c.data.train = TEACHER_DATA
        c.data.max_length = 72  # the longest Zorbic example has 69 tokens
        c.data.packing = True  # the teacher trains faster packed; students never pack
        c.eval.tasks = (TASK, "cipher")
        c.eval.max_new_tokens = 48
        needs: tuple[str, ...] = ()
        if name == "strong-teacher":  # the teacher, trained on for (factor - 1) x its steps
            c.student.preset, c.student.workdir = "", "teacher"
            needs = ("teacher",)
        meta = {"method": "SFT", "student": name, "data_size": 0}
        out.append(PlannedRun(name, c, meta, ("teacher",), needs))
    return out


def _student(scale, seed, preset, n, method, teacher="teacher", temperature=1.0):
    c = _common(scale, seed, scale.student_steps)
    c.student.preset = preset
    c.data.train = TASK_TRAIN
    c.data.num_examples = n
    meta = {"method": "SFT", "student": preset, "data_size": n}
    needs: tuple[str, ...] = ()
    if method == "kd":
        c.method = "kd"
        c.teacher.workdir = teacher  # a run name; the runner makes it a path
        c.kd.divergence = "fkl"
        c.kd.alpha = 1.0  # the teacher's distribution alone, as Study B (no CE term)
        c.kd.temperature = temperature
        c.kd.teacher_cache = f"cache:{teacher}"
        # Validation batches carry no cached top-k, which the eval step expects; the
        # held-out KL is measured after training instead (suite.fidelity).
        c.train.eval_every = 0
        meta = {**meta, "method": "KD", "teacher": teacher, "temperature": temperature}
        needs = (teacher, f"cache:{teacher}")
    return c, meta, needs


def student_runs(scale: Scale) -> list[PlannedRun]:
    """Findings (a), (b), (d): a run per (condition, seed), shared conditions once."""
    small, large = min(scale.sizes), max(scale.sizes)
    specs: dict[tuple, set] = {}

    def want(preset, n, method, teacher="teacher", t=1.0, group="a"):
        specs.setdefault((preset, n, method, teacher, t), set()).add(group)

    for n in scale.sizes:
        want("tiny-student", n, "sft")
        want("tiny-student", n, "kd")
    want("tiny-student", large, "kd", teacher="strong-teacher", group="b")
    want("tiny-student", large, "sft", group="b")
    # tiny-student-l (3 layers) would cost about 2.5x a tiny-student run; two sizes fit.
    for preset in ("tiny-student-xs", "tiny-student"):
        want(preset, small, "sft", group="d")
        want(preset, small, "kd", group="d")
    want("tiny-student-xs", small, "kd", t=2.0, group="d")
    for preset in ("tiny-student-xs", "tiny-student"):
        want(preset, small, "kd", t=5.0, group="d")
    out = []
    for (preset, n, method, teacher, t), groups in specs.items():
        for seed in scale.seeds:
            c, meta, needs = _student(scale, seed, preset, n, method, teacher, t)
            name = f"{preset}_n{n}_{method}" + (f"_{teacher}_T{t:g}" if method == "kd" else "")
            meta["seed"] = seed
            run = PlannedRun(
                f"{name}_s{seed}",
                c,
                meta,
                tuple(sorted(groups)),
                needs,
                teacher=teacher if method == "kd" else None,
            )
            out.append(run)
    return out


def _cipher(scale: Scale, seed: int, steps: int):
    c = _common(scale, seed, steps)
    c.student.preset = "tiny-student"
    c.data.max_length = 72
    c.data.validation = "builtin:chat/cipher/test"
    c.eval.tasks = ("cipher",)
    c.eval.max_new_tokens = 48
    return c


def _gkd(c, teacher: str = "cipher-teacher") -> None:
    """On-policy KD as Study A (TRL GKD defaults, inferred): lambda 0.5, beta 0.5, T 0.9."""
    c.method = "kd"
    c.teacher.workdir = teacher
    c.kd.divergence = "gjsd"
    c.kd.alpha, c.kd.beta = 1.0, 0.5
    c.kd.temperature, c.kd.scale_by_tau_sq = 0.9, False
    c.gkd.lambda_, c.gkd.temperature, c.gkd.max_new_tokens = 0.5, 0.9, 32


def cipher_teacher_run(scale: Scale) -> PlannedRun:
    """The teacher of (c). Study A's teacher writes its synthetic data and answers in the
    human examples' format; the general teacher learned the built-in teacher-style replies
    (60% a long word-by-word gloss), which a tiny student cannot finish in its budget, so
    on-policy KD and synthetic data from it teach a format the human data never uses.
    (A first run with the general teacher gave 0% for every KD recipe for that reason.)
    This teacher learns the terse pairs of the teacher-scale set instead."""
    c = _cipher(scale, 0, scale.cipher_teacher_steps)
    c.student.preset = "tiny-teacher"
    c.data.train = TERSE_CIPHER
    c.data.packing = True
    meta = {"method": "SFT", "student": "cipher-teacher", "data_size": 0}
    return PlannedRun("cipher-teacher", c, meta, ("teacher",), (TERSE_CIPHER,), task="cipher")


def cipher_runs(scale: Scale) -> list[PlannedRun]:
    """Finding (c): the low-resource recipes on Zorbic translation."""
    s, out = scale.stage_steps, []
    for seed in scale.seeds:
        human = {"student": "tiny-student", "data_size": HUMAN_CIPHER_SIZE, "seed": seed}
        gkd_meta = {"teacher": "cipher-teacher", "temperature": 0.9}
        sft = _cipher(scale, seed, 2 * s)
        sft.data.train = HUMAN_CIPHER
        stage1 = _cipher(scale, seed, s)
        stage1.data.train = "synthetic"  # the runner's teacher-labelled file
        one = _cipher(scale, seed, 2 * s)
        one.data.train = HUMAN_CIPHER
        _gkd(one)
        two = _cipher(scale, seed, s)
        two.data.train = HUMAN_CIPHER
        _gkd(two)
        two.student.preset, two.student.workdir = "", f"cipher_stage1_s{seed}"
        two.optim.warmup_ratio = 0.0
        mixed = _cipher(scale, seed, 2 * s)
        mixed.data.train = f"{HUMAN_CIPHER},synthetic"
        _gkd(mixed)
        out += [
            PlannedRun(
                f"cipher_sft_s{seed}", sft, {**human, "method": "SFT"}, ("c",), task="cipher"
            ),
            PlannedRun(
                f"cipher_stage1_s{seed}",
                stage1,
                {
                    **human,
                    "method": "SFT",
                    "student": "stage1 (synthetic only)",
                    "data_size": scale.synthetic,
                },
                ("c",),
                ("synthetic",),
                task="cipher",
            ),
            PlannedRun(
                f"cipher_one-stage_s{seed}",
                one,
                {**human, **gkd_meta, "method": "one-stage GKD"},
                ("c",),
                ("cipher-teacher",),
                teacher="cipher-teacher",
                task="cipher",
            ),
            PlannedRun(
                f"cipher_two-stage_s{seed}",
                two,
                {**human, **gkd_meta, "method": "two-stage GKD"},
                ("c",),
                (f"cipher_stage1_s{seed}",),
                teacher="cipher-teacher",
                task="cipher",
            ),
            PlannedRun(
                f"cipher_mixed_s{seed}",
                mixed,
                {**human, **gkd_meta, "method": "mixed GKD"},
                ("c",),
                ("synthetic",),
                teacher="cipher-teacher",
                task="cipher",
            ),
        ]
    return out


def build_plan(scale: Scale) -> list[PlannedRun]:
    """Every run, teachers first; a run's `needs` always come earlier in the list."""
    return (
        teacher_runs(scale) + student_runs(scale) + [cipher_teacher_run(scale)] + cipher_runs(scale)
    )
