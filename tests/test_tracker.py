"""The optional Weights & Biases tracker: off by default, offline-capable, the same rows
as metrics.jsonl plus the resolved config; enabled without the package: one line."""

import sys

import pytest

from kd_jax import train
from kd_jax.metrics_log import TrackerError, read_metrics


def _offline(tiny_config, **extra):
    c = tiny_config("sft")
    c.train.num_steps, c.train.checkpoint_every = 3, 3
    c.train.wandb.update(enabled=True, mode="offline", project="kd_jax_test", **extra)
    return c


def test_off_by_default(tiny_config):
    assert not tiny_config("sft").train.wandb.enabled


def test_offline_run_logs_every_row_and_the_config(tiny_config, tmp_path, monkeypatch):
    import wandb

    monkeypatch.setenv("WANDB_SILENT", "true")
    seen = {"rows": [], "config": None}
    real_init = wandb.init

    def recording_init(**kw):  # the real offline run, with its calls recorded
        seen["config"] = kw["config"]
        run = real_init(**kw)
        real_log = run.log

        def log(data, step=None, **k):
            seen["rows"].append({"step": step, **data})
            return real_log(data, step=step, **k)

        monkeypatch.setattr(run, "log", log)
        return run

    monkeypatch.setattr(wandb, "init", recording_init)
    train.run(_offline(tiny_config), tmp_path / "run")
    rows = read_metrics(tmp_path / "run")
    assert seen["rows"] == [{k: v for k, v in r.items() if not isinstance(v, str)} for r in rows]
    assert seen["config"]["train"]["wandb"]["enabled"] is True
    assert seen["config"]["resolved_vocab_size"] > 0
    offline = list((tmp_path / "run" / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(offline) == 1 and offline[0].stat().st_size > 0


def test_enabled_without_the_package_is_one_line(tiny_config, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "wandb", None)
    with pytest.raises(TrackerError, match="wandb package is not installed; pip install wandb"):
        train.run(_offline(tiny_config), tmp_path / "run")
    assert not (tmp_path / "run").exists(), "fails before touching the workdir"
