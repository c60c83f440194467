"""Decoder properties: sharding, LoRA, presets, remat, causality and packing masks."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import transformers
from flax import nnx

from kd_jax import sharding as shd
from kd_jax.models import (
    LoraConfig,
    ModelConfigError,
    abstract_model,
    create_model,
    hf_io,
    param_count,
    presets,
)
from tests.hf_fixtures import hf_logits, llama_config, make_hf_model, qwen2_config


def _tokens(vocab, b=4, t=12, seed=0):
    return jnp.asarray(np.random.default_rng(seed).integers(0, vocab, size=(b, t)))


@pytest.mark.parametrize("family", ["llama", "qwen2"])
def test_sharded_load_equals_single_device(family, tmp_path, devices):
    make_hf_model(llama_config() if family == "llama" else qwen2_config(), tmp_path)
    mesh = shd.make_mesh({"data": 2, "fsdp": 2, "tensor": 2})
    single = hf_io.load(tmp_path)
    sharded = hf_io.load(tmp_path, mesh=mesh, rules=shd.DEFAULT_RULES)
    # The parameters really are split: q kernel [L, embed, heads, head_dim] over fsdp/tensor.
    q = sharded.blocks.q.kernel[...]
    assert tuple(q.sharding.spec) == (None, "fsdp", "tensor", None)
    shard_shape = q.addressable_shards[0].data.shape
    assert shard_shape == (q.shape[0], q.shape[1] // 2, q.shape[2] // 2, q.shape[3])
    emb = sharded.embed.embedding[...]
    assert emb.addressable_shards[0].data.size < emb.size

    tokens = _tokens(single.cfg.vocab_size)
    batch = jax.device_put(tokens, shd.batch_sharding(mesh, shd.DEFAULT_RULES))

    @nnx.jit
    def forward(model, x):
        with shd.activation_sharding(mesh, shd.DEFAULT_RULES):
            return model(x)

    np.testing.assert_allclose(
        np.asarray(forward(sharded, batch)), np.asarray(single(tokens)), atol=1e-5, rtol=0
    )


def test_non_dividing_dims_stay_replicated(devices):
    mesh = shd.make_mesh({"data": 1, "fsdp": 1, "tensor": 8})
    model = create_model(
        presets.get("tiny-qwen2"), mesh=mesh, rules=shd.DEFAULT_RULES
    )  # 2 kv heads, tensor = 8
    assert set(model.blocks.k.kernel[...].sharding.spec) <= {None}
    assert set(model.blocks.q.kernel[...].sharding.spec) <= {None}  # 4 heads do not divide 8
    assert tuple(model.blocks.gate.kernel[...].sharding.spec) == (None, None, "tensor")


def test_make_mesh_fill_and_errors(devices):
    assert dict(shd.make_mesh({"data": -1, "tensor": 2}).shape) == {
        "data": 4,
        "fsdp": 1,
        "tensor": 2,
    }
    with pytest.raises(shd.ShardingError, match="needs 6 devices"):
        shd.make_mesh({"data": 3, "tensor": 2})
    with pytest.raises(shd.ShardingError, match="Unknown mesh axes"):
        shd.make_mesh({"model": 8})


def test_lora_zero_init_is_identity_and_merge_matches(tmp_path):
    make_hf_model(llama_config(), tmp_path / "base")
    base = hf_io.load(tmp_path / "base")
    lora = hf_io.load(tmp_path / "base", lora=LoraConfig(rank=4, alpha=8, dropout=0.0))
    tokens = _tokens(base.cfg.vocab_size)
    np.testing.assert_allclose(np.asarray(lora(tokens)), np.asarray(base(tokens)), atol=1e-6)
    # Only adapters are trainable parameters beside the frozen base.
    trainable = nnx.state(lora, nnx.LoRAParam)
    names = {p[-2] + "." + p[-1] for p, _ in nnx.to_flat_state(trainable)}
    assert names == {f"{m}.lora_{ab}" for m in ("q", "k", "v", "up", "down") for ab in "ab"}

    # Give the adapters non-zero B so they change the output, then export merged.
    key = jax.random.key(1)
    for _, module in nnx.iter_graph(lora):
        if getattr(module, "lora_b", None) is not None:
            key, sub = jax.random.split(key)
            b = module.lora_b[...]
            module.lora_b[...] = 0.05 * jax.random.normal(sub, b.shape, b.dtype)
    unmerged = np.asarray(lora(tokens))
    assert np.abs(unmerged - np.asarray(base(tokens))).max() > 1e-3
    out = hf_io.save(lora, tmp_path / "merged")
    torch_model = transformers.AutoModelForCausalLM.from_pretrained(out, dtype="float32")
    np.testing.assert_allclose(hf_logits(torch_model, np.asarray(tokens)), unmerged, atol=1e-4)
    np.testing.assert_allclose(np.asarray(hf_io.load(out)(tokens)), unmerged, atol=1e-5, rtol=0)


def test_lora_dropout_changes_output_only_with_rng():
    cfg = presets.get("tiny-llama", lora=LoraConfig(rank=2, dropout=0.5, targets=("q", "up")))
    model = create_model(cfg)
    for _, module in nnx.iter_graph(model):
        if getattr(module, "lora_b", None) is not None:
            module.lora_b[...] = jnp.ones_like(module.lora_b[...]) * 0.1
    tokens = _tokens(cfg.vocab_size)
    a, b = model(tokens), model(tokens)
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    c = model(tokens, dropout_rng=jax.random.key(0))
    assert np.abs(np.asarray(c) - np.asarray(a)).max() > 1e-4


@pytest.mark.parametrize(
    "name,published",
    [
        # Exact totals from each checkpoint's safetensors index (total_size / 2 bytes, bf16).
        ("llama-3.1-70b", 70_553_706_496),
        ("qwen2.5-14b", 14_770_033_664),
        ("llama-3.2-1b", 1_235_814_400),
        ("qwen2.5-0.5b", 494_032_768),
    ],
)
def test_preset_parameter_counts(name, published):
    count = param_count(abstract_model(presets.get(name)))
    assert abs(count - published) / published < 1e-3


def test_every_preset_builds_abstractly():
    for name in presets.names():
        model = abstract_model(presets.get(name))
        leaves = jax.tree.leaves(nnx.state(model))
        assert all(isinstance(x, jax.ShapeDtypeStruct) for x in leaves)
    with pytest.raises(ModelConfigError, match="Unknown model preset"):
        presets.get("gpt-5")


@pytest.mark.parametrize("policy", ["full", "dots", "dots_with_no_batch_dims"])
def test_remat_policies_match(policy):
    cfg = presets.get("tiny-llama")
    tokens = _tokens(cfg.vocab_size, b=2, t=8)

    def loss(model):
        return jnp.mean(jax.nn.log_softmax(model(tokens))[..., 0])

    plain = create_model(cfg, seed=3)
    remat = create_model(cfg.replace(remat_policy=policy), seed=3)
    g0 = nnx.grad(loss)(plain)
    g1 = nnx.grad(loss)(remat)
    for a, b in zip(jax.tree.leaves(g0), jax.tree.leaves(g1), strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-6)


def test_causality_and_segment_isolation():
    cfg = presets.get("tiny-qwen2")
    model = create_model(cfg, seed=1)
    tokens = _tokens(cfg.vocab_size, b=1, t=10)

    def logit_sum(emb_input, t):
        return model(emb_input)[0, t].sum()

    # Changing a later token never changes an earlier logit.
    changed = tokens.at[0, 7].set((tokens[0, 7] + 1) % cfg.vocab_size)
    np.testing.assert_array_equal(
        np.asarray(model(tokens)[0, :7]), np.asarray(model(changed)[0, :7])
    )
    # Two packed segments equal the same two sequences run alone.
    seg = jnp.asarray([[1] * 4 + [2] * 6])
    pos = jnp.asarray([list(range(4)) + list(range(6))])
    packed = model(tokens, positions=pos, segment_ids=seg)
    first = model(tokens[:, :4])
    second = model(tokens[:, 4:])
    np.testing.assert_allclose(np.asarray(packed[:, :4]), np.asarray(first), atol=1e-5)
    np.testing.assert_allclose(np.asarray(packed[:, 4:]), np.asarray(second), atol=1e-5)


def test_bfloat16_compute_close_to_float32():
    cfg = presets.get("tiny-llama")
    m32 = create_model(cfg, seed=2)
    m16 = create_model(cfg.replace(dtype="bfloat16"), seed=2)
    tokens = _tokens(cfg.vocab_size)
    a, b = np.asarray(m32(tokens)), np.asarray(m16(tokens))
    assert b.dtype == np.float32  # logits accumulate in float32
    assert np.abs(a - b).max() < 0.05
