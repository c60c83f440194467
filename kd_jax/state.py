"""Building the student and teacher from a config and splitting them for a pure train step.

A `ModelParts` keeps a model as (graphdef, trainable params, frozen params): the train
step differentiates only `trainable` (all student weights, or only the LoRA adapters) and
rebuilds the module with `merge`. Parameters are plain nested dicts of arrays, so optax,
Orbax and `jax.jit` shardings see ordinary pytrees.

Where the weights come from, in order: `hf_path` (an HF folder), `workdir` (another
kd_jax run: its resolved config gives the architecture, its checkpoint the weights),
`preset` (random init).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import jax
from flax import nnx
from jax.sharding import Mesh
from ml_collections import ConfigDict

from kd_jax import checkpoint as ckpt_lib
from kd_jax import sharding as shd
from kd_jax.models import Decoder, LoraConfig, create_model, hf_io, presets


class ModelSourceError(ValueError):
    """A model section of the config that names no usable weights."""


@dataclasses.dataclass
class ModelParts:
    graphdef: Any
    trainable: dict  # nested dict of arrays: what the optimizer updates
    frozen: dict  # the rest (the base weights under LoRA; empty otherwise)
    filters: tuple  # nnx filters that split the model into (trainable, frozen)
    cfg: Any  # kd_jax.models.ModelConfig

    def merge(self, trainable: dict, frozen: dict | None = None) -> Decoder:
        """The module with these parameters (inside a trace: a functional view)."""
        _, abstract_t, abstract_f = nnx.split(self._abstract(), *self.filters)
        nnx.replace_by_pure_dict(abstract_t, trainable)
        nnx.replace_by_pure_dict(abstract_f, self.frozen if frozen is None else frozen)
        return nnx.merge(self.graphdef, abstract_t, abstract_f)

    def _abstract(self) -> Decoder:
        return nnx.eval_shape(lambda: Decoder(self.cfg, rngs=nnx.Rngs(0)))

    def shardings(self, tree: dict) -> dict:
        return jax.tree.map(lambda x: x.sharding, tree)


def lora_config(mc: ConfigDict) -> LoraConfig | None:
    if not mc.lora.enabled:
        return None
    lc = mc.lora
    return LoraConfig(rank=lc.rank, alpha=lc.alpha, dropout=lc.dropout, targets=tuple(lc.targets),
                      param_dtype=lc.param_dtype)  # fmt: skip


def _split(model: Decoder, mc: ConfigDict) -> ModelParts:
    filters = (nnx.LoRAParam, ...) if mc.lora.enabled else (nnx.Param, ...)
    graphdef, trainable, frozen = nnx.split(model, *filters)
    return ModelParts(
        graphdef=graphdef,
        trainable=nnx.to_pure_dict(trainable),
        frozen=nnx.to_pure_dict(frozen),
        filters=filters,
        cfg=model.cfg,
    )


def read_run_config(workdir: str | Path) -> ConfigDict:
    path = Path(workdir) / "config.json"
    if not path.exists():
        raise ModelSourceError(
            f"{workdir} is not a kd_jax run (no config.json); point to a run's workdir."
        )
    return ConfigDict(json.loads(path.read_text()))


def build_model(
    mc: ConfigDict,
    *,
    role: str,
    vocab_size: int | None,
    mesh: Mesh,
    rules=shd.DEFAULT_RULES,
    seed: int = 0,
) -> ModelParts:
    """The `student` or `teacher` section of a config as sharded ModelParts."""
    lora = lora_config(mc)
    common = dict(dtype=mc.dtype, remat_policy=mc.remat_policy, attention=mc.attention)
    if mc.workdir:
        run = read_run_config(mc.workdir)
        src = run.student
        src_vocab = run.get("resolved_vocab_size") or vocab_size
        if src.workdir and Path(src.workdir).absolute() == Path(mc.workdir).absolute():
            raise ModelSourceError(f"{mc.workdir}: its student.workdir points to itself.")
        # The dtypes are the ones this config asks for, not the source run's: the
        # checkpoint's arrays are cast on restore to the abstract params' dtypes.
        asked = {**common, "param_dtype": mc.param_dtype}
        asked["lora"] = {**src.lora.to_dict(), "param_dtype": mc.lora.param_dtype}
        parts = build_model(
            ConfigDict({**src.to_dict(), "workdir": src.workdir, **asked}),
            role=role,
            vocab_size=src_vocab,
            mesh=mesh,
            rules=rules,
            seed=seed,
        )
        abstract = jax.tree.map(
            lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding),
            parts.trainable,
        )
        params, _ = ckpt_lib.restore_params(mc.workdir, abstract, which=mc.checkpoint)
        parts.trainable = params
        if lora is not None and not src.lora.enabled:
            raise ModelSourceError(
                f"{role}.lora.enabled=True cannot start from a full fine-tune in "
                f"{mc.workdir}; export it (`kd-jax export`) and use {role}.hf_path."
            )
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
        return _split(model, mc)
    if mc.preset:
        overrides = dict(param_dtype=mc.param_dtype, lora=lora, **common)
        if vocab_size:
            overrides["vocab_size"] = vocab_size
        cfg = presets.get(mc.preset, **overrides)
        return _split(create_model(cfg, seed=seed, mesh=mesh, rules=rules), mc)
    raise ModelSourceError(
        f"config.{role} names no weights; set {role}.hf_path (HF folder), {role}.workdir "
        f"(a kd_jax run) or {role}.preset (random init)."
    )
