"""Assembling a run: mesh, data and models from a config, then the jitted programs.

    parts = setup(config)                         # mesh, pipeline, student, teacher
    program = build_program(config, mesh=..., rules=..., student=..., teacher=...,
                            batch_shardings=...)  # train_step, eval_step, shardings

`build_program` is the one place the train and eval steps are put together from a config:
`kd_jax.train.run` runs them, `kd-jax plan` lowers and compiles them for abstract models
and batches, and the benchmarks time them. The loss settings come from `loss_config`,
which the config checks call too, so a config is read the same way wherever it is used.
"""

from __future__ import annotations

import dataclasses
import functools
import logging

import jax
import numpy as np
import optax
from jax.sharding import Mesh
from ml_collections import ConfigDict

from kd_jax import cross_kd
from kd_jax import sharding as shd
from kd_jax import step as step_lib
from kd_jax.data import DataConfig, builtin_paths, make_pipeline
from kd_jax.data.packing import ALIGN_KEYS, ROW_KEYS, TEACHER_ROW_KEYS, TOPK_KEYS, batch_spec
from kd_jax.errors import ConfigError
from kd_jax.losses import KDLossConfig
from kd_jax.models import loader, vocab_alignment
from kd_jax.models.parts import ModelParts
from kd_jax.onpolicy import make_onpolicy_fn
from kd_jax.optim import learning_rate_schedule, make_optimizer
from kd_jax.sampling import SamplingConfig
from kd_jax.teacher_cache import TeacherCache, cache_key

log = logging.getLogger("kd_jax.step_builder")


def rules_of(config: ConfigDict) -> tuple:
    """The config's logical-axis rules table as a tuple of (logical, mesh axes) pairs."""
    return shd.rules_from(config.sharding_rules)


def loss_config(config: ConfigDict, method: str | None = None) -> KDLossConfig:
    """The loss of a run: cross-entropy alone for SFT, else the `kd` section's KD loss
    (`method` overrides config.method: the config checks read the `kd` section always)."""
    kd = config.kd
    if (method or config.method) == "sft":
        return KDLossConfig(kind="fkl", alpha=0.0, reduction=kd.reduction)
    return KDLossConfig(
        kind=kd.divergence,
        alpha=kd.alpha,
        temperature=kd.temperature,
        scale_by_tau_sq=kd.scale_by_tau_sq,
        beta=kd.beta,
        skew=kd.skew,
        reduction=kd.reduction,
        teacher_top_k=kd.teacher_top_k,
        teacher_noise_std=kd.teacher_noise_std,
        vocab_size=kd.vocab_size or None,
    )


@dataclasses.dataclass
class RunParts:
    """What a run is made of before any step is built."""

    config: ConfigDict
    mesh: Mesh
    rules: tuple
    pipeline: object  # kd_jax.data.DataPipeline
    student: ModelParts
    teacher: ModelParts | None
    cross: dict = dataclasses.field(default_factory=dict)  # cross-tokenizer loss arguments

    @property
    def context(self) -> dict:
        """What the step reads and never updates: the student's frozen weights, the teacher."""
        t = self.teacher
        return {
            "frozen": self.student.frozen,
            "teacher": None if t is None else (t.trainable, t.frozen),
        }

    @property
    def loss_kw(self) -> dict:
        """The keyword arguments `step.train_step` / `loss_terms` take for this run's loss."""
        return dict(
            student=self.student,
            teacher=self.teacher,
            loss_cfg=loss_config(self.config),
            chunk_size=self.config.kd.chunk_size,
            **self.cross,
        )


def setup(config: ConfigDict) -> RunParts:
    """Mesh, data pipeline, student and teacher of a config. KD from `kd.teacher_cache`
    reads the teacher's signal from the cache (attached to the pipeline) instead of running
    a teacher; cross-tokenizer KD gives the teacher its own tokenization (kd_jax.cross_kd)."""
    shd.initialize_distributed()
    rules = rules_of(config)
    mesh = shd.make_mesh(dict(config.mesh))
    data = config.data.to_dict()
    for key in ("train", "validation", "tokenizer"):
        data[key] = builtin_paths.resolve(data[key])
    pipeline = make_pipeline(
        DataConfig.from_mapping(data), sharding=shd.batch_sharding(mesh, rules)
    )
    vocab = len(pipeline.tokenizer)
    common = dict(vocab_size=vocab, mesh=mesh, rules=rules, seed=config.seed)
    student = loader.build(config.student, role="student", **common)
    teacher, cross = None, {}
    if config.kd.teacher_cache:
        _attach_teacher_cache(config, pipeline, student)
    elif config.method == "kd":
        if config.kd.cross_tokenizer != "off":  # the teacher reads its own tokenization
            cross = cross_kd.attach(config, pipeline)
            common = {**common, "vocab_size": cross.pop("teacher_vocab")}
        teacher = loader.build(config.teacher, role="teacher", **common)
    check_vocab(config, vocab, student, None if cross else teacher)
    return RunParts(config, mesh, rules, pipeline, student, teacher, cross)


