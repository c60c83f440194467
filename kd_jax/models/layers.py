"""Building blocks of the decoder: Dense (with optional LoRA), RMSNorm, Embed and RoPE.

Every parameter carries its logical axis names in the `axes` metadata; `kd_jax.sharding`
maps them to the mesh. Layers built with `num_layers` hold stacked weights with a
leading `layers` axis so that the decoder can `jax.lax.scan` over them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from kd_jax.models.model_config import LoraConfig

Axes = tuple[str | None, ...]
INIT_STD = 0.02  # HF's initializer_range for Llama and Qwen2


def _lead(num_layers: int | None) -> tuple[tuple[int, ...], Axes]:
    return ((num_layers,), ("layers",)) if num_layers else ((), ())


class Dense(nnx.Module):
    """y = x . kernel (+ bias) (+ LoRA), contracting the trailing `in_shape` dims of x."""

    def __init__(
        self,
        in_shape: Sequence[int],
        out_shape: Sequence[int],
        in_axes: Axes,
        out_axes: Axes,
        *,
        rngs: nnx.Rngs,
        num_layers: int | None = None,
        use_bias: bool = False,
        lora: LoraConfig | None = None,
        param_dtype=jnp.float32,
        dtype=jnp.float32,
    ):
        lead, lead_axes = _lead(num_layers)
        in_shape, out_shape = tuple(in_shape), tuple(out_shape)
        self.num_in = len(in_shape)
        self.dtype = dtype
        init = nnx.initializers.normal(INIT_STD)
        self.kernel = nnx.Param(
            init(rngs.params(), lead + in_shape + out_shape, param_dtype),
            axes=lead_axes + tuple(in_axes) + tuple(out_axes),
        )
        self.bias = (
            nnx.Param(jnp.zeros(lead + out_shape, param_dtype), axes=lead_axes + tuple(out_axes))
            if use_bias
            else None
        )
        lora_a = lora_b = None
        if lora is not None:
            # PEFT's init: A ~ U(+-1/sqrt(fan_in)) (kaiming-uniform, a=sqrt(5)), B = 0, so a
            # fresh adapter leaves the model unchanged.
            bound = 1.0 / math.sqrt(math.prod(in_shape))
            # Adapters keep their own (master) dtype; the frozen base stays in param_dtype.
            adapter_dtype = jnp.dtype(lora.param_dtype)
            a = jax.random.uniform(
                rngs.params(), lead + in_shape + (lora.rank,), adapter_dtype, -bound, bound
            )
            lora_a = nnx.LoRAParam(a, axes=lead_axes + tuple(in_axes) + ("lora_rank",))
            lora_b = nnx.LoRAParam(
                jnp.zeros(lead + (lora.rank,) + out_shape, adapter_dtype),
                axes=lead_axes + ("lora_rank",) + tuple(out_axes),
            )
        self.lora_a, self.lora_b = lora_a, lora_b
        self.lora_scale = lora.scale if lora is not None else 0.0
        self.lora_dropout = lora.dropout if lora is not None else 0.0

    def __call__(self, x: jax.Array, dropout_rng: jax.Array | None = None) -> jax.Array:
        # As a 2-D matmul [tokens, fan_in] x [fan_in, fan_out]: the weight gradient then
        # contracts over one dimension, not (batch, length), which spares XLA:CPU a strided
        # transposed copy of the activations (~10% of a small KD step); same math.
        x = x.astype(self.dtype)
        lead, fan_in = x.shape[: x.ndim - self.num_in], math.prod(x.shape[x.ndim - self.num_in :])
        x2 = x.reshape(-1, fan_in)
        kernel = self.kernel[...].astype(self.dtype)
        out_shape = kernel.shape[self.num_in :]
        y = (x2 @ kernel.reshape(fan_in, -1)).reshape(*lead, *out_shape)
        if self.bias is not None:
            y = y + self.bias[...].astype(self.dtype)
        if self.lora_a is not None:
            xd = x2
            if dropout_rng is not None and self.lora_dropout > 0.0:
                keep = jax.random.bernoulli(dropout_rng, 1.0 - self.lora_dropout, x2.shape)
                xd = jnp.where(keep, x2 / (1.0 - self.lora_dropout), 0).astype(x.dtype)
            low = xd @ self.lora_a[...].astype(self.dtype).reshape(fan_in, -1)
            b = self.lora_b[...].astype(self.dtype)
            delta = (low @ b.reshape(b.shape[0], -1)).reshape(*lead, *out_shape)
            y = y + self.lora_scale * delta
        return y

    def merged_kernel(self) -> jax.Array:
        """The kernel with the LoRA update folded in (for export)."""
        kernel = self.kernel[...]
        if self.lora_a is None:
            return kernel
        a, b = self.lora_a[...], self.lora_b[...]  # [*lead, *in, r], [*lead, r, *out]
        n_lead = a.ndim - self.num_in - 1
        a2 = a.reshape(a.shape[:n_lead] + (-1, a.shape[-1]))  # [*lead, in, r]
        b2 = b.reshape(b.shape[: n_lead + 1] + (-1,))  # [*lead, r, out]
        delta = jnp.matmul(a2.astype(jnp.float32), b2.astype(jnp.float32)) * self.lora_scale
        return (kernel.astype(jnp.float32) + delta.reshape(kernel.shape)).astype(kernel.dtype)


class RMSNorm(nnx.Module):
    """x / rms(x) * scale, computed in float32 (as HF does) and cast to the compute dtype."""

    def __init__(
        self,
        dim: int,
        eps: float,
        *,
        num_layers: int | None = None,
        param_dtype=jnp.float32,
        dtype=jnp.float32,
    ):
        lead, lead_axes = _lead(num_layers)
        self.scale = nnx.Param(jnp.ones(lead + (dim,), param_dtype), axes=lead_axes + ("embed",))
        self.eps = eps
        self.dtype = dtype

    def __call__(self, x: jax.Array) -> jax.Array:
        return rms_norm(x, self.scale[...], self.eps, self.dtype)


def rms_norm(x: jax.Array, scale: jax.Array, eps: float, dtype) -> jax.Array:
    x32 = x.astype(jnp.float32)
    var = jnp.mean(jnp.square(x32), axis=-1, keepdims=True)
    normed = (x32 * jax.lax.rsqrt(var + eps)).astype(dtype)
    return normed * scale.astype(dtype)


class Embed(nnx.Module):
    """Token embedding table [vocab, embed]; also the output head when embeddings are tied."""

    def __init__(self, vocab: int, dim: int, *, rngs: nnx.Rngs, param_dtype, dtype):
        init = nnx.initializers.normal(INIT_STD)
        self.embedding = nnx.Param(
            init(rngs.params(), (vocab, dim), param_dtype), axes=("vocab", "embed")
        )
        self.dtype = dtype

    def __call__(self, tokens_BxT: jax.Array) -> jax.Array:
        return jnp.take(self.embedding[...], tokens_BxT, axis=0).astype(self.dtype)


def rope_inv_freq(head_dim: int, theta: float, scaling: dict | None) -> np.ndarray:
    """Inverse frequencies [head_dim/2] in float32, with Llama 3's long-context scaling."""
    exponents = np.arange(0, head_dim, 2, dtype=np.int64).astype(np.float32) / head_dim
    inv_freq = (1.0 / (np.float32(theta) ** exponents)).astype(np.float32)
    if not scaling:
        return inv_freq
    factor = scaling["factor"]
    low, high = scaling["low_freq_factor"], scaling["high_freq_factor"]
    old_ctx = scaling["original_max_position_embeddings"]
    low_wavelen, high_wavelen = old_ctx / low, old_ctx / high
    wavelen = 2 * math.pi / inv_freq
    # Long wavelengths are slowed by `factor`; short ones kept; the band between blends.
    scaled = np.where(wavelen > low_wavelen, inv_freq / factor, inv_freq)
    smooth = (old_ctx / wavelen - low) / (high - low)
    blended = (1 - smooth) * scaled / factor + smooth * scaled
    medium = ~(wavelen < high_wavelen) & ~(wavelen > low_wavelen)
    return np.where(medium, blended, scaled).astype(np.float32)


def apply_rope(x_BxTxNxH: jax.Array, positions_BxT: jax.Array, inv_freq: np.ndarray):
    """Rotary embedding in the half-split layout used by HF Llama/Qwen2 checkpoints."""
    angles = positions_BxT.astype(jnp.float32)[..., None] * jnp.asarray(inv_freq)  # [B,T,H/2]
    cos = jnp.cos(angles)[:, :, None, :].astype(x_BxTxNxH.dtype)
    sin = jnp.sin(angles)[:, :, None, :].astype(x_BxTxNxH.dtype)
    x1, x2 = jnp.split(x_BxTxNxH, 2, axis=-1)
    return jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)
