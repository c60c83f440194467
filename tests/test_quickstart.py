"""`kd-jax quickstart` at a few steps: from the shipped bases, or bases it pretrains itself."""

import json

import pytest

from kd_jax import quickstart
from kd_jax.errors import UserError
from kd_jax.models import builtin_bases

RUNS = ["base-tiny-teacher", "base-tiny-student-l", "teacher", "sft", "kd"]


def _config(workdir) -> dict:
    return json.loads((workdir / "config.json").read_text())


def test_quickstart_from_the_shipped_bases_then_reuses_its_runs(builtin_dir, tmp_path, capsys):
    first = quickstart.main(tmp_path, steps_scale=0.005)
    assert list(first) == RUNS
    assert first["base-tiny-student-l"]["train_data"] == "built-in base"
    assert first["kd"]["train_data"] == "compare, 4,000 questions, answers unused"
    assert first["sft"]["train_data"] == "compare, 500 questions"
    table = capsys.readouterr().out
    assert all(f"| {name} |" in table for name in RUNS)
    kd = _config(tmp_path / "kd")
    assert kd["gkd"]["lambda_"] == 1.0 and kd["teacher"]["workdir"] == str(tmp_path / "teacher")
    assert kd["student"]["hf_path"] == builtin_bases.path("tiny-student-l")
    assert _config(tmp_path / "teacher")["student"]["hf_path"] == builtin_bases.path("tiny-teacher")
    assert not (tmp_path / "base-tiny-teacher").exists()

    # Finished runs are read back, not trained or scored again.
    again = quickstart.main(tmp_path, steps_scale=0.005)
    assert json.dumps(again) == json.dumps(first)  # (a base's CE is NaN: compare as text)


def test_quickstart_pretrains_bases_another_workdir_reuses(builtin_dir, tmp_path):
    first = quickstart.main(tmp_path / "a", steps_scale=0.005, pretrain=True)
    assert list(first) == RUNS and first["base-tiny-teacher"]["train_data"] == "pretraining mixture"
    sft = _config(tmp_path / "a" / "sft")["student"]
    assert sft["workdir"] == str(tmp_path / "a" / "base-tiny-student-l") and sft["hf_path"] == ""

    # --bases: another workdir post-trains from those bases without training its own.
    second = quickstart.main(tmp_path / "b", steps_scale=0.005, seed=1, bases=tmp_path / "a")
    assert list(second) == RUNS and not (tmp_path / "b" / "base-tiny-teacher").exists()
    sft = _config(tmp_path / "b" / "sft")
    assert sft["seed"] == 1 and sft["student"]["workdir"] == str(tmp_path / "a/base-tiny-student-l")

    with pytest.raises(UserError, match="holds no finished base.*--pretrain"):
        quickstart.main(tmp_path / "c", steps_scale=0.005, bases=tmp_path / "b")