def _attach_teacher_cache(config: ConfigDict, pipeline, student: ModelParts) -> None:
    """The pipeline adds the cached teacher signal to every example."""
    cache = TeacherCache(
        builtin_paths.resolve(config.kd.teacher_cache), cache_key(config, pipeline)
    )
    cache_vocab = cache.meta["vocab_size"]
    if cache_vocab != student.cfg.vocab_size and not config.kd.vocab_size:
        align_vocab(config, len(pipeline.tokenizer), student.cfg.vocab_size, cache_vocab, "")
    cache.check_run(config)
    pipeline.teacher_cache = cache


def check_vocab(config: ConfigDict, tokenizer_vocab: int, student, teacher) -> None:
    """The tokenizer fits the student; teacher and student tables align (padding rows cut,
    `kd.vocab_size` set) or are refused in one line (kd_jax.models.vocab_alignment)."""
    sv = student.cfg.vocab_size
    if tokenizer_vocab > sv:
        raise ConfigError(
            f"The tokenizer has {tokenizer_vocab} tokens but the student's vocabulary is {sv}; "
            "use the student's own tokenizer (data.tokenizer)."
        )
    if teacher is None or config.kd.vocab_size:
        return
    align_vocab(config, tokenizer_vocab, sv, teacher.cfg.vocab_size, config.teacher.hf_path)


def align_vocab(config, tokenizer_vocab, student_rows, teacher_rows, teacher_dir) -> None:
    """Sets kd.vocab_size when the two tables differ by padding rows only (else refuses)."""
    tok_dir = builtin_paths.resolve(config.data.tokenizer)
    difference = vocab_alignment.folder_difference(tok_dir, teacher_dir or "")
    n = vocab_alignment.aligned_vocab(tokenizer_vocab, student_rows, teacher_rows, difference)
    if n is not None:
        log.info(
            "Vocabularies %d (student) and %d (teacher) differ by padding rows: both cut to "
            "the tokenizer's %d tokens.",
            student_rows,
            teacher_rows,
            n,
        )
        config.kd.vocab_size = n  # read by loss_config


def state_shardings(abstract_state, params, mesh: Mesh):
    """Optimizer-state leaves inherit the sharding of the parameter whose path they end
    with (Adam's mu and nu mirror the params); everything else is replicated."""
    by_path = {
        tuple(str(k) for k in path): p for path, p in jax.tree_util.tree_leaves_with_path(params)
    }
    repl = shd.replicated(mesh)

    def pick(path, leaf):
        keys = tuple(str(k) for k in path)
        for i in range(len(keys)):
            param = by_path.get(keys[i:])
            if param is not None and param.shape == leaf.shape:
                return param.sharding
        return repl

    return jax.tree_util.tree_map_with_path(pick, abstract_state)


def abstract_batch(config: ConfigDict, mesh: Mesh, rules, topk: int = 0) -> dict:
    """ShapeDtypeStructs of one global batch, sharded as the pipeline places it."""
    out = {}
    for key, (shape, dtype) in batch_spec(
        config.data.batch_size, config.data.max_length, topk
    ).items():
        sharding = shd.batch_sharding(mesh, rules, ndim=len(shape))
        out[key] = jax.ShapeDtypeStruct(shape, np.dtype(dtype), sharding=sharding)
    return out


def batch_keys(config: ConfigDict, pipeline=None) -> tuple[str, ...]:
    """The keys of a run's batches: the rows, plus a teacher cache's signal (top-k, or
    sampled ids and counts) or cross-tokenizer KD's teacher rows and alignment."""
    keys = ROW_KEYS
    cache = getattr(pipeline, "teacher_cache", None)
    if cache is not None:
        keys += cache.keys
    elif config.kd.teacher_cache:
        keys += TOPK_KEYS
    if config.kd.cross_tokenizer != "off":
        keys += TEACHER_ROW_KEYS + ALIGN_KEYS
    return keys


def batch_shardings(config: ConfigDict, mesh: Mesh, rules, pipeline=None) -> dict:
    """{key: NamedSharding} of the batches a run's pipeline yields: rows split over the
    batch axes, whatever else an array's shape is."""
    rows = shd.batch_sharding(mesh, rules)
    return {k: rows for k in batch_keys(config, pipeline)}


