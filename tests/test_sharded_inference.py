"""Inference loads a run's student into the run's own shardings (its mesh and rules
table): on 8 devices with mesh fsdp=4, tensor=2 the parameters are split and greedy
generation gives the tokens a 1-device load gives."""

import jax
import numpy as np

from kd_jax import sharding as shd
from kd_jax import train
from kd_jax.data import load_tokenizer
from kd_jax.models.loader import load_trained
from kd_jax.sampling import SamplingConfig, generate_text

PROMPTS = ["<|user|>3 + 4 =<|end|><|assistant|>", "<|user|>abc<|end|><|assistant|>"] * 4


def test_sharded_load_and_greedy_generation_equal_one_device(tiny_config, tmp_path):
    config = tiny_config("sft")
    config.student.preset = "tiny-student"
    config.train.num_steps, config.train.eval_every = 2, 0
    config.mesh.update(data=1, fsdp=4, tensor=2)
    train.run(config, tmp_path / "run")

    sharded, tok_dir = load_trained(tmp_path / "run")
    one, _ = load_trained(tmp_path / "run", mesh=shd.make_mesh({}, jax.devices()[:1]))
    from flax import nnx

    leaves = jax.tree.leaves(nnx.state(sharded, nnx.Param))
    split = [x for x in leaves if x.sharding.shard_shape(x.shape) != x.shape]
    assert split and all(len(x.sharding.device_set) == 8 for x in leaves)
    embed = sharded.embed.embedding[...]
    assert embed.sharding.mesh.shape == {"data": 1, "fsdp": 4, "tensor": 2}
    for x, y in zip(leaves, jax.tree.leaves(nnx.state(one, nnx.Param)), strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))

    tok = load_tokenizer(tok_dir)
    cfg = SamplingConfig(
        max_new_tokens=12,
        temperature=0.0,
        stop_tokens=(tok.eos_token_id,),
        pad_id=tok.pad_token_id or 0,
    )
    rules = tuple(tuple(r) for r in config.sharding_rules)
    got = generate_text(sharded, tok, PROMPTS, cfg, batch_size=8, progress=False, rules=rules)
    want = generate_text(one, tok, PROMPTS, cfg, batch_size=8, progress=False)
    assert got == want and any(got)

    # The KV cache is split by the same table: rows over fsdp, KV heads over tensor.
    from kd_jax.models import decode

    mesh = embed.sharding.mesh
    with shd.activation_sharding(mesh, rules):
        cache = jax.jit(lambda: decode.init_cache(sharded, 8, 32))()
    k = cache["k"][0]  # [B, K, S, H] = [8, 2, 32, 16]
    assert k.sharding.shard_shape(k.shape) == (2, 1, 32, k.shape[3]), k.sharding


def test_eval_scores_on_the_runs_mesh_equal_one_device(tiny_config, tmp_path, monkeypatch):
    import functools

    from kd_jax.evaluation.run_eval import evaluate_run
    from kd_jax.models import loader

    config = tiny_config("sft")
    config.train.num_steps, config.train.eval_every = 2, 0
    config.mesh.update(data=1, fsdp=4, tensor=2)
    train.run(config, tmp_path / "run")
    kw = dict(tasks="arith,compare", limit=8, batch_size=8, max_new_tokens=16, progress=False)
    sharded = evaluate_run(tmp_path / "run", out=tmp_path / "sharded", **kw)
    one_device = functools.partial(loader.load_trained, mesh=shd.make_mesh({}, jax.devices()[:1]))
    monkeypatch.setattr(loader, "load_trained", one_device)
    one = evaluate_run(tmp_path / "run", out=tmp_path / "one", **kw)
    assert sharded["tasks"] == one["tasks"] and set(one["tasks"]) == {"arith", "compare"}
    for task in ("arith", "compare"):
        a = (tmp_path / "sharded" / "predictions" / f"{task}.jsonl").read_text()
        assert a == (tmp_path / "one" / "predictions" / f"{task}.jsonl").read_text()
