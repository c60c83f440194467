"""Throughput in the logs: step time, tokens/s, model TFLOP/s and MFU on logging steps,
counted as `kd-jax plan` counts them, against the chip table or the measured CPU rate."""

import math

import numpy as np
import pytest

from kd_jax import flops, train
from kd_jax.metrics_log import TIMING_KEYS, read_metrics
from kd_jax.step_clock import step_model_flops

FIELDS = ("step_time_s", "tokens_per_s_per_device", "model_tflops_per_s_per_device", "mfu")


def test_kd_rows_carry_throughput_fields(tiny_config, tmp_path):
    config = tiny_config("kd")
    config.train.log_every, config.train.eval_every = 2, 0
    train.run(config, tmp_path / "run")
    rows = read_metrics(tmp_path / "run")
    assert [r["step"] for r in rows] == [2, 4, 6]
    assert set(FIELDS) <= set(TIMING_KEYS)
    peak = flops.cpu_matmul_flops_per_s()
    r = train.setup(config)
    per_step = step_model_flops(config, r.student, r.teacher)
    tokens = config.data.batch_size * config.data.max_length
    for row in rows:
        assert all(math.isfinite(row[k]) and row[k] > 0 for k in FIELDS), row
        assert "sample_time_share" not in row, "not a GKD run"
        t, devices = row["step_time_s"], 8
        np.testing.assert_allclose(row["tokens_per_s_per_device"], tokens / t / devices)
        np.testing.assert_allclose(
            row["model_tflops_per_s_per_device"], per_step / t / devices / 1e12
        )
        np.testing.assert_allclose(row["mfu"], per_step / t / devices / peak)


def test_step_flops_are_the_plans_counting(tiny_config):
    """Student 6N + teacher 2N + attention, N without the untied input table."""
    config = tiny_config("kd")
    r = train.setup(config)
    b, t = config.data.batch_size, config.data.max_length
    want = 0
    for parts, k in ((r.student, 6), (r.teacher, 2)):
        cfg = parts.cfg
        leaves = [*_leaves(parts.trainable), *_leaves(parts.frozen)]
        n = sum(x.size for x in leaves)
        if not cfg.tie_word_embeddings:
            n -= cfg.vocab_size * cfg.hidden_size
        attention = 4 * cfg.num_layers * t * cfg.num_heads * cfg.head_dim * b * t
        want += k * n * b * t + attention * (3 if k == 6 else 1)
    assert step_model_flops(config, r.student, r.teacher) == want


def _leaves(tree):
    import jax

    return jax.tree.leaves(tree)


@pytest.mark.parametrize(
    "kind, tflops",
    [
        ("TPU v4", 275),
        ("TPU v5 lite", 197),
        ("TPU v5e", 197),
        ("TPU v5p", 459),
        ("TPU v5", 459),
        ("TPU v6 lite", 918),
        ("NVIDIA H100 80GB HBM3", 989),
        ("NVIDIA H200", 989),
    ],
)
def test_chip_table(kind, tflops):
    assert flops.chip_peak_flops_per_s(kind) == tflops * 1e12


def test_unknown_chip_has_no_peak():
    assert flops.chip_peak_flops_per_s("NVIDIA A10G") is None


def test_divergence_stop_ends_at_the_same_step_when_read_late(tiny_config, tmp_path, caplog):
    """Off logging steps the bad-step counter is read one step late; the run still stops
    after the step that reached train.max_bad_steps, and saves nothing after it."""
    import logging

    stopped = {}
    for log_every in (1, 100):
        c = tiny_config("sft")
        c.optim.lr, c.optim.clip_norm = 1e30, 0.0  # non-finite within a few steps
        c.train.update(
            num_steps=30, max_bad_steps=3, log_every=log_every, eval_every=0, checkpoint_every=100
        )
        caplog.clear()
        with caplog.at_level(logging.ERROR, logger="kd_jax.train"):
            final = train.run(c, tmp_path / f"every{log_every}")
        assert final["status"] == "diverged"
        said = [r.getMessage() for r in caplog.records if "non-finite" in r.getMessage()]
        assert len(said) == 1
        stopped[log_every] = int(said[0].split("up to step ")[1].split(";")[0])
        ckpts = tmp_path / f"every{log_every}" / "checkpoints"
        assert not ckpts.exists() or not any(ckpts.iterdir())
    rows = read_metrics(tmp_path / "every1")
    assert rows[-1]["step"] == stopped[1] and rows[-1]["bad_steps"] == 3
    assert stopped[100] == stopped[1] < 30, stopped
