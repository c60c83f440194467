"""Coordinated preemption: a SIGTERM to one host of two makes both save the same step
and exit 0; the resumed run ends exactly as an uninterrupted one."""

import os
import signal
import time

from kd_jax.metrics_log import read_metrics, without_timing
from tests.test_multiprocess import _final, launch, train_cmd, wait

STEPS = [
    "--config.train.num_steps=12",
    "--config.train.checkpoint_every=100",
    "--config.train.eval_every=0",
]


def test_sigterm_to_one_process_stops_both_at_one_step(builtin_dir, tmp_path):
    full = launch(tmp_path / "full", 2, 4, train_cmd(tmp_path / "full", *STEPS))
    run = tmp_path / "preempted"
    procs = launch(tmp_path / "pre", 2, 4, train_cmd(run, *STEPS))
    deadline = time.time() + 300
    while time.time() < deadline and len(read_metrics(run)) < 2:
        if any(p.poll() is not None for p, _ in procs):
            break
        time.sleep(0.2)
    procs[1][0].send_signal(signal.SIGTERM)  # process 1 only
    finals = [_final(log) for log in wait(procs)]  # fails unless both exit 0
    assert [f["status"] for f in finals] == ["preempted", "preempted"], finals
    stopped = finals[0]["step"]
    assert finals[1]["step"] == stopped < 12, finals
    assert os.listdir(run / "checkpoints") == [str(stopped)]
    assert (run / "checkpoints" / str(stopped) / "commit_success.txt").exists()
    saved = os.listdir(run / "checkpoints" / str(stopped) / "data")
    data = sorted(p for p in saved if p.startswith("process"))
    assert data == ["process_0-of-2.json", "process_1-of-2.json"], "both hosts saved"

    resumed = [_final(log) for log in wait(launch(tmp_path / "res", 2, 4, train_cmd(run, *STEPS)))]
    reference = [_final(log) for log in wait(full)]
    assert [without_timing(f) for f in resumed] == [without_timing(f) for f in reference]
    assert read_metrics(run, timing=False) == read_metrics(tmp_path / "full", timing=False)
