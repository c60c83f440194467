"""kd_jax's decoder against transformers (PyTorch, float32) on tiny random checkpoints."""

import jax.numpy as jnp
import numpy as np
import pytest
import transformers

from kd_jax.models import hf_io
from tests.hf_fixtures import hf_logits, llama_config, make_hf_model, qwen2_config

CONFIGS = {"llama": llama_config, "qwen2": qwen2_config}


@pytest.fixture(scope="module", params=sorted(CONFIGS))
def checkpoint(request, tmp_path_factory):
    path = tmp_path_factory.mktemp(request.param)
    model = make_hf_model(CONFIGS[request.param](), path)
    return request.param, path, model


def _tokens(vocab, b=2, t=11, seed=0):
    return np.random.default_rng(seed).integers(0, vocab, size=(b, t))


def test_logits_match_transformers(checkpoint):
    family, path, torch_model = checkpoint
    model = hf_io.load(path)
    assert model.cfg.family == family
    tokens = _tokens(model.cfg.vocab_size)
    ours = np.asarray(model(jnp.asarray(tokens)))
    np.testing.assert_allclose(ours, hf_logits(torch_model, tokens), atol=1e-4, rtol=0)


def test_left_padding_and_explicit_positions(checkpoint):
    _, path, torch_model = checkpoint
    model = hf_io.load(path)
    tokens = _tokens(model.cfg.vocab_size, t=9, seed=1)
    mask = np.ones_like(tokens)
    mask[0, :3] = 0  # left padding of the first row
    positions = np.clip(np.cumsum(mask, axis=1) - 1, 0, None)
    ref = hf_logits(torch_model, tokens, attention_mask=mask, position_ids=positions)
    ours = np.asarray(
        model(jnp.asarray(tokens), positions=jnp.asarray(positions), segment_ids=jnp.asarray(mask))
    )
    real = mask.astype(bool)
    np.testing.assert_allclose(ours[real], ref[real], atol=1e-4, rtol=0)


def test_positions_offset_matches(checkpoint):
    """Explicit positions that do not start at zero (e.g. a continued sequence)."""
    _, path, torch_model = checkpoint
    model = hf_io.load(path)
    tokens = _tokens(model.cfg.vocab_size, t=7, seed=2)
    positions = np.arange(7)[None].repeat(2, 0) + np.array([[5], [40]])
    ref = hf_logits(torch_model, tokens, position_ids=positions)
    ours = np.asarray(model(jnp.asarray(tokens), positions=jnp.asarray(positions)))
    np.testing.assert_allclose(ours, ref, atol=1e-4, rtol=0)


def test_round_trip_through_save(checkpoint, tmp_path):
    _, path, torch_model = checkpoint
    model = hf_io.load(path)
    out = hf_io.save(model, tmp_path / "export")
    reloaded = transformers.AutoModelForCausalLM.from_pretrained(out, dtype="float32")
    tokens = _tokens(model.cfg.vocab_size, seed=3)
    np.testing.assert_allclose(
        hf_logits(reloaded, tokens), hf_logits(torch_model, tokens), atol=1e-5, rtol=0
    )


def test_sharded_index_checkpoint_loads(tmp_path):
    torch_model = make_hf_model(llama_config(), tmp_path, max_shard_size="20KB")
    assert (tmp_path / "model.safetensors.index.json").exists()
    model = hf_io.load(tmp_path)
    tokens = _tokens(model.cfg.vocab_size, seed=4)
    np.testing.assert_allclose(
        np.asarray(model(jnp.asarray(tokens))), hf_logits(torch_model, tokens), atol=1e-4, rtol=0
    )


def test_save_writes_sharded_index(tmp_path):
    torch_model = make_hf_model(qwen2_config(), tmp_path / "src")
    model = hf_io.load(tmp_path / "src")
    out = hf_io.save(model, tmp_path / "out", max_shard_bytes=40_000)
    assert (out / "model.safetensors.index.json").exists()
    reloaded = transformers.AutoModelForCausalLM.from_pretrained(out, dtype="float32")
    tokens = _tokens(model.cfg.vocab_size, seed=5)
    np.testing.assert_allclose(
        hf_logits(reloaded, tokens), hf_logits(torch_model, tokens), atol=1e-5, rtol=0
    )


def test_bfloat16_load_keeps_storage_dtype(tmp_path):
    make_hf_model(qwen2_config(), tmp_path, seed=1)
    model = hf_io.load(tmp_path, param_dtype="bfloat16", dtype="bfloat16")
    assert model.blocks.q.kernel[...].dtype == jnp.bfloat16
    logits = model(jnp.asarray(_tokens(model.cfg.vocab_size)))
    assert bool(jnp.all(jnp.isfinite(logits)))
