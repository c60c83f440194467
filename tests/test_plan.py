"""`kd-jax plan`: the step compiles from shapes alone, and its numbers add up.

Each plan compiles a tiny KD step on the 8 simulated devices of conftest (a few seconds);
one test plans for 4 devices, which runs in a child process that starts JAX with 4.
"""

import json
import math

import jax
import pytest

from kd_jax import plan as plan_lib
from kd_jax.main import main as cli
from kd_jax.models import abstract_model, param_count, presets

TINY = [
    "--config",
    "configs/tiny_compare.py:kd",
    "--config.teacher.workdir=",
    "--config.student.preset=tiny-student-xs",
    "--config.teacher.preset=tiny-student",
    "--config.data.batch_size=8",
    "--config.data.max_length=32",
    "--config.kd.chunk_size=16",
]


def _plan(capsys, *extra, devices=8):
    assert cli(["plan", *TINY, "--devices", str(devices), "--json", *extra]) == 0
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def _params(preset: str) -> int:
    return param_count(abstract_model(presets.get(preset)))


def test_plan_numbers_add_up(capsys, devices):
    p = _plan(capsys, "--mesh", "data=2,fsdp=2,tensor=2")
    assert p["devices"] == 8 and p["mesh"] == {"data": 2, "fsdp": 2, "tensor": 2}
    by, x = p["bytes"], p["xla"]
    # Adam keeps two float32 moments per parameter, sharded like the parameter (plus
    # a step count): exactly twice the parameters, give or take that scalar.
    assert 0 <= by["optimizer"] - 2 * by["student_trainable"] <= 16
    # XLA's arguments are our accounted buffers plus the state's int32 counters and the
    # rng key; the donated state (params, optimizer, counters) comes back aliased.
    accounted = sum(by.values())
    assert 0 <= x["arguments"] - accounted <= 32
    assert 0 <= x["aliased"] - by["student_trainable"] - by["optimizer"] <= 32
    assert x["temporaries"] > 0
    assert x["peak"] == x["arguments"] + x["outputs"] - x["aliased"] + x["temporaries"]
    # FLOPs: N drops the untied input table; tokens = batch * length.
    s, t = p["student"], p["teacher"]
    cfg = presets.get("tiny-student-xs")
    assert s["flop_params"] == s["params"] - cfg.vocab_size * cfg.hidden_size
    assert p["tokens_per_step"] == 8 * 32
    assert p["flops"]["student"]["model"] == 6 * s["flop_params"] * 8 * 32
    assert p["flops"]["teacher"]["model"] == 2 * t["flop_params"] * 8 * 32
    assert (s["params"], t["params"]) == (_params("tiny-student-xs"), _params("tiny-student"))


def test_sharded_bytes_are_total_over_shards(capsys, devices):
    """fsdp=8 splits every weight along `embed`; data=8 replicates them all."""
    replicated = _plan(capsys, "--mesh", "data=8")
    sharded = _plan(capsys, "--mesh", "fsdp=8")
    total = replicated["student"]["params"] * 4
    assert replicated["bytes"]["student_trainable"] == total
    assert replicated["bytes"]["teacher"] == replicated["teacher"]["params"] * 4
    # Every tiny weight (norm scales too) has an `embed` dim of 32, which 8 divides.
    assert sharded["bytes"]["student_trainable"] == total // 8
    # Adam's moments shard like the weights; only its scalar step counts stay whole.
    scalars = [
        p["bytes"]["optimizer"] - 2 * p["bytes"]["student_trainable"] for p in (replicated, sharded)
    ]
    assert scalars[0] == scalars[1] <= 16
    assert sharded["xla"]["arguments"] < replicated["xla"]["arguments"]


def test_one_parameter_shards_as_its_spec_says(devices):
    """The per-device bytes of one sharded weight are its bytes over its shard count."""
    from ml_collections import ConfigDict

    from configs import base
    from kd_jax import sharding as shd
    from kd_jax.models import loader

    c = base.get_config()
    c.student.preset = "tiny-student-xs"
    mesh = shd.make_mesh({"data": 2, "fsdp": 2, "tensor": 2})
    parts = loader.build(
        ConfigDict(c.student), role="student", mesh=mesh, rules=shd.DEFAULT_RULES, abstract=True
    )
    leaves = jax.tree_util.tree_leaves_with_path(parts.trainable)
    sharded = [(k, x) for k, x in leaves if any(a is not None for a in x.sharding.spec)]
    assert sharded, "no weight is sharded on a 2x2x2 mesh"
    for _, x in sharded:
        shards = math.prod(
            mesh.shape[a] for axes in x.sharding.spec if axes for a in jax.tree.leaves(axes)
        )
        per_device = math.prod(x.sharding.shard_shape(x.shape)) * x.dtype.itemsize
        assert per_device * shards == math.prod(x.shape) * x.dtype.itemsize
        assert plan_lib._bytes({"w": x}) == per_device
        assert plan_lib._bytes({"w": x}, per_device=False) == per_device * shards


def test_lora_student_and_hf_folder(capsys, tmp_path, devices):
    """A student from an HF folder holding only config.json; LoRA costs 4N, not 6N."""
    folder = tmp_path / "hf"
    folder.mkdir()
    cfg = presets.get("tiny-llama")
    (folder / "config.json").write_text(json.dumps(cfg.to_hf()))
    p = _plan(
        capsys,
        "--config.student.preset=",
        f"--config.student.hf_path={folder}",
        "--config.student.lora.enabled=True",
        "--config.teacher.preset=tiny-llama",
    )
    s = p["student"]
    assert s["trainable"] < s["params"]
    assert p["flops"]["student"]["rule"].startswith("4N")
    assert p["bytes"]["student_frozen"] > 0
    assert p["flops"]["student"]["model"] == 4 * s["flop_params"] * p["tokens_per_step"]


