"""`kd-jax quickstart` at a few steps: bases, teacher, students, the table, reuse of bases."""

import json

from kd_jax import quickstart

RUNS = ["base-tiny-teacher", "base-tiny-student-l", "teacher", "sft", "kd"]


def test_quickstart_runs_every_stage_then_reuses_them(builtin_dir, tmp_path, capsys):
    first = quickstart.main(tmp_path / "a", steps_scale=0.005)
    assert list(first) == RUNS
    assert first["kd"]["train_data"] == "compare, 4,000 questions, answers unused"
    assert first["sft"]["train_data"] == "compare, 500 questions"
    table = capsys.readouterr().out
    assert all(f"| {name} |" in table for name in RUNS)
    kd = json.loads((tmp_path / "a" / "kd" / "config.json").read_text())
    assert kd["gkd"]["lambda_"] == 1.0 and kd["teacher"]["workdir"] == str(tmp_path / "a/teacher")
    assert kd["student"]["workdir"] == str(tmp_path / "a" / "base-tiny-student-l")

    # Finished runs are read back, not trained or scored again.
    again = quickstart.main(tmp_path / "a", steps_scale=0.005)
    assert json.dumps(again) == json.dumps(first)  # (a base's CE is NaN: compare as text)

    # --bases: another workdir post-trains from these bases without training its own.
    second = quickstart.main(tmp_path / "b", steps_scale=0.005, seed=1, bases=tmp_path / "a")
    assert not (tmp_path / "b" / "base-tiny-teacher").exists()
    sft = json.loads((tmp_path / "b" / "sft" / "config.json").read_text())
    assert sft["seed"] == 1 and sft["student"]["workdir"] == str(tmp_path / "a/base-tiny-student-l")
    assert list(second) == RUNS