@dataclasses.dataclass
class TrainProgram:
    """The jitted programs of a run and the shardings they were built with."""

    optimizer: optax.GradientTransformation
    schedule: optax.Schedule
    abstract_state: dict  # ShapeDtypeStructs with their shardings
    state_shardings: dict
    context: dict  # {"frozen", "teacher"}: arrays the step reads, never updates
    train_step: object
    eval_step: object
    # The step for on-policy (GKD) batches: the divergence alone, since their tokens are the
    # student's samples, not labels; the same program as train_step when alpha is 1.
    onpolicy_step: object

    def init_state(self, params: dict) -> dict:
        fn = lambda p: step_lib.init_state(p, self.optimizer)  # noqa: E731
        return jax.jit(fn, out_shardings=self.state_shardings)(params)


def _shardings_of(tree):
    return jax.tree.map(lambda x: x.sharding, tree)


def build_program(
    config: ConfigDict,
    *,
    mesh: Mesh,
    rules,
    student: ModelParts,
    teacher: ModelParts | None,
    batch_shardings: dict,
    cross: dict | None = None,
) -> TrainProgram:
    """The train and eval steps of `config` for these (real or abstract) models; `cross`
    holds cross-tokenizer KD's loss arguments (RunParts.cross)."""
    num_steps = config.train.num_steps
    optimizer = make_optimizer(config.optim, num_steps)
    schedule = learning_rate_schedule(config.optim, num_steps)
    abstract = jax.eval_shape(lambda p: step_lib.init_state(p, optimizer), student.trainable)
    state_sh = state_shardings(abstract, student.trainable, mesh)
    abstract = jax.tree.map(
        lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), abstract, state_sh
    )
    context = {
        "frozen": student.frozen,
        "teacher": None if teacher is None else (teacher.trainable, teacher.frozen),
    }
    loss_kw = dict(
        student=student,
        teacher=teacher,
        loss_cfg=loss_config(config),
        chunk_size=config.kd.chunk_size,
        **(cross or {}),
    )
    make_step = functools.partial(
        step_lib.make_train_step,
        state_shardings=state_sh,
        batch_shardings=batch_shardings,
        context_shardings=_shardings_of(context),
        optimizer=optimizer,
        schedule=schedule,
        grad_accum=config.optim.grad_accum,
        rules=rules,
    )
    train_step = make_step(**loss_kw)
    # On-policy batches have no labels: no CE share, and "uld" across tokenizers scores the
    # sampled text by the teacher's probability of it (losses/cross_tokenizer.py).
    on_kw = {}
    if config.method == "kd" and config.gkd.lambda_ > 0:
        if loss_kw["loss_cfg"].alpha < 1:
            on_kw["loss_cfg"] = dataclasses.replace(loss_kw["loss_cfg"], alpha=1.0)
        if cross:
            on_kw["student_samples"] = True
    onpolicy_step = make_step(**{**loss_kw, **on_kw}) if on_kw else train_step
    # Validation batches carry no cached teacher signal (nor the teacher's tokenization),
    # so a run from a cache, or across tokenizers, reports validation CE only (eval_div 0).
    eval_kw = loss_kw
    if config.kd.teacher_cache or config.kd.cross_tokenizer != "off":
        sft = KDLossConfig(kind="fkl", alpha=0.0, reduction=config.kd.reduction)
        eval_kw = {**loss_kw, "teacher": None, "loss_cfg": sft}
        if cross:
            eval_kw["cross_tokenizer"] = "off"
    rows = {k: v for k, v in batch_shardings.items() if k in ROW_KEYS}
    eval_step = step_lib.make_eval_step(
        param_shardings=_shardings_of(student.trainable),
        batch_shardings=rows,
        context_shardings=_shardings_of(context),
        rules=rules,
        **eval_kw,
    )
    return TrainProgram(
        optimizer, schedule, abstract, state_sh, context, train_step, eval_step, onpolicy_step
    )


def build_onpolicy(config: ConfigDict, parts: RunParts, batch_shardings: dict):
    """The jitted on-policy batch builder when `gkd.lambda_ > 0`, else None."""
    if config.gkd.lambda_ <= 0:
        return None
    g = config.gkd
    cfg = SamplingConfig.for_tokenizer(
        parts.pipeline.tokenizer,
        max_new_tokens=g.max_new_tokens,
        temperature=g.temperature,
        top_k=g.top_k,
        top_p=g.top_p,
    )
    if parts.cross:  # the student samples its own rows; the host tokenizes them again
        batch_shardings = {k: v for k, v in batch_shardings.items() if k in ROW_KEYS}
    return make_onpolicy_fn(parts.student, cfg, batch_shardings, rules=parts.rules)