def test_teacher_cache_replaces_the_teacher(capsys, tmp_path, devices):
    """With `kd.teacher_cache` the batch carries top-k [B, T, k] and no teacher runs."""
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "meta.json").write_text(json.dumps({"k": 4}))
    p = _plan(
        capsys,
        f"--config.kd.teacher_cache={cache}",
        "--config.data.packing=False",
        "--mesh",
        "data=8",
    )
    assert "teacher" not in p and p["bytes"]["teacher"] == 0 and list(p["flops"]) == ["student"]
    rows = 5 * 8 * 32 * 4  # inputs, targets, loss_mask, positions, segment_ids: [8, 32] x 4 B
    assert p["bytes"]["batch"] == (rows + 2 * 8 * 32 * 4 * 4) // 8  # + values, indices [.., 4]


def test_other_device_count_runs_in_a_child(capfd, devices):
    """JAX here has 8 devices; planning for 4 restarts in a process that has 4."""
    assert cli(["plan", *TINY, "--devices", "4", "--mesh", "fsdp=4"]) == 0
    out = capfd.readouterr().out
    assert "kd-jax plan: 4 devices, mesh data=1 fsdp=4 tensor=1" in out
    assert "temporaries" in out and "6N x tokens" in out


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--mesh", "fsdp=3"], "needs 3 devices but 8 are available"),
        (["--config.student.preset=nope"], "Unknown model preset 'nope'"),
    ],
)
def test_user_errors_are_one_line(capsys, devices, extra, message):
    assert cli(["plan", *TINY, "--devices", "8", *extra]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_plan_for_a_tpu_topology_compiles_with_the_tpu_compiler(capsys):
    """libtpu compiles the tiny step for an abstract v5e slice (no TPU here): splash
    attention, the chip's HBM, a verdict, and a loss loop that moves no weights."""
    pytest.importorskip("libtpu")
    tiny = [a.replace("max_length=32", "max_length=128") for a in TINY]
    assert cli(["plan", *tiny, "--topology", "v5e:2x2", "--mesh", "fsdp=4", "--json"]) == 0
    p = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert p["platform"] == "tpu" and p["devices"] == 4 and p["topology"] == "v5e:2x2"
    assert p["attention"] == "splash"
    assert p["hbm_bytes_per_device"] == 16 * 1024**3 and p["fits"] is True
    assert 0 < p["peak_bytes_per_device"] < p["hbm_bytes_per_device"]
    assert p["loop_collective_bytes"] < 0.01 * p["unembedding_bytes"]
    assert p["time_floor_s"] > 0


def test_gkd_plan_compiles_the_sampler_program_too(capsys, devices):
    tiny = [a for a in TINY if "chunk_size" not in a]
    p = _plan(
        capsys,
        "--mesh",
        "data=8",
        "--config.gkd.lambda_=0.5",
        "--config.data.packing=False",
        "--config.gkd.max_new_tokens=8",
        *[a for a in tiny if a not in TINY],
    )
    s = p["sampler"]
    assert s["max_new_tokens"] == 8 and s["temporaries"] > 0
    assert s["peak"] == s["arguments"] + s["outputs"] - s["aliased"] + s["temporaries"]


def test_chip_table_and_verdict():
    from kd_jax import accelerators as acc

    assert acc.chip("v5p:4x4x4").hbm_bytes == 95 * 1024**3
    assert acc.chip("TPU v5 lite").peak_flops == 197e12 and acc.chip("v6e:2x4").name == "TPU v6e"
    assert acc.chips_in("v5p:4x4x4") == 64 and acc.chips_in("v6e:2x4") == 8
    with pytest.raises(ValueError, match="v5p:4x4x4"):
        acc.chips_in("v5p")
    gib = 1024**3
    ok = acc.verdict(
        10 * gib,
        16 * gib,
        temporaries=8 * gib,
        arguments=2 * gib,
        mesh={"fsdp": 4},
        grad_accum=1,
        remat_policy="none",
    )
    assert ok == (True, "fits")
    fits, text = acc.verdict(
        40 * gib,
        16 * gib,
        temporaries=36 * gib,
        arguments=4 * gib,
        mesh={"fsdp": 4},
        grad_accum=2,
        remat_policy="dots",
    )
    # 36 GiB of activations into the 12 GiB left: 4x more micro-batches.
    assert not fits and text == "does not fit: try grad_accum=8 / fsdp=8 / remat=full"


@pytest.mark.parametrize("job", ["synthesize", "eval", "cache-teacher"])
def test_inference_jobs_plan_their_own_program(capsys, devices, job):
    """`--job`: the job's model (the teacher for synthesize and cache-teacher), its
    weights split over fsdp x tensor, and the sampler's KV cache or the chunked top-k."""
    p = _plan(capsys, "--mesh", "fsdp=4,tensor=2", "--job", job, "--batch-size", "8")
    preset = "tiny-student" if job != "eval" else "tiny-student-xs"
    assert p["job"] == job and p["model"] == preset and p["params"] == _params(preset)
    assert p["mesh"] == {"data": 1, "fsdp": 4, "tensor": 2}
    # Every weight split at least 4 ways (fsdp on the embedding dimension), some 8 ways.
    full = 4 * p["params"]  # float32
    assert full / 8 <= p["weights_per_device"] <= full / 4
    x = p["xla"]
    assert x["peak"] == x["arguments"] + x["outputs"] - x["aliased"] + x["temporaries"]
    assert x["arguments"] >= p["weights_per_device"] and x["temporaries"] > 0
    if job == "cache-teacher":
        assert p["program"] == "8 rows x 32 tokens, top-64"
    else:
        assert p["program"] == "8 prompts x 32 tokens, 128 new tokens"
