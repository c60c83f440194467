"""The one model loader: a config's `student` / `teacher` section -> a model.

    parts = build(config.student, role="student", vocab_size=V, mesh=mesh, rules=rules)
    parts = build(config.teacher, role="teacher", mesh=mesh, rules=rules, abstract=True)
    model, tokenizer_dir = load_trained(path, mesh=mesh, rules=rules)   # eval, generate

Where the weights come from, in order: `workdir` (another kd_jax run: its resolved
config.json gives the architecture, its checkpoint the weights), `hf_path` (an HF folder,
safetensors placed shard by shard), `preset` (random init). With `abstract=True` nothing
is read but config files and nothing is allocated: the leaves are ShapeDtypeStructs with
their NamedShardings, which is what `kd-jax plan` compiles. Train, plan, eval, generate,
synthesize, cache-teacher and the benchmarks all build models here.
"""

from __future__ import annotations

import json
from pathlib import Path

import jax
from flax import nnx
from jax.sharding import Mesh
from ml_collections import ConfigDict

from kd_jax import checkpoint as ckpt_lib
from kd_jax import sharding as shd
from kd_jax.data import builtin_paths
from kd_jax.errors import UserError
from kd_jax.models import hf_io, presets
from kd_jax.models.decoder import Decoder
from kd_jax.models.init import abstract_model, create_model
from kd_jax.models.model_config import LoraConfig, ModelConfig
from kd_jax.models.parts import ModelParts, split_model


class ModelSourceError(UserError):
    """A model section of the config that names no usable weights."""


def lora_config(mc: ConfigDict) -> LoraConfig | None:
    if not mc.lora.enabled:
        return None
    lc = mc.lora
    return LoraConfig(
        rank=lc.rank,
        alpha=lc.alpha,
        dropout=lc.dropout,
        targets=tuple(lc.targets),
        param_dtype=lc.get("param_dtype", "float32"),
    )


def _common(mc: ConfigDict) -> dict:
    """The compute settings a section asks for, whatever run its weights come from."""
    return dict(dtype=mc.dtype, remat_policy=mc.remat_policy, attention=mc.get("attention", "auto"))


def is_run(path: str | Path) -> bool:
    return (Path(path) / "config.json").exists() and (Path(path) / "checkpoints").is_dir()


def read_run_config(workdir: str | Path) -> ConfigDict:
    path = Path(workdir) / "config.json"
    if not path.exists():
        raise ModelSourceError(
            f"{workdir} is not a kd_jax run (no config.json); point to a run's workdir."
        )
    try:
        return ConfigDict(json.loads(path.read_text()))
    except json.JSONDecodeError as e:
        raise ModelSourceError(
            f"{path} is not valid JSON (line {e.lineno}: {e.msg}); restore the run's config.json."
        ) from None


def _source_run(mc: ConfigDict, vocab_size: int | None) -> tuple[ConfigDict, ConfigDict, int]:
    """(the run's config, its student section with this section's dtype/remat, vocab)."""
    run = read_run_config(mc.workdir)
    src = run.student
    if src.workdir and Path(src.workdir).absolute() == Path(mc.workdir).absolute():
        raise ModelSourceError(f"{mc.workdir}: its student.workdir points to itself.")
    # The dtypes are the ones this section asks for, not the source run's: the
    # checkpoint's arrays are cast on restore to the abstract params' dtypes.
    asked = {**_common(mc), "param_dtype": mc.param_dtype}
    asked["lora"] = {**src.lora.to_dict(), "param_dtype": mc.lora.get("param_dtype", "float32")}
    section = ConfigDict({**src.to_dict(), "workdir": src.workdir, **asked})
    return run, section, run.get("resolved_vocab_size") or vocab_size


def model_config(mc: ConfigDict, vocab_size: int | None = None) -> ModelConfig:
    """The ModelConfig a section builds, reading no weights (same source order as build)."""
    common = _common(mc)
    if mc.workdir:
        _, section, vocab = _source_run(mc, vocab_size)
        return model_config(section, vocab)
    lora = lora_config(mc)
    if mc.hf_path:
        return hf_io.read_config(mc.hf_path, param_dtype=mc.param_dtype, lora=lora, **common)
    if mc.preset:
        extra = {"vocab_size": vocab_size} if vocab_size else {}
        return presets.get(mc.preset, param_dtype=mc.param_dtype, lora=lora, **common, **extra)
    raise ModelSourceError("a model section names no weights; set hf_path, workdir or preset.")


