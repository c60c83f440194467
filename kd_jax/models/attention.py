"""Causal grouped-query attention: one entry point, one kernel per backend.

    out_BxTxNxH = attend(kind, q_BxTxNxH, k_BxSxKxH, v_BxSxKxH, segment_ids_BxT)

`kind` is `model.attention`:
- "xla": einsum scores + masked softmax. It materialises [B, K, G, T, S] scores and
  probabilities; the reference every other kernel is tested against, and the CPU default.
- "splash": the Pallas TPU splash-attention kernel (flash attention with block-sparse
  masks): causal mask and segment ids in the kernel, kv heads shared through its MQA
  form (vmapped over kv heads), run inside `shard_map` over the mesh's batch and head
  axes because Mosaic kernels are not auto-partitioned. Off TPU it runs in Pallas
  interpret mode (parity tests on CPU). Its forward output and log-sum-exp carry the
  checkpoint name `attention_residuals`, so remat policies can keep them
  (`dots_with_attention` in decoder.py).
- "cudnn": on GPU. `jax.nn.dot_product_attention(implementation="cudnn")` takes causal
  masks and right padding as sequence lengths but no segment ids, so rows with segment
  ids (packing, left padding: every training batch) go to the Pallas GPU flash kernel
  (`jax.experimental.pallas.ops.gpu.attention.mha`), which takes segment ids; kv heads
  are repeated for it (it has no GQA). Rows without segment ids use cuDNN.
- "auto": splash on TPU, cudnn on GPU, xla elsewhere, by the platform of the active
  mesh's devices (so a plan compiled for an abstract TPU topology picks splash).

Masking: a query attends causally within its own segment. Segment 0 marks padding; real
tokens never attend to it. What padding queries compute is unused (their loss weight is
0 and no real token reads their keys), and differs between kernels.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from kd_jax import sharding as shd

ATTENTION_KINDS = ("auto", "xla", "splash", "cudnn")
RESIDUALS_NAME = "attention_residuals"
_LANES = 128  # splash blocks are multiples of the TPU's 128 lanes


class AttentionError(ValueError):
    """An attention kind that cannot run here, with the fix."""


def _platform() -> str:
    active = shd.active_activation_sharding()
    if active is not None:
        return active[0].devices.flat[0].platform
    return jax.default_backend()


def resolve(kind: str) -> str:
    """The kernel `kind` means on this platform ("auto" -> splash / cudnn / xla)."""
    if kind not in ATTENTION_KINDS:
        raise AttentionError(f"Unknown attention {kind!r}; choose from {list(ATTENTION_KINDS)}.")
    if kind != "auto":
        return kind
    return {"tpu": "splash", "gpu": "cudnn", "cuda": "cudnn"}.get(_platform(), "xla")


# ---- xla: the reference ------------------------------------------------------------------


def attention_mask(segment_ids_BxT: jax.Array) -> jax.Array:
    """[B, T, S] boolean: causal, within one segment, never to padding (segment 0)."""
    t = segment_ids_BxT.shape[1]
    causal = jnp.tril(jnp.ones((t, t), dtype=bool))
    same = segment_ids_BxT[:, :, None] == segment_ids_BxT[:, None, :]
    return causal[None] & same & (segment_ids_BxT[:, None, :] != 0)


def masked_softmax(scores_BxKxGxTxS, mask_BxTxS, dtype) -> jax.Array:
    """Attention probabilities over S, masked positions excluded."""
    # A finite fill keeps fully-masked (padding) rows finite; their outputs are unused.
    fill = jnp.finfo(jnp.float32).min
    scores = jnp.where(mask_BxTxS[:, None, None], scores_BxKxGxTxS, fill)
    return jax.nn.softmax(scores, axis=-1).astype(dtype)


def xla_attention(q_BxTxNxH, k_BxSxKxH, v_BxSxKxH, mask_BxTxS) -> jax.Array:
    """Grouped-query attention [B, T, N, H] (decoding has its own layout, decode.py)."""
    b, t, n, hd = q_BxTxNxH.shape
    kv_heads = k_BxSxKxH.shape[2]
    q_BxTxKxGxH = q_BxTxNxH.reshape(b, t, kv_heads, n // kv_heads, hd)
    scores = jnp.einsum(
        "btkgh,bskh->bkgts", q_BxTxKxGxH, k_BxSxKxH, preferred_element_type=jnp.float32
    ) / jnp.sqrt(jnp.float32(hd))
    probs = masked_softmax(scores, mask_BxTxS, v_BxSxKxH.dtype)
    return jnp.einsum("bkgts,bskh->btkgh", probs, v_BxSxKxH).reshape(b, t, n, hd)


# ---- the entry point ---------------------------------------------------------------------


def prepare(kind: str, segment_ids_BxT: jax.Array | None, shape_BxT: tuple[int, int]):
    """What `attend` reads besides q, k, v: the [B, T, S] mask for xla (built once for
    all layers), the segment ids for the kernels (None: one segment a row, no padding)."""
    kind = resolve(kind)
    if segment_ids_BxT is None and kind != "cudnn":
        segment_ids_BxT = jnp.ones(shape_BxT, jnp.int32)
    return attention_mask(segment_ids_BxT) if kind == "xla" else segment_ids_BxT


def attend(kind: str, q_BxTxNxH, k_BxSxKxH, v_BxSxKxH, prepared) -> jax.Array:
    """Causal GQA [B, T, N, H] by the kernel `kind` resolves to; `prepared` from `prepare`."""
    kind = resolve(kind)
    if kind == "xla":
        return xla_attention(q_BxTxNxH, k_BxSxKxH, v_BxSxKxH, prepared)
    if kind == "splash":
        return _sharded(_splash_local, q_BxTxNxH, k_BxSxKxH, v_BxSxKxH, prepared)
    return _sharded(_gpu_local, q_BxTxNxH, k_BxSxKxH, v_BxSxKxH, prepared)


def _sharded(local_fn, q_BxTxNxH, k_BxSxKxH, v_BxSxKxH, segment_ids_BxT):
    """`local_fn` per device under `shard_map` over the batch and head axes of the active
    mesh (rules table's act_batch / act_heads); called directly without an active mesh."""
    active = shd.active_activation_sharding()
    if active is None or active[0].size == 1:
        return local_fn(q_BxTxNxH, k_BxSxKxH, v_BxSxKxH, segment_ids_BxT)
    mesh, rules = active
    # Heads split by the kv-head count, so each device holds whole query groups.
    spec = shd.logical_to_spec(("act_batch", None, "act_heads", None), k_BxSxKxH.shape, mesh, rules)
    seg_spec = None if segment_ids_BxT is None else jax.sharding.PartitionSpec(spec[0], None)
    fn = jax.shard_map(
        local_fn,
        mesh=mesh,
        in_specs=(spec, spec, spec, seg_spec),
        out_specs=spec,
        check_vma=False,
    )
    return fn(q_BxTxNxH, k_BxSxKxH, v_BxSxKxH, segment_ids_BxT)


# ---- splash (TPU) ------------------------------------------------------------------------


def splash_block(length: int) -> int:
    """The q/kv block for a padded length (a multiple of 128): the largest of 512, 256,
    128 that divides it; bigger blocks amortise the per-block overhead on long rows."""
    return next(b for b in (512, 256, 128) if length % b == 0)


def _splash_kernel(groups: int, length: int, interpret: bool):
    """Made per trace: the kernel holds its mask tables as arrays of that trace (the mask
    processing itself is cached by the library)."""
    from jax.experimental.pallas.ops.tpu import splash_attention as sa

    block = splash_block(length)
    sizes = sa.BlockSizes(
        block_q=block,
        block_kv=block,
        block_kv_compute=block,
        block_q_dkv=block,
        block_kv_dkv=block,
        block_kv_dkv_compute=block,
        block_q_dq=block,
        block_kv_dq=block,
    )
    mask = sa.MultiHeadMask([sa.CausalMask((length, length))] * groups)
    return sa.make_splash_mqa_single_device(
        mask=mask,
        block_sizes=sizes,
        residual_checkpoint_name=RESIDUALS_NAME,
        interpret=interpret,
    )


def _splash_local(q_BxTxNxH, k_BxSxKxH, v_BxSxKxH, segment_ids_BxT):
    from jax.experimental.pallas.ops.tpu import splash_attention as sa

    b, t, n, hd = q_BxTxNxH.shape
    kv = k_BxSxKxH.shape[2]
    # Pad the length to a multiple of 128 at the end: causality keeps real queries off
    # the padded keys, and the padded queries (sliced off) see at least themselves.
    length = -(-t // _LANES) * _LANES
    pad = [(0, 0), (0, length - t)]

    def layout(x_BxTxXxH):  # -> [B, X, T', H]
        return jnp.swapaxes(jnp.pad(x_BxTxXxH, pad + [(0, 0)] * 2), 1, 2)

    scale = jnp.asarray(1.0 / np.sqrt(hd), jnp.float32)
    q_BxKxGxTxH = layout((q_BxTxNxH * scale).astype(q_BxTxNxH.dtype))
    q_BxKxGxTxH = q_BxKxGxTxH.reshape(b, kv, n // kv, length, hd)
    k_BxKxTxH, v_BxKxTxH = layout(k_BxSxKxH), layout(v_BxSxKxH)
    seg_BxT = jnp.pad(segment_ids_BxT, pad)
    kernel = _splash_kernel(n // kv, length, jax.default_backend() != "tpu")

    def row(q_KxGxTxH, k_KxTxH, v_KxTxH, seg_T):
        ids = sa.SegmentIds(q=seg_T, kv=seg_T)
        return jax.vmap(lambda q, k, v: kernel(q, k, v, segment_ids=ids))(
            q_KxGxTxH, k_KxTxH, v_KxTxH
        )

    out_BxKxGxTxH = jax.vmap(row)(q_BxKxGxTxH, k_BxKxTxH, v_BxKxTxH, seg_BxT)
    out_BxTxNxH = jnp.swapaxes(out_BxKxGxTxH.reshape(b, n, length, hd), 1, 2)
    return out_BxTxNxH[:, :t].astype(v_BxSxKxH.dtype)


# ---- GPU: Pallas flash with segment ids ----------------------------------------------------


def _gpu_local(q_BxTxNxH, k_BxSxKxH, v_BxSxKxH, segment_ids_BxT):
    from jax.experimental.pallas.ops.gpu import attention as gpu_attention

    b, t, n, hd = q_BxTxNxH.shape
    groups = n // k_BxSxKxH.shape[2]
    scale = float(1.0 / np.sqrt(hd))
    if segment_ids_BxT is None:
        return jax.nn.dot_product_attention(
            q_BxTxNxH,
            k_BxSxKxH,
            v_BxSxKxH,
            scale=scale,
            is_causal=True,
            implementation="cudnn",
        )
    k_BxSxNxH = jnp.repeat(k_BxSxKxH, groups, axis=2)
    v_BxSxNxH = jnp.repeat(v_BxSxKxH, groups, axis=2)
    block = min(64, -(-t // 16) * 16)
    length = -(-t // block) * block
    pad = [(0, 0), (0, length - t), (0, 0), (0, 0)]
    q, k, v = (jnp.pad(x, pad) for x in (q_BxTxNxH, k_BxSxNxH, v_BxSxNxH))
    seg = jnp.pad(segment_ids_BxT, pad[:2])
    sizes = gpu_attention.BlockSizes(
        block_q=block,
        block_k=block,
        block_q_dkv=block,
        block_kv_dkv=block,
        block_q_dq=block,
        block_kv_dq=block,
    )
    interpret = jax.default_backend() != "gpu"
    out = gpu_attention.mha(
        q, k, v, seg, sm_scale=scale, causal=True, block_sizes=sizes, interpret=interpret
    )
    return out[:, :t].astype(v_BxSxKxH.dtype)
