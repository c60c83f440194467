"""The miniature study's runs: what each one trains, on what, and what it is compared with.

Every model starts from a shipped pretrained base (kd_jax/models/bases, configs/pretrain.py
at seed 0), as both studies distill into pretrained models: the teachers from tiny-teacher
(4 layers, d = 128), the students from tiny-student-xs (1 layer, d = 32), tiny-student
(2 layers, d = 64) and tiny-student-l (3 layers, d = 96). Data is built-in.

Task of (a), (b), (d): the number comparison ("Which is bigger , 27 or 28 ?", a one-line
rationale, "The answer is X ."). A fixed 200 of its 4k training questions are the
validation set of every run (data.validation_size with subset_seed 0: the same 200 for
all); the test split is only scored, never used to choose a checkpoint.

Teachers (SFT on the 3.8k other training questions):
  teacher          tiny-teacher, `teacher_steps` steps
  strong-teacher   tiny-teacher, `strong_steps` steps: it is used only if it scores at
                   least STRONGER_BY higher than the teacher on the test (suite.strong_gate).
                   The same size, better trained, as Study A's stronger teacher (both 70B).
                   A larger base (d = 160, 4 layers, 1.4M parameters, pretrained like the
                   others) was tried: fine-tuned 1500 steps it scored 58% (lr 2e-3) and
                   75.5% (lr 1e-3), below the teacher, copying digits wrongly.
Their top-k (k = 64) on the training questions is cached once (kd_jax.teacher_cache), so
the offline KD students never run a teacher.

Students (each condition at every seed; the seed sets initialisation and batch order, the
nested training subsets are fixed):
  (a) tiny-student-l, n in `sizes` labelled questions, SFT vs KD (forward KL from the
      cached teacher, T = 1, no CE term: Study B's setting). Both train to convergence:
      `epochs` passes over their n (within [min_steps, max_steps]), validated `evals`
      times, and the checkpoint with the lowest validation CE is scored (a run from the
      cache validates by CE alone: the cache holds no teacher signal for those rows).
  (b) tiny-student-l at the largest n, KD from the strong teacher.
  (d) the three students at the smallest n: SFT, and KD from the teacher at each of
      `temperatures`; held-out KL to the teacher measures whether each can follow it.
  (c) Zorbic translation, the built-in low-resource domain, tiny-student: `human` noisy
      human pairs to train on and `human_val` more to validate on. The domain's teacher
      (cipher-teacher: tiny-teacher on the terse teacher-scale pairs, the human answers'
      format) labels Zorbic inputs (kd-jax synthesize, label mode); synthetic sizes are
      swept. Recipes: SFT on human data; one stage (on-policy GKD on human data, i.e.
      synthetic size 0); stage 1 alone (SFT on synthetic); two stages (stage 1's best
      checkpoint, then GKD on human data); mixed (GKD on human + the largest synthetic
      set, for as many steps as both stages together). Every recipe keeps its best
      checkpoint on the human validation pairs.

The direction of each finding is written down before the runs (PREDICTIONS) and the
report gives the verdict whichever way it goes.
"""

from __future__ import annotations

import dataclasses

from configs import base
from kd_jax.models import builtin_bases

TASK = "compare"
TASK_TRAIN = f"builtin:chat/{TASK}/train"
TEACHER_BASE = STRONG_BASE = "tiny-teacher"
STUDENTS = ("tiny-student-xs", "tiny-student", "tiny-student-l")
MAIN_STUDENT = "tiny-student-l"  # (a) and (b): the shipped student that learns the task
CIPHER_STUDENT = "tiny-student"
STRONGER_BY = 0.03  # the strong teacher's required test-accuracy margin over the teacher
CACHE_K = 64
# Files the runner writes in the workdir (suite.write_named_files).
HUMAN_TRAIN, HUMAN_VAL, TERSE_CIPHER = "cipher-human-train", "cipher-human-val", "terse-cipher"


def synthetic_name(size: int) -> str:
    return f"synthetic-{size}"


