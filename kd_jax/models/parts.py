"""`ModelParts`: a model split for a pure train step into (graphdef, trainable, frozen).

The train step differentiates only `trainable` (all student weights, or only the LoRA
adapters) and rebuilds the module with `merge`. Parameters are plain nested dicts of
arrays (or of sharded ShapeDtypeStructs, for a model that is only compiled), so optax,
Orbax and `jax.jit` shardings see ordinary pytrees.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
from flax import nnx

from kd_jax.models.decoder import Decoder


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


def split_model(model: Decoder, lora: bool) -> ModelParts:
    """ModelParts of a module: LoRA adapters trainable under LoRA, else every Param."""
    filters = (nnx.LoRAParam, ...) if lora else (nnx.Param, ...)
    graphdef, trainable, frozen = nnx.split(model, *filters)
    return ModelParts(
        graphdef=graphdef,
        trainable=nnx.to_pure_dict(trainable),
        frozen=nnx.to_pure_dict(frozen),
        filters=filters,
        cfg=model.cfg,
    )