def _abstract_parts(cfg: ModelConfig, *, mesh: Mesh, rules, lora: bool) -> ModelParts:
    graphdef, abstract = nnx.split(abstract_model(cfg))
    shardings = shd.state_shardings(abstract, mesh, rules)

    def typed(v, s):
        x = v.get_value()
        return v.replace(jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s.get_value()))

    is_var = lambda x: isinstance(x, nnx.Variable)  # noqa: E731
    sharded = jax.tree.map(typed, abstract, shardings, is_leaf=is_var)
    return split_model(nnx.merge(graphdef, sharded), lora)


def build(
    mc: ConfigDict,
    *,
    role: str,
    mesh: Mesh,
    rules,
    vocab_size: int | None = None,
    seed: int = 0,
    abstract: bool = False,
) -> ModelParts:
    """The `student` or `teacher` section of a config as sharded ModelParts."""
    if not (mc.workdir or mc.hf_path or mc.preset):
        raise ModelSourceError(
            f"config.{role} names no weights; set {role}.hf_path (HF folder), {role}.workdir "
            f"(a kd_jax run) or {role}.preset (random init)."
        )
    lora = lora_config(mc)
    if abstract:
        cfg = model_config(mc, vocab_size)
        return _abstract_parts(cfg, mesh=mesh, rules=rules, lora=lora is not None)
    common = _common(mc)
    if mc.workdir:
        _, section, src_vocab = _source_run(mc, vocab_size)
        if lora is not None and not section.lora.enabled:
            raise ModelSourceError(
                f"{role}.lora.enabled=True cannot start from a full fine-tune in "
                f"{mc.workdir}; export it (`kd-jax export`) and use {role}.hf_path."
            )
        parts = build(section, role=role, vocab_size=src_vocab, mesh=mesh, rules=rules, seed=seed)
        target = jax.tree.map(
            lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding),
            parts.trainable,
        )
        parts.trainable, _ = ckpt_lib.restore_params(mc.workdir, target, which=mc.checkpoint)
        return parts
    if mc.hf_path:
        model = hf_io.load(
            mc.hf_path,
            param_dtype=mc.param_dtype,
            mesh=mesh,
            rules=rules,
            lora=lora,
            seed=seed,
            **common,
        )
        return split_model(model, lora is not None)
    overrides = dict(param_dtype=mc.param_dtype, lora=lora, **common)
    if vocab_size:
        overrides["vocab_size"] = vocab_size
    cfg = presets.get(mc.preset, **overrides)
    return split_model(create_model(cfg, seed=seed, mesh=mesh, rules=rules), lora is not None)


def run_rules(path: str | Path) -> tuple:
    """The sharding rules table a run trained with (the built-in one for an HF folder)."""
    saved = read_run_config(path).get("sharding_rules") if is_run(path) else None
    return shd.rules_from(saved) if saved else shd.DEFAULT_RULES


def load_trained(
    path: str | Path, *, mesh: Mesh | None = None, rules=None, which: str = "latest"
) -> tuple[Decoder, str]:
    """(model, tokenizer folder) of a kd_jax run's student, or of an HF folder, loaded
    straight into its shardings: on `mesh` with the `rules` table, by default the run's
    own (config.json's `mesh` and `sharding_rules`); for an HF folder {"data": -1} and the
    built-in rules. Launched as one of several processes, it first joins them into one
    JAX program (sharding.initialize_distributed), so the mesh spans every host."""
    shd.initialize_distributed()
    if not is_run(path):
        mesh = mesh or shd.make_mesh({"data": -1})
        return hf_io.load(path, mesh=mesh, rules=rules or shd.DEFAULT_RULES), str(path)
    run = read_run_config(path)
    mesh = mesh or shd.make_mesh(dict(run.get("mesh", {"data": -1})))
    rules = rules or run_rules(path)
    mc = ConfigDict(run.student.to_dict())
    mc.workdir, mc.checkpoint = str(path), which
    parts = build(
        mc,
        role="student",
        vocab_size=run.get("resolved_vocab_size"),
        mesh=mesh,
        rules=rules,
        seed=run.seed,
    )
    return parts.merge(parts.trainable), builtin_paths.resolve(run.data.tokenizer)


def export(workdir: str | Path, out: str | Path, *, which: str = "latest", dtype=None) -> Path:
    """Writes the run's student (LoRA merged) and its tokenizer as an HF folder."""
    model, tokenizer_dir = load_trained(workdir, which=which)
    return hf_io.save(model, out, dtype=dtype, tokenizer_dir=tokenizer_dir)
