"""cache-teacher on a sharded mesh: top-k in sequence chunks equals the full-vocabulary
top-k, and a cache built with mesh fsdp=4, tensor=2 on 8 devices equals one built by a
1-device process (the teacher's parameters really sharded)."""

import math
import subprocess
import sys

import jax
import numpy as np

from kd_jax import teacher_cache_job as tc_job
from kd_jax import train
from tests.test_multiprocess import ROOT, _env

K = 8
OVERRIDES = {
    "student.preset": "tiny-student-xs",
    "teacher.preset": "tiny-student",
    "teacher.workdir": "",
    "data.max_length": 48,
    "data.batch_size": 8,
    "data.validation": "",
    "data.validation_size": 16,
    "data.train": "builtin:chat/cipher/human",
    "data.packing": False,
    "kd.chunk_size": 64,
}


def _config(**mesh):
    from configs import tiny_compare

    c = tiny_compare.get_config("kd")
    for key, value in OVERRIDES.items():
        section, name = key.split(".")
        c[section][name] = value
    c.mesh.update(mesh)
    return c


def test_chunked_top_k_equals_full_vocabulary_top_k(builtin_dir):
    r = train.setup(_config())
    batch = next(r.pipeline.train_iterator())
    assert tc_job.chunk_length(48, 8, 64) == 8  # 6 chunks of [8, 8, V]
    vals, idx = tc_job.topk_fn(r.teacher, K, 64)(*r.context["teacher"], batch, None)
    model = r.teacher.merge(*r.context["teacher"])
    logits = model.logits(model.hidden(batch["inputs"], batch["positions"], batch["segment_ids"]))
    want_v, want_i = jax.lax.top_k(jax.nn.log_softmax(logits.astype(np.float32), -1), K)
    np.testing.assert_allclose(np.asarray(vals), np.asarray(want_v), atol=1e-5)
    np.testing.assert_array_equal(np.asarray(idx), np.asarray(want_i))


def _arrays(cache_dir):
    out = {}
    for shard in sorted(cache_dir.glob("shard-*")):
        for name in ("offsets", "values", "indices"):
            out[f"{shard.name}/{name}"] = np.load(shard / f"{name}.npy")
    return out


def cache_args(out, *mesh_flags) -> list[str]:
    """`kd-jax cache-teacher` arguments for the tiny config, top-8 float32 in shards of 128."""
    flags = [f"--config.{k}={v}" for k, v in OVERRIDES.items()]
    return [
        "cache-teacher",
        "--config",
        "configs/tiny_compare.py:kd",
        *flags,
        *mesh_flags,
        "--out",
        str(out),
        "--k",
        str(K),
        "--value-dtype",
        "float32",
        "--shard-size",
        "128",
    ]


def assert_same_cache(have_dir, want_dir) -> None:
    """Same shards (300 records, 3 shards); ids and offsets equal, values within 1e-5."""
    want, have = _arrays(want_dir), _arrays(have_dir)
    assert want.keys() == have.keys() and len(want) == 3 * 3
    for name in want:
        if name.endswith("values"):
            np.testing.assert_allclose(have[name], want[name], atol=1e-5, err_msg=name)
        else:
            np.testing.assert_array_equal(have[name], want[name], err_msg=name)


def test_sharded_cache_equals_one_device(builtin_dir, tmp_path):
    config = _config(data=1, fsdp=4, tensor=2)
    r = train.setup(config)
    sharded = [
        x
        for x in jax.tree.leaves(r.teacher.trainable)
        if x.sharding.shard_shape(x.shape) != x.shape
    ]
    assert sharded, "the teacher's weights are split over the mesh"
    for x in sharded:
        shard = x.sharding.shard_shape(x.shape)
        assert math.prod(x.shape) // math.prod(shard) in (2, 4, 8), (x.shape, shard)
    got = tc_job.build(
        config, tmp_path / "sharded", k=K, value_dtype="float32", shard_size=128, progress=False
    )
    args = cache_args(tmp_path / "one", "--config.mesh.data=-1")
    cmd = [sys.executable, "-m", "kd_jax.main", *args]
    one = subprocess.run(cmd, cwd=ROOT, env=_env(1), capture_output=True, text=True, timeout=600)
    assert one.returncode == 0, one.stderr[-2000:]
    assert_same_cache(got, tmp_path / "one")
