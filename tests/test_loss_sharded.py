"""The chunked loss on a mesh: per-device chunks, equal to the unsharded loss, and a chunk
loop that moves no weight matrix or weight gradient (read from the compiled HLO)."""

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from kd_jax import compiled_loops, losses
from kd_jax import sharding as shd
from kd_jax.losses.chunked import LOOP_SCOPE

B, T, DS, DT, V = 8, 16, 32, 48, 512
TOL = dict(rtol=1e-5, atol=1e-6)


def _inputs():
    rng = np.random.default_rng(0)
    normal = lambda *s: jnp.asarray(rng.normal(size=s) / np.sqrt(s[-1]), jnp.float32)  # noqa: E731
    mask = (rng.random((B, T)) < 0.8).astype(np.int32)
    targets = jnp.asarray(rng.integers(0, V, (B, T)), jnp.int32)
    return normal(B, T, DS), normal(DS, V) * 3, normal(B, T, DT), normal(DT, V) * 3, targets, mask


def _loss_and_grads(mesh, cfg, chunk_size):
    def loss(h_s, w_s, h_t, w_t, targets, mask):
        if mesh is None:
            terms = losses.chunked_kd_loss(
                h_s, w_s, h_t, w_t, targets, mask, chunk_size=chunk_size, cfg=cfg
            )
        else:
            with shd.activation_sharding(mesh, shd.DEFAULT_RULES):
                terms = losses.chunked_kd_loss(
                    h_s, w_s, h_t, w_t, targets, mask, chunk_size=chunk_size, cfg=cfg
                )
        return terms["loss_sum"], terms

    return jax.jit(jax.value_and_grad(loss, argnums=(0, 1), has_aux=True))


def _sharded(mesh, inputs):
    rows = NamedSharding(mesh, P(("data", "fsdp")))
    weights = NamedSharding(mesh, P("fsdp", "tensor"))
    return [jax.device_put(x, weights if x.ndim == 2 and x.shape[1] == V else rows) for x in inputs]


def test_mesh_loss_equals_unsharded_for_fused_and_generic_paths(devices):
    mesh = shd.make_mesh({"data": 2, "fsdp": 2, "tensor": 2})
    inputs = _inputs()
    for cfg in (
        losses.KDLossConfig(kind="fkl", alpha=0.5, temperature=2.0),
        losses.KDLossConfig(kind="gjsd", alpha=0.7, reduction="sequence"),
    ):
        (_, want), g_want = _loss_and_grads(None, cfg, 16)(*inputs)
        (_, got), g_got = _loss_and_grads(mesh, cfg, 4)(*_sharded(mesh, inputs))
        for key in want:
            np.testing.assert_allclose(got[key], want[key], **TOL, err_msg=f"{key} {cfg.kind}")
        for a, b in zip(g_got, g_want, strict=True):
            np.testing.assert_allclose(a, b, **TOL)


def test_chunk_loop_moves_under_one_percent_of_the_unembedding(devices):
    mesh = shd.make_mesh({"data": 2, "fsdp": 2, "tensor": 2})
    cfg = losses.KDLossConfig(kind="fkl", alpha=0.5)
    args = [
        jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding)
        for x in _sharded(mesh, _inputs())
    ]
    text = _loss_and_grads(mesh, cfg, 4).lower(*args).compile().as_text()
    found = compiled_loops.loop_collectives(text, LOOP_SCOPE)
    assert any(LOOP_SCOPE in line and " while(" in line for line in text.splitlines())
    unembedding_bytes = DS * V * 4
    assert sum(c["bytes"] for c in found) < 0.01 * unembedding_bytes, found  # own or not


def test_loop_collectives_reads_collectives_in_scoped_loops_only():
    """On hand-written HLO: a collective in the scoped loop's body (and in a computation it
    calls) is found; one in another loop or outside any loop is not."""
    text = """
%inner (p: f32[4]) -> f32[4] {
  %p = f32[4] parameter(0)
  ROOT %ar = f32[4]{0} all-reduce(%p), to_apply=%add, metadata={op_name="f/loss_chunk/x"}
}
%body (c: f32[4]) -> f32[4] {
  %c = f32[4] parameter(0)
  %g = bf16[8,16]{1,0} all-gather(%c), dimensions={0}, metadata={op_name="jit(f)/transpose"}
  ROOT %call = f32[4] call(%c), to_apply=%inner
}
%other (c: f32[4]) -> f32[4] {
  %c = f32[4] parameter(0)
  ROOT %x = f32[1024]{0} all-gather(%c), dimensions={0}
}
ENTRY %main (a: f32[4]) -> f32[4] {
  %a = f32[4] parameter(0)
  %w = f32[4] while(%a), condition=%cond, body=%body, metadata={op_name="jit(f)/loss_chunk/while"}
  %w2 = f32[4] while(%a), condition=%cond, body=%other, metadata={op_name="jit(f)/while"}
  ROOT %r = f32[64]{0} all-reduce(%w), to_apply=%add
}
"""
    found = compiled_loops.loop_collectives(text, "loss_chunk")
    assert sorted((c["op"], c["bytes"], c["own"]) for c in found) == [
        ("all-gather", 256, False),
        ("all-reduce", 16, True),
    ]
