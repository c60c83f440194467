"""`kd-jax eval` and `kd-jax report` end to end on two tiny trained runs.

A 6-step SFT "teacher" and a KD student distilled from it (both the 1-layer preset,
built-in data) are trained once for the module; the tests evaluate them through the CLI
and check the files the report reads, fidelity properties, the report, and user errors.
"""

import json
import os

import pytest

from kd_jax import main as cli
from kd_jax import train

EVAL = ["--tasks", "arith,compare", "--limit", "8", "--max-new-tokens", "12", "--no-progress"]


def _tiny(arg):
    from configs import tiny_compare

    c = tiny_compare.get_config(arg)
    c.student.preset = "tiny-student-xs"
    c.data.update(
        dict(
            max_length=48,
            batch_size=8,
            validation="",
            validation_size=16,
            train="builtin:chat/arith/human",
            num_examples=0,
            packing=True,
        )
    )
    if arg == "kd":
        c.kd.alpha, c.kd.temperature = 0.5, 2.0
    c.train.update(
        dict(
            num_steps=6,
            log_every=3,
            eval_every=3,
            eval_batches=1,
            checkpoint_every=3,
            progress_bar=False,
            async_checkpointing=False,
        )
    )
    c.kd.chunk_size = 128
    c.optim.warmup_steps = 0
    return c


@pytest.fixture(scope="module")
def runs(builtin_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("eval_cli")
    train.run(_tiny("sft"), root / "teacher")
    kd = _tiny("kd")
    kd.teacher.preset, kd.teacher.workdir = "", str(root / "teacher")
    train.run(kd, root / "kd")
    return root


def test_eval_writes_scores_run_json_and_fidelity(runs, capsys):
    assert cli.main(["eval", "--workdir", str(runs / "teacher"), *EVAL]) == 0
    assert cli.main(["eval", "--workdir", str(runs / "kd"), "--teacher", "auto", *EVAL]) == 0
    scores = json.loads((runs / "kd" / "eval" / "scores.json").read_text())
    assert set(scores["tasks"]) == {"arith", "compare"}
    assert all(t["n"] == 8 for t in scores["tasks"].values())
    assert scores["config"]["limit"] == 8 and scores["run"]["temperature"] == 0.0
    preds = (runs / "kd" / "eval" / "predictions" / "arith.jsonl").read_text().splitlines()
    assert len(preds) == 8 and "generation" in json.loads(preds[0])

    meta = json.loads((runs / "kd" / "run.json").read_text())
    assert meta["method"] == "SeqKD" and meta["temperature"] == 2.0
    assert meta["student"] == meta["teacher"] == "tiny-student-xs"
    # 16 of the 1000 human records are held out for validation.
    assert meta["data_size"] == 984 and meta["student_size"] > 10_000 and meta["seed"] == 0
    assert json.loads((runs / "teacher" / "run.json").read_text())["method"] == "SFT"

    fid = json.loads((runs / "kd" / "eval" / "fidelity.json").read_text())
    assert set(fid["tasks"]) == {"arith", "compare"}
    assert fid["held_out"]["kl"] >= 0 and 0 <= fid["held_out"]["top1"] <= 1
    assert fid["held_out"]["tokens"] > 0
    assert (runs / "kd" / "eval" / "teacher" / "scores.json").exists()


def test_a_model_against_itself_has_zero_kl_and_full_agreement(runs, tmp_path):
    """Greedy decoding of the same weights gives the same text: BLEU 100, KL 0, top-1 1."""
    out = tmp_path / "self"
    rc = cli.main(
        [
            "eval",
            "--workdir",
            str(runs / "teacher"),
            "--teacher",
            str(runs / "teacher"),
            "--out",
            str(out),
            "--kl-batches",
            "1",
            *EVAL,
        ]
    )
    assert rc == 0
    fid = json.loads((out / "fidelity.json").read_text())
    assert fid["held_out"]["kl"] == pytest.approx(0.0, abs=1e-5)
    assert fid["held_out"]["top1"] == 1.0
    for task in fid["tasks"].values():
        assert task["bleu"] == pytest.approx(100.0)


def test_report_over_a_folder_of_runs(runs, capsys):
    if not (runs / "kd" / "run.json").exists():
        test_eval_writes_scores_run_json_and_fidelity(runs, capsys)
    out = runs / "report"
    assert cli.main(["report", str(runs), "--out", str(out)]) == 0
    text = (out / "report.md").read_text()
    assert "| kd | SeqKD | tiny-student-xs |" in text and "## Fidelity to the teacher" in text
    assert (out / "gain_vs_data_size.png").exists() and (out / "summary.json").exists()


@pytest.mark.parametrize(
    "argv, message",
    [
        (["eval", "--workdir", "{tmp}", "--tasks", "arith"], "is not a trained kd_jax run"),
        (["eval", "--workdir", "{kd}", "--tasks", "gsm8k"], "pass --data-root"),
        (["eval", "--workdir", "{kd}", "--tasks", "nope"], "unknown task 'nope'"),
        (["eval", "--workdir", "{kd}", "--meta", "method"], "is not KEY=VALUE"),
        (["report", "{tmp}/missing", "--out", "{tmp}/r"], "no such folder"),
        (["report", "{tmp}", "--out", "{tmp}/r"], "no run folders given"),
    ],
)
def test_user_errors_are_one_line(runs, tmp_path, capsys, argv, message):
    argv = [a.format(tmp=tmp_path, kd=runs / "kd") for a in argv]
    assert cli.main(argv) == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith("kd-jax: error:") and message in last, last
    assert not os.path.exists(tmp_path / "r")