PREDICTIONS = {
    "a": "KD beats SFT at the smallest n, and its gain over SFT shrinks from the smallest "
    "to the largest n (Study A: up to +5 at 10k examples, SFT can win by 150k).",
    "b": "KD from the stronger teacher beats SFT at the largest n, where the teacher's gain "
    "has shrunk (Study A: about +4 at full data).",
    "c": "With little human data, two stages (synthetic SFT, then on-policy KD on human "
    "data) beat one stage, one stage beats SFT, and two stages beat naive mixing "
    "(Study A's low-resource domains).",
    "d": "KD's gain over SFT is larger for the smaller student (Study A: 1B > 3B > 8B); "
    "T = 5 hurts the smallest student (Study B).",
}


@dataclasses.dataclass(frozen=True)
class Scale:
    """How big the suite is. `full` is the committed report; `smoke` checks the plumbing."""

    name: str
    seeds: tuple[int, ...]
    sizes: tuple[int, ...]  # labelled comparison questions per student
    epochs: float  # SFT passes over its n, clipped to [min_steps, max_steps]
    min_steps: int
    max_steps: int
    teacher_steps: int
    strong_steps: int
    temperatures: tuple[float, ...]
    human: int  # Zorbic human pairs to train on
    human_val: int  # and to validate on
    synthetic: tuple[int, ...]  # synthetic sizes of (c); 0 = one stage
    cipher_teacher_steps: int
    gkd_steps: int  # on-policy steps of one stage and of the second stage
    eval_examples: int  # test problems per task (greedy)
    val_size: int = 200
    evals: int = 8  # validations per SFT run: the best is kept
    batch_size: int = 32

    def steps(self, n: int) -> int:
        """Steps for `epochs` passes over n examples, within [min_steps, max_steps]."""
        return int(
            min(max(round(self.epochs * n / self.batch_size), self.min_steps), self.max_steps)
        )


SCALES = {
    "full": Scale(
        "full",
        seeds=(0, 1, 2),
        sizes=(250, 500, 1000, 2000, 3800),
        epochs=12,
        min_steps=250,
        max_steps=600,
        teacher_steps=400,
        strong_steps=1500,
        temperatures=(1.0, 2.0, 5.0),
        human=60,
        human_val=40,
        synthetic=(0, 500, 1500, 3000),
        cipher_teacher_steps=400,
        gkd_steps=150,
        eval_examples=200,
    ),
    "smoke": Scale(
        "smoke",
        seeds=(0,),
        sizes=(250, 1000),
        epochs=1,
        min_steps=20,
        max_steps=30,
        teacher_steps=60,
        strong_steps=90,
        temperatures=(1.0, 5.0),
        human=60,
        human_val=40,
        synthetic=(0, 500),
        cipher_teacher_steps=100,
        gkd_steps=10,
        eval_examples=40,
        evals=2,
    ),
    # The suite's end-to-end check (tests/test_miniature.py): every kind of run, stage and
    # report section at a few steps.
    "test": Scale(
        "test",
        seeds=(0,),
        sizes=(32, 64),
        epochs=1,
        min_steps=2,
        max_steps=4,
        teacher_steps=4,
        strong_steps=6,
        temperatures=(1.0, 5.0),
        human=16,
        human_val=16,
        synthetic=(0, 16),
        cipher_teacher_steps=40,
        gkd_steps=2,
        eval_examples=8,
        val_size=16,
        evals=2,
        batch_size=16,
    ),
}


@dataclasses.dataclass
class PlannedRun:
    """One training run and how it is named in the report (run.json)."""

    name: str  # folder under the workdir
    config: object  # ConfigDict; workdir-relative names are made paths by the runner
    meta: dict  # run.json fields: method, student, teacher, data_size, temperature, seed
    groups: tuple[str, ...]  # findings it feeds: "a", "b", "c", "d", "teacher"
    needs: tuple[str, ...] = ()  # runs, files or "cache:<teacher>" that come first
    teacher: str | None = None  # the teacher run it is compared with for fidelity
    task: str = TASK
    checkpoint: str = "latest"  # the one scored: "best" for runs that validate


