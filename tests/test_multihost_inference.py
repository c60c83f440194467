"""Inference jobs as one program over 2 processes x 4 CPU devices equal 1 process x 8.

Every process runs the same `kd-jax` command, as on a pod. For `eval` each host feeds
its rows of every batch (sharding.host_rows), the sampler runs once across both, every
host gets all rows back and process 0 writes: the predictions, scores and fidelity files
equal those of one process. For `cache-teacher` the hosts build two shards at a time,
each host writing its own (300 records in shards of 128: shards 0 and 1 together, then
shard 2 with host 1 feeding padding): every array equals the one-process cache.
"""

import json
import sys

import numpy as np

from kd_jax import teacher_cache_job as tc_job
from kd_jax import train
from kd_jax.evaluation.run_eval import evaluate_run
from tests.test_multiprocess import ROOT, launch, wait
from tests.test_sharded_cache import K, _config, assert_same_cache, cache_args

MESH = ["--config.mesh.data=1", "--config.mesh.fsdp=4", "--config.mesh.tensor=2"]


def _two_processes(tmp_path, name, *args) -> list[str]:
    cmd = [sys.executable, "-m", "kd_jax.main", *args]
    return wait(launch(str(tmp_path / name), 2, 4, cmd))


def test_two_process_cache_teacher_equals_one_process(builtin_dir, tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)  # the child processes read configs/ relative to the checkout
    one = tc_job.build(
        _config(data=1, fsdp=4, tensor=2),
        tmp_path / "one",
        k=K,
        value_dtype="float32",
        shard_size=128,
        progress=False,
    )
    _two_processes(tmp_path, "cache", *cache_args(tmp_path / "two", *MESH))
    assert_same_cache(tmp_path / "two", one)
    meta_one = json.loads((one / "meta.json").read_text())
    meta_two = json.loads((tmp_path / "two" / "meta.json").read_text())
    assert meta_two == meta_one and meta_two["complete"]


def test_two_process_eval_equals_one_process(tiny_config, tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)
    runs = {}
    for name, seed in (("student", 0), ("teacher", 1)):
        config = tiny_config("sft")
        config.seed = seed
        config.train.num_steps, config.train.eval_every = 2, 0
        config.mesh.update(data=1, fsdp=4, tensor=2)
        train.run(config, tmp_path / name)
        runs[name] = str(tmp_path / name)
    kw = dict(tasks="arith,compare", limit=8, batch_size=8, max_new_tokens=16, temperature=0.0)
    one = evaluate_run(
        runs["student"], out=tmp_path / "one", teacher=runs["teacher"], progress=False, **kw
    )
    logs = _two_processes(
        tmp_path,
        "eval",
        "eval",
        "--workdir",
        runs["student"],
        "--teacher",
        runs["teacher"],
        "--tasks",
        kw["tasks"],
        "--limit",
        "8",
        "--batch-size",
        "8",
        "--max-new-tokens",
        "16",
        "--temperature",
        "0",
        "--no-progress",
        "--out",
        str(tmp_path / "two"),
    )
    # Both processes score every example and print the same averages.
    printed = [json.loads(log.strip().splitlines()[-1])["average"] for log in logs]
    assert printed[0] == printed[1] == one["average"]
    for side in ("", "teacher/"):
        for task in ("arith", "compare"):
            path = f"{side}predictions/{task}.jsonl"
            a = (tmp_path / "one" / path).read_text()
            assert a and a == (tmp_path / "two" / path).read_text(), path
    fid_one = json.loads((tmp_path / "one" / "fidelity.json").read_text())
    fid_two = json.loads((tmp_path / "two" / "fidelity.json").read_text())
    assert fid_two["tasks"] == fid_one["tasks"]
    for key in ("kl", "top1", "tokens"):
        want, got = fid_one["held_out"][key], fid_two["held_out"][key]
        np.testing.assert_allclose(got, want, rtol=1e-5, err_msg=key)
    assert fid_one["held_out"]["kl"] > 0 and fid_one["held_out"]["tokens"] > 0
