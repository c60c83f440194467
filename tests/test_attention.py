"""The attention kernels against the XLA reference (Pallas interpret mode on CPU).

Kept small: interpret mode runs each kernel block as Python-traced JAX. Outputs are
compared at real (non-padding) queries, gradients of a loss over those queries in full;
errors are relative to each tensor's largest magnitude.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from kd_jax import sharding as shd
from kd_jax.models import attention, hf_io
from tests.hf_fixtures import hf_logits, llama_config, make_hf_model

B, T, N, K, H = 2, 120, 4, 2, 16  # T pads to 128 inside the splash path


def _segments():
    row0 = [0] * 10 + [1] * 50 + [2] * 60  # left padding, then two packed examples
    row1 = [1] * 30 + [2] * 40 + [3] * 35 + [0] * 15  # three examples, right padding
    return jnp.asarray([row0, row1], jnp.int32)


def _qkv(seed=0):
    keys = jax.random.split(jax.random.key(seed), 4)
    q = jax.random.normal(keys[0], (B, T, N, H), jnp.float32)
    k = jax.random.normal(keys[1], (B, T, K, H), jnp.float32)
    v = jax.random.normal(keys[2], (B, T, K, H), jnp.float32)
    cot = jax.random.normal(keys[3], (B, T, N, H), jnp.float32)
    return q, k, v, cot


def _rel(a, b):
    a, b = np.asarray(a), np.asarray(b)
    return float(np.max(np.abs(a - b)) / np.max(np.abs(b)))


def _value_and_grads(kind, q, k, v, cot, seg):
    real = (seg != 0)[:, :, None, None]

    def loss(q, k, v):
        out = attention.attend(kind, q, k, v, attention.prepare(kind, seg, seg.shape))
        return jnp.sum(jnp.where(real, out * cot, 0.0)), out

    (_, out), grads = jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2), has_aux=True))(q, k, v)
    return out, grads


@pytest.mark.parametrize("kind", ["splash", "cudnn"])
def test_kernel_equals_xla(kind):
    """causal + GQA + packed segments + left and right padding; values and gradients."""
    q, k, v, cot = _qkv()
    seg = _segments()
    out, grads = _value_and_grads(kind, q, k, v, cot, seg)
    ref, ref_grads = _value_and_grads("xla", q, k, v, cot, seg)
    real = np.asarray(seg != 0)
    assert _rel(np.asarray(out)[real], np.asarray(ref)[real]) < 1e-5
    for g, r in zip(grads, ref_grads, strict=True):
        assert _rel(g, r) < 1e-5


def test_splash_under_shard_map_on_a_mesh(devices):
    """Inside the activation-sharding context the kernel runs per device (batch x heads)."""
    q, k, v, _ = _qkv(1)
    seg = _segments()
    mesh = shd.make_mesh({"data": 2, "tensor": 2, "fsdp": 2})
    ref = attention.attend("xla", q, k, v, attention.attention_mask(seg))
    with shd.activation_sharding(mesh, shd.DEFAULT_RULES):
        out = jax.jit(lambda q, k, v, s: attention.attend("splash", q, k, v, s))(q, k, v, seg)
    real = np.asarray(seg != 0)
    assert _rel(np.asarray(out)[real], np.asarray(ref)[real]) < 1e-5


def test_auto_follows_the_platform(devices):
    assert attention.resolve("auto") == "xla"  # CPU
    with pytest.raises(ValueError, match="Unknown attention"):
        attention.resolve("flash")


def test_whole_model_with_splash_equals_transformers(tmp_path):
    torch_model = make_hf_model(llama_config(), tmp_path)
    model = hf_io.load(tmp_path, attention="splash")
    assert model.cfg.attention == "splash"
    tokens = np.random.default_rng(0).integers(0, model.cfg.vocab_size, size=(2, 24))
    mask = np.ones_like(tokens)
    mask[0, :5] = 0  # left padding
    positions = np.clip(np.cumsum(mask, axis=1) - 1, 0, None)
    ref = hf_logits(torch_model, tokens, attention_mask=mask, position_ids=positions)
    ours = np.asarray(
        model(jnp.asarray(tokens), positions=jnp.asarray(positions), segment_ids=jnp.asarray(mask))
    )
    real = mask.astype(bool)
    np.testing.assert_allclose(ours[real], ref[real], atol=1e-4, rtol=0)


def test_sampler_with_splash_prefill_gives_the_same_greedy_tokens():
    from kd_jax.models import create_model, presets
    from kd_jax.sampling import SamplingConfig, generate, left_pad

    rows = [[5, 9, 2, 44, 7], [3, 1], [8, 8, 8, 8, 8, 8, 8, 8, 8]]
    tokens, mask = (jnp.asarray(x) for x in left_pad(rows, pad_id=0))
    cfg = SamplingConfig(max_new_tokens=6)
    out = {}
    for kind in ("xla", "splash"):
        model = create_model(presets.get("tiny-llama", vocab_size=61, attention=kind), seed=4)
        out[kind] = np.asarray(generate(model, tokens, mask, jax.random.key(0), cfg)[0])
    np.testing.assert_array_equal(out["splash"], out["xla"])
