"""The training loop end to end: metrics, checkpoints, resume after SIGKILL, SIGTERM,
bad configs, and export to transformers."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import transformers

from kd_jax import train
from kd_jax.errors import ConfigError
from kd_jax.metrics_log import read_metrics
from kd_jax.models.loader import export, load_trained


def _cli(workdir, *overrides, config="configs/tiny_compare.py:sft"):
    # A pretraining config keeps its own mixture of every built-in family.
    data = [] if "pretrain" in config else ["--config.data.train=builtin:chat/arith/human"]
    return [
        sys.executable,
        "-m",
        "kd_jax.main",
        "train",
        "--config",
        config,
        "--workdir",
        str(workdir),
        "--config.student.preset=tiny-student-xs",
        "--config.data.max_length=48",
        "--config.data.batch_size=8",
        "--config.data.validation=",
        "--config.data.validation_size=16",
        *data,
        "--config.train.log_every=1",
        "--config.train.eval_every=4",
        "--config.train.progress_bar=False",
        "--config.optim.warmup_steps=0",
        "--config.train.async_checkpointing=False",
        *overrides,
    ]


def test_kd_run_writes_metrics_checkpoints_and_exports(tiny_config, tmp_path):
    config = tiny_config("kd")
    final = train.run(config, tmp_path / "run")
    assert final["status"] == "completed" and final["step"] == 6
    rows = read_metrics(tmp_path / "run")
    assert [r["step"] for r in rows] == [1, 2, 3, 4, 5, 6]
    assert all(np.isfinite(r["loss"]) and r["divergence"] > 0 for r in rows)
    assert "eval_ce" in rows[2] and "eval_ce" in rows[5]
    assert sorted(os.listdir(tmp_path / "run" / "checkpoints")) == ["3", "6"]
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    assert saved["kd"]["divergence"] == "fkl" and saved["resolved_vocab_size"] > 0

    out = export(tmp_path / "run", tmp_path / "hf")
    model, _ = load_trained(tmp_path / "run")
    tokens = np.random.default_rng(0).integers(0, model.cfg.vocab_size, (2, 9))
    torch_model = transformers.AutoModelForCausalLM.from_pretrained(out, dtype="float32")
    import torch

    with torch.no_grad():
        ref = torch_model(torch.as_tensor(tokens)).logits.numpy()
    np.testing.assert_allclose(np.asarray(model(tokens)), ref, atol=1e-4)
    assert (out / "tokenizer.json").exists()


@pytest.mark.parametrize(
    "config", ["configs/tiny_compare.py:sft", "configs/pretrain.py:tiny-student-xs,runlocal"]
)
def test_resume_after_sigkill_matches_uninterrupted(builtin_dir, tmp_path, config):
    steps = ["--config.train.num_steps=10", "--config.train.checkpoint_every=3"]

    def cli(name):
        return _cli(tmp_path / name, *steps, config=config)

    full = subprocess.run(cli("full"), capture_output=True, text=True)
    assert full.returncode == 0, full.stderr[-2000:]

    proc = subprocess.Popen(cli("killed"), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ckpts = tmp_path / "killed" / "checkpoints"
    deadline = time.time() + 300
    while time.time() < deadline and not (ckpts.exists() and "6" in os.listdir(ckpts)):
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert "10" not in os.listdir(ckpts), "the run finished before it could be killed"
    again = subprocess.run(cli("killed"), capture_output=True, text=True)
    assert again.returncode == 0, again.stderr[-2000:]
    assert read_metrics(tmp_path / "killed", timing=False) == read_metrics(
        tmp_path / "full", timing=False
    )


def test_sigterm_saves_a_final_checkpoint(builtin_dir, tmp_path):
    args = _cli(
        tmp_path / "run",
        "--config.train.num_steps=100000",
        "--config.train.checkpoint_every=100000",
    )
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    metrics = tmp_path / "run" / "metrics.jsonl"
    deadline = time.time() + 300
    while time.time() < deadline and not (metrics.exists() and metrics.stat().st_size):
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0
    final = json.loads(out.strip().splitlines()[-1])
    assert final["status"] == "preempted"
    saved = os.listdir(tmp_path / "run" / "checkpoints")
    assert saved == [str(final["step"])]


@pytest.mark.parametrize(
    "key,value,message",
    [
        ("kd.divergence", "kl2", "Unknown divergence|unknown divergence|kl2"),
        ("kd.temperature", 0.0, "temperature"),
        ("kd.alpha", 1.5, "alpha must be in"),
        ("teacher.preset", "", "needs a teacher"),
        ("method", "distill", "config.method='distill' is unknown"),
        ("kd.reduction", "sequence", "packing"),
    ],
)
def test_bad_config_values_fail_before_writing(tiny_config, tmp_path, key, value, message):
    config = tiny_config("kd")
    section, _, name = key.rpartition(".")
    (config[section] if section else config)[name] = value
    with pytest.raises(ConfigError, match=message):
        train.run(config, tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_unwritable_workdir(tiny_config, tmp_path):
    """A workdir below a regular file cannot be created (this holds for root too)."""
    blocker = tmp_path / "a_file"
    blocker.write_text("not a directory")
    with pytest.raises(ConfigError, match="Cannot write to workdir"):
        train.run(tiny_config("sft"), blocker / "run")
    assert blocker.read_text() == "not a directory"


def test_cli_reports_config_errors_in_one_line(builtin_dir, tmp_path):
    r = subprocess.run(
        _cli(
            tmp_path / "run",
            "--config.kd.alpha=2.0",
            "--config.method=kd",
            "--config.teacher.preset=tiny-student",
        ),
        capture_output=True,
        text=True,
    )
    assert r.returncode == 2
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith("kd-jax: error: config.kd: alpha must be in [0, 1]")
    assert not (tmp_path / "run").exists()


def test_resuming_with_other_settings_names_them(tiny_config, tmp_path):
    """A workdir resumed under another loss or optimizer mixes two conditions: the changed
    keys are named (a warning, since extending num_steps or changing eval is fine)."""
    config = tiny_config("kd")
    (tmp_path / "config.json").write_text(config.to_json_best_effort())
    assert train.changed_settings(tmp_path, config) == []
    config.kd.alpha, config.train.num_steps = 0.25, 99
    config.optim.lr = 1e-4
    changed = train.changed_settings(tmp_path, config)
    assert changed == ["kd.alpha: 0.5 -> 0.25", "optim.lr: 0.002 -> 0.0001"], changed