def _common(scale: Scale, seed: int, steps: int, model: str):
    c = base.tiny_on_cpu(base.get_config())
    c.seed = seed
    c.student.preset, c.student.hf_path = model, builtin_bases.path(model)
    c.data.train = TASK_TRAIN
    c.data.max_length = 48  # comparison examples are 20-37 tokens
    c.data.batch_size = scale.batch_size
    c.data.packing = False  # one example per row: the teacher cache and GKD need it
    c.data.validation, c.data.validation_size = "", scale.val_size
    c.data.subset_seed = 0  # the same validation set and nested subsets at every seed
    c.data.seed = seed
    c.optim.warmup_steps = max(steps // 20, 1)
    c.train.num_steps = steps
    c.train.log_every = max(steps // 6, 1)
    c.train.eval_every = 0
    c.train.checkpoint_every = steps
    c.train.keep_last, c.train.keep_best = 1, False
    c.train.progress_bar = False
    c.kd.chunk_size = 512
    c.eval.tasks = (TASK,)
    c.eval.num_examples = scale.eval_examples
    c.eval.max_new_tokens = 32
    c.eval.temperature = 0.0
    c.eval.batch_size = 100
    return c


def _validate(c, scale: Scale) -> None:
    """Validation `scale.evals` times; the lowest-loss checkpoint is kept and scored."""
    c.train.eval_every = max(c.train.num_steps // scale.evals, 1)
    c.train.checkpoint_every = c.train.eval_every  # a checkpoint is offered as best when saved
    c.train.keep_best = True


def teacher_runs(scale: Scale) -> list[PlannedRun]:
    out = []
    for name, model, steps in (
        ("teacher", TEACHER_BASE, scale.teacher_steps),
        ("strong-teacher", STRONG_BASE, scale.strong_steps),
    ):
        c = _common(scale, 0, steps, model)
        meta = {"method": "SFT", "student": name, "data_size": 0, "seed": 0}
        out.append(PlannedRun(name, c, meta, ("teacher",)))
    return out


def _student(scale, seed, model, n, method, teacher="teacher", temperature=1.0):
    c = _common(scale, seed, scale.steps(n), model)
    c.data.num_examples = n
    meta = {"method": "SFT", "student": model, "data_size": n, "seed": seed}
    _validate(c, scale)
    if method == "sft":
        return c, meta, (), "best"
    c.method = "kd"
    c.teacher.workdir = teacher  # a run name; the runner makes it a path
    c.kd.divergence = "fkl"
    c.kd.alpha = 1.0  # the teacher's distribution alone, as Study B (no CE term)
    c.kd.temperature = temperature
    c.kd.teacher_cache = f"cache:{teacher}"
    meta = {**meta, "method": "KD", "teacher": teacher, "temperature": temperature}
    return c, meta, (teacher, f"cache:{teacher}"), "best"


def condition_name(model: str, n: int, method: str, teacher="teacher", t=1.0) -> str:
    name = f"{model}_n{n}_{method}"
    return name + (f"_{teacher}_T{t:g}" if method == "kd" else "")


def student_runs(scale: Scale) -> list[PlannedRun]:
    """Findings (a), (b), (d): a run per (condition, seed), shared conditions once."""
    small, large = min(scale.sizes), max(scale.sizes)
    specs: dict[tuple, set] = {}

    def want(model, n, method, teacher="teacher", t=1.0, group="a"):
        specs.setdefault((model, n, method, teacher, t), set()).add(group)

    for n in scale.sizes:
        want(MAIN_STUDENT, n, "sft")
        want(MAIN_STUDENT, n, "kd")
    want(MAIN_STUDENT, large, "sft", group="b")
    want(MAIN_STUDENT, large, "kd", group="b")
    want(MAIN_STUDENT, large, "kd", teacher="strong-teacher", group="b")
    for model in STUDENTS:
        want(model, small, "sft", group="d")
        for t in scale.temperatures:
            want(model, small, "kd", t=t, group="d")
    out = []
    for (model, n, method, teacher, t), groups in specs.items():
        for seed in scale.seeds:
            c, meta, needs, which = _student(scale, seed, model, n, method, teacher, t)
            out.append(
                PlannedRun(
                    f"{condition_name(model, n, method, teacher, t)}_s{seed}",
                    c,
                    meta,
                    tuple(sorted(groups)),
                    needs,
                    teacher=teacher,  # SFT runs too: their KL to the teacher is the baseline
                    checkpoint=which,
                )
            )
    return out


# ---- (c): the low-resource domain ---------------------------------------------------------


def _cipher(scale, seed, steps, train, model=CIPHER_STUDENT, validate=True):
    c = _common(scale, seed, steps, model)
    c.data.train = train
    c.data.max_length = 72  # the longest Zorbic example has 69 tokens
    c.data.validation, c.data.validation_size = HUMAN_VAL, 0
    c.eval.tasks = ("cipher",)
    c.eval.max_new_tokens = 48
    if validate:
        _validate(c, scale)
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
    human examples' format; the built-in teacher-style Zorbic replies are 60% a long
    word-by-word gloss, so this teacher learns only the terse pairs of the teacher-scale
    set (about 2k of the 5k), the human answers' format."""
    # A fixed budget, like the other teachers.
    c = _cipher(scale, 0, scale.cipher_teacher_steps, TERSE_CIPHER, TEACHER_BASE, validate=False)
    c.data.packing = True  # the teacher trains faster packed; students never pack
    meta = {"method": "SFT", "student": "cipher-teacher", "data_size": 0, "seed": 0}
    needs = (TERSE_CIPHER, HUMAN_VAL)
    return PlannedRun("cipher-teacher", c, meta, ("teacher",), needs, task="cipher")


def cipher_name(recipe: str, synthetic: int, seed: int) -> str:
    return f"cipher_{recipe}_syn{synthetic}_s{seed}"


def cipher_runs(scale: Scale) -> list[PlannedRun]:
    """Finding (c): SFT, one stage, and per synthetic size stage 1, two stages; mixed at
    the largest size."""
    out, largest, human = [], max(scale.synthetic), HUMAN_TRAIN

    def run(recipe, synthetic, seed, c, method, needs=(), teacher="cipher-teacher"):
        meta = {
            "method": method,
            "student": CIPHER_STUDENT,
            "data_size": scale.human,
            "synthetic": synthetic,
            "seed": seed,
            **({"teacher": teacher, "temperature": 0.9} if "GKD" in method else {}),
        }
        needs = (HUMAN_TRAIN, HUMAN_VAL, "cipher-teacher", *needs)
        return PlannedRun(
            cipher_name(recipe, synthetic, seed),
            c,
            meta,
            ("c",),
            needs,
            teacher=teacher,
            task="cipher",
            checkpoint="best",
        )

    for seed in scale.seeds:
        sft = _cipher(scale, seed, scale.steps(scale.human), human)
        out.append(run("sft", 0, seed, sft, "SFT"))
        one = _cipher(scale, seed, scale.gkd_steps, human)
        _gkd(one)
        out.append(run("two-stage", 0, seed, one, "one-stage GKD"))
        for s in (s for s in scale.synthetic if s):
            stage1 = _cipher(scale, seed, scale.steps(s), synthetic_name(s))
            out.append(run("stage1", s, seed, stage1, "SFT", (synthetic_name(s),)))
            two = _cipher(scale, seed, scale.gkd_steps, human)
            _gkd(two)
            first = cipher_name("stage1", s, seed)
            two.student.preset, two.student.hf_path = "", ""
            two.student.workdir, two.student.checkpoint = first, "best"
            two.optim.warmup_steps = 0
            out.append(run("two-stage", s, seed, two, "two-stage GKD", (first,)))
        if largest:
            steps = scale.steps(largest) + scale.gkd_steps
            mixed = _cipher(scale, seed, steps, f"{human},{synthetic_name(largest)}")
            _gkd(mixed)
            out.append(run("mixed", largest, seed, mixed, "mixed GKD", (synthetic_name(largest),)))
    return out


def build_plan(scale: Scale) -> list[PlannedRun]:
    """Every run, teachers first; a run's `needs` always come earlier in the list."""
    return (
        teacher_runs(scale) + student_runs(scale) + [cipher_teacher_run(scale)] + cipher_runs(scale)
    )
