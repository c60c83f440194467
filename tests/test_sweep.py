"""`kd-jax sweep`: condition args and folders, dependency order, printed commands, and a
two-condition sweep (a teacher's SFT run, then a KD student from it) end to end."""

import json
import os
import shutil

import pytest

from kd_jax import config_files, sweep
from kd_jax import main as cli

STUDY_B = os.path.join(os.path.dirname(__file__), os.pardir, "configs", "study_b_main.py")
PAIR = "pair-qwen3b-qwen0.5b_method-seqkd_task-math"
TEACHER = "model-qwen3b_method-sft_task-math"
# The tiniest shapes: 1-layer models, 48-token rows, 4 steps, 4 test questions.
TINY = [
    "student.preset=tiny-student-xs",
    "data.max_length=48",
    "data.batch_size=8",
    "data.num_examples=64",
    "data.validation_size=16",
    "train.num_steps=4",
    "train.eval_every=2",
    "train.checkpoint_every=2",
    "train.eval_batches=1",
    "train.log_every=2",
    "train.async_checkpointing=false",
    "kd.chunk_size=128",
    "optim.warmup_steps=0",
    "eval.num_examples=4",
    "eval.max_new_tokens=8",
    "eval.batch_size=8",
]


def test_condition_args_round_trip_and_name_folders():
    arg = "pair=qwen7b-qwen0.5b,method=seqkd,task=math,tau=2,runlocal"
    fields = config_files.parse_arg(arg)
    assert fields == {
        "pair": "qwen7b-qwen0.5b",
        "method": "seqkd",
        "task": "math",
        "tau": "2",
        "runlocal": True,
    }
    assert config_files.format_arg(fields) == arg
    assert sweep.condition_name(arg) == "pair-qwen7b-qwen0.5b_method-seqkd_task-math_tau-2"
    assert sweep.condition_name("data=/x/y") == "data--x-y"


def test_dependencies_come_first_and_are_added(capsys):
    module = sweep.load_module(STUDY_B)
    conds = sweep.ordered_conditions(module, runlocal=True, only=PAIR)
    assert [sweep.condition_name(a) for a in conds] == [TEACHER, PAIR]
    assert all(a.endswith(",runlocal") for a in conds)
    sweep.run_sweep(
        STUDY_B,
        "/runs/b",
        runlocal=True,
        only=PAIR,
        print_commands=True,
        print_eval_commands=True,
        overrides={"train.num_steps": "7"},
    )
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].startswith("kd-jax train --config ") and lines[0].endswith(
        f"--workdir /runs/b/{TEACHER} --config.train.num_steps=7"
    )
    assert f"--config.teacher.workdir=/runs/b/{TEACHER}" in lines[1]
    assert lines[3] == f"kd-jax eval --workdir /runs/b/{PAIR} --checkpoint best --teacher auto"
    assert lines[4] == "kd-jax report /runs/b --out /runs/b/report"


def test_overrides_are_cast_and_unknown_keys_rejected():
    module = sweep.load_module(STUDY_B)
    c = sweep.build_config(
        module,
        "model=qwen3b,method=sft,task=math,runlocal",
        str,
        {"train.num_steps": "9", "data.packing": "true", "optim.lr": "1e-3"},
    )
    assert (c.train.num_steps, c.data.packing, c.optim.lr) == (9, True, 1e-3)
    with pytest.raises(ValueError, match="train has no key .nope."):
        sweep.build_config(module, "model=qwen3b,runlocal", str, {"train.nope": "1"})


def test_two_condition_sweep_end_to_end(builtin_dir, tmp_path, capsys):
    root = tmp_path / "sweep"
    argv = ["sweep", "--config", STUDY_B, "--workdir", str(root), "--runlocal", "--only", PAIR]
    argv += [f"--config.{kv}" for kv in TINY]
    assert cli.main(argv) == 0
    for name in (TEACHER, PAIR):
        assert sweep.latest_step(root / name) == 4
        assert (root / name / "eval" / "scores.json").exists()
    kd_config = json.loads((root / PAIR / "config.json").read_text())
    assert kd_config["teacher"]["workdir"] == str(root / TEACHER)
    meta = json.loads((root / PAIR / "run.json").read_text())
    assert (meta["method"], meta["student"], meta["teacher"]) == (
        "SeqKD",
        "tiny-student-xs",
        "tiny-student-xs",
    )
    assert (root / PAIR / "eval" / "fidelity.json").exists()
    report = (root / "report" / "report.md").read_text()
    assert "SeqKD" in report and "arith_alpaca" in report

    # Again: nothing to train or evaluate. Then an unfinished run resumes from step 2.
    scores = root / PAIR / "eval" / "scores.json"
    before = scores.stat().st_mtime
    assert cli.main(argv) == 0
    assert scores.stat().st_mtime == before
    assert "skipped training 2" in capsys.readouterr().out
    shutil.rmtree(root / PAIR / "checkpoints" / "4")
    assert sweep.latest_step(root / PAIR) == 2
    assert cli.main(argv) == 0
    assert sweep.latest_step(root / PAIR) == 4 and scores.stat().st_mtime > before
    steps = [json.loads(x)["step"] for x in (root / PAIR / "metrics.jsonl").open()]
    assert steps[-1] == 4
