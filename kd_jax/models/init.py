"""Creating models without ever materializing them unsharded.

`abstract_model` is `nnx.eval_shape` of the decoder: shapes, dtypes and axis metadata, no
memory. `create_model` initializes directly into the shardings of a mesh (one jitted init
with `out_shardings`), so each device only ever holds its own shard.
"""

from __future__ import annotations

import math

import jax
from flax import nnx
from jax.sharding import Mesh

from kd_jax import sharding as shd
from kd_jax.models.decoder import Decoder
from kd_jax.models.model_config import ModelConfig


def abstract_model(cfg: ModelConfig) -> Decoder:
    """The decoder with ShapeDtypeStruct leaves; allocates nothing."""
    return nnx.eval_shape(lambda: Decoder(cfg, rngs=nnx.Rngs(0)))


def param_count(model_or_state, include_lora: bool = True) -> int:
    """Number of parameters (LoRA adapters included unless asked otherwise)."""
    state = model_or_state if isinstance(model_or_state, nnx.State) else nnx.state(model_or_state)
    total = 0
    for v in jax.tree.leaves(state, is_leaf=lambda x: isinstance(x, nnx.Variable)):
        if not isinstance(v, nnx.Param):
            continue
        if isinstance(v, nnx.LoRAParam) and not include_lora:
            continue
        total += math.prod(v.get_value().shape)
    return total


def create_model(cfg: ModelConfig, seed: int = 0, mesh: Mesh | None = None, rules=None) -> Decoder:
    """A randomly initialized decoder, sharded on `mesh` by the logical-axis `rules`
    (the config's `sharding_rules`) when a mesh is given."""
    if mesh is None:
        return Decoder(cfg, rngs=nnx.Rngs(seed))
    shd.require_rules(rules)
    graphdef, abstract_state = nnx.split(abstract_model(cfg))
    shardings = shd.state_shardings(abstract_state, mesh, rules)

    @jax.jit
    def init():
        state = nnx.state(Decoder(cfg, rngs=nnx.Rngs(seed)))
        return jax.lax.with_sharding_constraint(state, shardings)

    return nnx.merge(graphdef, init())
