"""The KV-cache sampler against a cache-free reference and transformers' greedy generate."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import nnx

from kd_jax import sharding as shd
from kd_jax.models import LoraConfig, create_model, hf_io, presets
from kd_jax.sampling import SamplingConfig, generate, left_pad, sample_token
from tests.hf_fixtures import llama_config, make_hf_model


def _greedy_reference(model, rows, n):
    """Argmax of a full forward over the whole sequence, one token at a time, no cache."""
    out = []
    for row in rows:
        seq = list(row)
        for _ in range(n):
            logits = model(jnp.asarray([seq]))
            seq.append(int(jnp.argmax(logits[0, -1])))
        out.append(seq[len(row) :])
    return np.asarray(out)


@pytest.fixture(scope="module")
def model():
    return create_model(presets.get("tiny-llama", vocab_size=61), seed=4)


def test_greedy_equals_uncached_argmax(model):
    rows = [[5, 9, 2, 44, 7], [3, 1], [8, 8, 8, 8, 8, 8, 8, 8, 8]]
    tokens, mask = left_pad(rows, pad_id=0)
    cfg = SamplingConfig(max_new_tokens=6)
    new, lengths = generate(model, jnp.asarray(tokens), jnp.asarray(mask), jax.random.key(0), cfg)
    np.testing.assert_array_equal(np.asarray(new), _greedy_reference(model, rows, 6))
    assert np.asarray(lengths).tolist() == [6, 6, 6]


def test_top_k_one_is_greedy_and_seeded_sampling_reproduces(model):
    tokens, mask = left_pad([[5, 9, 2], [7]], pad_id=0)
    args = (model, jnp.asarray(tokens), jnp.asarray(mask))
    greedy, _ = generate(*args, jax.random.key(0), SamplingConfig(max_new_tokens=5))
    top1, _ = generate(*args, jax.random.key(3), SamplingConfig(5, temperature=1.0, top_k=1))
    np.testing.assert_array_equal(np.asarray(greedy), np.asarray(top1))
    cfg = SamplingConfig(max_new_tokens=8, temperature=1.0, top_p=0.9)
    a, _ = generate(*args, jax.random.key(7), cfg)
    b, _ = generate(*args, jax.random.key(7), cfg)
    c, _ = generate(*args, jax.random.key(8), cfg)
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert not np.array_equal(np.asarray(a), np.asarray(c))


def test_stop_tokens_end_rows(model):
    """Each row ends at its first stop token (kept, then padding) while the others run on;
    here every row stops before max_new_tokens, so the loop also ends early."""
    rows = [[5, 9, 2, 44, 7], [3, 1], [8, 8, 8, 8]]
    n = 8
    ref = _greedy_reference(model, rows, n)
    stops = (int(ref[0, 2]), int(ref[1, 0]), int(ref[2, 3]))
    tokens, mask = left_pad(rows, pad_id=0)
    cfg = SamplingConfig(max_new_tokens=n, stop_tokens=stops, pad_id=0)
    new, lengths = generate(model, jnp.asarray(tokens), jnp.asarray(mask), jax.random.key(0), cfg)
    for i in range(len(rows)):
        length = int(np.flatnonzero(np.isin(ref[i], stops))[0]) + 1
        assert int(lengths[i]) == length
        np.testing.assert_array_equal(np.asarray(new[i, :length]), ref[i, :length])
        assert (np.asarray(new[i, length:]) == 0).all()
    assert int(np.max(lengths)) < n


def test_top_k_and_top_p_restrict_support():
    logits = jnp.log(jnp.asarray([[0.5, 0.3, 0.15, 0.05]]))
    keys = jax.random.split(jax.random.key(0), 400)
    topk = {int(sample_token(logits, k, SamplingConfig(temperature=1.0, top_k=2))[0]) for k in keys}
    assert topk == {0, 1}
    topp = {
        int(sample_token(logits, k, SamplingConfig(temperature=1.0, top_p=0.7))[0]) for k in keys
    }
    assert topp == {0, 1}  # 0.5 < 0.7 needs the second token; 0.8 >= 0.7 stops there


def test_matches_transformers_greedy_generate(tmp_path):
    torch_model = make_hf_model(llama_config(), tmp_path)
    model = hf_io.load(tmp_path)
    prompt = [[3, 17, 29, 41, 5, 66]]
    with torch.no_grad():
        ref = torch_model.generate(
            torch.tensor(prompt),
            max_new_tokens=8,
            do_sample=False,
            eos_token_id=None,
            pad_token_id=0,
        )[0, 6:].numpy()
    tokens, mask = left_pad(prompt, pad_id=0)
    new, _ = generate(
        model,
        jnp.asarray(tokens),
        jnp.asarray(mask),
        jax.random.key(0),
        SamplingConfig(max_new_tokens=8),
    )
    np.testing.assert_array_equal(np.asarray(new[0]), ref)


def test_sharded_sampling_equals_single_device(devices):
    """Greedy and seeded sampling on a (data, fsdp, tensor) mesh give the 1-device tokens."""
    cfg = presets.get("tiny-llama", vocab_size=61)
    mesh = shd.make_mesh({"data": 2, "fsdp": 2, "tensor": 2})
    single, sharded = (
        create_model(cfg, seed=4),
        create_model(cfg, seed=4, mesh=mesh, rules=shd.DEFAULT_RULES),
    )
    rows = [[5, 9, 2, 44, 7], [3, 1], [8, 8, 8], [1, 2, 3, 4], [9], [7, 7], [4, 5, 6], [2]]
    tokens, mask = left_pad(rows, pad_id=0)
    placed = [
        jax.device_put(jnp.asarray(a), shd.batch_sharding(mesh, shd.DEFAULT_RULES))
        for a in (tokens, mask)
    ]
    for cfg_s in (SamplingConfig(max_new_tokens=6), SamplingConfig(6, temperature=1.0, top_k=8)):
        ref, _ = generate(single, jnp.asarray(tokens), jnp.asarray(mask), jax.random.key(1), cfg_s)
        out, _ = generate(sharded, *placed, jax.random.key(1), cfg_s)
        np.testing.assert_array_equal(np.asarray(out), np.asarray(ref))


def test_lora_model_samples_as_its_forward():
    """A LoRA student (adapters trained away from zero) decodes with the adapters merged:
    greedy tokens equal the argmax of its own un-merged, uncached forward."""
    cfg = presets.get("tiny-llama", vocab_size=61)
    cfg = cfg.replace(lora=LoraConfig(rank=4, alpha=8.0, targets=("q", "v", "o", "up", "down")))
    model = create_model(cfg, seed=2)
    for path, var in nnx.iter_graph(model):
        if isinstance(var, nnx.LoRAParam) and path[-1] == "lora_b":
            var[...] = jax.random.normal(jax.random.key(len(path)), var[...].shape) * 0.3
    rows = [[5, 9, 2, 44, 7], [3, 1]]
    tokens, mask = left_pad(rows, pad_id=0)
    new, _ = generate(
        model,
        jnp.asarray(tokens),
        jnp.asarray(mask),
        jax.random.key(0),
        SamplingConfig(max_new_tokens=6),
    )
    np.testing.assert_array_equal(np.asarray(new), _greedy_reference(model, rows, 6))
